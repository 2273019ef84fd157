"""The audit's findings in bounded memory: two passes over the answers, whatever their number.

    pass 1  each answer's findings, flattened to one row per value audited (spilled to Parquet in the audit's
            folder), and per single-valued attribute the few numbers its error rate needs from each checked
            value: p of the supplied label, its index, the ranked alternatives; the confusions are sums
    then    per attribute: the confusions' shares, each value's chance of being a confusion, the error rate by
            expectation-maximisation (findings.estimate_error_rate), and each value's p_wrong under it
    pass 2  the spilled rows with their p_wrong: counts per attribute, the worst for the report, and
            findings.csv sorted worst first by DuckDB, which sorts more rows than memory holds by spilling too
"""

from __future__ import annotations

import heapq
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from enrich_contract.posterior import FLAG_AT, p_wrong_given, uniform_mistake

from ..outputs import KEY
from .answers import AuditAnswers
from .catalogue import audited_columns
from .findings import CHECKED, Confusions, ErrorRate, FindingRow, estimate_error_rate, mixed_mistake
from .report import MAX_SHOWN, is_shown

SPILL = ".findings-spill"  # in the audit's folder while it runs
KINDS = ("agrees", "disagrees", "filled", "unknown_label", "unchecked")
FLAT = {"attribute": "attribute", "kind": "kind", "supplied": "supplied", "predicted": "predicted",
        "p_supplied": "pSupplied", "p_predicted": "pPredicted", "p_wrong": "pWrong", "supplied_label": "suppliedLabel",
        "level": "level", "accepted": "predictedAccepted"}  # FindingRow's field -> the answers' finding field
SORT_MEMORY = "1GB"


@dataclass
class Checked:
    """One attribute's checked values (kind agrees or disagrees), in the order pass 1 met them."""

    labels: list[str]
    confusions: Confusions
    p: list[np.ndarray] = field(default_factory=list)
    supplied: list[np.ndarray] = field(default_factory=list)
    ranked: list[np.ndarray] = field(default_factory=list)  # label indices (n, k), -1: none
    ranked_p: list[np.ndarray] = field(default_factory=list)
    count: int = 0

    def add(self, p: np.ndarray, supplied: np.ndarray, ranked: np.ndarray, ranked_p: np.ndarray) -> np.ndarray:
        """This batch's values; their positions among all of the attribute's."""
        self.p.append(p)
        self.supplied.append(supplied)
        self.ranked.append(ranked)
        self.ranked_p.append(ranked_p)
        self.confusions.add(ranked, ranked_p)
        self.count += len(p)
        return np.arange(self.count - len(p), self.count)

    def p_wrong(self) -> tuple[ErrorRate, np.ndarray]:
        """The attribute's estimated error rate, and every checked value's p_wrong under it."""
        width = max((r.shape[1] for r in self.ranked), default=0)
        ranked = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1])), constant_values=-1)
                                 for r in self.ranked]) if self.ranked else np.zeros((0, 0), int)
        ranked_p = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]))) for r in self.ranked_p]) \
            if self.ranked_p else np.zeros((0, 0))
        p = np.concatenate(self.p) if self.p else np.zeros(0)
        supplied = np.concatenate(self.supplied) if self.supplied else np.zeros(0, int)
        uniform = uniform_mistake(p, len(self.labels))
        confusable = self.confusions.mistake(supplied, ranked, ranked_p)
        estimate = estimate_error_rate(p, uniform, confusable)
        return estimate, p_wrong_given(p, mixed_mistake(uniform, confusable, estimate.confusable_share),
                                       estimate.rate)


@dataclass
class Scanned:
    """What the findings' passes leave besides findings.csv."""

    rates: dict[str, ErrorRate]
    summary: dict[str, dict]  # per attribute: counts (attribute_summary's)
    worst: list[FindingRow]  # what the report shows, worst first
    total: int  # findings in all


