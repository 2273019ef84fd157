"""What a bundle's answers are worth: per-attribute accuracy, macro-F1, baselines, calibration, captions.

Torch-free (numpy only; caption scores import sacrebleu and rouge-score when asked), so `enrich info`
can format a bundle's metrics without loading a model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from .fashion import CAPTION_ATTRIBUTE

CALIBRATION_BINS = 15


def reliability_curve(confidences: Sequence[float], correct: Sequence[bool],
                      bins: int = CALIBRATION_BINS) -> list[tuple[float, float, int]]:
    """(mean confidence, accuracy, count) per non-empty equal-width confidence bin."""
    confidence = np.asarray(confidences, dtype=float)
    hit = np.asarray(correct, dtype=float)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return [(float(confidence[which == b].mean()), float(hit[which == b].mean()), int((which == b).sum()))
            for b in range(bins) if (which == b).any()]


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool],
                               bins: int = CALIBRATION_BINS) -> float:
    """ECE: the gap between confidence and accuracy per confidence bin, weighted by the bin's share."""
    curve = reliability_curve(confidences, correct, bins)
    total = sum(count for _, _, count in curve)
    return float(sum(count / total * abs(accuracy - confidence) for confidence, accuracy, count in curve)) \
        if total else 0.0


def label_f1s(truth: Sequence, predicted: Sequence) -> list[float]:
    """F1 of each label present in the truth or the prediction (None is no label)."""
    scores = []
    for label in sorted({t for t in truth if t is not None} | {p for p in predicted if p is not None}):
        tp = sum(t == label and p == label for t, p in zip(truth, predicted, strict=True))
        wrong = sum((t == label) != (p == label) for t, p in zip(truth, predicted, strict=True))
        scores.append(2 * tp / (2 * tp + wrong) if tp else 0.0)
    return scores


def classification_metrics(truth: Sequence[str | None], predicted: Sequence[str], majority: str | None,
                           confidences: Sequence[float] | None = None,
                           top3: Sequence[Sequence[str]] | None = None) -> dict:
    """Accuracy, macro-F1 over the classes present in truth or prediction, the majority baseline
    (always answering the most common training label), and, when given, top-3 accuracy and ECE."""
    rows = [i for i, t in enumerate(truth) if t]
    if not rows:
        return {"support": 0}
    pairs = [(truth[i], predicted[i]) for i in rows]
    truths = [t for t, _ in pairs]
    majority_predictions = [majority] * len(pairs)
    metrics = {
        "accuracy": sum(t == p for t, p in pairs) / len(pairs),
        "macro_f1": float(np.mean(label_f1s(truths, [p for _, p in pairs]))),
        "majority_label": majority,
        "majority_accuracy": sum(t == majority for t, _ in pairs) / len(pairs),
        "majority_macro_f1": float(np.mean(label_f1s(truths, majority_predictions))),
        "support": len(pairs),
        "classes": len({t for t, _ in pairs}),
    }
    if top3 is not None:
        metrics["top3_accuracy"] = sum(truth[i] in top3[i][:3] for i in rows) / len(rows)
    if confidences is not None:
        metrics["ece"] = expected_calibration_error([confidences[i] for i in rows], [t == p for t, p in pairs])
    return metrics


def coverage_metrics(truth: Sequence[str | None], predicted: Sequence[str], accepted: Sequence[bool]) -> dict:
    """The share of labelled items whose label was accepted without review, and how often those were right."""
    rows = [i for i, t in enumerate(truth) if t]
    taken = [i for i in rows if accepted[i]]
    return {"coverage": len(taken) / len(rows) if rows else 0.0,
            "precision_when_accepted": sum(truth[i] == predicted[i] for i in taken) / len(taken) if taken else 0.0}


