"""`enrich`: one command for the whole service. Subcommands import their heavy parts lazily."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

USAGE = """usage: enrich COMMAND [ARGS]

commands:
  demo     offline end to end: synthetic catalogue -> train -> serve -> enrich through the client
  synth    write a synthetic catalogue: Fashion Product Images' layout (styles.csv + images/), or --schema home
  corrupt  copy a catalogue with known mistakes and near-duplicates (truth.json), to measure an audit against
           (`enrich corrupt --score AUDIT_DIR CORRUPTED` scores an `enrich-client audit` of it)
  train    train a model bundle from a catalogue (--data DIR|DATASET --out BUNDLE)
  evaluate score a bundle on a labelled catalogue (--model BUNDLE --data DIR), as it serves
  serve    serve a bundle over gRPC (--model BUNDLE, port 50051)
  export   write the OpenVINO export beside a bundle (every stage; a CPU server then runs without torch)
  info     print a bundle's version, vocabulary sizes and test metrics
  fetch    copy a bundle from the hub, a URL or a path into a folder (an init container's job)
  health   ask the local server for its grpc.health.v1 status (the image's HEALTHCHECK)
  bench    latency and throughput through real gRPC calls (--model BUNDLE or --target HOST:PORT);
           `enrich bench audit-scale` and `enrich bench ray`: the batch jobs at scale

`enrich COMMAND --help` describes each one.
"""


def synth(argv: list[str]) -> int:
    from enrich_data.synth import write_catalogue
    from enrich_data.synth_home import CSV_FILE, write_home_catalogue

    parser = argparse.ArgumentParser(prog="enrich synth", description="Write a synthetic catalogue.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schema", choices=("fashion", "home"), default="fashion",
                        help="fashion: Fashion Product Images' columns (styles.csv); home: home goods with columns of "
                             "their own (products.csv: product_type and its department, material, colour_family, "
                             "a multi-valued style, a title)")
    parser.add_argument("--image-size", default="60x80", help="WIDTHxHEIGHT (the small HF copy is 60x80)")
    parser.add_argument("--photo-like", action="store_true",
                        help="the same products photographed less tidily: re-framed, tilted, lit unevenly, noisy, "
                             "blurred, re-compressed (labels unchanged), for robustness checks")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.image_size.lower().split("x"))
    if args.schema == "home":
        write_home_catalogue(args.out, args.count, seed=args.seed, image_size=(width, height))
        print(f"wrote {args.count} rows to {args.out / CSV_FILE} and images to {args.out / 'images'}")
        return 0
    write_catalogue(args.out, args.count, seed=args.seed, image_size=(width, height), photo_like=args.photo_like)
    print(f"wrote {args.count} rows to {args.out / 'styles.csv'} and images to {args.out / 'images'}")
    return 0


def corrupt(argv: list[str]) -> int:
    from enrich_data.corrupt import TRUTH_FILE, corrupt

    parser = argparse.ArgumentParser(prog="enrich corrupt", description="Copy a catalogue (a CSV + images/) with "
                                     "known mistakes: replaced values (by default of its colour and product "
                                     "attributes: baseColour and articleType) and extra rows that are near-duplicate "
                                     "uploads. What changed goes to OUT/truth.json.")
    parser.add_argument("catalogue", type=Path)
    parser.add_argument("--out", type=Path, help="where the corrupted copy goes")
    parser.add_argument("--score", type=Path, metavar="AUDIT_DIR", help="instead: score the audit in AUDIT_DIR "
                        "(enrich-client audit CATALOGUE --out AUDIT_DIR) against CATALOGUE's truth.json; prints JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--colour-rate", type=float, default=0.05,
                        help="share of the colour attribute's values replaced (baseColour)")
    parser.add_argument("--article-rate", type=float, default=0.05,
                        help="share of the product attribute's values replaced (articleType)")
    parser.add_argument("--rate", action="append", default=[], metavar="ATTRIBUTE=SHARE",
                        help="replace this share of ATTRIBUTE's values instead (repeat for several): material=0.05")
    parser.add_argument("--duplicate-rate", type=float, default=0.03, help="extra rows, near-duplicates of others")
    args = parser.parse_args(argv)
    if args.score:
        return score(args.catalogue, args.score)
    if not args.out:
        parser.error("--out (or --score) is required")
    try:
        rates = {a: float(share) for a, share in (item.split("=", 1) for item in args.rate)} if args.rate else None
    except ValueError:
        parser.error("--rate takes ATTRIBUTE=SHARE, e.g. material=0.05")
    try:
        truth = corrupt(args.catalogue, args.out, args.seed, args.colour_rate, args.article_rate, args.duplicate_rate,
                        rates)
    except (ValueError, OSError) as error:
        print(f"enrich corrupt: {error}", file=sys.stderr)
        return 2
    replaced = " and ".join(f"{len(ids)} {attribute}" for attribute, ids in truth.replaced.items())
    print(f"wrote {truth.rows} rows to {args.out}: {replaced} values replaced, "
          f"{len(truth.duplicates)} near-duplicates added; {args.out / TRUTH_FILE} says which")
    return 0


def score(catalogue: Path, audit: Path) -> int:
    import csv
    import json

    from enrich_data.corrupt import Truth, score_audit

    with open(audit / "findings.csv", newline="", encoding="utf-8") as handle:
        findings = list(csv.DictReader(handle))
    with open(audit / "duplicates.csv", newline="", encoding="utf-8") as handle:
        pairs = [(row["id_a"], row["id_b"]) for row in csv.DictReader(handle)]
    summary = json.loads((audit / "summary.json").read_text(encoding="utf-8"))
    print(json.dumps(score_audit(Truth.read(catalogue), findings, pairs, summary), indent=2))
    return 0


def info(argv: list[str]) -> int:
    import json

    from enrich_model.bundle_config import BundleConfig, BundleError
    from enrich_model.metrics import format_metrics

    parser = argparse.ArgumentParser(prog="enrich info", description="Describe a model bundle (without torch).")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--json", action="store_true", help="print the whole enrich.json")
    args = parser.parse_args(argv)
    try:
        config = BundleConfig.read(args.bundle)
    except BundleError as error:
        print(f"enrich info: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(config.to_json(), indent=2))
        return 0
    weights = "RANDOM initialisation (no pretrained weights)" if config.backbone.started_random \
        else f"pretrained: {config.backbone.weights}"
    print(f"model {config.model_version} ({config.format}, created {config.created})")
    print(f"backbone {config.backbone.name} {config.backbone.kwargs or ''}, weights {weights}")
    print(f"input {config.preprocessing['input_size']}, decoder {config.caption.decoder}, "
          f"colour features for {', '.join(config.heads.colour_attributes) or 'none'}")
    print("schema:", *config.catalogue_schema().describe(), sep="\n")
    print("classes: " + ", ".join(f"{k} {len(v)}" for k, v in config.attributes.items()))
    if config.heads.accept_thresholds:
        print(f"accepted without review (precision {config.heads.target_precision:g} on validation) from: "
              + ", ".join(f"{k} {v:.2f}" for k, v in config.heads.accept_thresholds.items() if v <= 1)
              + (f"; never: {', '.join(k for k, v in config.heads.accept_thresholds.items() if v > 1)}"
                 if any(v > 1 for v in config.heads.accept_thresholds.values()) else ""))
    if config.heads.abstain_thresholds:
        print("abstain below: " + ", ".join(f"{k} {v:.2f}" for k, v in config.heads.abstain_thresholds.items()))
    if config.test_metrics:
        print(format_metrics(config.test_metrics))
    for warning in config.warnings:
        print(f"WARNING: {warning}")
    return 0


def export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="enrich export", description="Write BUNDLE/openvino/: every graph of the "
                                     "model as OpenVINO IR (fp32 weights) with a manifest of hashes, which a CPU "
                                     "server runs without torch (the serve-cpu extra) and checks at every start. "
                                     "Needs torch (the serve or train extra).")
    parser.add_argument("bundle", type=Path)
    args = parser.parse_args(argv)
    from enrich_model.backends import openvino_installed, torch_installed
    from enrich_model.bundle_config import BundleError

    if not (openvino_installed() and torch_installed()):
        print("enrich export: needs openvino and torch: pip install 'enrich-service[serve]'", file=sys.stderr)
        return 2
    from transformers.utils import logging as hf_logging

    from enrich_model.bundle import load_bundle
    from enrich_model.export import export_bundle

    hf_logging.disable_progress_bar()
    try:
        exported = export_bundle(load_bundle(args.bundle))
    except BundleError as error:
        print(f"enrich export: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"enrich export: could not write {args.bundle / 'openvino'}: {error.strerror or error}", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in exported.folder.iterdir()) / 1e6
    print(f"wrote {exported.folder} for {exported.manifest.model_version} in {exported.seconds:.1f} s: "
          f"{', '.join(sorted(exported.manifest.files))} and export.json ({size:.0f} MB)")
    return 0


def health(argv: list[str]) -> int:
    """Torch-free and quick: docker runs it every few seconds inside the serving container."""
    import os

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    parser = argparse.ArgumentParser(prog="enrich health", description="Ask `enrich serve` for its grpc.health.v1 "
                                     "status; exit 0 only when SERVING. Without --address it reads the server's own "
                                     "settings: 127.0.0.1 and ENRICH_HEALTH_PORT, else ENRICH_PORT (50051).")
    parser.add_argument("--address", help="HOST:PORT of a plain-text gRPC port")
    parser.add_argument("--service", default="", help="the service to ask about (default: the whole server)")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    address = args.address
    if address is None:
        health_port = int(os.environ.get("ENRICH_HEALTH_PORT", "-1"))
        if health_port < 0 and os.environ.get("ENRICH_TLS_CERT"):
            print("enrich health: the server speaks TLS (ENRICH_TLS_CERT); set ENRICH_HEALTH_PORT so that it also "
                  "answers health in plain text", file=sys.stderr)
            return 2
        address = f"127.0.0.1:{health_port if health_port >= 0 else os.environ.get('ENRICH_PORT', '50051')}"
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as error:
            print(f"{address}: {error.code().name} ({error.details()})", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(status)
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        from enrich_trainer.train import main as train_main

        return train_main(rest)
    if command == "serve":
        from enrich_server.app import main as serve_main

        return serve_main(rest)
    if command == "demo":
        from .demo import main as demo_main

        return demo_main(rest)
    if command == "evaluate":
        from enrich_trainer.evaluation import main as evaluate_main

        return evaluate_main(rest)
    if command == "bench":
        from .bench import main as bench_main

        return bench_main(rest)
    if command == "synth":
        return synth(rest)
    if command == "corrupt":
        return corrupt(rest)
    if command == "info":
        return info(rest)
    if command == "export":
        return export(rest)
    if command == "health":
        return health(rest)
    if command == "fetch":
        from enrich_data.fetch import main as fetch_main

        return fetch_main(rest)
    print(f"enrich: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
