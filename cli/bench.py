"""`enrich bench`: latency and throughput of a served model, measured through real gRPC calls.

    enrich bench --model BUNDLE              # starts a server on loopback with that bundle
    enrich bench --target HOST:PORT          # measures a running server instead

Images are synthetic product shots (or `--images DIR`); every number is printed, none is asserted.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import signal
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from enrich_client import EnrichClient, image_files

from .server_process import start_server


def synthetic_images(count: int, size: tuple[int, int]) -> list[bytes]:
    from enrich_model.synth import draw, make_row

    rng = random.Random(0)
    images = []
    for n in range(count):
        row, pattern = make_row(rng, n)
        buffer = io.BytesIO()
        draw(row, pattern, size, rng).save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench(target: str, images: list[bytes], concurrency: int) -> list[tuple[str, str]]:
    rows = []
    with EnrichClient(target, timeout=300) as client:
        client.wait_until_serving()
        client.enrich(images[0])  # connection and first-call costs out of the way
        for caption in ("generate", "skip"):
            latencies = []
            for data in images[: min(len(images), 32)]:
                start = time.perf_counter()
                client.enrich(data, caption=caption)
                latencies.append((time.perf_counter() - start) * 1000)
            rows.append((f"unary, one at a time, caption={caption}",
                         f"p50 {statistics.median(latencies):.1f} ms, p95 {percentile(latencies, 0.95):.1f} ms"))
        with ThreadPoolExecutor(concurrency) as pool:
            start = time.perf_counter()
            list(pool.map(lambda data: client.enrich(data), images))
            elapsed = time.perf_counter() - start
        rows.append((f"unary, {concurrency} concurrent callers", f"{len(images) / elapsed:.1f} img/s"))
        for caption in ("generate", "template", "skip"):
            start = time.perf_counter()
            answers = list(client.enrich_stream(((str(i), d) for i, d in enumerate(images)), caption=caption))
            elapsed = time.perf_counter() - start
            batch = statistics.mean(a.timings.batch_size for a in answers)
            rows.append((f"stream of {len(images)}, caption={caption}",
                         f"{len(images) / elapsed:.1f} img/s (mean batch {batch:.1f})"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="enrich bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", type=Path, help="bundle to serve on loopback for the run")
    where.add_argument("--target", help="a running server, host:port")
    parser.add_argument("--images", type=Path, help="folder of images (default: synthetic product shots)")
    parser.add_argument("--count", type=int, default=128)
    parser.add_argument("--image-size", default="600x800", help="WIDTHxHEIGHT of synthetic images")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-batch-size", type=int, default=8, help="server setting, with --model")
    args = parser.parse_args(argv)
    if args.images:
        images = [p.read_bytes() for p in image_files(args.images)[: args.count]]
    else:
        width, height = (int(v) for v in args.image_size.lower().split("x"))
        images = synthetic_images(args.count, (width, height))
    server = None
    target = args.target
    if args.model:
        log_path = Path(tempfile.gettempdir()) / "enrich-bench-server.log"
        server, port = start_server(args.model, log_path, "--max-batch-size", str(args.max_batch_size))
        target = f"127.0.0.1:{port}"
    try:
        mean_kb = statistics.mean(len(d) for d in images) / 1024
        print(f"target {target}, {len(images)} images (mean {mean_kb:.0f} KiB), {os.cpu_count()} CPUs")
        for name, value in bench(target, images, args.concurrency):
            print(f"  {name:<44}{value}")
    finally:
        if server:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
