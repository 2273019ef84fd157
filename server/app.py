"""`enrich serve`: the grpc.aio server with health, reflection, raised message limits and a dynamic batcher.

Lifecycle (as in LitServe): setup (load + warm the bundle, then report SERVING) -> per request
check and admit -> decode (worker threads) -> predict (batched, model thread) -> encode (typed
message). On SIGTERM the server reports NOT_SERVING at once, refuses new calls, reads stream items for
half the grace period (later ones are answered SHUTTING_DOWN) and answers every accepted item.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from enrich.v1 import enrich_pb2, enrich_pb2_grpc

from .batcher import DynamicBatcher
from .health import EnrichHealth
from .logs import configure_logging
from .messages import Limits
from .security import BearerTokenAuth, accepted_tokens, server_credentials
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
        self.decode_pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="enrich-decode")
        limits = Limits(settings.decode_limits, settings.max_image_bytes, settings.max_message_bytes,
                        settings.max_batch_size, settings.stream_in_flight, settings.max_queue)
        self.credentials = server_credentials(settings)  # read now: a bad path fails before anything starts
        tokens = accepted_tokens(settings)
        if tokens and self.credentials is None:
            log.warning("bearer tokens are required but TLS is off: tokens cross the network in clear text")
        self.server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", settings.max_message_bytes),
                     ("grpc.max_send_message_length", settings.max_message_bytes)],
            interceptors=[BearerTokenAuth(tokens)] if tokens else None,
        )
        self.servicer = EnrichServicer(self.slot, limits, self.decode_pool)
        enrich_pb2_grpc.add_EnrichServicer_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if settings.reflection:
            reflection.enable_server_reflection(
                (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
                self.server,
            )
        self.port = 0

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def start(self) -> int:
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{self.settings.host}:{self.settings.port}"
        if self.credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, self.credentials)
        if not self.port:
            raise OSError(f"cannot bind {self.settings.host}:{self.settings.port}")
        await self.server.start()
        log.info("listening on %s:%d (NOT_SERVING until the model is loaded)", self.settings.host, self.port)
        return self.port

    async def load_model(self) -> None:
        """Load and warm the bundle off the event loop, then report SERVING."""
        loop = asyncio.get_running_loop()
        predictor = await loop.run_in_executor(None, load_predictor, self.settings)
        batcher = DynamicBatcher(predictor.predict, self.settings.max_batch_size, self.settings.max_delay_ms)
        batcher.start()
        self.slot.bundle, self.slot.batcher = predictor.bundle, batcher
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("model %s loaded and warmed: SERVING", predictor.bundle.model_version)

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
        await asyncio.sleep(min(0.5, grace))  # watchers hear NOT_SERVING before their stream ends
        self.health.close_watches()
        await stopping
        if self.slot.batcher:
            await self.slot.batcher.stop()
        self.decode_pool.shutdown(wait=False)


def load_predictor(settings: ServerSettings):
    import torch
    from transformers.utils import logging as hf_logging

    from enrich_model.bundle import load_bundle
    from enrich_model.predict import CaptionMode, ItemOptions, Predictor

    hf_logging.disable_progress_bar()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    bundle = load_bundle(settings.model, device=device)
    predictor = Predictor(bundle, caption_beams=settings.caption_beams)
    # Warm-up: the first pass allocates and picks kernels; do it before reporting SERVING.
    height, width = bundle.preprocessing.input_size
    blank = np.zeros((2, 3, height, width), dtype=np.float32)
    predictor.predict(blank, [ItemOptions(caption=CaptionMode.GENERATE), ItemOptions(caption=CaptionMode.TEMPLATE)])
    return predictor


async def serve(settings: ServerSettings) -> None:
    from enrich_model.bundle_config import BundleConfig

    BundleConfig.read(settings.model)  # a wrong path fails now, not after the port is bound
    server = EnrichServer(settings)
    port = await server.start()
    print(f"enrich server listening on port {port}", flush=True)
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
    from enrich_model.bundle import BundleError

    settings = parse_args(argv)
    configure_logging(settings.log_format)
    try:
        asyncio.run(serve(settings))
    except (BundleError, OSError) as error:  # a wrong --model path or a taken port: no traceback needed
        print(f"enrich serve: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
