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

from .client import EnrichClient, EnrichError, channel_settings


class AsyncEnrichClient:
    def __init__(self, target: str = "localhost:50051", max_message_mb: float = 66.0,
                 timeout: float | None = 60.0, round_robin: bool = False, *, tls: bool = False,
                 ca: Path | None = None, cert: Path | None = None, key: Path | None = None,
                 token: str | None = None, server_name: str | None = None, retries: int = 4) -> None:
        """The options of EnrichClient, with the same meaning."""
        options, credentials = channel_settings(max_message_mb, round_robin, retries, tls, ca, cert, key,
                                                server_name)
        self.channel = grpc.aio.secure_channel(target, credentials, options=options) if credentials else \
            grpc.aio.insecure_channel(target, options=options)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.stub = enrich_pb2_grpc.EnrichStub(self.channel)
        self.timeout = timeout

    async def __aenter__(self) -> AsyncEnrichClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def enrich(self, image: bytes, request_id: str = "", top_k: int = 3,
                     caption: str = "generate") -> enrich_pb2.EnrichResponse:
        try:
            return await self.stub.Enrich(EnrichClient.request(image, request_id, top_k, caption),
                                          timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise EnrichError.from_rpc_error(error) from error

    async def enrich_stream(self, images: Iterable[tuple[str, bytes]] | AsyncIterable[tuple[str, bytes]],
                            top_k: int = 3, caption: str = "generate",
                            timeout: float | None = None) -> AsyncIterator[enrich_pb2.EnrichResponse]:
        """(request_id, bytes) pairs in (sync or async iterable), answers out as they are ready."""
        async def requests() -> AsyncIterator[enrich_pb2.EnrichRequest]:
            if isinstance(images, AsyncIterable):
                async for request_id, data in images:
                    yield EnrichClient.request(data, request_id, top_k, caption)
            else:
                for request_id, data in images:
                    yield EnrichClient.request(data, request_id, top_k, caption)

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
