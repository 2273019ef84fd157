"""`enrich-client audit CATALOGUE --out DIR`: the catalogue's values checked against its images.

    enrich-client audit data/catalogue --out audit/        # styles.csv + images/ID.jpg
    enrich-client audit products.csv --out audit/          # path or url per row, id, attribute columns

Every row goes through the server like `bulk` (several streams; or a Ray Data job with --engine ray), resumable:
DIR/answers/ holds the answers in Parquet parts (answers.jsonl with --answers-format jsonl), and a rerun sends
only the rows they lack. Then the folder gets, streaming the answers (memory grows by tens of bytes an image):
  findings.csv    one row per image and value audited, worst first (p_wrong under the estimated error rate)
  duplicates.csv  exact and near-duplicate pairs, with the copy to keep
  summary.json    per attribute: counts, values flagged, the estimated error rate and its 95 % interval
  report.html     the same for people: open it from the folder, offline

Exit status as bulk's: 0 when every row has an answer, 1 when some failed or the run stopped, 2 for bad input.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from enrich_contract.posterior import valid_prior
from enrich_contract.wire import INCLUDE_FLAGS, caption_mode, caption_mode_name, to_json

from ..answer_parts import AnswerLayout, ParquetOutput
from ..bulk import answering_model, request_options, run_on_ray_with_summary, run_with_progress
from ..client import EnrichClient, EnrichError
from ..outputs import KEY, Output
from ..sources import Source
from ..streaming import BulkRun
from .answers import AuditAnswers
from .catalogue import CatalogueError, audited_columns, check_catalogue, read_catalogue
from .duplicates import Pair, Signature, groups
from .nearest import duplicate_pairs_in
from .report import MAX_GROUPS, MAX_MEMBERS, write_report, write_thumbnails
from .scan import Scanned, audit_findings

ANSWERS = "answers.jsonl"
ANSWER_PARTS = "answers"


DEFAULT_CAPTION_MODE = "skip"  # an audit reads the catalogue's names, it does not need new ones
INCLUDED = INCLUDE_FLAGS  # duplicates need the embedding and the signature, the report shows the palette


def audit_main(client: EnrichClient, args) -> int:
    folder = Path(args.out)
    try:
        check_catalogue(Path(args.catalogue))
        valid_prior(args.error_prior or 0.0)
    except (OSError, ValueError, CatalogueError) as error:
        print(f"enrich-client audit: {error}", file=sys.stderr)
        return 2
    try:
        info = answering_model(client, args)
    except (EnrichError, TimeoutError) as error:
        print(f"enrich-client audit: {error}", file=sys.stderr)
        return 1
    except (OSError, ValueError, ImportError) as error:  # --model: no bundle there, or no serving extra here
        print(f"enrich-client audit: cannot read the model {args.model}: {error}", file=sys.stderr)
        return 2
    described = to_json(info)
    try:  # the columns the answering model audits, by its schema
        sources = read_catalogue(Path(args.catalogue), audited_columns(described), info.schema.id_column or "id")
        folder.mkdir(parents=True, exist_ok=True)
        output = open_answers(folder, args, info)
        output.check_options(run_options(args, info.model_version), args.mixed_options)
    except (OSError, ValueError, CatalogueError) as error:
        print(f"enrich-client audit: {error}", file=sys.stderr)
        return 2
    forget(output, changed_rows(answers_of(folder, output, described), sources))  # the catalogue changed
    if args.engine == "ray":
        status = run_on_ray_with_summary(client, args, sources, output,
                                         request_options(args, args.error_prior, list(INCLUDED), DEFAULT_CAPTION_MODE),
                                         "audit")
    else:
        run = BulkRun(client, sources, output, args.streams, args.top_k, args.caption_mode or DEFAULT_CAPTION_MODE,
                      retry_seconds=args.retry_seconds, error_prior=args.error_prior, include=INCLUDED)
        status = run_with_progress(client, run, output, "audit", args.quiet)
    if status == 130:
        return status
    by_key = {source.key: source for source in sources}
    write_audit(folder, answers_of(folder, output, described), described, Path(args.catalogue).name,
                len(sources), lambda key: by_key[key].read())
    return status


def open_answers(folder: Path, args, info) -> Output | ParquetOutput:
    """Parquet parts in DIR/answers/, or answers.jsonl (asked for, or where an earlier audit wrote it)."""
    fmt = args.answers_format or ("jsonl" if (folder / ANSWERS).exists() else "parquet")
    if args.engine == "ray" and fmt != "parquet":
        raise ValueError(f"--engine ray writes Parquet parts, and {folder / ANSWERS} holds JSON lines: "
                         "choose another --out")
    if fmt == "jsonl":
        return Output(folder / ANSWERS, "jsonl")
    return ParquetOutput(folder / ANSWER_PARTS, AnswerLayout.of(info), *([args.part_rows] if args.part_rows else []))


def answers_of(folder: Path, output: Output | ParquetOutput, info: dict) -> AuditAnswers:
    if isinstance(output, ParquetOutput):
        return AuditAnswers.parquet(folder / ANSWER_PARTS, info)
    return AuditAnswers.jsonl(folder / ANSWERS, info)


def forget(output: Output | ParquetOutput, changed: set[str]) -> None:
    """Ids to send again: a JSON-lines output appends their new answers (the last one counts), Parquet parts
    drop the old rows first (every id in one part)."""
    if isinstance(output, ParquetOutput):
        output.forget(changed)
    else:
        output.done -= changed


def run_options(args, model_version: str) -> dict:
    """What decides the answers' content, recorded beside them: a rerun against another model, or with other
    options, would mix answers (unset: the server's default)."""
    mode = caption_mode(args.caption_mode or DEFAULT_CAPTION_MODE)
    return {"top_k": args.top_k or None, "caption_mode": caption_mode_name(mode), "error_prior": args.error_prior,
            "include": list(INCLUDED), "model_version": model_version}


def changed_rows(answers: AuditAnswers, sources: list[Source]) -> set[str]:
    """Ids whose answer in the folder audited other values than the catalogue now holds."""
    now = {source.key: dict(source.catalogue) for source in sources}
    changed = set()
    for batch in answers.batches([KEY, "findings"]):
        for key, findings in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
            if key in now and {f["attribute"]: f["supplied"] for f in findings or []} != now[key]:
                changed.add(key)
    return changed


def write_audit(folder: Path, answers: AuditAnswers, info: dict, title: str, rows: int,
                read: Callable[[str], bytes]) -> dict:
    """findings.csv, duplicates.csv, summary.json and report.html from the answers; `rows`: the catalogue's,
    `read`: an image's bytes by id (for the report's thumbnails)."""
    scanned = audit_findings(answers, info, folder / "findings.csv")
    pairs = duplicate_pairs_in(answers)
    duplicate_groups = groups(pairs)
    write_duplicates(folder / "duplicates.csv", pairs, duplicate_groups)
    answered = sum(batch.num_rows for batch in answers.batches([KEY]))
    summary = {"catalogue": title, "model_version": info["modelVersion"], "rows": rows,
               "answered": answered, "attributes": scanned.summary,
               "duplicates": {"pairs": len(pairs), "groups": len(duplicate_groups),
                              "extra_copies": sum(len(g) - 1 for g in duplicate_groups)}}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_page(folder, f"Audit of {title}", read, answers, summary, scanned, pairs, duplicate_groups)
    print_summary(summary)
    return summary


def write_page(folder: Path, title: str, read: Callable[[str], bytes], answers: AuditAnswers, summary: dict,
               scanned: Scanned, pairs: list[Pair], duplicate_groups: list[list[Signature]]) -> None:
    """report.html with thumbnails of what it shows: the worst findings and the first duplicate groups."""
    similarity = {pair.b.key: pair.similarity for pair in pairs} | {pair.a.key: pair.similarity for pair in pairs}
    shown_groups = [{"size": len(group),
                     "members": [{"key": s.key, "width": s.width, "height": s.height,
                                  "similarity": similarity.get(s.key, 1.0)} for s in group[:MAX_MEMBERS]]}
                    for group in duplicate_groups[:MAX_GROUPS]]
    wanted = list(dict.fromkeys([row.id for row in scanned.worst] +
                                [m["key"] for g in shown_groups for m in g["members"]]))
    thumbs = write_thumbnails(folder, wanted, read)
    looks = {}
    chosen = pa.array(wanted, pa.string())
    for batch in answers.batches([KEY, "palette"]):
        shown = batch.filter(pc.is_in(batch.column(0), value_set=chosen))
        for key, palette in zip(shown.column(0).to_pylist(), shown.column(1).to_pylist(), strict=True):
            looks[key] = {"palette": palette or []}
    write_report(folder, title, summary["attributes"], scanned.worst, scanned.total, shown_groups, looks, thumbs)


def write_duplicates(path: Path, pairs: list, duplicate_groups: list) -> None:
    keep = {s.key: group[0].key for group in duplicate_groups for s in group}
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id_a", "id_b", "similarity", "hash_bits_differing", "kind", "keep"])
        for pair in pairs:
            writer.writerow([pair.a.key, pair.b.key, f"{pair.similarity:.5f}", pair.hamming,
                             "exact" if pair.exact else "near", keep[pair.a.key]])


def print_summary(summary: dict) -> None:
    for attribute, entry in summary["attributes"].items():
        rate = entry.get("estimated_error_rate")
        low, high = entry.get("error_rate_interval_95", (0, 0))
        words = "" if rate is None else f"; estimated error rate {rate:.1%} (95% {low:.1%}-{high:.1%})"
        caution = "" if entry.get("model_reliable", True) else " (the model barely beats always answering its " \
            "most common label here: do not trust these)"
        print(f"{attribute}: {entry['disagrees']} disagree, {entry['flagged']} flagged, {entry['filled']} filled, "
              f"{entry['unknown_label']} unknown labels{words}{caution}", file=sys.stderr)
    d = summary["duplicates"]
    print(f"duplicates: {d['pairs']} pairs in {d['groups']} groups ({d['extra_copies']} extra copies)", file=sys.stderr)

