"""`enrich bench ray`: `enrich-client bulk --engine ray` against `enrich-client bulk` to a local server, on the
same images with the same threads, alternated; and whether they gave the same labels and captions.

    enrich bench ray --model bundles/synth --count 2000      # synthetic catalogue images (written first)

Ray runs on a cluster started once for the bench (`ray start --head`), as a team's cluster would be running;
each Ray run's time includes its actors' start (loading the bundle); the server's start is not counted. Each
engine also runs the first half of the images alone: the slope between the two runs is its rate once running.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as ds

from . import server_process

CLIENT = [sys.executable, "-m", "enrich_client.cli"]
# A cluster for this bench alone: no usage reports, and no token (its clients are this bench's own processes).
RAY_ENVIRONMENT = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ | RAY_ENVIRONMENT)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[2:5])} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started


def labels(folder: Path) -> dict[str, tuple]:
    """Per image: every attribute's label and the caption (the columns the answers' own model names)."""
    from enrich_client.audit.answers import AuditAnswers

    answers = AuditAnswers.parquet(folder)
    names = [answers.column(a["name"]) for a in answers.info["attributes"]]
    caption = answers.column(answers.info["schema"]["captionColumn"])
    rows = ds.dataset(folder, format="parquet").to_table().select(["requestId", *names, caption]).to_pylist()
    return {row["requestId"]: (*(row[n]["label"] for n in names), (row[caption] or {}).get("text"))
            for row in rows}


def start_cluster(cpus: int) -> tuple[str, Path]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray = Path(sys.executable).with_name("ray")
    subprocess.run([str(ray), "start", "--head", f"--port={port}", f"--num-cpus={cpus}", "--include-dashboard=false"],
                   check=True, capture_output=True, env=os.environ | RAY_ENVIRONMENT)
    return f"127.0.0.1:{port}", ray


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="enrich bench ray", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="the bundle (exported: both sides run it torch-free)")
    parser.add_argument("--images", type=Path, help="a folder of images (default: a synthetic catalogue's)")
    parser.add_argument("--count", type=int, default=2000, help="synthetic images to write (without --images)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="the server's threads, and Ray's CPUs")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--caption-mode", default="generate")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="enrich-bench-ray-"))
    images = args.images
    if images is None:
        from enrich_data.synth import write_catalogue

        images = write_catalogue(work / "catalogue", args.count, seed=11, progress=False) / "images"
    files = sorted(p for p in images.iterdir() if p.is_file())
    count = len(files)
    half = work / "half.csv"  # the first half of the images: the slope between the two is the rate once running
    half.write_text("path\n" + "".join(f"{p}\n" for p in files[: count // 2]), encoding="utf-8")
    request = ["--caption-mode", args.caption_mode, "--quiet"]
    address, ray = start_cluster(args.threads)
    times: dict[str, list[float]] = {"bulk": [], "ray": [], "bulk_half": [], "ray_half": []}
    try:
        with server_process(args.model, "ray-bench", "--cache-mb", "0", "--threads", str(args.threads)) as client:
            engines = {"bulk": ["--target", client.target], "ray": [
                "--engine", "ray", "--model", str(args.model), "--ray-address", address, "--ray-threads",
                str(args.threads), "--ray-actors", "1"]}
            for round_ in range(args.rounds):
                for name, options in engines.items():
                    for size, source in (("", images), ("_half", half)):
                        out = work / f"{name}{size}-{round_}"
                        ahead, after = (options, []) if name == "bulk" else ([], options)
                        times[name + size].append(timed([*CLIENT, *ahead, "bulk", str(source), "--out", str(out),
                                                         *request, *after]))
    finally:
        subprocess.run([str(ray), "stop", "--force", "--grace-period", "1"], capture_output=True)
    reference, ours = labels(work / "bulk-0"), labels(work / "ray-0")
    same = sum(reference[key] == ours.get(key) for key in reference)
    median = {name: statistics.median(seconds) for name, seconds in times.items()}
    rates = {name: count / median[name] for name in ("bulk", "ray")}
    running = {name: (count - count // 2) / max(1e-9, median[name] - median[name + "_half"]) for name in rates}
    figures = {"images": count, "threads": args.threads, "rounds": args.rounds, "same_labels_and_captions": same,
               "bulk_images_per_second": round(rates["bulk"], 1), "ray_images_per_second": round(rates["ray"], 1),
               "ratio": round(rates["ray"] / rates["bulk"], 3),
               "bulk_running_images_per_second": round(running["bulk"], 1),
               "ray_running_images_per_second": round(running["ray"], 1),
               "running_ratio": round(running["ray"] / running["bulk"], 3)}
    print(f"{count} images, {args.threads} threads, caption {args.caption_mode}, whole commands: bulk to a local "
          f"server {rates['bulk']:.1f} img/s, Ray Data {rates['ray']:.1f} img/s (ratio {figures['ratio']:.2f}); "
          f"once running (the second half's images over its extra time): bulk {running['bulk']:.1f}, Ray "
          f"{running['ray']:.1f} img/s (ratio {figures['running_ratio']:.2f}); medians of {args.rounds}; the same "
          f"labels and captions on {same} of {count}")
    if args.json:
        print(json.dumps(figures))
    shutil.rmtree(work, ignore_errors=True)
    return 0
