"""`enrich-client bulk`: a whole catalogue through several streams, into JSON lines or CSV, resumable.

    enrich-client bulk photos/ --out results.jsonl                # a folder, recursively, by extension
    enrich-client bulk 'shoots/**/*.jpg' manifest.csv --out results.csv --streams 4

Every input image gets exactly one row. A rerun with the same --out skips what the file already holds,
so an interrupted run (Ctrl-C, a killed process, a lost server) continues where it stopped; at most
the images in flight are sent again. A server that restarts or drains mid-run is waited for, with
backoff. A bad image is a row with its reason, never the end of the run. The options a run asked for are
kept beside the output (OUT.bulk.json): a rerun with other options is refused unless told to mix them.

Exit status: 0 when every input image has an OK row; 1 when some row failed (in this run or an earlier one)
or the run stopped; 2 when an input matches no image, or the options do not match the output's.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from enrich.v1 import enrich_pb2
from enrich_contract import wire as contract

from .client import EnrichClient, EnrichError
from .outputs import CsvLayout, Output, output_format
from .sources import collect
from .streaming import BulkRun


def included(args) -> list[str]:
    """The include_* fields the command line asked for (`--include-palette`, ...)."""
    return [flag for flag in contract.INCLUDE_FLAGS if getattr(args, flag, False)]


def run_options(args) -> dict:
    """What decides a row's content, recorded beside the output (unset: the server's default)."""
    mode = contract.caption_mode(args.caption_mode)
    return {"top_k": args.top_k or None, "caption_mode": contract.caption_mode_name(mode) if mode else None,
            "format": output_format(Path(args.out), args.format), "include": included(args)}


def bulk_main(client: EnrichClient, args) -> int:
    out = Path(args.out)
    layout = None
    if output_format(out, args.format) == "csv":  # its columns are the served model's attributes
        try:
            client.wait_until_serving(args.retry_seconds)
            layout = CsvLayout.of(client.model_info())
        except (EnrichError, TimeoutError) as error:
            print(f"enrich-client bulk: the CSV's columns are the served model's, and no server answered: {error}",
                  file=sys.stderr)
            return 1
    try:
        sources = collect(args.inputs)
        output = Output(out, output_format(out, args.format), layout)
    except (OSError, ValueError) as error:
        print(f"enrich-client bulk: {error}", file=sys.stderr)
        return 2
    try:
        output.check_options(run_options(args), args.mixed_options)
    except (OSError, ValueError) as error:
        output.close()
        print(f"enrich-client bulk: {error}", file=sys.stderr)
        return 2
    run = BulkRun(client, sources, output, args.streams, args.top_k, args.caption_mode, args.sidecars,
                  args.retry_seconds, include=included(args))
    return run_with_progress(client, run, output, "bulk", args.quiet)


def run_with_progress(client: EnrichClient, run: BulkRun, output: Output, command: str, quiet: bool) -> int:
    """Runs `run` with a progress bar; Ctrl-C stops it resumably. The exit status: 0 when every image has an OK
    row, 1 when some row failed or the run stopped, 130 when interrupted."""
    from tqdm import tqdm

    bar = tqdm(total=run.summary.total, initial=0, unit="img", desc=command, file=sys.stderr, disable=quiet,
               dynamic_ncols=True)

    def answered(response: enrich_pb2.EnrichResponse) -> None:
        bar.update()
        if response.status.code:
            bar.set_postfix(failed=run.summary.failed, refresh=False)

    run.on_answer = answered
    with contextlib.suppress(EnrichError):  # not serving yet: the streams wait for it; gRPC checks sizes then
        run.max_image_bytes = client.model_info().limits.max_image_bytes
    bar.update(run.summary.skipped)
    try:
        summary = run.run()
    except KeyboardInterrupt:
        run.cancel()
        bar.close()
        output.close()
        print(f"\ninterrupted: {run.summary.line()}\nrun the same command again to continue", file=sys.stderr)
        return 130
    except EnrichError as error:
        bar.close()
        output.close()
        print(f"enrich-client {command}: stopped: {error}\n{run.summary.line()}", file=sys.stderr)
        return 1
    bar.close()
    output.close()
    print(summary.line(), file=sys.stderr)
    return 0 if summary.complete else 1
