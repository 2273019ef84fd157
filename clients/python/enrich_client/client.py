"""A small, typed wrapper over the generated stubs: limits raised, streams made easy."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from enrich.v1 import enrich_pb2, enrich_pb2_grpc
from enrich_contract import wire as contract
from enrich_contract.tables import IMAGE_SUFFIXES

DEFAULT_TARGET = "localhost:50051"
MAX_MESSAGE_MB = 129.0  # what a server with default settings reads: twice its 64 MiB image limit, plus 1 MiB


def environment(name: str, given: str | None = None, default: str | None = None) -> str | None:
    """A client setting: as given, else ENRICH_<NAME> (as the Node client reads them), else the default."""
    return given if given is not None else os.environ.get(f"ENRICH_{name}") or default


def rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status a server attached (the `grpc-status-details-bin` trailer), for sync and
    asyncio errors alike; None when absent, or when it disagrees with the call's code (a proxy rewrote it)."""
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            return status if status.code == error.code().value[0] else None
    return None


class EnrichError(RuntimeError):
    """A failed call: the gRPC status code, the server's words, and its machine-readable reason
    (enrich.v1.ErrorReason's name, e.g. "IMAGE_UNDECODABLE", "OVERLOADED"; empty when the failure came
    from gRPC itself), with the reason's metadata and, when retrying later may help, the delay."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "", metadata: dict[str, str] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{code.name}: {message}" + (f" [{reason}]" if reason else ""))
        self.code, self.message, self.reason = code, message, reason
        self.metadata = metadata or {}
        self.retry_after = retry_after

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> EnrichError:
        """Reads the rich status details (google.rpc.ErrorInfo, RetryInfo) the server attaches."""
        reason, metadata, retry_after = "", {}, None
        status = rich_status(error)
        for detail in status.details if status else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_after = retry.retry_delay.ToTimedelta().total_seconds()
        return cls(error.code(), error.details() or "", reason, metadata, retry_after)


def service_config(round_robin: bool = False, retries: int = 4) -> dict:
    """gRPC's service config: load balancing and its built-in retry policy for the unary methods.

    The server marks what retrying cannot fix (an image over a limit) with `grpc-retry-pushback-ms: -1`,
    and what can wait (OVERLOADED, MODEL_LOADING) with its delay; INVALID_ARGUMENT is never retried."""
    config: dict = {}
    if round_robin:  # spread calls over every address a headless Service resolves to
        config["loadBalancingConfig"] = [{"round_robin": {}}]
    if retries > 0:
        config["methodConfig"] = [{
            "name": [{"service": "enrich.v1.Enrich", "method": "Enrich"},
                     {"service": "enrich.v1.Enrich", "method": "GetModelInfo"}],
            "retryPolicy": {"maxAttempts": retries + 1, "initialBackoff": "0.2s", "maxBackoff": "5s",
                            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]},
        }]
    return config


def channel_settings(max_message_mb: float = MAX_MESSAGE_MB, round_robin: bool = False, retries: int = 4,
                     tls: bool = False, ca: Path | None = None, cert: Path | None = None, key: Path | None = None,
                     server_name: str | None = None) -> tuple[list[tuple[str, object]], grpc.ChannelCredentials | None]:
    """Channel options and credentials (None: plaintext), shared by the sync and asyncio clients."""
    limit = int(max_message_mb * 1024 * 1024)
    options: list[tuple[str, object]] = [
        ("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit),
        ("grpc.service_config", json.dumps(service_config(round_robin, retries))),
        ("grpc.per_rpc_retry_buffer_size", limit),  # gRPC retries only requests that fit (default 256 KiB)
    ]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    credentials = None
    if tls or ca or cert:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(ca).read_bytes() if ca else None,
            private_key=Path(key).read_bytes() if key else None,
            certificate_chain=Path(cert).read_bytes() if cert else None)
    return options, credentials


def image_too_large(size: int, limit: int, where: str) -> EnrichError:
    return EnrichError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                       f"the image is {size:,} bytes, over the limit of {limit:,} bytes {where}", "IMAGE_TOO_LARGE",
                       {"limit": "max_message_bytes", "limit_value": str(limit), "seen": str(size)})


class EnrichClient:
    """    client = EnrichClient("localhost:50051")
           response = client.enrich(Path("shirt.jpg").read_bytes())
           print(response.metadata.article_type.label)
    """

    def __init__(self, target: str | None = None, max_message_mb: float = MAX_MESSAGE_MB,
                 timeout: float | None = 60.0, round_robin: bool = False, *, tls: bool = False,
                 ca: Path | None = None, cert: Path | None = None, key: Path | None = None,
                 token: str | None = None, server_name: str | None = None, retries: int = 4) -> None:
        """`target`: host:port, else ENRICH_TARGET, else localhost:50051; `tls` (implied by `ca`, `cert`):
        verify the server against `ca` (else ENRICH_CA), or the system roots; `cert` + `key`: present a
        client certificate (mutual TLS); `token`: bearer token sent with every Enrich call (else
        ENRICH_TOKEN); `server_name`: the name the server's certificate must carry, when the target is an
        address; `round_robin`: spread calls over every address the target resolves to (e.g.
        `dns:///enrich-headless:50051`); `retries`: unary calls retried on UNAVAILABLE and OVERLOADED
        with exponential backoff, by gRPC itself, after the server's hint when it gives one (0: none)."""
        self.target = environment("TARGET", target, DEFAULT_TARGET)
        ca = environment("CA", str(ca) if ca else None)
        options, credentials = channel_settings(max_message_mb, round_robin, retries, tls, ca, cert, key,
                                                server_name)
        self.channel = grpc.secure_channel(self.target, credentials, options=options) if credentials else \
            grpc.insecure_channel(self.target, options=options)
        token = environment("TOKEN", token)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.stub = enrich_pb2_grpc.EnrichStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.timeout = timeout
        self.max_message_bytes = int(max_message_mb * 1024 * 1024)

    def __enter__(self) -> EnrichClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    @staticmethod
    def request(image: bytes, request_id: str = "", top_k: int | None = None, caption_mode: str | int | None = None,
                catalogue: Mapping[str, str] | None = None, error_prior: float | None = None,
                include_embedding: bool = False, *, include_palette: bool = False,
                include_signature: bool = False) -> enrich_pb2.EnrichRequest:
        """`top_k` and `caption_mode` unset: the server's defaults (3, generate). `caption_mode`: generate,
        beam_search, template or skip (the proto's names, any case, CAPTION_MODE_ prefix optional); another
        value raises ValueError naming those. `catalogue`: the catalogue's values by column (baseColour, ...) to
        audit against the image, with `error_prior` (unset: the server's default). `include_*`: the embedding,
        the palette, the signature (perceptual hashes, colour fingerprint) in the answer (off: not computed)."""
        request = enrich_pb2.EnrichRequest(request_id=request_id, image=image, top_k=top_k or 0,
                                           caption_mode=contract.caption_mode(caption_mode),
                                           include_embedding=include_embedding, include_palette=include_palette,
                                           include_signature=include_signature)
        if catalogue is not None:
            request.catalogue.values.update(catalogue)
            request.catalogue.error_prior = error_prior or 0.0
        return request

    def enrich(self, image: bytes, request_id: str = "", top_k: int | None = None,
               caption_mode: str | int | None = None, catalogue: Mapping[str, str] | None = None,
               error_prior: float | None = None, include_embedding: bool = False, *, include_palette: bool = False,
               include_signature: bool = False) -> enrich_pb2.EnrichResponse:
        """One image (options as in `request`). Raises EnrichError; an image over this client's own message limit
        is refused here, IMAGE_TOO_LARGE, before it is sent."""
        request = self.request(image, request_id, top_k, caption_mode, catalogue, error_prior, include_embedding,
                               include_palette=include_palette, include_signature=include_signature)
        if request.ByteSize() > self.max_message_bytes:
            raise image_too_large(len(image), self.max_message_bytes, "this client sends (max_message_mb)")
        try:
            return self.stub.Enrich(request, timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise EnrichError.from_rpc_error(error) from error

    def enrich_stream(self, images: Iterable[tuple[str, bytes]], top_k: int | None = None,
                      caption_mode: str | int | None = None, timeout: float | None = None,
                      **include: bool) -> Iterator[enrich_pb2.EnrichResponse]:
        """(request_id, bytes) pairs in, answers out as they are ready (possibly out of order); `include`: the
        include_* options of `request`.

        `images` is consumed lazily, so a folder of any size streams in bounded memory."""
        contract.caption_mode(caption_mode)  # a wrong name fails here, not in gRPC's sending thread
        requests = (self.request(data, request_id, top_k, caption_mode, **include) for request_id, data in images)
        try:
            yield from self.stub.EnrichStream(requests, timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise EnrichError.from_rpc_error(error) from error

    def model_info(self) -> enrich_pb2.ModelInfo:
        try:
            return self.stub.GetModelInfo(enrich_pb2.GetModelInfoRequest(), timeout=self.timeout,
                                          metadata=self.metadata)
        except grpc.RpcError as error:
            raise EnrichError.from_rpc_error(error) from error

    def health(self, service: str = "") -> str:
        """SERVING, NOT_SERVING, or UNAVAILABLE when nothing answers."""
        try:
            response = self.health_stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        except grpc.RpcError as error:
            return error.code().name
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_until_serving(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while (status := self.health()) != "SERVING":
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not SERVING after {timeout:.0f} s (last status {status})")
            time.sleep(0.2)


def image_files(root: Path) -> list[Path]:
    """Image files under a folder, sorted, by extension."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
