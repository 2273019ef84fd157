"""The Enrich gRPC servicer: protos in and out, everything else in the service (service.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc

from enrich.v1 import enrich_pb2, enrich_pb2_grpc

from .errors import EnrichFailure
from .service import EnrichService
from .stream import StreamCall


def call_deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline as a time.perf_counter() value, or None."""
    remaining = context.time_remaining()
    return None if remaining is None else time.perf_counter() + remaining


class EnrichServicer(enrich_pb2_grpc.EnrichServicer):
    def __init__(self, service: EnrichService) -> None:
        self.service = service

    async def Enrich(self, request: enrich_pb2.EnrichRequest,
                     context: grpc.aio.ServicerContext) -> enrich_pb2.EnrichResponse:
        try:
            return await self.service.enrich("Enrich", request, call_deadline(context))
        except EnrichFailure as failure:
            await failure.abort(context)

    async def EnrichStream(self, requests: AsyncIterator[enrich_pb2.EnrichRequest],
                           context: grpc.aio.ServicerContext) -> None:
        # A coroutine that writes (not an async generator): grpc cancels it like any task, so the call's
        # clean-up always runs, whatever ends it.
        ending = await StreamCall(self.service, requests, context.write, call_deadline(context)).run()
        if ending is not None:
            await ending.abort(context)

    async def GetModelInfo(self, request: enrich_pb2.GetModelInfoRequest,
                           context: grpc.aio.ServicerContext) -> enrich_pb2.ModelInfo:
        try:
            return self.service.model_info()
        except EnrichFailure as failure:
            await failure.abort(context)
