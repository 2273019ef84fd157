"""`enrich evaluate`: a bundle, as it is served, on a labelled catalogue.

    enrich evaluate --model BUNDLE --data CATALOGUE [--split test|all] [--out DIR] [--backend B --precision P]

Every image goes through `EnrichPipeline` on the backend and precision `enrich serve` would choose (or the
ones named): its file's bytes decoded and preprocessed as a request's, one encoder pass, calibrated heads,
captions made to agree with the labels. Training runs the same on the bundle it has just written and loaded
back, so the metrics in a bundle describe what serves, and say what they were measured on.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm
from transformers.utils import logging as hf_logging

from enrich_data.catalogue import CatalogueItem, DataError, load_catalogue
from enrich_model.answers import CaptionMode, ItemOptions
from enrich_model.bundle import Bundle
from enrich_model.consistency import consistency_rate
from enrich_model.metrics import (
    caption_metrics,
    classification_metrics,
    coverage_metrics,
    expected_calibration_error,
    format_metrics,
    is_clearly_learnt,
    multi_label_metrics,
    per_class_table,
)
from enrich_model.options import RuntimeOptions, add_options, from_arguments
from enrich_model.pipeline import EnrichPipeline
from enrich_model.schema import OTHER, CatalogueSchema
from enrich_model.thresholds import NEVER_ACCEPTED

from .answers import Answers
from .report import table_attributes, write_report
from .split import stratified_split, stratum

MIN_ACCEPTED = 10  # fewest validation predictions an accept threshold is judged on


def predict_items(pipeline: EnrichPipeline, items: list[CatalogueItem], batch_size: int = 64,
                  progress: bool = True) -> Answers:
    answers = Answers(pipeline.bundle.schema)
    options = ItemOptions(top_k=3, caption_mode=CaptionMode.GENERATE)  # top 3: the report's top-3 accuracy
    for start in tqdm(range(0, len(items), batch_size), desc="evaluate", unit="batch", disable=not progress):
        chunk = items[start:start + batch_size]
        pixels = np.stack([pipeline.decode(item.read_bytes())[1] for item in chunk])
        for prediction in pipeline.predict(pixels, [options] * len(chunk)):
            answers.add(prediction)
    return answers


def served_as(pipeline: EnrichPipeline) -> str:
    return f"{pipeline.backend.choice} on {pipeline.device}"


def score(bundle: Bundle, items: list[CatalogueItem], answers: Answers) -> dict:
    """Per-attribute accuracy, macro-F1, majority baseline, top-3, ECE (calibrated and raw), coverage at the
    target precision; multi-valued attributes' precision and recall per value and micro/macro-F1; per-class
    tables; caption BLEU-4, ROUGE-L and agreement with the labels."""
    schema = bundle.schema
    metrics: dict = {"test_items": len(items), "target_precision": bundle.config.heads.target_precision}
    for spec in schema:
        attribute = spec.name
        if spec.multi:
            truth_values = [spec.values(item.labels.get(attribute)) for item in items]  # empty: none of them
            metrics[attribute] = multi_label_metrics(truth_values, answers.values[attribute],
                                                     answers.accepted_values[attribute],
                                                     bundle.vocabs[attribute].labels)
            continue
        truth = [item.labels.get(attribute) for item in items]
        m = classification_metrics(truth, answers.labels[attribute], bundle.config.majority_label(attribute),
                                   answers.confidence[attribute], answers.top3[attribute])
        if not m.get("support"):
            metrics[attribute] = m
            continue
        m.update(coverage_metrics(truth, answers.labels[attribute], answers.accepted[attribute]))
        if not spec.derived:
            rows = [i for i, t in enumerate(truth) if t]
            m["ece_uncalibrated"] = expected_calibration_error(
                [answers.raw_confidence[attribute][i] for i in rows],
                [truth[i] == answers.labels[attribute][i] for i in rows])
        if bundle.abstain_thresholds.get(attribute):
            sure = [i for i, t in enumerate(truth) if t and not answers.unsure[attribute][i]]
            m["abstain"] = {"threshold": bundle.abstain_thresholds[attribute],
                            "coverage": len(sure) / m["support"],
                            "accuracy_when_sure": float(np.mean([truth[i] == answers.labels[attribute][i]
                                                                 for i in sure])) if sure else 0.0}
        if attribute in table_attributes(schema):
            m["per_class"] = per_class_table(truth, answers.labels[attribute])
        metrics[attribute] = m
    if schema.caption:
        metrics["caption_column"] = schema.caption
        caption = caption_metrics([item.name for item in items], answers.captions)
        if bundle.lexicon and caption.get("support"):
            predicted = [{a: answers.labels[a][i] for a in schema.headline} for i in range(len(items))]
            served = consistency_rate(bundle.lexicon, answers.captions, predicted)
            decoder = consistency_rate(bundle.lexicon, answers.decoded_captions, predicted)
            caption["consistency"] = {**served, "decoder_all": decoder.get("all", 0.0)}
            caption["decoder_bleu"] = caption_metrics([item.name for item in items], answers.decoded_captions)["bleu"]
        metrics[schema.caption] = caption
    return metrics


def quality_warnings(metrics: dict, backbone_weights_random: bool, schema: CatalogueSchema) -> list[str]:
    """What a user of this bundle must know before trusting it."""
    warnings = []
    if backbone_weights_random:
        warnings.append("the backbone started from random weights (no pretrained weights were used)")
    for attribute in schema.names:
        m = metrics.get(attribute, {})
        if m.get("support") and "majority_accuracy" in m and not is_clearly_learnt(m):
            warnings.append(
                f"{attribute} is not clearly above the majority baseline: accuracy {m['accuracy']:.3f} against "
                f"{m['majority_accuracy']:.3f} for always answering {m['majority_label']!r}"
                + (" -- this model has not learnt it; do not use it" if attribute in schema.headline else ""))
    return warnings


def accept_threshold(confidences: np.ndarray, correct: np.ndarray, target: float,
                     min_accepted: int = MIN_ACCEPTED) -> float:
    """The lowest confidence from which the accepted predictions reach `target` precision, over at least
    `min_accepted` of them; above 1 when none do (nothing is accepted)."""
    order = np.argsort(-confidences, kind="stable")
    ranked = confidences[order]
    running = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    # A threshold accepts every answer at its confidence: cut only where the next one is lower.
    ends = np.append(ranked[1:] < ranked[:-1], True)
    reaching = np.nonzero((running >= target) & ends)[0]
    reaching = reaching[reaching + 1 >= min(min_accepted, len(order))]
    return float(ranked[reaching[-1]]) if len(reaching) else NEVER_ACCEPTED


def best_f1_threshold(probabilities: np.ndarray, truth: np.ndarray) -> float:
    """The probability from which a value is listed that gives the best F1 on validation (0.5 without positives)."""
    if not truth.any():
        return 0.5
    order = np.argsort(-probabilities, kind="stable")
    ranked = probabilities[order]
    tp = np.cumsum(truth[order])
    f1 = 2 * tp / (np.arange(1, len(order) + 1) + truth.sum())
    f1[:-1][ranked[1:] >= ranked[:-1]] = -1.0  # a cut inside a run of equal probabilities is not a threshold
    return float(ranked[int(np.argmax(f1))])


def choose_accept_thresholds(pipeline: EnrichPipeline, items: list[CatalogueItem], args) -> None:
    """Per attribute (and per value of a multi-valued one), the thresholds that reach the target precision on
    `items` (the validation split), as served; set on the pipeline and its bundle's config."""
    bundle, schema = pipeline.bundle, pipeline.bundle.schema
    heads = bundle.config.heads
    distributions = validation_distributions(pipeline, items, args.eval_batch_size)
    labels = pipeline.labels | pipeline.parents.labels
    heads.accept_thresholds, heads.value_thresholds, heads.value_accept_thresholds = {}, {}, {}
    for spec in schema:
        probabilities, names = distributions[spec.name], labels[spec.name]
        if spec.multi:
            held = [set(spec.values(item.labels.get(spec.name))) for item in items]
            truth = np.array([[v in values for v in names] for values in held], bool)
            heads.value_thresholds[spec.name] = {v: best_f1_threshold(probabilities[:, j], truth[:, j])
                                                 for j, v in enumerate(names)}
            heads.value_accept_thresholds[spec.name] = {
                v: accept_threshold(probabilities[:, j], truth[:, j], heads.target_precision)
                for j, v in enumerate(names)}
            continue
        known = set(names)
        rows = [i for i, item in enumerate(items) if item.labels.get(spec.name) in known]
        if not rows:
            continue
        predicted = probabilities[rows].argmax(axis=1)
        correct = np.array([names[p] == items[i].labels[spec.name] for p, i in zip(predicted, rows, strict=True)])
        heads.accept_thresholds[spec.name] = accept_threshold(probabilities[rows].max(axis=1), correct,
                                                              heads.target_precision)
    pipeline.use_thresholds(heads)


