"""From the server's answers to the audit's findings: the catalogue's error rate per attribute, estimated
from the whole run, and every finding's p_wrong under that estimate, worst first."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from enrich_contract.posterior import DEFAULT_ERROR_PRIOR, FLAG_AT, p_wrong_given, uniform_mistake

from .catalogue import audited_columns

KIND_PREFIX, LEVEL_PREFIX = "FINDING_KIND_", "TAXONOMY_LEVEL_"
CHECKED = ("agrees", "disagrees")  # the kinds whose p_wrong depends on the prior
BOOTSTRAP_RUNS = 200


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

    @classmethod
    def of(cls, key: str, finding: dict) -> FindingRow:
        """From a Finding as JSON (protobuf's mapping, every field present)."""
        return cls(key, finding["attribute"], finding["kind"].removeprefix(KIND_PREFIX).lower(), finding["supplied"],
                   finding["predicted"], finding["pSupplied"], finding["pPredicted"], finding["pWrong"],
                   finding["suppliedLabel"], _level(finding["disagreementLevel"]),
                   bool(finding.get("predictedAccepted", False)))

    def csv(self) -> dict:
        return dict(vars(self)) | {k: f"{getattr(self, k):.6g}" for k in ("p_supplied", "p_predicted", "p_wrong")} \
            | {"accepted": int(self.accepted)}


def _level(name: str) -> str:
    return "" if name.endswith("UNSPECIFIED") else name.removeprefix(LEVEL_PREFIX).lower()


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
    alternatives' products), row-normalised: which labels look alike to it, and so to a person."""

    def __init__(self, labels: list[str], alternatives: list[list[dict]]) -> None:
        self.index = {label: i for i, label in enumerate(labels)}
        size = len(labels)
        counts = np.zeros((size, size))
        for ranked in alternatives:
            at = [self.index[a["label"]] for a in ranked if a["label"] in self.index]
            p = np.asarray([a["confidence"] for a in ranked if a["label"] in self.index])
            counts[np.ix_(at, at)] += np.outer(p, p)
        np.fill_diagonal(counts, 0.0)
        total = counts.sum(axis=1, keepdims=True)
        self.share = np.where(total > 0, counts / np.maximum(total, 1e-300), 1.0 / max(1, size - 1))
        np.fill_diagonal(self.share, 0.0)

    def mistake(self, supplied: str, ranked: list[dict]) -> float:
        """w when mistakes are confusions: the chance of writing `supplied` for what the image shows."""
        s = self.index[supplied]
        return float(sum(a["confidence"] * self.share[self.index[a["label"]], s] for a in ranked
                         if a["label"] != supplied and a["label"] in self.index))


def estimate_error_rate(p_supplied: np.ndarray, uniform: np.ndarray, confusable: np.ndarray,
                        start: float = DEFAULT_ERROR_PRIOR, runs: int = BOOTSTRAP_RUNS, seed: int = 0) -> ErrorRate:
    """Expectation-maximisation of a two-part catalogue: values are wrong with probability `rate`, and a wrong
    value is a confusable label with probability `confusable_share`, any label otherwise. Maximum likelihood
    on the rows; the interval from bootstrap resamples of them, each started from the rows' estimate."""
    if len(p_supplied) == 0:
        return ErrorRate(0.0, 0.0, 0.0, 0, 0.0)
    columns = [np.asarray(values, np.float64)[None, :] for values in (p_supplied, uniform, confusable)]
    rate, share = _expectation_maximisation(*columns, np.array([[start]]), np.array([[0.5]]))
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(p_supplied), (runs, len(p_supplied)))
    resampled = [column[0][pick] for column in columns]
    rates, _ = _expectation_maximisation(*resampled, np.full((runs, 1), rate[0, 0]), np.full((runs, 1), share[0, 0]))
    low, high = np.percentile(rates[:, 0], [2.5, 97.5])
    return ErrorRate(float(rate[0, 0]), float(low), float(high), len(p_supplied), float(share[0, 0]))


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