def padded(alternatives: pa.Array, labels: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A list<struct<label, confidence>> column as (label indices, confidences), each (rows, longest), -1 and 0
    where a row has fewer or a label is unknown."""
    lengths = pc.fill_null(pc.list_value_length(alternatives), 0).to_numpy().astype(np.int64)
    values = pc.list_flatten(alternatives)
    at = pc.fill_null(pc.index_in(pc.struct_field(values, "label"), value_set=labels), -1).to_numpy()
    confidence = pc.struct_field(values, "confidence").to_numpy(zero_copy_only=False).astype(np.float64)
    rows, width = len(lengths), int(lengths.max()) if len(lengths) else 0
    row = np.repeat(np.arange(rows), lengths)
    position = np.arange(len(at)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ranked, ranked_p = np.full((rows, width), -1, np.int64), np.zeros((rows, width))
    ranked[row, position], ranked_p[row, position] = at, confidence
    return ranked, ranked_p


def flatten(batch: pa.RecordBatch) -> tuple[pa.Table, pa.Array]:
    """One row per finding (FindingRow's columns), and each row's answer within the batch."""
    findings = batch.column("findings")
    parents = pc.list_parent_indices(findings)
    flat = pc.list_flatten(findings)
    columns = {"id": pc.take(batch.column(KEY), parents)} | {name: pc.struct_field(flat, source)
                                                               for name, source in FLAT.items()}
    table = pa.table(columns)
    return table.set_column(table.schema.get_field_index("p_wrong"), "p_wrong",
                            pc.cast(table["p_wrong"], pa.float64())), parents


def first_pass(answers: AuditAnswers, labels: dict[str, list[str]], spill: Path) -> dict[str, Checked]:
    checked = {a: Checked(names, Confusions(len(names))) for a, names in labels.items()}
    value_sets = {a: pa.array(names, pa.string()) for a, names in labels.items()}
    columns = [KEY, "findings", *(answers.column(a) for a in labels)]
    for number, batch in enumerate(answers.batches(columns)):
        table, parents = flatten(batch)
        position = np.full(table.num_rows, -1, np.int64)  # among its attribute's checked values
        for attribute, mine in checked.items():
            rows = pc.and_(pc.equal(table["attribute"], attribute), pc.is_in(table["kind"], pa.array(CHECKED)))
            where = np.flatnonzero(rows.to_numpy(zero_copy_only=False))
            if not len(where):
                continue
            answer = pc.take(parents, pa.array(where))
            ranked, ranked_p = padded(pc.struct_field(pc.take(batch.column(answers.column(attribute)), answer),
                                                      "alternatives"), value_sets[attribute])
            supplied = pc.fill_null(pc.index_in(pc.take(table["supplied_label"], pa.array(where)),
                                                value_set=value_sets[attribute]), 0).to_numpy()
            p = pc.take(table["p_supplied"], pa.array(where)).to_numpy(zero_copy_only=False).astype(np.float64)
            position[where] = mine.add(p, supplied, ranked, ranked_p)
        pq.write_table(table.append_column("checked", pa.array(position)), spill / f"{number:06d}.parquet")
    return checked


def audit_findings(answers: AuditAnswers, info: dict, out: Path) -> Scanned:
    """findings.csv in `out`, worst first, with p_wrong re-estimated per single-valued attribute (a multi-valued
    one's and the name's keep the server's); the rates, counts per attribute and the report's rows."""
    labels = {a["name"]: a["labels"] for a in info.get("attributes", []) if a.get("kind", "single") != "multi"}
    spill = out.parent / SPILL
    shutil.rmtree(spill, ignore_errors=True)
    (spill / "scored").mkdir(parents=True)
    try:
        checked = first_pass(answers, labels, spill)
        rates, p_wrong = {}, {}
        for attribute, mine in checked.items():  # an attribute without checked values: a rate of 0
            rates[attribute], p_wrong[attribute] = mine.p_wrong()
        counts, worst, total = second_pass(spill, p_wrong)
        sort_findings(spill / "scored", out)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    return Scanned(rates, attribute_summary(counts, rates, info), worst, total)


def second_pass(spill: Path, p_wrong: dict[str, np.ndarray]) -> tuple[dict, list[FindingRow], int]:
    counts: dict[str, dict[str, int]] = {}
    worst: list[tuple] = []  # a heap of the MAX_SHOWN worst shown rows: (p_wrong, reversed attribute, id, -n, row)
    total = met = 0
    for path in sorted(spill.glob("*.parquet")):
        table = pq.read_table(path)
        scored = table["p_wrong"].to_numpy().copy()
        position = table["checked"].to_numpy()
        attribute = table["attribute"].to_numpy(zero_copy_only=False)
        for name, values in p_wrong.items():
            mine = (attribute == name) & (position >= 0)
            scored[mine] = values[position[mine]]
        table = table.drop_columns(["checked"]).set_column(table.schema.get_field_index("p_wrong"), "p_wrong",
                                                            pa.array(scored))
        total += table.num_rows
        count(table, counts)
        for row in table.filter(pc.is_in(table["kind"], pa.array([k for k in KINDS if is_shown(k)]))).to_pylist():
            met += 1  # ties (two values of one multi-valued cell) keep the order they came in
            entry = (row["p_wrong"], _descending(row["attribute"]), _descending(row["id"]), -met, FindingRow(**row))
            (heapq.heappush if len(worst) < MAX_SHOWN else heapq.heappushpop)(worst, entry)
        pq.write_table(printable(table), spill / "scored" / path.name)
    return counts, [entry[-1] for entry in sorted(worst, reverse=True)], total


class _descending(str):
    __slots__ = ()

    def __lt__(self, other: str) -> bool:
        return str.__gt__(self, other)

    def __gt__(self, other: str) -> bool:
        return str.__lt__(self, other)


def count(table: pa.Table, counts: dict[str, dict[str, int]]) -> None:
    """Adds the table's counts per attribute: of each kind, flagged (p_wrong >= FLAG_AT among the checked) and
    fixable (flagged, and the model's label accepted)."""
    flagged = pc.and_(pc.is_in(table["kind"], pa.array(CHECKED)), pc.greater_equal(table["p_wrong"], FLAG_AT))
    fixable = pc.and_(pc.and_(flagged, pc.equal(table["kind"], "disagrees")), table["accepted"])
    keyed = table.select(["attribute", "kind"]).append_column("flagged", pc.cast(flagged, pa.int64())) \
        .append_column("fixable", pc.cast(fixable, pa.int64()))
    grouped = keyed.group_by(["attribute", "kind"]).aggregate([("flagged", "sum"), ("fixable", "sum"),
                                                               ("kind", "count")])
    for row in grouped.to_pylist():
        entry = counts.setdefault(row["attribute"], dict.fromkeys([*KINDS, "flagged", "fixable"], 0))
        entry[row["kind"]] = entry.get(row["kind"], 0) + row["kind_count"]
        entry["flagged"] += row["flagged_sum"]
        entry["fixable"] += row["fixable_sum"]


def printable(table: pa.Table) -> pa.Table:
    """findings.csv's text: probabilities to six significant digits, accepted as 0/1; p_wrong kept to sort by."""
    text = {name: pa.array([f"{v:.6g}" for v in table[name].to_pylist()], pa.string())
            for name in ("p_supplied", "p_predicted", "p_wrong")}
    columns = {name: text.get(name, table[name]) for name in (f.name for f in fields(FindingRow))}
    columns["accepted"] = pc.cast(table["accepted"], pa.int8())
    return pa.table(columns | {"sort_p_wrong": table["p_wrong"]})


def sort_findings(scored: Path, out: Path) -> None:
    """findings.csv, worst first (then by attribute and id), sorted by DuckDB within SORT_MEMORY."""
    import duckdb

    names = ", ".join(f.name for f in fields(FindingRow))
    with duckdb.connect() as db:
        db.execute(f"SET memory_limit = '{SORT_MEMORY}'")
        db.execute(f"SET temp_directory = {_quoted(scored / 'tmp')}")
        if not any(scored.glob("*.parquet")):
            out.write_text(",".join(f.name for f in fields(FindingRow)) + "\n", encoding="utf-8")
            return
        db.execute(f"COPY (SELECT {names} FROM read_parquet({_quoted(scored / '*.parquet')}) "
                   f"ORDER BY sort_p_wrong DESC, attribute, id, supplied, predicted) TO {_quoted(out)} "
                   "(HEADER, DELIMITER ',')")


def _quoted(path: Path) -> str:
    """A path as an SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def attribute_summary(counts: dict[str, dict[str, int]], rates: dict[str, ErrorRate],
                      info: dict | None = None) -> dict[str, dict]:
    """Per attribute, in the catalogue's column order: counts of each kind, values flagged (p_wrong >= FLAG_AT),
    the estimated error rate, and (from ModelInfo as JSON) the model's test accuracy against the majority
    label's, and whether it was barely learnt: then its findings say little."""
    metrics = (info or {}).get("testMetrics", {})
    barely = {a["name"] for a in (info or {}).get("attributes", []) if a.get("barelyLearnt")}
    summary: dict[str, dict] = {}
    for attribute in audited_columns(info):
        mine = counts.get(attribute)
        if not mine:
            continue
        entry = {"audited": sum(mine[kind] for kind in KINDS)} | {kind: mine[kind] for kind in KINDS}
        entry |= {"flagged": mine["flagged"], "fixable": mine["fixable"]}
        summary[attribute] = entry
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
