"""`enrich serve`: the grpc.aio server with health, reflection, raised message limits and a dynamic batcher.

Lifecycle (as in LitServe): setup (load + warm the bundle, then report SERVING) -> per request
check and admit -> decode (worker threads) -> predict (batched, model thread) -> encode (typed
message). On SIGTERM the server reports NOT_SERVING at once, refuses new calls, reads stream items for
half the grace period (later ones are answered SHUTTING_DOWN) and answers every accepted item.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from enrich.v1 import enrich_pb2, enrich_pb2_grpc

from .health import EnrichHealth
from .http_api import HttpApi
from .logs import configure_logging
from .messages import Limits
from .metrics import Metrics
from .pipeline import Pipeline
from .reflection import enable_reflection
from .security import BearerTokenAuth, accepted_tokens, http_ssl_context, server_credentials
from .servicer import EnrichServicer, ModelSlot
from .settings import ServerSettings, parse_args

log = logging.getLogger("enrich.server")
SERVICE_NAME = enrich_pb2.DESCRIPTOR.services_by_name["Enrich"].full_name  # "enrich.v1.Enrich"


class EnrichServer:
    """Owns the grpc.aio server and the model slot; start() returns once the port is bound."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.slot = ModelSlot()
        self.health = EnrichHealth()
        self.model_threads, self.decode_threads = settings.thread_budget
        self.decode_pool = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="enrich-decode")
        limits = Limits(settings.decode_limits, settings.max_image_bytes, settings.max_message_bytes,
                        settings.max_batch_size, settings.stream_in_flight, settings.max_queue)
        self.metrics = Metrics()
        self.metrics_port: int | None = None
        self.credentials = server_credentials(settings)  # read now: a bad path fails before anything starts
        tokens = accepted_tokens(settings)
        if tokens and self.credentials is None:
            log.warning("bearer tokens are required but TLS is off: tokens cross the network in clear text")
        auth = BearerTokenAuth(tokens) if tokens else None
        options = [("grpc.max_receive_message_length", settings.max_message_bytes),
                   ("grpc.max_send_message_length", settings.max_message_bytes)]
        if settings.max_connection_age_seconds > 0:
            # GOAWAY after this age: a client's channel then resolves DNS again, so long-lived bulk
            # clients reach pods the autoscaler added since they connected.
            options += [("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * 1000)),
                        ("grpc.max_connection_age_grace_ms", int(settings.grace_seconds * 1000))]
        self.server = grpc.aio.server(options=options, interceptors=[auth] if auth else None)
        self.servicer = EnrichServicer(self.slot, limits, self.decode_pool, self.metrics,
                                       int(settings.cache_mb * 1024 * 1024))
        self.http = HttpApi(self.servicer, lambda: self.slot.ready and self.servicer.drain_cutoff is None, auth,
                            settings.max_image_bytes, http_ssl_context(settings), settings.grace_seconds / 2)
        self.http_port: int | None = None
        enrich_pb2_grpc.add_EnrichServicer_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        # Kubelet's gRPC probe and docker's HEALTHCHECK speak no TLS: health alone may also listen in clear.
        self.health_server: grpc.aio.Server | None = None
        if settings.health_port >= 0:
            self.health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
        self.health_port: int | None = None
        if settings.reflection:
            enable_reflection((SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name),
                              self.server)
        self.port = 0

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def start(self) -> int:
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.settings.metrics_port >= 0:  # first: if its port is taken, nothing has started yet
            self.metrics_port = self.metrics.serve(self.settings.host, self.settings.metrics_port)
        address = f"{self.settings.host}:{self.settings.port}"
        if self.credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, self.credentials)
        if not self.port:
            self.metrics.close()
            raise OSError(f"cannot bind {self.settings.host}:{self.settings.port}")
        await self.server.start()
        log.info("listening on %s:%d (NOT_SERVING until the model is loaded)", self.settings.host, self.port)
        if self.health_server is not None:
            self.health_port = self.health_server.add_insecure_port(f"{self.settings.host}:{self.settings.health_port}")
            if not self.health_port:
                await self.server.stop(0)
                self.metrics.close()
                raise OSError(f"cannot bind {self.settings.host}:{self.settings.health_port} for --health-port")
            await self.health_server.start()
            log.info("grpc.health.v1 in plain text on port %d", self.health_port)
        if self.settings.http_port >= 0:
            try:
                self.http_port = await self.http.start(self.settings.host, self.settings.http_port)
            except OSError as error:
                await self.server.stop(0)
                self.metrics.close()
                raise OSError(f"cannot serve HTTP on {self.settings.host}:{self.settings.http_port} "
                              f"({error.strerror or error}); choose another --http-port, or -1 for none") from error
            log.info("HTTP/JSON on port %d", self.http_port)
        return self.port

    async def load_model(self) -> None:
        """Load and warm the bundle off the event loop, then report SERVING."""
        loop = asyncio.get_running_loop()
        settings = self.settings
        predictor, device = await loop.run_in_executor(None, load_predictor, settings, self.model_threads)
        pipeline = Pipeline(predictor, settings.max_batch_size, settings.max_delay_ms, settings.caption_batch_size,
                            on_batch=self.metrics.observe_batch, encoder_wait_ms=settings.encoder_wait_ms)
        pipeline.start()
        choice = predictor.encoder.choice
        runtime = enrich_pb2.Runtime(
            backend=choice.name, precision=choice.precision.value, device=device, model_threads=self.model_threads,
            decode_threads=self.decode_threads, max_caption_batch_size=settings.caption_batch_size,
            cache_max_bytes=self.servicer.cache.max_bytes)
        self.metrics.describe_runtime(runtime.backend, runtime.precision, device, predictor.bundle.model_version)
        self.metrics.watch({stage.name: stage.queue.qsize for stage in pipeline.stages},
                           lambda: self.servicer.admission.in_flight, self.servicer.admission.capacity)
        self.slot.bundle, self.slot.pipeline, self.slot.runtime = predictor.bundle, pipeline, runtime
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("model %s loaded and warmed on %s (%s/%s, %d model threads): SERVING",
                 predictor.bundle.model_version, device, runtime.backend, runtime.precision, self.model_threads)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING first (probes and balancers move away), then finish accepted calls.

        Streams go on being read for half the grace (items after that are answered SHUTTING_DOWN), so
        that what was accepted has the other half to finish. Health watchers are let go once the
        Enrich calls are done, so that they do not hold the server for the rest of the grace."""
        grace = self.settings.grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        self.servicer.begin_drain(grace / 2)
        stopping = asyncio.create_task(self.server.stop(grace))
        await self.servicer.wait_until_idle(grace)
        await self.http.stop()
        await asyncio.sleep(min(0.5, grace))  # watchers hear NOT_SERVING before their stream ends
        self.health.close_watches()
        await stopping
        if self.health_server is not None:
            await self.health_server.stop(0)
        if self.slot.pipeline:
            await self.slot.pipeline.stop()
        self.decode_pool.shutdown(wait=False)
        self.metrics.close()


def load_predictor(settings: ServerSettings, threads: int):
    """Load the bundle, build its encoder backend (exported once, cached beside the bundle) and warm it."""
    import torch
    from transformers.utils import logging as hf_logging

    from enrich_model.backends import BackendError, build_encoder_backend, choose_backend
    from enrich_model.bundle import load_bundle
    from enrich_model.predict import CaptionMode, ItemOptions, Predictor

    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    choice = choose_backend(settings.backend, settings.precision, device.split(":")[0])
    bundle = load_bundle(settings.model, device=device)
    if settings.compile and choice.name != "torch":
        raise BackendError(f"--compile applies to the torch backend, not {choice.name}: add --backend torch")
    encoder = build_encoder_backend(bundle.model, choice, bundle.preprocessing.input_size, bundle.model_version,
                                    bundle.path, threads, settings.compile)
    predictor = Predictor(bundle, caption_beams=settings.caption_beams, encoder=encoder)
    # Warm-up: the first pass allocates and picks kernels; do it before reporting SERVING.
    height, width = bundle.preprocessing.input_size
    for size in (1, settings.max_batch_size):
        blank = np.zeros((size, 3, height, width), dtype=np.float32)
        predictor.predict(blank, [ItemOptions(caption=CaptionMode.GENERATE)] * size)
    return predictor, device


async def serve(settings: ServerSettings) -> None:
    from enrich_model.bundle_config import BundleConfig

    BundleConfig.read(settings.model)  # a wrong path fails now, not after the port is bound
    # torch's import runs a subprocess (ldconfig): done before gRPC's threads exist, it does not trip
    # gRPC's fork handlers, whose log line would break JSON logs.
    await asyncio.get_running_loop().run_in_executor(None, importlib.import_module, "torch")
    server = EnrichServer(settings)
    port = await server.start()
    print(f"enrich server listening on port {port}", flush=True)
    if server.http_port is not None:
        print(f"enrich HTTP/JSON on port {server.http_port}", flush=True)
    if server.health_port is not None:
        print(f"enrich health (plain text) on port {server.health_port}", flush=True)
    if server.metrics_port is not None:
        print(f"enrich metrics on http://{settings.host}:{server.metrics_port}/metrics", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loading = asyncio.create_task(server.load_model())
    try:
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({loading, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if loading in done:
            loading.result()  # a model that fails to load stops the server with the error
            print(f"enrich server SERVING model {server.slot.bundle.model_version}", flush=True)
            await waiter
    finally:
        log.info("shutting down: draining for up to %.0f s", settings.grace_seconds)
        loading.cancel()
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    from enrich_model.backends import BackendError
    from enrich_model.bundle import BundleError

    settings = parse_args(argv)
    configure_logging(settings.log_format)
    try:
        asyncio.run(serve(settings))
    except (BundleError, BackendError, OSError) as error:  # a wrong path, backend or a taken port: no traceback
        print(f"enrich serve: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