def prediction(answer: dict, attribute: str) -> dict:
    """An answer's prediction of `attribute` (JSON): by column name, or a typed field (servers before the map)."""
    metadata = answer["metadata"]
    return metadata.get("attributes", {}).get(attribute) or metadata[attribute]


def catalogue_findings(answers: list[dict],
                       labels: dict[str, list[str]]) -> tuple[list[FindingRow], dict[str, ErrorRate]]:
    """Every finding of every OK answer, with p_wrong re-estimated per attribute (`labels`: each attribute's
    labels, from ModelInfo); worst first."""
    found = [(answer, FindingRow.of(answer["requestId"], finding)) for answer in answers
             for finding in answer.get("audit", {}).get("findings", [])]
    rates: dict[str, ErrorRate] = {}
    for attribute in dict.fromkeys(row.attribute for _, row in found):
        if attribute not in labels:
            continue  # the name: its p_wrong combines its mentions' under the request's prior
        checked = [(prediction(answer, attribute)["alternatives"], row) for answer, row in found
                   if row.attribute == attribute and row.kind in CHECKED]
        confusions = Confusions(labels[attribute], [ranked for ranked, _ in checked])
        p = np.asarray([row.p_supplied for _, row in checked])
        uniform = uniform_mistake(p, len(labels[attribute]))
        confusable = np.asarray([confusions.mistake(row.supplied_label, ranked) for ranked, row in checked])
        estimate = estimate_error_rate(p, uniform, confusable)
        rates[attribute] = estimate
        mistake = mixed_mistake(uniform, confusable, estimate.confusable_share)
        for (_, row), value in zip(checked, p_wrong_given(p, mistake, estimate.rate), strict=True):
            row.p_wrong = float(value)
    rows = [row for _, row in found]
    rows.sort(key=lambda row: (-row.p_wrong, row.attribute, row.id))
    return rows, rates


def attribute_summary(rows: list[FindingRow], rates: dict[str, ErrorRate], info: dict | None = None) -> dict[str, dict]:
    """Per attribute, in the catalogue's column order: counts of each kind, values flagged (p_wrong >= FLAG_AT),
    the estimated error rate, and (from ModelInfo as JSON) the model's test accuracy against the majority
    label's, and whether it was barely learnt: then its findings say little."""
    metrics = (info or {}).get("testMetrics", {})
    barely = {a["name"] for a in (info or {}).get("attributes", []) if a.get("barelyLearnt")}
    kinds = ("agrees", "disagrees", "filled", "unknown_label", "unchecked")
    summary: dict[str, dict] = {}
    for attribute in audited_columns(info):
        mine = [row for row in rows if row.attribute == attribute]
        if not mine:
            continue
        entry = {"audited": len(mine)} | {kind: sum(r.kind == kind for r in mine) for kind in kinds}
        summary[attribute] = entry
        entry["flagged"] = sum(r.kind in CHECKED and r.p_wrong >= FLAG_AT for r in mine)
        # flagged, and the model's label accepted at its target precision: to fix without review
        entry["fixable"] = sum(r.kind == "disagrees" and r.p_wrong >= FLAG_AT and r.accepted for r in mine)
        accuracy, majority = metrics.get(f"{attribute}.accuracy"), metrics.get(f"{attribute}.majority_accuracy")
        if accuracy is not None and majority is not None:
            entry |= {"model_test_accuracy": round(accuracy, 4), "majority_accuracy": round(majority, 4)}
        entry["model_reliable"] = attribute not in barely
        rate = rates.get(attribute)
        if rate is not None:
            entry |= {"estimated_error_rate": round(rate.rate, 5),
                      "error_rate_interval_95": [round(rate.low, 5), round(rate.high, 5)],
                      "checked": rate.checked, "confusable_share_of_errors": round(rate.confusable_share, 3)}
    return summary
