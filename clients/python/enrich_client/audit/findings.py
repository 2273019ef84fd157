"""From the server's answers to the audit's findings: the catalogue's error rate per attribute, estimated
from the whole run, and every finding's p_wrong under that estimate, worst first."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from enrich_contract.posterior import DEFAULT_ERROR_PRIOR, p_wrong_given

CHECKED = ("agrees", "disagrees")  # the kinds whose p_wrong depends on the prior
BOOTSTRAP_RUNS = 200
BOOTSTRAP_ROWS = 5_000  # resampled whole up to this many rows; above, a subsample of this many


@dataclass
class FindingRow:
    """One line of findings.csv."""

    id: str
    attribute: str
    kind: str  # agrees, disagrees, filled, unknown_label, unchecked
    supplied: str
    predicted: str
    p_supplied: float
    p_predicted: float
    p_wrong: float  # under the catalogue's estimated error rate (names: under the request's prior)
    supplied_label: str = ""
    level: str = ""  # where articleType/subCategory disagree: article_type, sub_category or master_category
    accepted: bool = False  # `predicted` reaches its accept threshold: a disagreement to fix without review

    def csv(self) -> dict:
        return dict(vars(self)) | {k: f"{getattr(self, k):.6g}" for k in ("p_supplied", "p_predicted", "p_wrong")} \
            | {"accepted": int(self.accepted)}


@dataclass
class ErrorRate:
    """A catalogue attribute's estimated share of wrong values among those the model could check."""

    rate: float
    low: float  # 95 % bootstrap interval
    high: float
    checked: int
    confusable_share: float  # of the wrong values, the share that are labels the model finds confusable


class Confusions:
    """How the model's probability spreads from each label to the others over the whole catalogue (its top
    alternatives' products), row-normalised: which labels look alike to it, and so to a person. Sums, added batch
    by batch."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.counts = np.zeros((size, size))

    def add(self, labels: np.ndarray, confidences: np.ndarray) -> None:
        """Rows of ranked alternatives: label indices (n, k), -1 where none or unknown, and their confidences."""
        known = labels >= 0
        p = np.where(known, confidences, 0.0)
        at = np.where(known, labels, 0)
        np.add.at(self.counts, (at[:, :, None], at[:, None, :]), p[:, :, None] * p[:, None, :])

    @property
    def share(self) -> np.ndarray:
        counts = self.counts.copy()
        np.fill_diagonal(counts, 0.0)
        total = counts.sum(axis=1, keepdims=True)
        share = np.where(total > 0, counts / np.maximum(total, 1e-300), 1.0 / max(1, self.size - 1))
        np.fill_diagonal(share, 0.0)
        return share

    def mistake(self, supplied: np.ndarray, labels: np.ndarray, confidences: np.ndarray) -> np.ndarray:
        """w when mistakes are confusions: per row, the chance of writing label `supplied` for what the image
        shows (its ranked alternatives other than the supplied one)."""
        share = self.share
        others = (labels >= 0) & (labels != supplied[:, None])
        spread = share[np.where(labels >= 0, labels, 0), supplied[:, None]]
        return (np.where(others, confidences, 0.0) * spread).sum(axis=1)


def estimate_error_rate(p_supplied: np.ndarray, uniform: np.ndarray, confusable: np.ndarray,
                        start: float = DEFAULT_ERROR_PRIOR, runs: int = BOOTSTRAP_RUNS, seed: int = 0) -> ErrorRate:
    """Expectation-maximisation of a two-part catalogue: values are wrong with probability `rate`, and a wrong
    value is a confusable label with probability `confusable_share`, any label otherwise. Maximum likelihood
    on the rows; the interval from bootstrap resamples of them, each started from the rows' estimate. Above
    BOOTSTRAP_ROWS rows the resamples are of a random subsample of that many, and their spread is scaled to the
    whole by the square root of the sizes (m-out-of-n bootstrap): memory stays bounded."""
    if len(p_supplied) == 0:
        return ErrorRate(0.0, 0.0, 0.0, 0, 0.0)
    columns = [np.asarray(values, np.float64)[None, :] for values in (p_supplied, uniform, confusable)]
    rate, share = _expectation_maximisation(*columns, np.array([[start]]), np.array([[0.5]]))
    rng = np.random.default_rng(seed)
    rows = len(p_supplied)
    sample = None if rows <= BOOTSTRAP_ROWS else np.sort(rng.choice(rows, BOOTSTRAP_ROWS, replace=False))
    drawn = [column[0] if sample is None else column[0][sample] for column in columns]
    centre = rate[0, 0] if sample is None else \
        _expectation_maximisation(*(d[None, :] for d in drawn), rate, share)[0][0, 0]
    pick = rng.integers(0, len(drawn[0]), (runs, len(drawn[0])))
    rates, _ = _expectation_maximisation(*(d[pick] for d in drawn), np.full((runs, 1), centre),
                                         np.full((runs, 1), share[0, 0]))
    low, high = np.percentile(rates[:, 0], [2.5, 97.5])
    if sample is not None:
        scale = np.sqrt(BOOTSTRAP_ROWS / rows)
        low, high = (float(np.clip(rate[0, 0] + (bound - centre) * scale, 0.0, 1.0)) for bound in (low, high))
    return ErrorRate(float(rate[0, 0]), float(low), float(high), rows, float(share[0, 0]))


def mixed_mistake(uniform, confusable, share):
    """w when a share of mistakes are confusions and the rest any label alike."""
    return (1 - share) * uniform + share * confusable


def _expectation_maximisation(p: np.ndarray, uniform: np.ndarray, confusable: np.ndarray, rate: np.ndarray,
                              share: np.ndarray, steps: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(rate, share) per row of the (runs, rows) arrays, from the given start, to a hundred-thousandth (EM
    creeps towards a rate near 0: it is close long before it is there)."""
    for _ in range(steps):
        mistake = mixed_mistake(uniform, confusable, share)
        wrong = p_wrong_given(p, mistake, rate)
        new_rate = np.clip(wrong.mean(axis=1, keepdims=True), 1e-6, 1 - 1e-6)
        new_share = (wrong * share * confusable / np.maximum(mistake, 1e-300)).sum(axis=1, keepdims=True) / \
            np.maximum(wrong.sum(axis=1, keepdims=True), 1e-300)
        done = max(np.abs(new_rate - rate).max(), np.abs(new_share - share).max()) < 1e-5
        rate, share = new_rate, new_share
        if done:
            break
    return rate, share
