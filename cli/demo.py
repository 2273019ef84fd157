"""`enrich demo`: the whole path, offline, on a laptop-class CPU in a few minutes.

synthetic catalogue -> train a small model -> `enrich serve` (a real server process) ->
`enrich-client` streams held-out images over gRPC -> typed results and test metrics printed.
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

# A small TinyViT (same architecture family, fewer/narrower blocks) at 64 px: it trains from random
# weights on 2 CPU cores in about two minutes. Real training uses tiny_vit_5m_224 with pretrained weights.
DEMO_BACKBONE_KWARGS = '{"embed_dims": [16, 32, 48, 64], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 3, 4]}'
DEMO_TRAIN_ARGS = [
    "--pretrained", "none", "--decoder", "small", "--backbone_kwargs", DEMO_BACKBONE_KWARGS,
    "--image_size", "64", "--backbone_mode", "finetune", "--finetune_lr", "3e-3", "--head_epochs", "30",
    "--caption_epochs", "15", "--decoder_layers", "2", "--decoder_width", "128", "--decoder_heads", "4",
    "--tokenizer_vocab", "800",
]


def run(step: str, command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print(f"\n== {step}\n$ {' '.join(command)}", flush=True)
    return subprocess.run(command, check=True, **kwargs)


def show_results(results_path: Path, truth: dict[str, dict[str, str]]) -> None:
    rows = [json.loads(line) for line in results_path.read_text().splitlines()]
    rows.sort(key=lambda r: r["request_id"])
    print(f"\n{'image':<14}{'true articleType / colour':<32}{'predicted (confidence)':<44}caption")
    for row in rows:
        image_id = Path(row["request_id"]).stem
        real = truth.get(image_id, {})
        if row["status"]["code"] != 0:
            print(f"{row['request_id']:<14}{'':<32}ERROR {row['status']['message'][:60]}")
            continue
        meta = row["metadata"]
        article, colour = meta["article_type"], meta["base_colour"]
        mark = "ok" if article["label"] == real.get("articleType") and colour["label"] == real.get("baseColour") \
            else "  "
        predicted = f"{article['label']} ({article['confidence']:.2f}) / {colour['label']} ({colour['confidence']:.2f})"
        true = f"{real.get('articleType', '?')} / {real.get('baseColour', '?')}"
        print(f"{image_id:<14}{true:<32}{mark} {predicted:<41}{meta['product_display_name']['text']}")
    ok = [r for r in rows if r["status"]["code"] == 0]
    if ok:
        meta = ok[0]["metadata"]
        print(f"\none typed answer in full ({ok[0]['request_id']}, model {ok[0]['model_version']}):")
        for field, value in meta.items():
            if "alternatives" in value:
                others = ", ".join(f"{a['label']} {a['confidence']:.2f}" for a in value["alternatives"][1:])
                derived = " (derived from article_type)" if value["derived"] else ""
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
    parser.add_argument("--holdout", type=int, default=12, help="new images to enrich through the server")
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
    server, port = start_server(bundle, workdir / "server.log", "--grace-seconds", "5", echo=True)
    try:
        client = [sys.executable, "-m", "enrich_client.cli", "--target", f"127.0.0.1:{port}"]
        run("health check (grpc.health.v1)", [*client, "health"])
        results = workdir / "results.jsonl"
        run("enrich the held-out images over one gRPC stream",
            [*client, "enrich", str(holdout / "images"), "--out", str(results)])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    from enrich_model.data import read_styles_csv
    from enrich_trainer.train import format_metrics

    truth = {row["id"]: row for row in read_styles_csv(holdout / "styles.csv")[0]}
    show_results(results, truth)
    metrics = json.loads((bundle / "metrics.json").read_text())
    print("\ntest-split metrics (written to the bundle's metrics.json):")
    print(format_metrics(metrics))
    print(f"\npictures: {bundle / 'training_curves.png'}, {bundle / 'confusion_articleType.png'}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s; everything is under {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
