"""Metrics and pictures: accuracy, macro-F1, majority baselines, BLEU, curves, confusion matrices."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import sacrebleu


def classification_metrics(truth: Sequence[str], predicted: Sequence[str], train_labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1 over the classes present in truth or prediction, and the majority baseline
    (always answering the most common training label)."""
    pairs = [(t, p) for t, p in zip(truth, predicted, strict=True) if t]
    if not pairs:
        return {"support": 0}
    majority = Counter(label for label in train_labels if label).most_common(1)[0][0]
    correct = sum(t == p for t, p in pairs)
    classes = sorted({t for t, _ in pairs} | {p for _, p in pairs})
    f1s = []
    for label in classes:
        tp = sum(t == label and p == label for t, p in pairs)
        fp = sum(t != label and p == label for t, p in pairs)
        fn = sum(t == label and p != label for t, p in pairs)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {
        "accuracy": correct / len(pairs),
        "macro_f1": float(np.mean(f1s)),
        "majority_label": majority,
        "majority_accuracy": sum(t == majority for t, _ in pairs) / len(pairs),
        "support": len(pairs),
        "classes": len({t for t, _ in pairs}),
    }


def caption_metrics(references: Sequence[str | None], hypotheses: Sequence[str]) -> dict:
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r]
    if not pairs:
        return {"support": 0}
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    return {
        "bleu": sacrebleu.corpus_bleu(hyps, [refs]).score,
        "exact_match": sum(r == h for r, h in pairs) / len(pairs),
        "support": len(pairs),
    }


def plot_training_curves(histories: dict[str, list[dict]], path: Path) -> None:
    """One panel per training stage: train and validation loss by epoch."""
    fig, axes = plt.subplots(1, len(histories), figsize=(5 * len(histories), 3.6), squeeze=False)
    for axis, (stage, history) in zip(axes[0], histories.items(), strict=True):
        train = [(h["epoch"], h["loss"]) for h in history if "loss" in h and "epoch" in h]
        evals = [(h["epoch"], h["eval_loss"]) for h in history if "eval_loss" in h]
        if train:
            axis.plot(*zip(*train, strict=True), label="train", marker=".")
        if evals:
            axis.plot(*zip(*evals, strict=True), label="validation", marker="o")
        axis.set_title(stage)
        axis.set_xlabel("epoch")
        axis.set_ylabel("loss")
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str], title: str,
                   path: Path, max_classes: int = 30) -> None:
    """Row-normalised confusion matrix over the most frequent true classes."""
    counts = Counter(t for t in truth if t)
    shown = [label for label, _ in counts.most_common(max_classes) if label in set(labels)]
    index = {label: i for i, label in enumerate(shown)}
    matrix = np.zeros((len(shown), len(shown)))
    for t, p in zip(truth, predicted, strict=True):
        if t in index and p in index:
            matrix[index[t], index[p]] += 1
    matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.32 * len(shown) + 2)
    fig, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(shown)), shown, rotation=90, fontsize=7)
    axis.set_yticks(range(len(shown)), shown, fontsize=7)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    fig.colorbar(image, ax=axis, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
