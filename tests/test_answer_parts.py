"""Answers in Parquet parts (resumable by id), and the audit's second half at a scale a test can hold: simulated
answers through the compressed index and the streamed error-rate estimate."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import pytest

from enrich.v1 import enrich_pb2
from enrich_client.answer_parts import AnswerLayout, ParquetOutput, parts, read_batches
from enrich_client.outputs import OptionsMismatch
from enrich_data.simulated_answers import simulated_model, write_simulated_answers


def response(key: str, code: int = 0) -> enrich_pb2.EnrichResponse:
    answer = enrich_pb2.EnrichResponse(request_id=key, status=enrich_pb2.ItemStatus(code=code, message="no"))
    if not code:
        answer.metadata.image.width = 10
        answer.metadata.attributes["gender"].label = "gender-1"
        answer.metadata.signature.embedding.extend([0.5] * 8)
    return answer


def ids(folder: Path) -> list[str]:
    return [key for batch in read_batches(folder, ["requestId"]) for key in batch.column(0).to_pylist()]


def test_parts_are_whole_resumable_by_id_and_forgetting_rewrites_them(tmp_path: Path):
    layout = AnswerLayout.of(simulated_model(8))
    out = ParquetOutput(tmp_path / "answers", layout, part_rows=3)
    for number in range(7):
        out.write(response(f"r{number}", code=3 if number == 4 else 0))
    # killed here: six rows in two parts, the seventh only in memory, and a part half-written
    (tmp_path / "answers" / ".part-000009.parquet.tmp").write_bytes(b"PAR1 cut short")
    again = ParquetOutput(tmp_path / "answers", layout, part_rows=3)
    assert again.done == {f"r{n}" for n in range(6)} and again.failed == {"r4"}
    assert not list((tmp_path / "answers").glob(".*.tmp")) and len(parts(tmp_path / "answers")) == 2
    again.forget({"r1", "r4"})  # their images are sent again
    assert "r1" not in again.done and sorted(ids(tmp_path / "answers")) == ["r0", "r2", "r3", "r5"]
    for key in ("r1", "r4", "r6"):
        again.write(response(key))
    # rows from Ray's workers: an id already written, or twice in what came (a retried task's), is left out
    again.write_table(layout.table([response("r0"), response("r7"), response("r7")]))
    again.close()
    assert sorted(ids(tmp_path / "answers")) == [f"r{n}" for n in range(8)]
    row = next(read_batches(tmp_path / "answers", ["gender", "embedding"])).to_pylist()[0]
    assert row["gender"]["label"] == "gender-1" and row["embedding"] == [0.5] * 8
    with pytest.raises(OptionsMismatch, match="another model"):
        ParquetOutput(tmp_path / "answers", AnswerLayout.of(simulated_model(16)))


def test_the_compressed_index_and_the_streamed_estimate_find_what_was_planted(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch):
    from enrich_client.audit import findings, nearest, scan
    from enrich_client.audit.answers import AuditAnswers
    from enrich_client.audit.command import write_audit

    truth = write_simulated_answers(tmp_path / "answers", 2000, dimensions=64, duplicate_share=0.05,
                                    part_rows=1000, seed=1)
    monkeypatch.setattr(nearest, "EXACT_UP_TO", 500)  # the compressed index at a test's size
    # Fewer bootstrap resamples: the interval's resolution is not what this checks, and they are most of its time.
    monkeypatch.setattr(scan, "estimate_error_rate", functools.partial(findings.estimate_error_rate, runs=40))
    answers = AuditAnswers.parquet(tmp_path / "answers")
    assert answers.rows == 2000
    out = tmp_path / "audit"
    out.mkdir()

    def no_images(key: str) -> bytes:
        raise FileNotFoundError(key)

    summary = write_audit(out, answers, answers.info, "simulated", answers.rows, no_images)
    planted = {frozenset(pair) for pair in truth["duplicate_pairs"]}
    with open(out / "duplicates.csv", newline="", encoding="utf-8") as handle:
        found = {frozenset((row["id_a"], row["id_b"])) for row in csv.DictReader(handle)}
    assert len(planted) == 100 and len(found & planted) >= 0.9 * len(planted) and len(found - planted) <= 10
    for attribute, entry in summary["attributes"].items():
        assert abs(entry["estimated_error_rate"] - truth["error_rate"]) <= 0.02, attribute
    with open(out / "findings.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == truth["values"]
    assert [float(r["p_wrong"]) for r in rows] == sorted((float(r["p_wrong"]) for r in rows), reverse=True)
    assert json.loads((out / "summary.json").read_text())["answered"] == 2000
