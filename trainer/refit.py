"""Stage 1b: refit each head on the fine-tuned backbone's features (last-layer retraining).

Fine-tuning trains the heads together with a moving backbone, under dropout and augmentation, for a few
epochs: they end short of the best linear classifier that the final features allow. This stage encodes the
training images as they are and twice augmented (so that the fit keeps the robustness augmentation
taught), fits each head by L-BFGS with an L2 penalty chosen on the validation split (as it is and augmented
once), and keeps a refit only where it beats the fine-tuned head there by a clear margin. For colour
attributes it also tries the colour features alone: on small catalogues they separate colours better than
network features, which overfit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from enrich_data.catalogue import CatalogueItem
from enrich_model.metrics import label_f1s
from enrich_model.preprocess import Preprocessing
from enrich_model.schema import LabelVocab

from .arguments import TrainArguments
from .augment import Augment
from .classifier import AttributeClassifier
from .datasets import extract_features, label_tensors

log = logging.getLogger("enrich.train")
PENALTIES = (1e-4, 1e-3, 1e-2, 3e-2)  # L2 on the weights, per example: from nearly none to strong
AUGMENTED_PASSES = 2  # augmented copies of the training images in the fit
MIN_GAIN = 0.01  # on a few hundred validation images a smaller gain is noise: the fine-tuned head stays


@dataclass
class Candidate:
    name: str  # "fine-tuned", "refit", "colour only"
    weight: torch.Tensor
    bias: torch.Tensor
    score: float  # validation (accuracy + macro-F1) / 2
    penalty: float = 0.0


@torch.no_grad()
def refit_heads(classifier: AttributeClassifier, train_items: list[CatalogueItem], val_items: list[CatalogueItem],
                vocabs: dict[str, LabelVocab], preprocessing: Preprocessing, args: TrainArguments) -> dict[str, dict]:
    """Replace heads in place where a refit scores better on validation; returns what was chosen, per head."""
    classifier.eval()
    heads, encoder, colour = classifier.heads, classifier.encoder, classifier.colour
    augment = Augment(preprocessing.mean, preprocessing.std) if args.augment else None
    device = next(heads.parameters()).device

    def encode(items: list[CatalogueItem], passes: int, split: str) -> tuple[dict[str, torch.Tensor], dict]:
        """Head inputs and labels over `items` as they are, then `passes` augmented copies."""
        parts, labels = [], label_tensors(items, vocabs)
        for n in range(passes + 1):
            desc = f"refit: encode ({split}{', augmented' if n else ''})"
            f = extract_features(encoder, colour, items, preprocessing, args.eval_batch_size, desc, args.progress,
                                 augment=augment if n else None)
            parts.append(heads.head_inputs(f.pooled.to(device), f.colour.to(device) if f.colour is not None else None))
        # Heads without colour features all read the same pooled features: one copy for them, not one each.
        joined: dict[bool, torch.Tensor] = {}
        for name in heads.names:
            with_colour = name in heads.colour_attributes
            if with_colour not in joined:
                joined[with_colour] = torch.cat([p[name] for p in parts])
        return ({name: joined[name in heads.colour_attributes] for name in heads.names},
                {name: torch.cat([labels[f"label_{name}"]] * len(parts)).to(device) for name in heads.names})

    # Fitted on the training images and two augmented copies; judged on the validation images and one
    # augmented copy, so that a refit that is sharper on tidy images but less robust does not win.
    train_inputs, train_targets = encode(train_items, AUGMENTED_PASSES if augment else 0, "train")
    val_inputs, val_targets = encode(val_items, 1 if augment else 0, "validation")
    report = {}
    for name in heads.names:
        design, target = train_inputs[name], train_targets[name]
        val_design, val_target = val_inputs[name], val_targets[name]
        if target.dim() == 2 or not (target != -100).any() or not (val_target != -100).any():
            continue  # multi-valued heads keep their fine-tuned weights
        head = heads.heads[name]
        adjustment = (classifier.logit_adjustment or {}).get(name)
        candidates = [Candidate("fine-tuned", head.weight.clone(), head.bias.clone(),
                                score(head.weight, head.bias, val_design, val_target))]
        colour_only = name in heads.colour_attributes
        for penalty in PENALTIES:
            weight, bias = fit_linear(design, target, head.out_features, penalty, adjustment)
            candidates.append(Candidate("refit", weight, bias, score(weight, bias, val_design, val_target), penalty))
            if colour_only:
                pooled_width = heads.norm.num_features
                weight, bias = fit_linear(design[:, pooled_width:], target, head.out_features, penalty, adjustment)
                weight = torch.cat([torch.zeros(len(weight), pooled_width, device=device), weight], dim=1)
                candidates.append(Candidate("colour only", weight, bias,
                                            score(weight, bias, val_design, val_target), penalty))
        best = choose(candidates)
        head.weight.copy_(best.weight)
        head.bias.copy_(best.bias)
        report[name] = {"kept": best.name, "penalty": best.penalty, "validation_score": round(best.score, 4),
                        "fine_tuned_score": round(candidates[0].score, 4)}
        log.info("refit %s: %s (validation %.3f, fine-tuned head %.3f)", name, best.name, best.score,
                 candidates[0].score)
    return report


def choose(candidates: list[Candidate]) -> Candidate:
    """The best-scoring candidate, unless it beats the fine-tuned head (the first) by less than MIN_GAIN."""
    best = max(candidates, key=lambda c: c.score)
    return best if best.score >= candidates[0].score + MIN_GAIN else candidates[0]


def score(weight: torch.Tensor, bias: torch.Tensor, design: torch.Tensor, target: torch.Tensor) -> float:
    keep = target != -100
    predicted = (design[keep] @ weight.T + bias).argmax(-1)
    truth = target[keep]
    accuracy = float((predicted == truth).float().mean())
    f1s = label_f1s(truth.tolist(), predicted.tolist())
    return (accuracy + (float(np.mean(f1s)) if f1s else 0.0)) / 2


def fit_linear(design: torch.Tensor, target: torch.Tensor, classes: int, penalty: float,
               adjustment: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by full-batch L-BFGS; `adjustment` (logit adjustment) as in training."""
    keep = target != -100
    design, target = design[keep], target[keep]
    with torch.enable_grad():
        linear = torch.nn.Linear(design.shape[1], classes, device=design.device)
        torch.nn.init.zeros_(linear.weight)
        torch.nn.init.zeros_(linear.bias)
        optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=300, line_search_fn="strong_wolfe")
        shift = adjustment.to(design.device) if adjustment is not None else 0.0

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(linear(design) + shift, target) \
                + penalty * linear.weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
    return linear.weight.detach(), linear.bias.detach()
