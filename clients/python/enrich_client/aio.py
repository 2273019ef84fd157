"""The asyncio client: the same calls as EnrichClient, awaitable, on a grpc.aio channel.

    async with AsyncEnrichClient("localhost:50051") as client:
        response = await client.enrich(Path("shirt.jpg").read_bytes())
        async for answer in client.enrich_stream(pairs):
            ...
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from pathlib import Path

import grpc

from enrich.v1 import enrich_pb2, enrich_pb2_grpc
from enrich_contract import wire as contract

from .client import (
    DEFAULT_TARGET,
    MAX_MESSAGE_MB,
    EnrichClient,
    EnrichError,
    channel_settings,
    environment,
    image_too_large,
)


class AsyncEnrichClient:
    def __init__(self, target: str | None = None, max_message_mb: float = MAX_MESSAGE_MB,
                 timeout: float | None = 60.0, round_robin: bool = False, *, tls: bool = False,
                 ca: Path | None = None, cert: Path | None = None, key: Path | None = None,
                 token: str | None = None, server_name: str | None = None, retries: int = 4) -> None:
        """The options of EnrichClient, with the same meaning and the same environment variables."""
        self.target = environment("TARGET", target, DEFAULT_TARGET)
        ca = environment("CA", str(ca) if ca else None)
        options, credentials = channel_settings(max_message_mb, round_robin, retries, tls, ca, cert, key,
                                                server_name)
        self.channel = grpc.aio.secure_channel(self.target, credentials, options=options) if credentials else \
            grpc.aio.insecure_channel(self.target, options=options)
        token = environment("TOKEN", token)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.stub = enrich_pb2_grpc.EnrichStub(self.channel)
        self.timeout = timeout
        self.max_message_bytes = int(max_message_mb * 1024 * 1024)

    async def __aenter__(self) -> AsyncEnrichClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def enrich(self, image: bytes, request_id: str = "", top_k: int | None = None,
                     caption_mode: str | int | None = None) -> enrich_pb2.EnrichResponse:
        request = EnrichClient.request(image, request_id, top_k, caption_mode)
        if request.ByteSize() > self.max_message_bytes:
            raise image_too_large(len(image), self.max_message_bytes, "this client sends (max_message_mb)")
        try:
            return await self.stub.Enrich(request, timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise EnrichError.from_rpc_error(error) from error

    async def enrich_stream(self, images: Iterable[tuple[str, bytes]] | AsyncIterable[tuple[str, bytes]],
                            top_k: int | None = None, caption_mode: str | int | None = None,
                            timeout: float | None = None) -> AsyncIterator[enrich_pb2.EnrichResponse]:
        """(request_id, bytes) pairs in (sync or async iterable), answers out as they are ready."""
        contract.caption_mode(caption_mode)  # a wrong name fails here, not in gRPC's sending task

        async def requests() -> AsyncIterator[enrich_pb2.EnrichRequest]:
            if isinstance(images, AsyncIterable):
                async for request_id, data in images:
                    yield EnrichClient.request(data, request_id, top_k, caption_mode)
            else:
                for request_id, data in images:
                    yield EnrichClient.request(data, request_id, top_k, caption_mode)

        call = self.stub.EnrichStream(requests(), timeout=timeout, metadata=self.metadata)
        try:
            async for response in call:
                yield response
        except grpc.RpcError as error:
            raise EnrichError.from_rpc_error(error) from error

    async def model_info(self) -> enrich_pb2.ModelInfo:
        try:
            return await self.stub.GetModelInfo(enrich_pb2.GetModelInfoRequest(), timeout=self.timeout,
                                                metadata=self.metadata)
        except grpc.RpcError as error:
            raise EnrichError.from_rpc_error(error) from error
