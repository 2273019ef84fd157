"""What a calibrated confidence means for one bundle: below which an answer is unsure, from which it is accepted
without review, and from which a multi-valued attribute's value is listed. Read from the bundle's HeadsConfig;
the pipeline answers with it and the audit judges with it, so the two cannot disagree. Torch-free."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

NEVER_ACCEPTED = 1.01  # the accept threshold of what has none: no probability reaches it
MULTI_DEFAULT_THRESHOLD = 0.5  # a multi-valued value's listing probability where training chose none


@dataclass(frozen=True)
class Thresholds:
    """Per attribute: below `abstain` unsure, from `accept` accepted without review; a multi-valued attribute's
    values listed from `value` and accepted from `value_accept` (per value)."""

    abstain: dict[str, float] = field(default_factory=dict)
    accept: dict[str, float] = field(default_factory=dict)
    value: dict[str, dict[str, float]] = field(default_factory=dict)
    value_accept: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, heads, multi: Iterable[str]) -> Thresholds:
        """From a HeadsConfig; `multi`: the multi-valued attributes."""
        return cls(dict(heads.abstain_thresholds), dict(heads.accept_thresholds),
                   {a: dict(heads.value_thresholds.get(a, {})) for a in multi},
                   {a: dict(heads.value_accept_thresholds.get(a, {})) for a in multi})

    def accepted(self, attribute: str, confidence: float) -> bool:
        return confidence >= self.accept.get(attribute, NEVER_ACCEPTED)

    def listed(self, attribute: str, value: str, probability: float) -> bool:
        """Whether a multi-valued attribute's value is shown in the image."""
        return probability >= self.value.get(attribute, {}).get(value, MULTI_DEFAULT_THRESHOLD)

    def value_accepted(self, attribute: str, value: str, probability: float) -> bool:
        return probability >= self.value_accept.get(attribute, {}).get(value, NEVER_ACCEPTED)
