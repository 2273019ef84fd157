"""Through real gRPC: streams and concurrent unary callers against a server process (or a running one)."""

from __future__ import annotations

import itertools
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from enrich_client import EnrichClient


@dataclass
class Served:
    images_per_second: float
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    mean_batch: float = 0.0

    def describe(self) -> str:
        text = f"{self.images_per_second:6.1f} img/s"
        if self.p50_ms:
            text += f", p50 {self.p50_ms:.0f} ms, p95 {self.p95_ms:.0f} ms, p99 {self.p99_ms:.0f} ms"
        if self.mean_batch:
            text += f" (mean encoder batch {self.mean_batch:.1f})"
        return text


REQUESTS = itertools.count()


def unique_bytes(images: list[bytes]) -> list[bytes]:
    """The images with a trailer after their end that no request has carried before: decoders ignore it, a
    response cache (keyed by the bytes' hash) cannot answer it."""
    return [data + b"\0enrich-bench-" + str(next(REQUESTS)).encode() for data in images]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stream(client: EnrichClient, images: list[bytes], caption: str, streams: int = 4, unique: bool = False) -> Served:
    """`streams` concurrent EnrichStream calls sharing the images, as a bulk job would."""
    images = unique_bytes(images) if unique else images
    shares = [images[i::streams] for i in range(streams)]

    def one(share: list[bytes]) -> list:
        return list(client.enrich_stream(((str(n), d) for n, d in enumerate(share)), caption_mode=caption))

    with ThreadPoolExecutor(streams) as pool:
        started = time.perf_counter()
        answers = [a for part in pool.map(one, shares) for a in part]
        elapsed = time.perf_counter() - started
    failed = [a for a in answers if a.status.code]
    if failed:
        raise RuntimeError(f"{len(failed)} stream items failed, first: {failed[0].status.message}")
    return Served(len(images) / elapsed, mean_batch=statistics.mean(a.timings.batch_size for a in answers))


def unary(client: EnrichClient, images: list[bytes], caption: str, callers: int = 8, unique: bool = False) -> Served:
    images = unique_bytes(images) if unique else images
    latencies: list[float] = []

    def call(data: bytes) -> None:
        started = time.perf_counter()
        client.enrich(data, caption_mode=caption)
        latencies.append((time.perf_counter() - started) * 1000)

    with ThreadPoolExecutor(callers) as pool:
        started = time.perf_counter()
        list(pool.map(call, images))
        elapsed = time.perf_counter() - started
    return Served(len(images) / elapsed, percentile(latencies, 0.5), percentile(latencies, 0.95),
                  percentile(latencies, 0.99))


def warm(client: EnrichClient, images: list[bytes], unique: bool = False) -> None:
    client.wait_until_serving()
    for caption in ("generate", "skip"):
        stream(client, images[:16], caption, unique=unique)