def validation_distributions(pipeline: EnrichPipeline, items: list[CatalogueItem],
                             batch_size: int) -> dict[str, np.ndarray]:
    """Every attribute's calibrated distribution over `items`, as served: attribute -> (N, labels)."""
    collected: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        pixels = np.stack([pipeline.decode(item.read_bytes())[1] for item in chunk])
        calibrated, _ = pipeline.probabilities(pipeline.encode(pixels))
        for row in range(len(chunk)):
            for attribute, distribution in pipeline.parents.distributions(
                    {a: p[row] for a, p in calibrated.items()}).items():
                collected.setdefault(attribute, []).append(distribution)
    return {a: np.stack(rows) for a, rows in collected.items()}


def evaluate(pipeline: EnrichPipeline, items: list[CatalogueItem], batch_size: int = 64,
             progress: bool = True) -> tuple[dict, Answers]:
    """The pipeline's answers on `items` and their scores (which also say what they were measured on)."""
    answers = predict_items(pipeline, items, batch_size, progress)
    metrics = score(pipeline.bundle, items, answers)
    metrics["served_as"] = served_as(pipeline)
    return metrics, answers


def select_items(bundle: Bundle, catalogue_items: list[CatalogueItem], split: str) -> list[CatalogueItem]:
    """`all` items, or the `test` split the bundle was trained with (same seed, same stratification)."""
    if split == "all":
        return catalogue_items
    arguments = bundle.config.training.get("arguments", {})
    limit = arguments.get("limit") or 0
    items = catalogue_items[:limit] if limit else catalogue_items
    _, _, test = stratified_split(items, stratum(bundle.schema), seed=arguments.get("seed", 42))
    return test


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enrich evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="bundle directory")
    parser.add_argument("--data", required=True, help="catalogue: styles.csv folder, save_to_disk folder or hub id")
    parser.add_argument("--split", choices=("all", "test"), default="all",
                        help="all items, or the bundle's own test split (when --data is its training catalogue)")
    parser.add_argument("--out", type=Path, help="write metrics.json, report.md, predictions.csv and pictures here")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON instead of the table")
    add_options(parser, RuntimeOptions)  # as `enrich serve` runs the bundle, by default
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    hf_logging.disable_progress_bar()  # "Loading weights" says nothing here
    from enrich_model.bundle_config import BundleError
    from enrich_model.options import BackendError

    try:
        pipeline = EnrichPipeline.load(args.model, from_arguments(RuntimeOptions, args))
        bundle = pipeline.bundle
        # --split test: the same dataset split the bundle was trained on (hub and disk datasets have several)
        dataset_split = bundle.config.training.get("arguments", {}).get("split", "train") \
            if args.split == "test" else "train"
        catalogue = load_catalogue(args.data, dataset_split, schema=bundle.schema)
        if bundle.config.training.get("rare_values") == OTHER:  # score the labels as the heads learnt them
            catalogue.fold_into_other(bundle.config.training.get("rare", {}))
    except (BundleError, BackendError, DataError, OSError) as error:
        print(f"enrich evaluate: {error}", file=sys.stderr)
        return 2
    items = select_items(bundle, catalogue.items, args.split)
    metrics, answers = evaluate(pipeline, items, args.batch_size)
    if args.out:
        write_report(args.out, bundle, items, answers, metrics)
    if args.json:
        print(json.dumps(metrics))
        return 0
    print(f"model {bundle.model_version} on {catalogue.source} ({args.split}: {len(items)} items)")
    print(format_metrics(metrics))
    for warning in quality_warnings(metrics, bundle.config.backbone.started_random, bundle.schema):
        print(f"WARNING: {warning}")
    if args.out:
        print(f"report: {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
