"""`enrich evaluate`: a bundle, as it ships, on a labelled catalogue.

    enrich evaluate --model BUNDLE --data CATALOGUE [--split test|all] [--out DIR]

Training runs the same function on the bundle it has just written and loaded back, so the metrics in
a bundle describe what serves. Everything goes through the serving `Predictor`: decode, preprocess,
one encoder pass, calibrated heads, captions made to agree with the labels.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from enrich_data.catalogue import CatalogueItem, DataError, load_catalogue
from enrich_model.bundle import Bundle, load_bundle
from enrich_model.consistency import consistency_rate
from enrich_model.metrics import (
    caption_metrics,
    classification_metrics,
    expected_calibration_error,
    format_metrics,
    is_clearly_learnt,
    per_class_table,
)
from enrich_model.predict import CAPTION_LABELS, CaptionMode, ItemOptions, Predictor
from enrich_model.schema import CLASSIFIED_ATTRIBUTES, DERIVED_ATTRIBUTES

from .datasets import model_input
from .report import write_report
from .split import stratified_split

ALL_ATTRIBUTES = (*CLASSIFIED_ATTRIBUTES, *DERIVED_ATTRIBUTES)
TABLE_ATTRIBUTES = ("articleType", "baseColour")  # per-class precision/recall in the report
HEADLINE_ATTRIBUTES = ("articleType", "baseColour", "gender")  # a model that fails these is not usable


@dataclass
class Answers:
    """What the bundle answered, per test item, and how confident it was."""

    labels: dict[str, list[str]] = field(default_factory=lambda: {a: [] for a in ALL_ATTRIBUTES})
    top3: dict[str, list[list[str]]] = field(default_factory=lambda: {a: [] for a in ALL_ATTRIBUTES})
    confidence: dict[str, list[float]] = field(default_factory=lambda: {a: [] for a in ALL_ATTRIBUTES})
    raw_confidence: dict[str, list[float]] = field(default_factory=lambda: {a: [] for a in CLASSIFIED_ATTRIBUTES})
    unsure: dict[str, list[bool]] = field(default_factory=lambda: {a: [] for a in ALL_ATTRIBUTES})
    captions: list[str] = field(default_factory=list)
    decoded_captions: list[str] = field(default_factory=list)


def predict_items(bundle: Bundle, items: list[CatalogueItem], batch_size: int = 64, progress: bool = True) -> Answers:
    predictor = Predictor(bundle)
    answers = Answers()
    options = ItemOptions(top_k=3, caption=CaptionMode.GENERATE)
    for start in tqdm(range(0, len(items), batch_size), desc="evaluate", unit="batch", disable=not progress):
        chunk = items[start:start + batch_size]
        pixels = np.stack([model_input(item, bundle.preprocessing) for item in chunk])
        result = predictor.predict(pixels, [options] * len(chunk))
        for attribute, logits in result.logits.items():  # before calibration, for "ECE before"
            answers.raw_confidence[attribute] += logits.float().softmax(-1).max(-1).values.tolist()
        for item in result.items:
            for attribute, prediction in item.attributes.items():
                answers.labels[attribute].append(prediction.label)
                answers.top3[attribute].append([a.label for a in prediction.alternatives])
                answers.confidence[attribute].append(prediction.confidence)
                answers.unsure[attribute].append(prediction.unsure)
            answers.captions.append(item.caption.text)
            answers.decoded_captions.append(item.caption.decoded_text)
    return answers


def score(bundle: Bundle, items: list[CatalogueItem], answers: Answers) -> dict:
    """Per-attribute accuracy, macro-F1, majority baseline, top-3, ECE (calibrated and raw); per-class tables;
    caption BLEU-4, ROUGE-L and agreement with the labels."""
    metrics: dict = {"test_items": len(items)}
    for attribute in ALL_ATTRIBUTES:
        truth = [item.labels[attribute] for item in items]
        m = classification_metrics(truth, answers.labels[attribute], bundle.config.majority_label(attribute),
                                   answers.confidence[attribute], answers.top3[attribute])
        if attribute in CLASSIFIED_ATTRIBUTES and m.get("support"):
            rows = [i for i, t in enumerate(truth) if t]
            m["ece_uncalibrated"] = expected_calibration_error(
                [answers.raw_confidence[attribute][i] for i in rows],
                [truth[i] == answers.labels[attribute][i] for i in rows])
        if bundle.abstain_thresholds.get(attribute) and m.get("support"):
            sure = [i for i, t in enumerate(truth) if t and not answers.unsure[attribute][i]]
            m["abstain"] = {"threshold": bundle.abstain_thresholds[attribute],
                            "coverage": len(sure) / m["support"],
                            "accuracy_when_sure": float(np.mean([truth[i] == answers.labels[attribute][i]
                                                                 for i in sure])) if sure else 0.0}
        if attribute in TABLE_ATTRIBUTES:
            m["per_class"] = per_class_table(truth, answers.labels[attribute])
        metrics[attribute] = m
    caption = caption_metrics([item.name for item in items], answers.captions)
    if bundle.lexicon and caption.get("support"):
        predicted = [{a: answers.labels[a][i] for a in CAPTION_LABELS} for i in range(len(items))]
        served = consistency_rate(bundle.lexicon, answers.captions, predicted)
        decoder = consistency_rate(bundle.lexicon, answers.decoded_captions, predicted)
        caption["consistency"] = {**served, "decoder_all": decoder.get("all", 0.0)}
        caption["decoder_bleu"] = caption_metrics([item.name for item in items], answers.decoded_captions)["bleu"]
    metrics["productDisplayName"] = caption
    return metrics


def quality_warnings(metrics: dict, backbone_weights_random: bool) -> list[str]:
    """What a user of this bundle must know before trusting it."""
    warnings = []
    if backbone_weights_random:
        warnings.append("the backbone started from random weights (no pretrained weights were used)")
    for attribute in ALL_ATTRIBUTES:
        m = metrics.get(attribute, {})
        if m.get("support") and not is_clearly_learnt(m):
            warnings.append(
                f"{attribute} is not clearly above the majority baseline: accuracy {m['accuracy']:.3f} against "
                f"{m['majority_accuracy']:.3f} for always answering {m['majority_label']!r}"
                + (" -- this model has not learnt it; do not use it" if attribute in HEADLINE_ATTRIBUTES else ""))
    return warnings


def evaluate_bundle(bundle: Bundle, items: list[CatalogueItem], out: Path | None = None,
                    histories: dict[str, list[dict]] | None = None, batch_size: int = 64,
                    progress: bool = True) -> dict:
    """Score the bundle on `items`; with `out`, write metrics.json, report.md and the pictures there."""
    answers = predict_items(bundle, items, batch_size, progress)
    metrics = score(bundle, items, answers)
    if out is not None:
        write_report(out, bundle, items, answers, metrics, histories)
    return metrics


def select_items(bundle: Bundle, catalogue_items: list[CatalogueItem], split: str) -> list[CatalogueItem]:
    """`all` items, or the `test` split the bundle was trained with (same seed, same stratification)."""
    if split == "all":
        return catalogue_items
    arguments = bundle.config.training.get("arguments", {})
    limit = arguments.get("limit") or 0
    items = catalogue_items[:limit] if limit else catalogue_items
    _, _, test = stratified_split(items, lambda i: i.labels["articleType"], seed=arguments.get("seed", 42))
    return test


def best_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="enrich evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="bundle directory")
    parser.add_argument("--data", required=True, help="catalogue: styles.csv folder, save_to_disk folder or hub id")
    parser.add_argument("--split", choices=("all", "test"), default="all",
                        help="all items, or the bundle's own test split (when --data is its training catalogue)")
    parser.add_argument("--out", type=Path, help="write metrics.json, report.md and pictures here")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON instead of the table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from enrich_model.bundle_config import BundleError

    try:
        bundle = load_bundle(args.model, device=best_device(args.device))
        # --split test: the same dataset split the bundle was trained on (hub and disk datasets have several)
        dataset_split = bundle.config.training.get("arguments", {}).get("split", "train") \
            if args.split == "test" else "train"
        catalogue = load_catalogue(args.data, dataset_split)
    except (BundleError, DataError, OSError) as error:
        print(f"enrich evaluate: {error}", file=sys.stderr)
        return 2
    items = select_items(bundle, catalogue.items, args.split)
    metrics = evaluate_bundle(bundle, items, args.out, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"model {bundle.model_version} on {catalogue.source} ({args.split}: {len(items)} items)")
        print(format_metrics(metrics))
        for warning in quality_warnings(metrics, bundle.config.backbone.started_random):
            print(f"WARNING: {warning}")
        if args.out:
            print(f"report: {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