def multi_label_metrics(truth: Sequence[Sequence[str] | None], predicted: Sequence[Sequence[str]],
                        accepted: Sequence[Sequence[str]], labels: Sequence[str]) -> dict:
    """A multi-valued attribute: precision, recall and F1 per value, their micro and macro averages over the
    items (an empty list: none of the values; None: not known), and the share of listed values accepted (with
    their precision)."""
    rows = [i for i, t in enumerate(truth) if t is not None]
    if not rows:
        return {"support": 0}
    per_value, totals = [], Counter()
    for label in labels:
        tp = sum(label in truth[i] and label in predicted[i] for i in rows)
        fp = sum(label not in truth[i] and label in predicted[i] for i in rows)
        fn = sum(label in truth[i] and label not in predicted[i] for i in rows)
        totals.update(tp=tp, fp=fp, fn=fn)
        precision, recall = (tp / (tp + fp) if tp + fp else 0.0), (tp / (tp + fn) if tp + fn else 0.0)
        per_value.append({"label": label, "precision": precision, "recall": recall,
                          "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0, "support": tp + fn})
    tp, fp, fn = totals["tp"], totals["fp"], totals["fn"]
    listed = [(i, v) for i in rows for v in predicted[i]]
    taken = [(i, v) for i in rows for v in accepted[i]]
    return {"micro_f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
            "macro_f1": float(np.mean([v["f1"] for v in per_value if v["support"]] or [0.0])),
            "micro_precision": tp / (tp + fp) if tp + fp else 0.0, "micro_recall": tp / (tp + fn) if tp + fn else 0.0,
            "coverage": len(taken) / len(listed) if listed else 0.0,
            "precision_when_accepted": sum(v in truth[i] for i, v in taken) / len(taken) if taken else 0.0,
            "exact_match": sum(set(truth[i]) == set(predicted[i]) for i in rows) / len(rows),
            "per_value": per_value, "support": len(rows), "kind": "multi"}


def per_class_table(truth: Sequence[str | None], predicted: Sequence[str]) -> list[dict]:
    """Precision, recall and support per true class, most frequent first."""
    pairs = [(t, p) for t, p in zip(truth, predicted, strict=True) if t]
    support = Counter(t for t, _ in pairs)
    table = []
    for label, n in support.most_common():
        tp = sum(t == label and p == label for t, p in pairs)
        predicted_n = sum(p == label for _, p in pairs)
        table.append({"label": label, "precision": tp / predicted_n if predicted_n else 0.0,
                      "recall": tp / n, "support": n})
    return table


def caption_metrics(references: Sequence[str | None], hypotheses: Sequence[str]) -> dict:
    """Corpus BLEU-4 (sacrebleu) and mean ROUGE-L F1 (rouge-score): BLEU rewards exact n-grams, ROUGE-L
    the longest common word order, which suits short names whose words may shift."""
    import sacrebleu
    from absl import logging as absl_logging
    from rouge_score import rouge_scorer

    absl_logging.set_verbosity(absl_logging.WARNING)  # rouge-score logs "Using default tokenizer" per scorer
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r]
    if not pairs:
        return {"support": 0}
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = [scorer.score(r, h)["rougeL"].fmeasure for r, h in pairs]
    return {
        "bleu": sacrebleu.corpus_bleu(hyps, [refs]).score,
        "rouge_l": float(np.mean(rouge)),
        "exact_match": sum(r == h for r, h in pairs) / len(pairs),
        "support": len(pairs),
    }


def is_clearly_learnt(metrics: dict, min_gain: float = 0.05, min_error_reduction: float = 0.1) -> bool:
    """Clearly above always answering the majority label: `min_gain` more accuracy, or `min_error_reduction`
    of the majority's errors removed (a high baseline leaves little room for a fixed gain)."""
    accuracy, majority = metrics["accuracy"], metrics["majority_accuracy"]
    gain = accuracy - majority
    return gain >= min_gain or (majority < 1 and gain / (1 - majority) >= min_error_reduction)


def format_metrics(metrics: dict) -> str:
    """The test metrics as a fixed-width table (one row per attribute, in the schema's order, then the caption's
    scores). Coverage: the share accepted without review, at the bundle's target precision."""
    lines = [f"{'attribute':<16}{'accuracy':>9}{'macro-F1':>9}{'majority':>9}{'top-3':>7}{'ECE':>7}{'ECE raw':>8}"
             f"{'coverage':>9}{'n':>6}"]
    # Metrics written before schemas were data keep the caption's scores under Fashion Product Images' column.
    caption_column = metrics.get("caption_column", CAPTION_ATTRIBUTE)
    for attribute, m in metrics.items():
        if not isinstance(m, dict) or not m.get("support") or attribute == caption_column:
            continue
        coverage = f"{m['coverage']:>9.3f}" if "coverage" in m else f"{'':>9}"
        if m.get("kind") == "multi":
            lines.append(f"{attribute:<16}{'micro-F1':>9}{m['micro_f1']:>9.3f}{'':>9}{'':>7}{'':>7}{'':>8}"
                         f"{coverage}{m['support']:>6}")
            continue
        if "accuracy" not in m:
            continue
        top3 = f"{m['top3_accuracy']:>7.3f}" if "top3_accuracy" in m else f"{'':>7}"
        ece = f"{m['ece']:>7.3f}" if "ece" in m else f"{'':>7}"
        raw = f"{m['ece_uncalibrated']:>8.3f}" if "ece_uncalibrated" in m else f"{'':>8}"
        lines.append(f"{attribute:<16}{m['accuracy']:>9.3f}{m['macro_f1']:>9.3f}{m['majority_accuracy']:>9.3f}"
                     f"{top3}{ece}{raw}{coverage}{m['support']:>6}")
    caption = metrics.get(caption_column, {})
    if caption.get("support"):
        text = f"{caption_column}: BLEU-4 {caption['bleu']:.1f}"
        if "rouge_l" in caption:
            text += f", ROUGE-L {caption['rouge_l']:.3f}"
        text += f", exact match {caption['exact_match']:.3f}"
        consistency = caption.get("consistency")
        if consistency:
            text += f", agrees with the labels {consistency['all']:.3f}"
            if "decoder_all" in consistency:
                text += f" (decoder alone {consistency['decoder_all']:.3f})"
        lines.append(text + f" (n={caption['support']})")
    if "served_as" in metrics:
        lines.append(f"measured as served: {metrics['served_as']}")
    return "\n".join(lines)
