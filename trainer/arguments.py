"""`enrich train` arguments: dataclasses parsed by `HfArgumentParser`, as in the Hugging Face examples."""

from __future__ import annotations

from dataclasses import dataclass, field

from enrich_model.bundle_config import MAX_NEW_TOKENS

PRETRAINED_LAYER_DECAY = 0.8  # --layer_decay's default when the backbone starts from pretrained weights


class UsageError(ValueError):
    """A wrong argument or combination of arguments; the message says which and what to do instead."""


@dataclass
class DataArguments:
    data: str = field(metadata={"help": "styles.csv folder, a save_to_disk dataset, or a hub dataset id"})
    split: str = field(default="train", metadata={"help": "dataset split (hub/disk datasets only)"})
    limit: int = field(default=0, metadata={"help": "use at most this many items (0 = all)"})
    min_class_count: int = field(default=2, metadata={"help": "labels rarer than this in train are dropped (a taxonomy "
                                                              "file's min_examples and rare say otherwise)"})
    taxonomy: str = field(default="", metadata={"help": "taxonomy file (default: DATA/taxonomy.json when present)"})


@dataclass
class ModelArguments:
    backbone: str = field(default="tiny_vit_5m_224", metadata={"help": "timm TinyViT model name"})
    backbone_kwargs: str = field(default="{}", metadata={"help": "JSON of extra timm.create_model kwargs"})
    image_size: int = field(default=0, metadata={"help": "square input side; 0 = the backbone's own"})
    pretrained: str = field(
        default="auto",
        metadata={"help": "backbone weights: auto/hub (refuses to go on without them), a weights file, or none "
                          "(random initialisation, on purpose)"},
    )
    decoder: str = field(
        default="auto",
        metadata={"help": "auto (distilgpt2 from the hub, else small), small, or a GPT-2 name/path"},
    )
    decoder_layers: int = 4
    decoder_width: int = 256
    decoder_heads: int = 4
    tokenizer_vocab: int = field(default=2000, metadata={"help": "BPE vocabulary size for a small decoder"})
    max_caption_tokens: int = MAX_NEW_TOKENS
    head_dropout: float = 0.1
    colour_bins: int = field(
        default=8, metadata={"help": "bins per channel of the foreground colour histogram fed to the baseColour "
                                     "head (0 = none)"})
    colour_levels: int = field(
        default=16, metadata={"help": "levels per channel encoding the product's dominant colour for the "
                                      "baseColour head (0 = none; needs --colour_bins)"})


@dataclass
class TrainArguments:
    out: str = field(metadata={"help": "bundle directory to write"})
    seed: int = 42
    target_precision: float = field(
        default=0.95, metadata={"help": "precision on validation that each attribute's accept threshold reaches"})
    backbone_mode: str = field(
        default="finetune",
        metadata={"help": "finetune (linear probe, then the whole backbone with layer-wise lr decay) or frozen "
                          "(probe only, features computed once; needs pretrained weights)"},
    )
    probe_epochs: int = field(default=2, metadata={"help": "heads-only epochs before fine-tuning the backbone"})
    head_epochs: int = field(default=30, metadata={"help": "most fine-tuning epochs (early stopping may end sooner)"})
    early_stopping: int = field(default=6, metadata={"help": "stop after this many epochs without a better "
                                                              "validation macro-F1 over all labels (0 = never)"})
    head_lr: float = field(default=3e-3, metadata={"help": "learning rate of the heads in the probe stage"})
    finetune_lr: float = field(default=1e-3, metadata={"help": "peak learning rate of the top of the network"})
    layer_decay: float | None = field(
        default=None, metadata={"help": "lr multiplier per backbone block going down (timm's fine grouping: stem, "
                                        f"each block, each downsample); default {PRETRAINED_LAYER_DECAY} from "
                                        "pretrained weights, 1.0 from random ones (no lower layers worth "
                                        "protecting)"})
    warmup_ratio: float = 0.05
    weight_decay: float = 0.05
    head_batch_size: int = 64
    augment: bool = field(default=True, metadata={"help": "label-preserving augmentation while fine-tuning"})
    refit_heads: bool = field(default=True, metadata={
        "help": "after fine-tuning, refit each head on the final backbone's features by L-BFGS (L2 chosen on "
                "validation); a refit replaces a head only where it scores better on validation"})
    label_smoothing: float = 0.0
    class_balance: str = field(
        default="none", metadata={"help": "none, or logit_adjust (balanced loss for long-tailed classes)"})
    abstain_accuracy: float = field(
        default=0.0, metadata={"help": "flag predictions as unsure below the confidence at which validation "
                                       "accuracy reaches this (0 = off), per attribute"})
    caption_epochs: int = 12
    caption_lr: float = 1e-3
    caption_batch_size: int = 32
    eval_batch_size: int = 64
    precision: str = field(default="auto", metadata={"help": "auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16, fp16"})
    workers: int = field(default=-1, metadata={"help": "data loader processes decoding images; -1 = none on CPU "
                                                      "(they would take the cores training needs), up to 8 on GPU"})
    threads: int = 0
    name: str = "enrich"
    progress: bool = True
