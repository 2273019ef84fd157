"""The evaluation report: metrics.json, report.md, predictions.csv and the pictures (curves, confusions,
reliability); this module is the one writer of each."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from enrich_model.metrics import format_metrics, reliability_curve

from .answers import Answers

if TYPE_CHECKING:
    from enrich_data.catalogue import CatalogueItem
    from enrich_model.bundle import Bundle
    from enrich_model.schema import CatalogueSchema

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
PREDICTIONS_FILE = "predictions.csv"
PICTURES = {"curves": "training_curves.png", "reliability": "reliability.png"}


def table_attributes(schema: CatalogueSchema) -> list[str]:
    """The attributes with per-class precision/recall and a confusion matrix in the report: the product and
    colour ones (Fashion Product Images: articleType, baseColour), else the first two single-valued."""
    chosen = [schema.roles[r] for r in ("product", "colour") if r in schema.roles]
    return chosen or list(schema.single[:2])


def confusion_picture(attribute: str) -> str:
    return f"confusion_{attribute}.png"


def write_report(out: Path, bundle: Bundle, items: list[CatalogueItem], answers: Answers, metrics: dict,
                 histories: dict[str, list[dict]] | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    write_predictions(out / PREDICTIONS_FILE, items, answers)
    if histories:
        plot_training_curves(histories, out / PICTURES["curves"])
    schema = bundle.schema
    for attribute in table_attributes(schema):
        plot_confusion([i.labels[attribute] for i in items], answers.labels[attribute],
                       bundle.vocabs[attribute].labels, f"{attribute} ({len(items)} images)",
                       out / confusion_picture(attribute))
    curves = {}
    for attribute in schema.headline or schema.single[:3]:
        rows = [n for n, item in enumerate(items) if item.labels[attribute]]
        correct = [items[n].labels[attribute] == answers.labels[attribute][n] for n in rows]
        curves[attribute] = {
            "calibrated": reliability_curve([answers.confidence[attribute][n] for n in rows], correct),
            "raw": reliability_curve([answers.raw_confidence[attribute][n] for n in rows], correct),
        }
    plot_reliability(curves, metrics, out / PICTURES["reliability"])
    (out / REPORT_FILE).write_text(markdown_report(bundle, metrics, histories is not None))


def write_predictions(path: Path, items: list[CatalogueItem], answers: Answers) -> None:
    """One row per image and attribute: what the catalogue says, what the model answered, how sure it was."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "attribute", "true", "predicted", "confidence", "unsure"])
        for n, item in enumerate(items):
            for attribute in answers.schema.names:
                predicted = "|".join(answers.values[attribute][n]) if attribute in answers.values \
                    else answers.labels[attribute][n]
                writer.writerow([item.id, attribute, item.labels[attribute] or "", predicted,
                                 f"{answers.confidence[attribute][n]:.4f}", int(answers.unsure[attribute][n])])


def markdown_report(bundle: Bundle, metrics: dict, with_curves: bool) -> str:
    lines = [f"# Evaluation of {bundle.model_version}", "",
             f"{metrics['test_items']} labelled images, answered through the serving path "
             "(decode, letterbox, one encoder pass, calibrated heads, captions agreeing with the labels), "
             f"on {metrics.get('served_as', 'an unrecorded backend')}. `{PREDICTIONS_FILE}` has every answer.", "",
             "```", format_metrics(metrics), "```", "",
             "ECE: expected calibration error of the served (calibrated) confidence; ECE raw: before calibration. "
             "majority: accuracy of always answering the most frequent training label.", ""]
    for attribute in table_attributes(bundle.schema):
        table = metrics.get(attribute, {}).get("per_class", [])
        if table:
            lines += [f"## {attribute}: per class", "", "| class | precision | recall | support |", "|---|---|---|---|"]
            lines += [f"| {r['label']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['support']} |" for r in table]
            lines.append("")
    lines += ["## Pictures", ""]
    if with_curves:
        lines.append(f"![training curves]({PICTURES['curves']})")
    lines += [f"![reliability]({PICTURES['reliability']})",
              *(f"![{a}]({confusion_picture(a)})" for a in table_attributes(bundle.schema)), ""]
    return "\n".join(lines)


def plot_reliability(curves: dict[str, dict[str, list]], metrics: dict, path: Path) -> None:
    """Confidence against accuracy per bin, before and after calibration; the diagonal is perfect."""
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 4), squeeze=False)
    for axis, (attribute, kinds) in zip(axes[0], curves.items(), strict=True):
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        m = metrics.get(attribute, {})
        for kind, style, ece in (("raw", "s--", m.get("ece_uncalibrated")), ("calibrated", "o-", m.get("ece"))):
            if kinds[kind]:
                x, y, _ = zip(*kinds[kind], strict=True)
                label = f"{kind} (ECE {ece:.3f})" if ece is not None else kind
                axis.plot(x, y, style, label=label, markersize=4)
        axis.set_title(attribute)
        axis.set_xlabel("confidence")
        axis.set_ylabel("accuracy")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training_curves(histories: dict[str, list[dict]], path: Path) -> None:
    """One panel per training stage: train and validation loss by epoch (and validation macro-F1)."""
    fig, axes = plt.subplots(1, len(histories), figsize=(5 * len(histories), 3.6), squeeze=False)
    for axis, (stage, history) in zip(axes[0], histories.items(), strict=True):
        train = [(h["epoch"], h["loss"]) for h in history if "loss" in h and "epoch" in h]
        evals = [(h["epoch"], h["eval_loss"]) for h in history if "eval_loss" in h]
        f1 = [(h["epoch"], h["eval_macro_f1"]) for h in history if "eval_macro_f1" in h]
        if train:
            axis.plot(*zip(*train, strict=True), label="train loss", marker=".")
        if evals:
            axis.plot(*zip(*evals, strict=True), label="validation loss", marker="o")
        if f1:
            twin = axis.twinx()
            twin.plot(*zip(*f1, strict=True), label="validation macro-F1", color="tab:green", marker="^")
            twin.set_ylabel("macro-F1")
            twin.set_ylim(0, 1)
            twin.legend(loc="center right", fontsize=8)
        axis.set_title(stage)
        axis.set_xlabel("epoch")
        axis.set_ylabel("loss")
        axis.grid(alpha=0.3)
        axis.legend(loc="upper right", fontsize=8)
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
