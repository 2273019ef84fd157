"""The server's ports and the service behind them: gRPC (Enrich, health, reflection), grpc.health.v1 alone in
plain text for probes, HTTP/JSON and Prometheus metrics. Every port opens before the model loads (health says
NOT_SERVING meanwhile), and a port that cannot be had is refused in one line."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from enrich.v1 import enrich_pb2, enrich_pb2_grpc
from enrich_model.bundle_config import BundleConfig

from .health import EnrichHealth
from .http_api import HttpApi
from .messages import Limits
from .metrics import Metrics
from .reflection import enable_reflection
from .security import BearerTokenAuth, accepted_tokens, http_ssl_context, server_credentials
from .service import EnrichService, LoadedModel
from .servicer import EnrichServicer
from .settings import ServerSettings

if TYPE_CHECKING:
    from enrich_model.pipeline import EnrichPipeline

    from .batched import BatchedPipeline

log = logging.getLogger("enrich.server")
SERVICE_NAME = enrich_pb2.DESCRIPTOR.services_by_name["Enrich"].full_name  # "enrich.v1.Enrich"
HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
ADDRESS_IN_USE = 98


class PortError(OSError):
    """A port the server was told to use cannot be had; the message names it and the flag to change."""

    def __init__(self, host: str, port: int, flag: str, reason: str) -> None:
        optional = ", or -1 for none" if flag != "--port" else ""
        super().__init__(f"cannot listen on {host}:{port} for {flag} ({reason}); choose another {flag}{optional}")


def check_port_free(host: str, port: int, flag: str) -> None:
    """Refuses a taken port in words before gRPC tries it (gRPC logs an error of its own when a bind fails).
    Port 0 (a free one) is always free."""
    if port == 0:
        return
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((address, port))
    except OSError as error:
        if family == socket.AF_INET6 and address == "::" and error.errno != ADDRESS_IN_USE:
            return check_port_free("0.0.0.0", port, flag)  # no IPv6 here: gRPC listens on IPv4
        raise PortError(host, port, flag, error.strerror or str(error)) from None


def check_ports_free(settings: ServerSettings) -> None:
    """Every port the settings ask for (-1: none), before any of them opens."""
    wanted = {"--port": settings.port, "--health-port": settings.health_port, "--http-port": settings.http_port,
              "--metrics-port": settings.metrics_port}
    for flag, port in wanted.items():
        if port >= 0:
            check_port_free(settings.host, port, flag)


def grpc_options(settings: ServerSettings) -> list[tuple[str, int]]:
    options = [("grpc.max_receive_message_length", settings.max_message_bytes),
               ("grpc.max_send_message_length", settings.max_message_bytes),
               ("grpc.so_reuseport", 0)]  # a second server on a taken port must fail, not share it
    if settings.max_connection_age_seconds > 0:
        # GOAWAY after this age: a client's channel then resolves DNS again, so long-lived bulk
        # clients reach pods the autoscaler added since they connected.
        options += [("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * 1000)),
                    ("grpc.max_connection_age_grace_ms", int(settings.grace_seconds * 1000))]
    return options


def limits_of(settings: ServerSettings) -> Limits:
    return Limits(settings.decode_limits, settings.max_image_bytes, settings.max_message_bytes,
                  settings.max_batch_size, settings.stream_in_flight, settings.max_queue)


def load_pipeline(settings: ServerSettings, model_threads: int, config: BundleConfig | None = None) -> EnrichPipeline:
    """The bundle on the backend and precision the settings choose, warmed at batch sizes 1 and the largest."""
    from enrich_model.pipeline import EnrichPipeline

    pipeline = EnrichPipeline.load(settings.model, dataclasses.replace(settings, threads=model_threads), config)
    pipeline.warm(1, settings.max_batch_size)
    return pipeline


def batched_pipeline(pipeline: EnrichPipeline, settings: ServerSettings,
                     on_batch: Callable[[str, int], None] | None = None) -> BatchedPipeline:
    """The pipeline's stages batched as the settings say; start() it inside the event loop that serves."""
    from .batched import BatchedPipeline

    return BatchedPipeline(pipeline, settings.max_batch_size, settings.max_delay_ms, settings.caption_batch_size,
                           on_batch, settings.encoder_wait_ms)


def loaded_model(settings: ServerSettings, cache_max_bytes: int = 0, config: BundleConfig | None = None,
                 on_batch: Callable[[str, int], None] | None = None) -> LoadedModel:
    """The bundle loaded, warmed and batched as the settings say, with the runtime it chose (the batched stages
    start() inside the event loop that serves)."""
    model_threads, decode_threads = settings.thread_budget
    pipeline = load_pipeline(settings, model_threads, config)
    runtime = enrich_pb2.Runtime(
        backend=pipeline.backend.choice.name, precision=pipeline.backend.choice.precision.value,
        device=str(pipeline.device), model_threads=model_threads, decode_threads=decode_threads,
        max_caption_batch_size=settings.caption_batch_size, cache_max_bytes=cache_max_bytes)
    return LoadedModel(pipeline, batched_pipeline(pipeline, settings, on_batch), runtime)


