"""What the heads stage trains: the backbone (when fine-tuning), the colour features and the heads, with the
loss, as one module the Hugging Face Trainer can run."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from enrich_model.encoding import encode
from enrich_model.model import AttributeHeads, TinyVitEncoder


def attribute_loss(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], label_smoothing: float = 0.0,
                   logit_adjustment: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Sum of per-attribute cross-entropies; -100 marks a missing label and is skipped. A multi-valued attribute's
    target is (N, values) of 0/1: the sum of its values' binary cross-entropies (each value a decision of its own,
    weighed as a single-valued attribute is; their mean would starve the backbone of what marks them), rows of
    -100 skipped.

    `logit_adjustment` (tau * log prior per class, Menon et al. 2021) is added to the logits for the loss
    only: the head then learns balanced scores, so rare classes are not drowned by frequent ones.
    """
    total = torch.zeros((), device=next(iter(logits.values())).device)
    for name, target in labels.items():
        if target.dim() == 2:
            known = target[:, 0] != -100
            if known.any():
                total = total + nn.functional.binary_cross_entropy_with_logits(
                    logits[name][known].float(), target[known].float(), reduction="sum") / known.sum()
            continue
        if (target != -100).any():
            scores = logits[name]
            if logit_adjustment and name in logit_adjustment:
                scores = scores + logit_adjustment[name].to(scores.device)
            total = total + nn.functional.cross_entropy(scores, target, ignore_index=-100,
                                                        label_smoothing=label_smoothing)
    return total


class AttributeClassifier(nn.Module):
    """forward() takes pixels, or features computed once (a frozen backbone), and returns the loss beside the
    logits, as the Hugging Face Trainer expects."""

    def __init__(self, heads: AttributeHeads, encoder: TinyVitEncoder | None, colour: Callable | None,
                 label_smoothing: float = 0.0, logit_adjustment: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.heads, self.encoder, self.colour = heads, encoder, colour
        self.label_smoothing = label_smoothing
        self.logit_adjustment = logit_adjustment

    def forward(self, pixel_values: torch.Tensor | None = None, pooled: torch.Tensor | None = None,
                colour: torch.Tensor | None = None, **labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if pooled is None:
            encoded = encode(self.encoder.features, self.colour, pixel_values)
            pooled, colour = encoded.pooled, encoded.colour
        logits = self.heads(pooled, colour)
        targets = {name.removeprefix("label_"): value for name, value in labels.items()}
        loss = attribute_loss(logits, targets, self.label_smoothing, self.logit_adjustment) if targets else None
        return {"loss": loss, **{f"logits_{k}": v for k, v in logits.items()}}
