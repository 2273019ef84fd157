"""Stage 1: the attribute heads on the shared backbone.

finetune (default): a short linear probe (backbone frozen) so that the fresh heads stop sending noise
into the backbone, then the whole network with layer-wise learning-rate decay (lower stages move less),
warmup + cosine, label-preserving augmentation, early stopping on validation macro-F1 and the best
epoch kept. frozen: the probe alone, on features computed once (only sensible with pretrained weights).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from timm.optim import param_groups_layer_decay
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments

from enrich_data.catalogue import CatalogueItem
from enrich_model.metrics import label_f1s
from enrich_model.preprocess import Preprocessing
from enrich_model.schema import LabelVocab

from .arguments import TrainArguments
from .augment import Augment
from .classifier import AttributeClassifier
from .datasets import FeatureDataset, PixelDataset, extract_features
from .progress import quiet_progress

BEST_BY = "eval_macro_f1"


def train_heads(classifier: AttributeClassifier, train_items: list[CatalogueItem], val_items: list[CatalogueItem],
                vocabs: dict[str, LabelVocab], preprocessing: Preprocessing, args: TrainArguments,
                work: Path, shown: tuple[str, ...] = ()) -> list[dict]:
    """Train in place; returns the Trainer log history of every phase, epochs numbered across phases. `shown`: the
    attributes whose validation accuracy each epoch's line prints."""
    label_names = [f"label_{a}" for a in vocabs]
    encoder = classifier.encoder
    if args.backbone_mode == "frozen":
        features = {name: extract_features(encoder, classifier.colour, items, preprocessing, args.eval_batch_size,
                                           f"encode ({name})", args.progress)
                    for name, items in (("train", train_items), ("validation", val_items))}
        classifier.encoder = None  # features come precomputed
        try:
            return _run(classifier, FeatureDataset(features["train"], train_items, vocabs),
                        FeatureDataset(features["validation"], val_items, vocabs), args, work / "probe",
                        args.head_epochs, args.head_lr, label_names, "heads", shown=shown)
        finally:
            classifier.encoder = encoder.to(next(classifier.heads.parameters()).device)
    augment = Augment(preprocessing.mean, preprocessing.std) if args.augment else None
    train_set = PixelDataset(train_items, preprocessing, vocabs, augment)
    val_set = PixelDataset(val_items, preprocessing, vocabs)
    history: list[dict] = []
    if args.probe_epochs:
        encoder.requires_grad_(False)
        history += _run(classifier, train_set, val_set, args, work / "probe", args.probe_epochs, args.head_lr,
                        label_names, "probe", early_stopping=False, callbacks=[FrozenEncoder(encoder)], shown=shown)
        encoder.requires_grad_(True)
    optimizer = layer_decay_optimizer(classifier, args)
    offset = args.probe_epochs
    for entry in _run(classifier, train_set, val_set, args, work / "finetune", args.head_epochs, args.finetune_lr,
                      label_names, "finetune", optimizer=optimizer, shown=shown):
        history.append({**entry, "epoch": entry.get("epoch", 0) + offset})
    return history


def layer_decay_optimizer(classifier: AttributeClassifier, args: TrainArguments) -> torch.optim.Optimizer:
    """AdamW with the heads at the full learning rate and each backbone group `layer_decay` times the one
    above it (timm's fine grouping of TinyViT: stem, each block, each downsample)."""
    groups = []
    for group in param_groups_layer_decay(classifier.encoder.backbone, args.weight_decay,
                                          layer_decay=args.layer_decay):
        groups.append({"params": group["params"], "weight_decay": group["weight_decay"],
                       "lr": args.finetune_lr * group["lr_scale"]})
    top = [p for name, p in classifier.named_parameters() if not name.startswith("encoder.") and p.requires_grad]
    decayed = [p for p in top if p.ndim > 1]
    groups += [{"params": decayed, "weight_decay": args.weight_decay, "lr": args.finetune_lr},
               {"params": [p for p in top if p.ndim <= 1], "weight_decay": 0.0, "lr": args.finetune_lr}]
    return torch.optim.AdamW(groups, lr=args.finetune_lr)


