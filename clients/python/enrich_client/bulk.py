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
from typing import TYPE_CHECKING

from enrich.v1 import enrich_pb2
from enrich_contract import wire as contract

from .client import EnrichClient, EnrichError
from .outputs import Output, open_output, output_format
from .sources import collect
from .streaming import BulkRun, RequestOptions

if TYPE_CHECKING:
    from .answer_parts import ParquetOutput


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
    fmt = output_format(out, args.format)
    if args.engine == "ray" and (fmt != "parquet" or args.sidecars):
        print("enrich-client bulk: --engine ray writes Parquet parts only: give --out a folder (or --format "
              "parquet), without --sidecars", file=sys.stderr)
        return 2
    try:  # CSV's and Parquet's columns are the served model's
        info = answering_model(client, args) if fmt != "jsonl" else None
    except (EnrichError, TimeoutError) as error:
        print(f"enrich-client bulk: the output's columns are the served model's, and no server answered: {error}",
              file=sys.stderr)
        return 1
    except (OSError, ValueError, ImportError) as error:  # --model: no bundle there, or no serving extra here
        print(f"enrich-client bulk: cannot read the model {args.model}: {error}", file=sys.stderr)
        return 2
    try:
        sources = collect(args.inputs)
        output = open_output(out, fmt, info, args.part_rows)
    except (OSError, ValueError, ImportError) as error:
        print(f"enrich-client bulk: {error}", file=sys.stderr)
        return 2
    try:
        output.check_options(run_options(args), args.mixed_options)
    except (OSError, ValueError) as error:
        output.close()
        print(f"enrich-client bulk: {error}", file=sys.stderr)
        return 2
    if args.engine == "ray":
        return run_on_ray_with_summary(client, args, sources, output, request_options(args), "bulk")
    run = BulkRun(client, sources, output, args.streams, args.top_k, args.caption_mode, args.sidecars,
                  args.retry_seconds, include=included(args))
    return run_with_progress(client, run, output, "bulk", args.quiet)


def request_options(args, error_prior: float | None = None, include: list[str] | None = None,
                    caption_mode: str | None = None):
    """What every request of a Ray run asks for (`caption_mode`: the command's default, when not given)."""
    return RequestOptions(args.top_k, args.caption_mode or caption_mode, error_prior,
                          tuple(included(args) if include is None else include))


def answering_model(client: EnrichClient, args) -> enrich_pb2.ModelInfo:
    """The description of the model that will answer: the bundle's (--engine ray --model), else the server's.
    Raises EnrichError or TimeoutError when no server answers."""
    if args.engine == "ray" and args.model:
        from .ray_engine import RayEngine, model_info

        return model_info(RayEngine(bundle=args.model))
    client.wait_until_serving(args.retry_seconds)
    return client.model_info()


def run_on_ray_with_summary(client: EnrichClient, args, sources: list, output, options, command: str) -> int:
    """The run on Ray (ray_engine), with bulk's exit status: 0 when every image has an OK row."""
    import time

    from .ray_engine import engine_of, run_on_ray

    started = time.monotonic()
    engine = engine_of(args, client.target)
    before = len(output.done)
    try:
        ok, failed = run_on_ray(engine, sources, output, options, args.quiet)
    except KeyboardInterrupt:
        output.close()
        print("\ninterrupted: run the same command again to continue", file=sys.stderr)
        return 130
    except Exception as error:  # the cluster, an actor that cannot start, a task that failed for good
        output.close()
        print(f"enrich-client {command}: the Ray job stopped ({type(error).__name__}: {str(error).splitlines()[0]}"
              f"); what was written stays, and the same command continues", file=sys.stderr)
        return 1
    seconds = time.monotonic() - started
    missing = sum(source.key not in output.done for source in sources)
    print(f"{ok} enriched, {failed} failed, {before} already in the output, {missing} not done; {seconds:.0f} s, "
          f"{(ok + failed) / max(seconds, 1e-9):.1f} img/s (ray)", file=sys.stderr)
    return 0 if not output.failed and not missing else 1


def run_with_progress(client: EnrichClient, run: BulkRun, output: Output | ParquetOutput, command: str,
                      quiet: bool) -> int:
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
