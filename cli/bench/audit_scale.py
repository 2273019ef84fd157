"""`enrich bench audit-scale`: the audit's second half (findings, error rates, duplicates, report) on simulated
answers, timed and with its peak memory, and scored against what the simulation planted.

    enrich bench audit-scale --rows 1000000            # writes TMP/enrich-audit-scale-1000000 first

The answers are enrich_data.simulated_answers' (576-dimension embeddings, 1 % of rows planted copies, 5 % of
values wrong). The second half runs in a child process, so its peak resident memory is its own.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def second_half(answers: Path, out: Path) -> None:
    """What `enrich-client audit` does once every row is answered."""
    from enrich_client.audit.answers import AuditAnswers
    from enrich_client.audit.command import write_audit

    out.mkdir(parents=True, exist_ok=True)
    audit = AuditAnswers.parquet(answers)

    def no_images(key: str) -> bytes:
        raise FileNotFoundError(key)  # simulated rows have no images: the report shows none

    write_audit(out, audit, audit.info, "simulated catalogue", audit.rows, no_images)


def run_child(answers: Path, out: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS in GB, exit status) of the second half in a child process."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "enrich_cli.bench.audit_scale", "--second-half", str(answers),
                              str(out)])
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_maxrss / 1024 / 1024, child.returncode  # ru_maxrss: KiB


def score(planted: dict, out: Path) -> dict:
    """Recall of the planted pairs; precision counts a pair found within one planted group (two copies of one
    original are duplicates of each other too)."""
    truth = {frozenset(pair) for pair in planted["duplicate_pairs"]}
    group = {}
    for original, copy in planted["duplicate_pairs"]:
        group[copy] = group.get(original, original)
        group.setdefault(original, original)
    with open(out / "duplicates.csv", newline="", encoding="utf-8") as handle:
        found = {frozenset((row["id_a"], row["id_b"])) for row in csv.DictReader(handle)}
    right = sum(1 for pair in found if len({group.get(key, key) for key in pair}) == 1)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    rates = {name: entry.get("estimated_error_rate") for name, entry in summary["attributes"].items()}
    return {"planted_pairs": len(truth), "found_pairs": len(found),
            "recall": len(truth & found) / max(1, len(truth)), "precision": right / max(1, len(found)),
            "estimated_error_rates": rates, "planted_error_rate": planted["error_rate"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="enrich bench audit-scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dimensions", type=int, default=576)
    parser.add_argument("--dir", type=Path, help="where the simulated answers are (written when absent; default "
                        "TMP/enrich-audit-scale-ROWS)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--second-half", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.second_half:
        second_half(*args.second_half)
        return 0
    from enrich_data.simulated_answers import PLANTED, write_simulated_answers

    folder = args.dir or Path(tempfile.gettempdir()) / f"enrich-audit-scale-{args.rows}"
    if not (folder / "answers" / PLANTED).exists():
        started = time.perf_counter()
        write_simulated_answers(folder / "answers", args.rows, args.dimensions)
        print(f"simulated {args.rows:,} answers in {time.perf_counter() - started:.0f} s: {folder / 'answers'}",
              file=sys.stderr)
    planted = json.loads((folder / "answers" / PLANTED).read_text(encoding="utf-8"))
    seconds, peak_gb, status = run_child(folder / "answers", folder / "audit")
    if status:
        print(f"the audit's second half failed (exit {status})", file=sys.stderr)
        return 1
    figures = {"rows": planted["rows"], "seconds": round(seconds, 1), "peak_rss_gb": round(peak_gb, 2),
               "cpus": os.cpu_count()} | score(planted, folder / "audit")
    print(f"audit of {figures['rows']:,} simulated answers: {seconds / 60:.1f} min, peak RSS {peak_gb:.2f} GB; "
          f"duplicates: recall {figures['recall']:.3f}, precision {figures['precision']:.3f} "
          f"({figures['found_pairs']:,} pairs found, {figures['planted_pairs']:,} planted); estimated error rates "
          + ", ".join(f"{k} {v:.3f}" for k, v in figures["estimated_error_rates"].items() if v is not None)
          + f" (planted {planted['error_rate']})")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