class FrozenEncoder(TrainerCallback):
    """Keeps a frozen backbone in eval mode while the Trainer puts the model in train mode: its BatchNorm
    statistics must not drift on augmented images, and drop-path must not thin features the heads learn on."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        self.encoder = encoder

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        self.encoder.eval()


def _run(classifier: AttributeClassifier, train_set, val_set, args: TrainArguments, out: Path, epochs: int, lr: float,
         label_names: list[str], stage: str, optimizer: torch.optim.Optimizer | None = None,
         early_stopping: bool = True, callbacks: list[TrainerCallback] | None = None,
         shown: tuple[str, ...] = ()) -> list[dict]:
    callbacks = list(callbacks or [])
    if early_stopping and args.early_stopping:
        callbacks.append(EarlyStoppingCallback(args.early_stopping))
    trainer = quiet_progress(Trainer(
        model=classifier,
        args=training_arguments(TrainingArguments, out, args, epochs, lr, args.head_batch_size, best_by=BEST_BY,
                                label_names=label_names),
        train_dataset=train_set, eval_dataset=val_set, callbacks=callbacks,
        compute_metrics=lambda prediction: heads_metrics(prediction, [n.removeprefix("label_") for n in label_names]),
        optimizers=(optimizer, None),
    ), stage, args.progress, shown)
    trainer.train()
    return trainer.state.log_history


def heads_metrics(prediction, names: list[str]) -> dict[str, float]:
    """Validation accuracy and macro-F1 per attribute, and `macro_f1`, which picks the best epoch: the F1
    averaged over every label of every attribute, so each label a user can be shown counts once. (A mean of
    the five per-attribute scores would let season's four weakly visible labels weigh as much as forty
    colours, and their epoch-to-epoch noise decide which epoch is kept.) A multi-valued attribute's values count
    by their F1 at probability 0.5."""
    metrics, every_label = {}, []
    for name, scores, target in zip(names, prediction.predictions, prediction.label_ids, strict=True):
        if target.ndim == 2:  # multi-valued: (N, values), rows of -100 where the catalogue had none
            known = target[:, 0] != -100
            chosen, truth = scores[known] > 0, target[known] > 0.5
            f1s = [2 * float((c & t).sum()) / max(float(c.sum() + t.sum()), 1.0)
                   for c, t in zip(chosen.T, truth.T, strict=True) if t.any()]
            metrics[f"f1_{name}"] = float(np.mean(f1s)) if f1s else 0.0
            every_label += f1s
            continue
        mask = target != -100
        predicted, truth = scores.argmax(-1)[mask], target[mask]
        metrics[f"acc_{name}"] = float((predicted == truth).mean()) if mask.any() else 0.0
        f1s = label_f1s(truth.tolist(), predicted.tolist())
        metrics[f"f1_{name}"] = float(np.mean(f1s)) if f1s else 0.0
        every_label += f1s
    metrics["macro_f1"] = float(np.mean(every_label)) if every_label else 0.0
    return metrics


def training_arguments(cls, out: Path, args: TrainArguments, epochs: int, lr: float, batch_size: int,
                       best_by: str = "eval_loss", **extra):
    """The settings both stages share: epoch-wise evaluation, best epoch kept, warmup + cosine, precision."""
    return cls(
        output_dir=str(out), num_train_epochs=epochs, learning_rate=lr, per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=args.eval_batch_size, eval_strategy="epoch", save_strategy="epoch",
        logging_strategy="epoch", load_best_model_at_end=True, metric_for_best_model=best_by,
        greater_is_better=best_by != "eval_loss", save_total_limit=1, report_to="none", seed=args.seed,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_ratio, lr_scheduler_type="cosine",
        remove_unused_columns=False, dataloader_num_workers=loader_workers(args.workers),
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=not args.progress, save_only_model=True, **mixed_precision(args.precision), **extra,
    )


def loader_workers(workers: int) -> int:
    if workers >= 0:
        return workers
    return min(8, max(1, (os.cpu_count() or 2) - 1)) if torch.cuda.is_available() else 0


def mixed_precision(precision: str) -> dict[str, bool]:
    """Trainer flags for `--precision`: auto is bf16 on GPUs that have it, else fp16 on GPUs, fp32 on CPU."""
    if precision == "auto":
        if not torch.cuda.is_available():
            return {}
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"--precision must be auto, fp32, bf16 or fp16, not {precision!r}")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}
