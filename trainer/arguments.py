"""`enrich train` arguments: dataclasses parsed by `HfArgumentParser`, as in the Hugging Face examples."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataArguments:
    data: str = field(metadata={"help": "styles.csv folder, a save_to_disk dataset, or a hub dataset id"})
    split: str = field(default="train", metadata={"help": "dataset split (hub/disk datasets only)"})
    limit: int = field(default=0, metadata={"help": "use at most this many items (0 = all)"})
    min_class_count: int = field(default=2, metadata={"help": "labels rarer than this in train are dropped"})


@dataclass
class ModelArguments:
    backbone: str = field(default="tiny_vit_5m_224", metadata={"help": "timm TinyViT model name"})
    backbone_kwargs: str = field(default="{}", metadata={"help": "JSON of extra timm.create_model kwargs"})
    image_size: int = field(default=0, metadata={"help": "square input side; 0 = the backbone's own"})
    pretrained: str = field(
        default="auto", metadata={"help": "backbone weights: auto (hub, else random), hub, none, or a file"}
    )
    decoder: str = field(
        default="auto",
        metadata={"help": "auto (distilgpt2 from the hub, else small), small, or a GPT-2 name/path"},
    )
    decoder_layers: int = 4
    decoder_width: int = 256
    decoder_heads: int = 4
    tokenizer_vocab: int = field(default=2000, metadata={"help": "BPE vocabulary size for a small decoder"})
    max_caption_tokens: int = 32
    head_dropout: float = 0.1


@dataclass
class TrainArguments:
    out: str = field(metadata={"help": "bundle directory to write"})
    seed: int = 42
    backbone_mode: str = field(
        default="frozen", metadata={"help": "frozen (features computed once) or finetune (backbone trained)"}
    )
    head_epochs: int = 15
    head_lr: float = 3e-3
    finetune_lr: float = 1e-3
    head_batch_size: int = 64
    caption_epochs: int = 12
    caption_lr: float = 1e-3
    caption_batch_size: int = 32
    eval_batch_size: int = 64
    threads: int = 0
    name: str = "enrich"
    progress: bool = True

