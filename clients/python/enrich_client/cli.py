"""`enrich-client`: enrich a file (JSON to stdout) or a folder (one stream, JSON lines, progress bar).

    enrich-client photo.jpg
    enrich-client enrich images/ --out results.jsonl --caption-mode template
    enrich-client bulk images/ 'more/**/*.png' manifest.csv --out results.csv --streams 4   # resumable
    enrich-client info
    enrich-client health

The server is --target, else ENRICH_TARGET, else localhost:50051; a bearer token comes from ENRICH_TOKEN and a
CA from --ca or ENRICH_CA, as in the Node client. Output is protobuf's JSON mapping (camelCase names: baseColour,
articleType, productDisplayName), as the HTTP API and grpcurl write it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from enrich_contract import wire as contract
from enrich_contract.wire import to_json

from .bulk import bulk_main, included
from .client import IMAGE_SUFFIXES, MAX_MESSAGE_MB, EnrichClient, EnrichError, image_files
from .outputs import FORMATS

COMMANDS = ("enrich", "bulk", "audit", "info", "health")
GLOBAL_OPTIONS_WITH_VALUE = ("--target", "--max-message-mb", "--timeout", "--ca", "--cert", "--key",
                             "--server-name", "--retries")


def enrich_file(client: EnrichClient, path: Path, args: argparse.Namespace) -> int:
    try:
        response = client.enrich(path.read_bytes(), request_id=str(path), top_k=args.top_k,
                                 caption_mode=args.caption_mode, **dict.fromkeys(included(args), True))
    except EnrichError as error:
        print(f"{path}: {error}", file=sys.stderr)
        return 1
    text = json.dumps(to_json(response), indent=2, ensure_ascii=False)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0


def enrich_folder(client: EnrichClient, root: Path, args: argparse.Namespace) -> int:
    files = image_files(root)
    if not files:
        print(f"{root}: no image files (by suffix: {', '.join(sorted(IMAGE_SUFFIXES))})", file=sys.stderr)
        return 1

    def requests() -> Iterator[tuple[str, bytes]]:
        for path in files:  # read lazily: the stream's flow control bounds memory
            yield str(path.relative_to(root)), path.read_bytes()

    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    failed = 0
    try:
        with tqdm(total=len(files), unit="img", desc="enrich", file=sys.stderr, disable=args.quiet) as bar:
            for response in client.enrich_stream(requests(), top_k=args.top_k, caption_mode=args.caption_mode,
                                                 **dict.fromkeys(included(args), True)):
                if response.status.code != 0:
                    failed += 1
                    bar.set_postfix(failed=failed)
                out.write(json.dumps(to_json(response), ensure_ascii=False) + "\n")
                bar.update()
    except EnrichError as error:
        print(f"stream failed: {error}", file=sys.stderr)
        return 1
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"{len(files) - failed} enriched, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def caption_mode_argument(value: str) -> str:
    try:
        contract.caption_mode(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def add_request_options(parser: argparse.ArgumentParser, caption_default: str = "the server's, generate",
                        includes: bool = True) -> None:
    """The request's options; `includes`: also a flag per include_* field (the audit sets its own)."""
    parser.add_argument("--top-k", type=int, help="alternatives per attribute (default: the server's, 3)")
    parser.add_argument("--caption-mode", type=caption_mode_argument, metavar="MODE",
                        help=f"{', '.join(contract.CAPTION_MODES)} (default: {caption_default})")
    if includes:
        for flag in contract.INCLUDE_FLAGS:
            what = flag.removeprefix("include_")
            parser.add_argument(f"--{flag.replace('_', '-')}", action="store_true",
                                help=f"the answers carry the image's {what} (computed only when asked)")



def positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return number


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """--engine ray and its settings (the `ray` extra)."""
    group = parser.add_argument_group("Ray (--engine ray, the `ray` extra; answers go to Parquet parts)")
    group.add_argument("--engine", choices=("grpc", "ray"), default="grpc",
                       help="grpc: this process streams to --target (default); ray: a Ray Data job whose actors "
                       "answer from --model, or call --target")
    group.add_argument("--model", help="--engine ray: answer in the actors from this bundle (a path, or any source "
                       "`enrich fetch` takes) instead of calling a server")
    group.add_argument("--ray-address", help="the cluster to join (e.g. ray://head:10001, or auto); default: "
                     "RAY_ADDRESS, else a local cluster on this machine")
    group.add_argument("--ray-actors", type=positive, default=0, help="actors (default: the cluster's CPUs / "
                       "--ray-threads)")
    group.add_argument("--ray-threads", type=positive, default=2, help="CPUs (model and decode threads) per actor")
    group.add_argument("--ray-batch-size", type=positive, default=64, help="images an actor takes at a time")
    parser.add_argument("--part-rows", type=positive, help="Parquet: rows per part file (default 5,000; a killed run "
                        "sends again at most the rows of the part it had not written)")


