"""Calibration on the validation split (as it is and, with augmentation on, augmented once): one temperature
per head, and optional abstain thresholds.

A network trained to low loss is over-confident on new images. Dividing each head's logits by a
temperature fitted to the validation split (Guo et al. 2017) makes "0.9" mean right nine times in ten
without changing any label. The temperature is fitted by likelihood, as usual, but kept only where it lowers
the validation ECE: a head that is calibrated already (a refit logistic regression often is) gains nothing,
and a likelihood-optimal temperature can still move its confidences off the diagonal. Abstain thresholds
then say, per attribute, below which confidence a prediction is too unsure to use as is.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import DataLoader

from enrich_model.metrics import expected_calibration_error

from .classifier import AttributeClassifier

log = logging.getLogger("enrich.train")


@torch.no_grad()
def validation_logits(classifier: AttributeClassifier, dataset, batch_size: int) -> dict[str, tuple]:
    """attribute -> (logits (N, K), targets (N,)) over the labelled validation items."""
    classifier.eval()
    device = next(classifier.parameters()).device
    collected: dict[str, list] = {}
    for batch in DataLoader(dataset, batch_size=batch_size):
        inputs = {k: v.to(device) for k, v in batch.items() if not k.startswith("label_")}
        outputs = classifier(**inputs)
        for key, logits in outputs.items():
            if key.startswith("logits_"):
                name = key.removeprefix("logits_")
                collected.setdefault(name, []).append((logits.float().cpu(), batch[f"label_{name}"]))
    result = {}
    for name, parts in collected.items():
        logits, targets = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        keep = targets[:, 0] != -100 if targets.dim() == 2 else targets != -100
        result[name] = (logits[keep], targets[keep])
    return result


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature that minimises the negative log-likelihood of `targets` (LBFGS on log T); for a
    multi-valued head ((N, values) targets of 0/1), of each value's sigmoid."""
    if not len(targets):
        return 1.0
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    nll = torch.nn.functional.binary_cross_entropy_with_logits if targets.dim() == 2 \
        else torch.nn.functional.cross_entropy

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nll(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def choose_temperature(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """The likelihood-optimal temperature where it lowers the expected calibration error, else 1. A multi-valued
    head's error is over every value's probability against whether the item has it."""
    fitted = fit_temperature(logits, targets)
    if targets.dim() == 2:
        truth = (targets > 0.5).reshape(-1).numpy()
        ece_before = expected_calibration_error(logits.sigmoid().reshape(-1).numpy(), truth)
        ece_fitted = expected_calibration_error((logits / fitted).sigmoid().reshape(-1).numpy(), truth)
    else:
        before = logits.softmax(-1).max(-1)
        correct = (before.indices == targets).numpy()
        ece_before = expected_calibration_error(before.values.numpy(), correct)
        ece_fitted = expected_calibration_error((logits / fitted).softmax(-1).max(-1).values.numpy(), correct)
    temperature, ece_after = (fitted, ece_fitted) if ece_fitted < ece_before else (1.0, ece_before)
    return {"temperature": temperature, "fitted_temperature": fitted, "ece_before": ece_before,
            "ece_after": ece_after}


def calibrate(classifier: AttributeClassifier, val_set, batch_size: int,
              abstain_accuracy: float = 0.0) -> tuple[dict[str, dict], dict[str, float]]:
    """Set the heads' temperatures in place; return the validation report per attribute and, when
    `abstain_accuracy` is set, the confidence thresholds that reach it."""
    heads = classifier.heads
    report, thresholds = {}, {}
    for name, (logits, targets) in validation_logits(classifier, val_set, batch_size).items():
        report[name] = choose_temperature(logits, targets)
        temperature = report[name]["temperature"]
        heads.temperature[heads.names.index(name)] = temperature
        if targets.dim() == 2:  # multi-valued: no single label to abstain on
            continue
        after = (logits / temperature).softmax(-1).max(-1)
        correct = (after.indices == targets).numpy()
        if abstain_accuracy:
            threshold = abstain_threshold(after.values.numpy(), correct, abstain_accuracy)
            if threshold is not None:
                thresholds[name] = threshold
                report[name]["abstain_threshold"] = threshold
        log.info("calibration %s: T=%.2f (fitted %.2f), validation ECE %.3f -> %.3f", name, temperature,
                 report[name]["fitted_temperature"], report[name]["ece_before"], report[name]["ece_after"])
    return report, thresholds


def abstain_threshold(confidences: np.ndarray, correct: np.ndarray, target: float,
                      min_answered: int = 20) -> float | None:
    """The lowest confidence above which the answered predictions reach `target` accuracy; None when all of
    them already do (no need to abstain) or when too few predictions would remain to tell."""
    order = np.argsort(-confidences)
    running = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    if not len(order) or running[-1] >= target:
        return None
    reaching = np.nonzero(running >= target)[0]
    reaching = reaching[reaching + 1 >= min_answered]
    if not len(reaching):
        return float(confidences.max()) + 1e-6  # nothing is reliable enough: flag every prediction
    return float(confidences[order][reaching[-1]])
