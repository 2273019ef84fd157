"""The Enrich gRPC servicer: decode -> batch -> predict -> encode, per request or per stream item."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

from enrich.v1 import enrich_pb2, enrich_pb2_grpc
from enrich_model.bundle import Bundle
from enrich_model.decode import DecodedImage, ImageDecodeError, decode_image
from enrich_model.predict import MAX_TOP_K, CaptionMode, ItemOptions

from .batcher import DynamicBatcher
from .messages import CAPTION_MODES, Limits, encode_response, model_info

log = logging.getLogger("enrich.servicer")

DEFAULT_TOP_K = 3


class ItemError(Exception):
    """A failure that belongs to one item: reported with its status code, the rest carries on."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class ModelSlot:
    """Holds the loaded model; empty until loading and warm-up finish.

    Draining does not empty it: calls accepted before shutdown, and items still arriving on their
    streams, are answered normally until the grace period ends; grpc refuses new calls meanwhile."""

    def __init__(self) -> None:
        self.bundle: Bundle | None = None
        self.batcher: DynamicBatcher | None = None

    @property
    def ready(self) -> bool:
        return self.bundle is not None and self.batcher is not None


class EnrichServicer(enrich_pb2_grpc.EnrichServicer):
    def __init__(self, slot: ModelSlot, limits: Limits, decode_pool: ThreadPoolExecutor) -> None:
        self.slot, self.limits, self.decode_pool = slot, limits, decode_pool

    # --- RPCs ---------------------------------------------------------------------------------------
    async def Enrich(self, request: enrich_pb2.EnrichRequest, context: grpc.aio.ServicerContext):
        try:
            return await self._answer(request, request.request_id)
        except ItemError as error:
            await context.abort(error.code, error.message)

    async def EnrichStream(self, requests: AsyncIterator[enrich_pb2.EnrichRequest],
                           context: grpc.aio.ServicerContext) -> AsyncIterator[enrich_pb2.EnrichResponse]:
        answers: asyncio.Queue = asyncio.Queue()
        # Read-ahead bound: a slot is held from reading a request until its answer is handed to grpc, so
        # a client that sends fast but reads slowly stalls its own reads instead of growing our memory.
        slots = asyncio.Semaphore(self.limits.max_stream_in_flight)
        pending: set[asyncio.Task] = set()
        finished = object()

        async def answer(request: enrich_pb2.EnrichRequest, request_id: str) -> None:
            try:
                response = await self._answer(request, request_id)
            except ItemError as error:
                response = enrich_pb2.EnrichResponse(
                    request_id=request_id, status=enrich_pb2.ItemStatus(code=error.code.value[0],
                                                                        message=error.message))
            except Exception as error:  # a bug, not a bad item: still answer, never drop it
                log.exception("stream item %s failed", request_id)
                response = enrich_pb2.EnrichResponse(
                    request_id=request_id, status=enrich_pb2.ItemStatus(
                        code=grpc.StatusCode.INTERNAL.value[0], message=f"internal error: {error}"))
            await answers.put(response)

        async def read() -> None:
            try:
                index = 0
                async for request in requests:
                    await slots.acquire()
                    task = asyncio.create_task(answer(request, request.request_id or str(index)))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    index += 1
                while pending:
                    await asyncio.gather(*pending)
                await answers.put(finished)
            except Exception as error:  # the client's side of the stream broke
                await answers.put(error)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await answers.get()
                if item is finished:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
                slots.release()
        finally:
            reader.cancel()
            for task in list(pending):
                task.cancel()

    async def GetModelInfo(self, request: enrich_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext):
        if self.slot.bundle is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the model is still loading")
        return model_info(self.slot.bundle, self.limits)

    # --- one item: decode -> batch -> encode ----------------------------------------------------------
    async def _answer(self, request: enrich_pb2.EnrichRequest, request_id: str) -> enrich_pb2.EnrichResponse:
        received = time.perf_counter()
        if not self.slot.ready:
            raise ItemError(grpc.StatusCode.UNAVAILABLE, "the model is still loading")
        bundle, batcher = self.slot.bundle, self.slot.batcher
        options = ItemOptions(top_k=min(request.top_k or DEFAULT_TOP_K, MAX_TOP_K),
                              caption=CAPTION_MODES.get(request.caption_mode, CaptionMode.GENERATE))
        loop = asyncio.get_running_loop()
        try:
            decoded, pixels = await loop.run_in_executor(self.decode_pool, self._decode, bundle, request.image)
        except ImageDecodeError as error:
            raise ItemError(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from error
        decode_ms = (time.perf_counter() - received) * 1000
        try:
            answer = await batcher.submit(pixels, options)
        except Exception as error:  # the model failed on this batch (e.g. out of memory): say so
            log.exception("prediction failed for %s", request_id or "unary request")
            raise ItemError(grpc.StatusCode.INTERNAL, f"prediction failed: {type(error).__name__}: {error}") from error
        return encode_response(request_id, answer, decoded, len(request.image), decode_ms,
                               (time.perf_counter() - received) * 1000, bundle.model_version)

    def _decode(self, bundle: Bundle, data: bytes) -> tuple[DecodedImage, np.ndarray]:
        decoded = decode_image(data, self.limits.max_image_pixels, target=bundle.preprocessing.decode_target)
        return decoded, bundle.preprocessing(decoded.image)
