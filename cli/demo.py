"""`enrich demo`: the whole path, offline, on a laptop-class CPU in a few minutes.

synthetic catalogue -> train a small model -> `enrich serve` (a real server process) ->
`enrich-client` streams held-out images over gRPC -> typed results and test metrics printed; then the
held-out catalogue, with known mistakes, is audited against its images and the audit scored.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .server_process import start_server

# A small TinyViT (same architecture family, fewer/narrower blocks) at 80 px, the catalogue's own resolution:
# it trains from random weights on 2 CPU cores in about two minutes. Real training uses tiny_vit_21m_224
# with pretrained weights (README, "On the real data").
DEMO_BACKBONE_KWARGS = '{"embed_dims": [32, 48, 64, 96], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 3]}'
DEMO_TRAIN_ARGS = [
    "--pretrained", "none", "--decoder", "small", "--backbone_kwargs", DEMO_BACKBONE_KWARGS,
    "--image_size", "80", "--finetune_lr", "4e-3", "--head_epochs", "18", "--early_stopping", "0",
    "--caption_epochs", "8", "--decoder_layers", "2", "--decoder_width", "128", "--decoder_heads", "4",
    "--tokenizer_vocab", "800",
]


def run(step: str, command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print(f"\n== {step}\n$ {' '.join(command)}", flush=True)
    return subprocess.run(command, check=True, **kwargs)


def held_out_accuracy(rows: list[dict], truth: dict[str, dict[str, str]]) -> str:
    """Accuracy over every held-out answer the server gave, per attribute that matters most (the answers' JSON
    names are the catalogue's columns)."""
    from enrich_model.fashion import FASHION_SCHEMA

    parts = []
    for attribute in reversed(FASHION_SCHEMA.headline):
        pairs = [(truth.get(Path(r["requestId"]).stem, {}).get(attribute), r["metadata"][attribute]["label"])
                 for r in rows if r["status"]["code"] == 0]
        pairs = [(t, p) for t, p in pairs if t]
        if pairs:
            parts.append(f"{attribute} {sum(t == p for t, p in pairs) / len(pairs):.3f}")
    answered = sum(r["status"]["code"] == 0 for r in rows)
    return ", ".join(parts) + f" (n={answered})"


def show_results(results_path: Path, truth: dict[str, dict[str, str]], shown: int = 12) -> None:
    all_rows = [json.loads(line) for line in results_path.read_text().splitlines()]
    all_rows.sort(key=lambda r: r["requestId"])
    rows = all_rows[:shown]
    print(f"\n{'image':<14}{'true articleType / colour':<32}{'predicted (confidence)':<44}caption")
    for row in rows:
        image_id = Path(row["requestId"]).stem
        real = truth.get(image_id, {})
        if row["status"]["code"] != 0:
            print(f"{row['requestId']:<14}{'':<32}ERROR {row['status']['message'][:60]}")
            continue
        meta = row["metadata"]
        article, colour = meta["articleType"], meta["baseColour"]
        mark = "ok" if article["label"] == real.get("articleType") and colour["label"] == real.get("baseColour") \
            else "  "
        predicted = f"{article['label']} ({article['confidence']:.2f}) / {colour['label']} ({colour['confidence']:.2f})"
        true = f"{real.get('articleType', '?')} / {real.get('baseColour', '?')}"
        print(f"{image_id:<14}{true:<32}{mark} {predicted:<41}{meta['productDisplayName']['text']}")
    print(f"\nheld-out catalogue (another seed, every image through gRPC): {held_out_accuracy(all_rows, truth)}")
    ok = [r for r in rows if r["status"]["code"] == 0]
    if ok:
        meta = ok[0]["metadata"]
        print(f"\none typed answer in full ({ok[0]['requestId']}, model {ok[0]['modelVersion']}):")
        for field, value in meta.items():
            if "alternatives" in value:
                others = ", ".join(f"{a['label']} {a['confidence']:.2f}" for a in value["alternatives"][1:])
                derived = " (from articleType)" if value["derived"] else ""
                print(f"  {field:<22}{value['label']} {value['confidence']:.2f}{derived}   next: {others}")
            elif "text" in value:
                print(f"  {field:<22}{value['text']!r} ({value['method']}, {value['confidence']:.2f})")
            else:
                print(f"  {field:<22}{value}")
        print(f"  {'timings':<22}{ok[0]['timings']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="enrich demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="where to write data, bundle and results (default: temp)")
    parser.add_argument("--count", type=int, default=1500, help="synthetic catalogue size")
    parser.add_argument("--holdout", type=int, default=300,
                        help="new images (another seed) to enrich through the server; the first 12 are shown")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the demo never needs the hub
    started = time.perf_counter()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="enrich-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    catalogue, holdout, bundle = workdir / "catalogue", workdir / "holdout", workdir / "bundle"
    enrich = [sys.executable, "-m", "enrich_cli.main"]

    run("synthetic catalogue", [*enrich, "synth", "--out", str(catalogue), "--count", str(args.count)])
    run("held-out images (never seen in training)",
        [*enrich, "synth", "--out", str(holdout), "--count", str(args.holdout), "--seed", "12345"])
    run("train", [*enrich, "train", "--data", str(catalogue), "--out", str(bundle), *DEMO_TRAIN_ARGS])

    print("\n== serve", flush=True)
    served = start_server(bundle, workdir / "server.log", "--grace-seconds", "5", echo=True)
    try:
        client = [sys.executable, "-m", "enrich_client.cli", "--target", f"127.0.0.1:{served.port}"]
        run("health check (grpc.health.v1)", [*client, "health"])
        results = workdir / "results.jsonl"
        run("enrich the held-out images over one gRPC stream, with each product's palette and signature",
            [*client, "enrich", str(holdout / "images"), "--out", str(results), "--include-palette",
             "--include-signature"])
        audited, audit = workdir / "holdout-with-mistakes", workdir / "audit"
        run("the held-out catalogue with known mistakes: values replaced, photos uploaded twice",
            [*enrich, "corrupt", str(holdout), "--out", str(audited), "--seed", "1"])
        run("audit it against its images", [*client, "audit", str(audited), "--out", str(audit), "--quiet"])
    finally:
        served.process.send_signal(signal.SIGTERM)
        served.process.wait(timeout=30)

    from enrich_data.catalogue import read_styles_csv
    from enrich_model.metrics import format_metrics

    truth = {row["id"]: row for row in read_styles_csv(holdout / "styles.csv")[0]}
    show_results(results, truth)
    metrics = json.loads((bundle / "metrics.json").read_text())
    print("\ntest-split metrics (written to the bundle's metrics.json):")
    print(format_metrics(metrics))
    run("the audit against what was changed", [*enrich, "corrupt", str(audited), "--score", str(audit)])
    print(f"\npictures: {bundle / 'training_curves.png'}, {bundle / 'confusion_articleType.png'}; the audit's "
          f"report: {audit / 'report.html'}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s; everything is under {workdir}")
    print(f"serve the bundle it trained: enrich serve --model {bundle} (add --http-port 8080 for HTTP/JSON)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