def add_audit_parser(commands) -> None:
    audit = commands.add_parser("audit", help="check a catalogue's values against its images: findings, error "
                                "rates, duplicates and an HTML report (the `audit` extra)")
    audit.add_argument("catalogue", help="a folder with styles.csv and images/ID.jpg, or a .csv/.jsonl manifest with "
                       "path or url, id, and attribute columns (gender, baseColour, ..., productDisplayName)")
    audit.add_argument("--out", required=True, help="the audit's folder; a rerun sends only what it lacks")
    audit.add_argument("--error-prior", type=float, help="how often a catalogue value is wrong before seeing the "
                       "image (default: the server's, 0.05); the report estimates it from the whole catalogue")
    audit.add_argument("--streams", type=int, default=4, help="concurrent streams")
    add_request_options(audit, caption_default="skip: an audit checks the catalogue's names, it needs no new ones",
                        includes=False)
    audit.add_argument("--mixed-options", action="store_true", help="resume with other options")
    audit.add_argument("--retry-seconds", type=float, default=120.0,
                       help="how long to keep retrying an unavailable or overloaded server")
    audit.add_argument("--answers-format", choices=("parquet", "jsonl"),
                       help="the answers in the folder: Parquet parts in answers/ (default), or answers.jsonl "
                       "(the default where the folder already holds one)")
    audit.add_argument("--quiet", action="store_true", help="no progress bar")
    add_engine_options(audit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enrich-client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", help="host:port of the server (default: ENRICH_TARGET, else localhost:50051)")
    parser.add_argument("--max-message-mb", type=float, default=MAX_MESSAGE_MB,
                        help="largest message sent or received, in MiB")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per unary call")
    parser.add_argument("--round-robin", action="store_true",
                        help="spread calls over all addresses of the target (dns:///HEADLESS-SERVICE:50051)")
    parser.add_argument("--retries", type=int, default=4,
                        help="retries of a unary call on UNAVAILABLE or OVERLOADED, with backoff (0: none)")
    security = parser.add_argument_group("security")
    security.add_argument("--tls", action="store_true", help="connect with TLS, verifying with the system roots")
    security.add_argument("--ca", type=Path, help="PEM CA that signed the server's certificate (implies --tls; "
                          "default: ENRICH_CA)")
    security.add_argument("--cert", type=Path, help="PEM client certificate, for mutual TLS")
    security.add_argument("--key", type=Path, help="PEM private key of --cert")
    security.add_argument("--server-name", help="the name in the server's certificate, when --target is an address")
    parser.epilog = "The bearer token, when the server requires one, is read from ENRICH_TOKEN."
    commands = parser.add_subparsers(dest="command", required=True)
    enrich = commands.add_parser("enrich", help="enrich an image file or a folder of images")
    enrich.add_argument("path", type=Path)
    enrich.add_argument("--out", help="write JSON (file) or JSON lines (folder) here instead of stdout")
    add_request_options(enrich)
    enrich.add_argument("--quiet", action="store_true", help="no progress bar")
    bulk = commands.add_parser("bulk", help="a whole catalogue: folders, globs, CSV/JSONL manifests of paths or "
                               "URLs -> JSON lines or CSV, several streams, resumable")
    bulk.add_argument("inputs", nargs="+", help="folders (recursive), globs (quote them), files, or manifests "
                      "(.csv with a path or url column, .jsonl with a path or url key)")
    bulk.add_argument("--out", required=True, help="results file; a rerun skips what it already holds")
    bulk.add_argument("--format", choices=FORMATS, help="default: from --out: .csv, .jsonl, else a folder of "
                      "Parquet parts")
    bulk.add_argument("--streams", type=int, default=4, help="concurrent streams")
    add_request_options(bulk)
    bulk.add_argument("--sidecars", action="store_true", help="also write IMAGE.json beside each local image")
    bulk.add_argument("--mixed-options", action="store_true",
                      help="resume into an output made with other --top-k/--caption-mode, keeping its rows as they are")
    bulk.add_argument("--retry-seconds", type=float, default=120.0,
                      help="how long to keep retrying an unavailable or overloaded server")
    bulk.add_argument("--quiet", action="store_true", help="no progress bar")
    add_engine_options(bulk)
    add_audit_parser(commands)
    commands.add_parser("info", help="the served model: version, vocabularies, limits, metrics")
    commands.add_parser("health", help="print SERVING / NOT_SERVING; exit 0 only when SERVING")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except BrokenPipeError:  # `enrich-client ... | head`: the reader left; end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `enrich-client photo.jpg` means `enrich-client enrich photo.jpg`.
    positional = [i for i, a in enumerate(argv) if not a.startswith("-") and (i == 0 or argv[i - 1] not in
                                                                               GLOBAL_OPTIONS_WITH_VALUE)]
    if positional and argv[positional[0]] not in COMMANDS and "-h" not in argv and "--help" not in argv:
        argv.insert(positional[0], "enrich")
    args = build_parser().parse_args(argv)
    with EnrichClient(args.target, args.max_message_mb, args.timeout, args.round_robin, tls=args.tls, ca=args.ca,
                      cert=args.cert, key=args.key, server_name=args.server_name, retries=args.retries) as client:
        if args.command == "health":
            status = client.health()
            print(status)
            return 0 if status == "SERVING" else 1
        if args.command == "info":
            try:
                print(json.dumps(to_json(client.model_info()), indent=2, ensure_ascii=False))
            except EnrichError as error:
                print(error, file=sys.stderr)
                return 1
            return 0
        if args.command == "bulk":
            return bulk_main(client, args)
        if args.command == "audit":
            try:
                from .audit.command import audit_main
            except ImportError as missing:
                print(f"enrich-client audit needs the `audit` extra ({missing.name} is missing): "
                      "pip install 'enrich-grpc-client[audit]'", file=sys.stderr)
                return 2
            return audit_main(client, args)
        if args.path.is_dir():
            return enrich_folder(client, args.path, args)
        if not args.path.is_file():
            print(f"{args.path}: no such file or folder", file=sys.stderr)
            return 1
        return enrich_file(client, args.path, args)


if __name__ == "__main__":
    raise SystemExit(main())