class EnrichServer:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.model_threads, self.decode_threads = settings.thread_budget
        self.decode_pool = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="enrich-decode")
        self.metrics = Metrics()
        self.service = EnrichService(limits_of(settings), self.decode_pool, self.metrics,
                                     int(settings.cache_mb * 1024 * 1024))
        self.health = EnrichHealth()
        self.credentials = server_credentials(settings)  # read now: a bad path fails before anything starts
        tokens = accepted_tokens(settings)
        if tokens and self.credentials is None:
            log.warning("bearer tokens are required but TLS is off: tokens cross the network in clear text")
        auth = BearerTokenAuth(tokens, self.service.refuse) if tokens else None
        self.server = grpc.aio.server(options=grpc_options(settings), interceptors=[auth] if auth else None)
        enrich_pb2_grpc.add_EnrichServicer_to_server(EnrichServicer(self.service), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if settings.reflection:
            enable_reflection((SERVICE_NAME, HEALTH_NAME), self.server)
        # Kubelet's gRPC probe and docker's HEALTHCHECK speak no TLS: health alone may also listen in clear.
        self.health_server: grpc.aio.Server | None = None
        if settings.health_port >= 0:
            self.health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
        self.http = HttpApi(self.service, auth, settings.max_image_bytes, settings.http_timeout_seconds,
                            http_ssl_context(settings), settings.grace_seconds / 2)
        self.ports: dict[str, int | None] = dict.fromkeys(("port", "http_port", "health_port", "metrics_port"))

    async def set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def start(self) -> dict[str, int | None]:
        """Binds every port (NOT_SERVING until the model is loaded); returns them, as bound. Raises PortError
        for a port it cannot have, with nothing left listening."""
        await self.set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            await self._listen()
        except OSError:
            await self._close(grace=0)
            raise
        log.info("listening on %s (NOT_SERVING until the model is loaded)",
                 ", ".join(f"{name} {port}" for name, port in self.ports.items() if port is not None))
        return self.ports

    async def _listen(self) -> None:
        settings, host = self.settings, self.settings.host
        check_ports_free(settings)  # all of them, before any opens: a taken one stops us with nothing said
        if settings.metrics_port >= 0:
            self.ports["metrics_port"] = self.metrics.serve(host, settings.metrics_port)
        self.ports["port"] = await self._listen_grpc(self.server, settings.port, "--port", self.credentials)
        if self.health_server is not None:
            self.ports["health_port"] = await self._listen_grpc(self.health_server, settings.health_port,
                                                                "--health-port")
        if settings.http_port >= 0:
            try:
                self.ports["http_port"] = await self.http.start(host, settings.http_port)
            except OSError as error:  # taken since the check
                raise PortError(host, settings.http_port, "--http-port", error.strerror or str(error)) from None

    async def _listen_grpc(self, server: grpc.aio.Server, port: int, flag: str,
                           credentials: grpc.ServerCredentials | None = None) -> int:
        host = self.settings.host
        address = f"{host}:{port}"
        try:
            bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        except RuntimeError:  # taken between the check and the bind
            bound = 0
        if not bound:
            raise PortError(host, port, flag, "gRPC could not bind it")
        await server.start()
        return bound

    async def load_model(self, config: BundleConfig | None = None) -> None:
        """Load and warm the bundle off the event loop, then report SERVING."""
        model = await asyncio.get_running_loop().run_in_executor(None, self._load, config)
        model.batched.start()
        pipeline, runtime = model.pipeline, model.runtime
        self.metrics.describe_runtime(runtime.backend, runtime.precision, runtime.device, pipeline.model_version)
        self.metrics.watch({stage.name: stage.queue.qsize for stage in model.batched.stages},
                           lambda: self.service.admission.in_flight, self.service.admission.capacity)
        self.service.model = model
        await self.set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("model %s loaded and warmed on %s (%s/%s, %d model threads): SERVING", pipeline.model_version,
                 runtime.device, runtime.backend, runtime.precision, self.model_threads)

    def _load(self, config: BundleConfig | None) -> LoadedModel:
        return loaded_model(self.settings, self.service.cache.max_bytes, config, self.metrics.observe_batch)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING first (probes and balancers move away), then finish accepted calls.

        Streams go on being read for half the grace (items after that are answered SHUTTING_DOWN), so
        that what was accepted has the other half to finish. Health watchers are let go once the
        Enrich calls are done, so that they do not hold the server for the rest of the grace."""
        grace = self.settings.grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        self.service.begin_drain(grace / 2)
        stopping = asyncio.create_task(self.server.stop(grace))
        await self.service.wait_until_idle(grace)
        await self.http.stop()
        await asyncio.sleep(min(0.5, grace))  # watchers hear NOT_SERVING before their stream ends
        self.health.close_watches()
        await stopping
        if self.health_server is not None:
            await self.health_server.stop(0)
        self.metrics.close()
        if self.service.model is not None:
            await self.service.model.batched.stop()
        self.decode_pool.shutdown(wait=False)

    async def _close(self, grace: float) -> None:
        """Whatever is listening, after a start that failed part of the way."""
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(grace)
        await self.http.stop()
        self.metrics.close()
