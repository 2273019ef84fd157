"""Prometheus metrics (prometheus-client), served over plain HTTP on their own port for scrapers.

Per-stage latency histograms carry the backend and precision as labels, so a dashboard can compare
an OpenVINO/bf16 rollout with a torch/fp32 one. Gauges read live values (queue depths, images in flight)
at scrape time instead of being updated on every change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from threading import Thread

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

log = logging.getLogger("enrich.metrics")

# 1 ms .. ~30 s: a cache hit at the bottom, a camera original behind a full queue at the top.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """One registry per server (tests run several servers in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("backend", "precision")
        self.stage_seconds = Histogram(
            "enrich_stage_seconds", "Seconds per image in each stage (a batch's time is shared by its images' "
            "callers: each image records its batch's duration)", ("stage", *labels),
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("enrich_batch_size", "Items per model batch, by pipeline stage",
                                    ("stage", *labels), buckets=BATCH_BUCKETS, registry=self.registry)
        self.items = Counter("enrich_items", "Images answered, by RPC method and outcome (gRPC status code name "
                             "and ErrorReason; OK with an empty reason)", ("method", "code", "reason"),
                             registry=self.registry)
        self.cache = Counter("enrich_cache_lookups", "Response cache lookups", ("result",), registry=self.registry)
        self.queue_depth = Gauge("enrich_queue_depth", "Items waiting for a batch, by pipeline stage", ("stage",),
                                 registry=self.registry)
        self.in_flight = Gauge("enrich_in_flight", "Images accepted and not yet answered", registry=self.registry)
        self.capacity = Gauge("enrich_capacity", "Images in flight before unary calls are refused",
                              registry=self.registry)
        self.runtime = Info("enrich_runtime", "Backend, precision, device and model version",
                            registry=self.registry)
        self.backend, self.precision = "", ""
        self._http: object | None = None
        self._thread: Thread | None = None

    def describe_runtime(self, backend: str, precision: str, device: str, model_version: str) -> None:
        self.backend, self.precision = backend, precision
        self.runtime.info({"backend": backend, "precision": precision, "device": device,
                           "model_version": model_version})

    def watch(self, queue_depths: dict[str, Callable[[], int]], in_flight: Callable[[], int], capacity: int) -> None:
        for stage, depth in queue_depths.items():
            self.queue_depth.labels(stage).set_function(depth)
        self.in_flight.set_function(in_flight)
        self.capacity.set(capacity)

    def observe_stage(self, stage: str, milliseconds: float) -> None:
        self.stage_seconds.labels(stage, self.backend, self.precision).observe(milliseconds / 1000)

    def observe_batch(self, stage: str, size: int) -> None:
        self.batch_size.labels(stage, self.backend, self.precision).observe(size)

    def count_item(self, method: str, code: str, reason: str = "") -> None:
        self.items.labels(method, code, reason).inc()

    def count_cache(self, hit: bool) -> None:
        self.cache.labels("hit" if hit else "miss").inc()

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics endpoint (port 0 picks a free one); returns the bound port."""
        address = host.strip("[]")
        try:
            try:
                self._http, self._thread = start_http_server(port, addr=address, registry=self.registry)
            except OSError:
                if address != "::":
                    raise
                # The IPv6 wildcard on a host without IPv6: every IPv4 interface instead, as gRPC does.
                self._http, self._thread = start_http_server(port, addr="0.0.0.0", registry=self.registry)
        except OSError as error:
            raise OSError(f"cannot serve metrics on {host}:{port} ({error.strerror or error}); choose another "
                          f"--metrics-port, or -1 for none") from error
        bound = self._http.server_port
        log.info("Prometheus metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
