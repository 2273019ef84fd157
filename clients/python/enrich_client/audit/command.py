"""`enrich-client audit CATALOGUE --out DIR`: the catalogue's values checked against its images.

    enrich-client audit data/catalogue --out audit/        # styles.csv + images/ID.jpg
    enrich-client audit products.csv --out audit/          # path or url per row, id, attribute columns

Every row goes through the server like `bulk` (several streams, resumable: DIR/answers.jsonl holds the
answers, and a rerun sends only the rows it lacks), then the folder gets:
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
from dataclasses import fields
from pathlib import Path

from enrich_contract.posterior import valid_prior
from enrich_contract.wire import INCLUDE_FLAGS, caption_mode, caption_mode_name, to_json

from ..bulk import run_with_progress
from ..client import EnrichClient, EnrichError
from ..outputs import Output
from ..streaming import BulkRun
from .catalogue import CatalogueError, audited_columns, check_catalogue, read_catalogue
from .duplicates import Pair, Signature, duplicate_pairs, groups
from .findings import FindingRow, attribute_summary, catalogue_findings
from .report import MAX_GROUPS, MAX_MEMBERS, shown_findings, write_report, write_thumbnails

ANSWERS = "answers.jsonl"


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
        client.wait_until_serving(args.retry_seconds)
        info = client.model_info()
    except (EnrichError, TimeoutError) as error:
        print(f"enrich-client audit: {error}", file=sys.stderr)
        return 1
    try:  # the columns the served model audits, by its schema
        sources = read_catalogue(Path(args.catalogue), audited_columns(to_json(info)), info.schema.id_column or "id")
    except (OSError, ValueError, CatalogueError) as error:
        print(f"enrich-client audit: {error}", file=sys.stderr)
        return 2
    try:
        folder.mkdir(parents=True, exist_ok=True)
        output = Output(folder / ANSWERS, "jsonl")
        output.check_options(run_options(args, info.model_version), args.mixed_options)
    except (OSError, ValueError) as error:
        print(f"enrich-client audit: {error}", file=sys.stderr)
        return 2
    output.done -= changed_rows(folder / ANSWERS, sources)  # sent again: the catalogue changed since
    run = BulkRun(client, sources, output, args.streams, args.top_k, args.caption_mode or DEFAULT_CAPTION_MODE,
                  retry_seconds=args.retry_seconds, error_prior=args.error_prior, include=INCLUDED)
    status = run_with_progress(client, run, output, "audit", args.quiet)
    if status == 130:
        return status
    write_audit(folder, sources, to_json(info), Path(args.catalogue).name)
    return status


def run_options(args, model_version: str) -> dict:
    """What decides the answers' content, recorded beside them: a rerun against another model, or with other
    options, would mix answers (unset: the server's default)."""
    mode = caption_mode(args.caption_mode or DEFAULT_CAPTION_MODE)
    return {"top_k": args.top_k or None, "caption_mode": caption_mode_name(mode), "error_prior": args.error_prior,
            "include": list(INCLUDED), "model_version": model_version}


def changed_rows(path: Path, sources: list) -> set[str]:
    """Ids whose answer in the folder audited other values than the catalogue now holds."""
    if not path.exists():
        return set()
    now = {source.key: dict(source.catalogue) for source in sources}
    return {answer["requestId"] for answer in latest_answers(path) if answer["requestId"] in now and
            {f["attribute"]: f["supplied"] for f in answer.get("audit", {}).get("findings", [])} !=
            now[answer["requestId"]]}


def latest_answers(path: Path) -> list[dict]:
    """The OK answers in answers.jsonl, one per request id (the last written)."""
    answers: dict[str, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            answer = json.loads(line)
            if not answer["status"]["code"]:
                answers[answer["requestId"]] = answer
    return list(answers.values())


def write_audit(folder: Path, sources: list, info: dict, title: str) -> dict:
    """findings.csv, duplicates.csv, summary.json and report.html from the answers in the folder."""
    answers = latest_answers(folder / ANSWERS)
    # The error rate is estimated per single-valued attribute (a multi-valued one's findings keep the server's p_wrong)
    labels = {a["name"]: a["labels"] for a in info["attributes"] if a.get("kind", "single") != "multi"}
    rows, rates = catalogue_findings(answers, labels)
    pairs = duplicate_pairs([Signature.of(answer) for answer in answers])
    duplicate_groups = groups(pairs)
    write_findings(folder / "findings.csv", rows)
    write_duplicates(folder / "duplicates.csv", pairs, duplicate_groups)
    summary = {"catalogue": title, "model_version": info["modelVersion"], "rows": len(sources),
               "answered": len(answers), "attributes": attribute_summary(rows, rates, info),
               "duplicates": {"pairs": len(pairs), "groups": len(duplicate_groups),
                              "extra_copies": sum(len(g) - 1 for g in duplicate_groups)}}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_page(folder, f"Audit of {title}", sources, answers, summary, rows, pairs, duplicate_groups)
    print_summary(summary)
    return summary


def write_page(folder: Path, title: str, sources: list, answers: list[dict], summary: dict, rows: list[FindingRow],
               pairs: list[Pair], duplicate_groups: list[list[Signature]]) -> None:
    """report.html with thumbnails of what it shows: the worst findings and the first duplicate groups."""
    similarity = {pair.b.key: pair.similarity for pair in pairs} | {pair.a.key: pair.similarity for pair in pairs}
    shown_groups = [{"size": len(group),
                     "members": [{"key": s.key, "width": s.width, "height": s.height,
                                  "similarity": similarity.get(s.key, 1.0)} for s in group[:MAX_MEMBERS]]}
                    for group in duplicate_groups[:MAX_GROUPS]]
    by_key = {source.key: source for source in sources}
    wanted = [row.id for row in shown_findings(rows)] + [m["key"] for g in shown_groups for m in g["members"]]
    thumbs = write_thumbnails(folder, [k for k in dict.fromkeys(wanted) if k in by_key],
                              lambda key: by_key[key].read())
    looks = {answer["requestId"]: {"palette": answer["metadata"].get("palette", [])} for answer in answers}
    write_report(folder, title, summary["attributes"], rows, shown_groups, looks, thumbs)


def write_findings(path: Path, rows: list[FindingRow]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, [f.name for f in fields(FindingRow)])
        writer.writeheader()
        writer.writerows(row.csv() for row in rows)


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

