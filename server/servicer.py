"""The Enrich gRPC servicer: check -> admit -> decode -> batch -> predict -> encode, per call or stream item.

Every image accepted gets exactly one answer: its metadata, or an EnrichFailure with a reason (see
errors.py). Cheap refusals (model loading, draining, too many bytes) come before admission; a full
admission queue refuses unary calls at once and makes streams wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

from enrich.v1 import enrich_pb2, enrich_pb2_grpc
from enrich_model.bundle import Bundle
from enrich_model.decode import DecodedImage, ImageDecodeError, decode_image
from enrich_model.predict import MAX_TOP_K, CaptionMode, ItemOptions

from .admission import Admission
from .batcher import DeadlineExpired, DynamicBatcher
from .errors import (
    EnrichFailure,
    deadline_expired,
    image_too_many_bytes,
    internal_error,
    model_loading,
    overloaded,
    prediction_failed,
    shutting_down,
)
from .logs import CallRecord
from .messages import CAPTION_MODES, Limits, encode_response, model_info

log = logging.getLogger("enrich.servicer")

DEFAULT_TOP_K = 3


class ModelSlot:
    """Holds the loaded model; empty until loading and warm-up finish.

    Draining does not empty it: calls accepted before shutdown, and items still arriving on their
    streams, are answered normally until the drain cutoff; grpc refuses new calls meanwhile."""

    def __init__(self) -> None:
        self.bundle: Bundle | None = None
        self.batcher: DynamicBatcher | None = None

    @property
    def ready(self) -> bool:
        return self.bundle is not None and self.batcher is not None


def call_deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline as a time.perf_counter() value, or None."""
    remaining = context.time_remaining()
    return None if remaining is None else time.perf_counter() + remaining


def failed_response(request_id: str, failure: EnrichFailure) -> enrich_pb2.EnrichResponse:
    return enrich_pb2.EnrichResponse(request_id=request_id, status=failure.item_status())


class EnrichServicer(enrich_pb2_grpc.EnrichServicer):
    def __init__(self, slot: ModelSlot, limits: Limits, decode_pool: ThreadPoolExecutor) -> None:
        self.slot, self.limits, self.decode_pool = slot, limits, decode_pool
        self.admission = Admission(limits.max_queue)
        self.drain_cutoff: float | None = None  # perf_counter time after which stream items are refused
        self.active_calls = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def begin_drain(self, accept_for_seconds: float) -> None:
        self.drain_cutoff = time.perf_counter() + accept_for_seconds

    async def wait_until_idle(self, timeout: float) -> None:
        """Until no Enrich call is running (or `timeout` seconds)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.idle.wait(), timeout)

    @contextlib.contextmanager
    def _active(self) -> Iterator[None]:
        self.active_calls += 1
        self.idle.clear()
        try:
            yield
        finally:
            self.active_calls -= 1
            if not self.active_calls:
                self.idle.set()

    # --- RPCs ---------------------------------------------------------------------------------------
    async def Enrich(self, request: enrich_pb2.EnrichRequest, context: grpc.aio.ServicerContext):
        with self._active():
            return await self._enrich(request, context)

    async def _enrich(self, request: enrich_pb2.EnrichRequest, context: grpc.aio.ServicerContext):
        record = CallRecord("Enrich", request.request_id, bytes_in=len(request.image), items=1)
        try:
            self._precheck(request)
            if not self.admission.try_admit():
                raise overloaded(self.admission.in_flight, self.admission.capacity, self._retry_after())
            try:
                response = await self._process(request, request.request_id, call_deadline(context))
            finally:
                self.admission.release()
            record.add_timings(response.timings)
            return response
        except EnrichFailure as failure:
            record.fail(failure.code.name, failure.reason_name)
            await failure.abort(context)
        except asyncio.CancelledError:
            record.fail("CANCELLED", "")
            raise
        except Exception:  # a bug: a clear status for the caller, the traceback for us
            log.exception("Enrich %s failed", request.request_id or "(no request id)")
            failure = internal_error()
            record.fail(failure.code.name, failure.reason_name)
            await failure.abort(context)
        finally:
            record.write()

    async def EnrichStream(self, requests: AsyncIterator[enrich_pb2.EnrichRequest],
                           context: grpc.aio.ServicerContext) -> AsyncIterator[enrich_pb2.EnrichResponse]:
        with self._active():
            async for answer in self._enrich_stream(requests, context):
                yield answer

    async def _enrich_stream(self, requests: AsyncIterator[enrich_pb2.EnrichRequest],
                             context: grpc.aio.ServicerContext) -> AsyncIterator[enrich_pb2.EnrichResponse]:
        record = CallRecord("EnrichStream")
        deadline = call_deadline(context)
        answers: asyncio.Queue = asyncio.Queue()
        # Read-ahead bound: a slot is held from reading a request until its answer is handed to grpc, so
        # a client that sends fast but reads slowly stalls its own reads instead of growing our memory.
        slots = asyncio.Semaphore(self.limits.max_stream_in_flight)
        pending: set[asyncio.Task] = set()
        finished = object()

        async def answer(request: enrich_pb2.EnrichRequest, request_id: str) -> None:
            try:
                response = await self._process(request, request_id, deadline)
            except EnrichFailure as failure:
                response = failed_response(request_id, failure)
            except Exception:  # a bug, not a bad item: still answer, never drop it
                log.exception("stream item %s failed", request_id)
                response = failed_response(request_id, internal_error())
            finally:
                self.admission.release()
            await answers.put(response)

        async def read() -> None:
            try:
                index = 0
                async for request in requests:
                    record.bytes_in += len(request.image)
                    await slots.acquire()
                    request_id = request.request_id or str(index)
                    index += 1
                    try:
                        self._precheck(request)
                    except EnrichFailure as failure:
                        await answers.put(failed_response(request_id, failure))
                        continue
                    await self.admission.admit()  # waits while the server is full: flow control slows the sender
                    task = asyncio.create_task(answer(request, request_id))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
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
                    record.fail(grpc.StatusCode.CANCELLED.name, "")
                    raise item
                record.count_item(enrich_pb2.ErrorReason.Name(item.status.reason) if item.status.code else "")
                record.add_timings(item.timings)
                yield item
                slots.release()
        except asyncio.CancelledError:
            record.fail(grpc.StatusCode.CANCELLED.name, "")
            raise
        finally:
            reader.cancel()
            for task in list(pending):
                task.cancel()
            record.write()

    async def GetModelInfo(self, request: enrich_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext):
        if not self.slot.ready:
            await model_loading().abort(context)
        batcher = self.slot.batcher
        load = enrich_pb2.ServerLoad(in_flight=self.admission.in_flight, capacity=self.admission.capacity,
                                     predicted=batcher.items, skipped=batcher.skipped)
        return model_info(self.slot.bundle, self.limits, load)

    # --- one item -------------------------------------------------------------------------------------
    def _precheck(self, request: enrich_pb2.EnrichRequest) -> None:
        """Refusals that cost nothing, before the item takes a place in the queue."""
        if not self.slot.ready:
            raise model_loading()
        if self.drain_cutoff is not None and time.perf_counter() >= self.drain_cutoff:
            raise shutting_down()
        if len(request.image) > self.limits.max_image_bytes:
            raise image_too_many_bytes(len(request.image), self.limits.max_image_bytes)

    def _retry_after(self) -> float:
        """About how long until the queue has room: the work ahead at the recent model speed."""
        per_item = self.slot.batcher.item_seconds if self.slot.batcher else 0.05
        return min(5.0, max(0.1, self.admission.in_flight * per_item / 2))

    async def _process(self, request: enrich_pb2.EnrichRequest, request_id: str,
                       deadline: float | None) -> enrich_pb2.EnrichResponse:
        """decode -> batch -> predict -> encode for one admitted image."""
        received = time.perf_counter()
        bundle, batcher = self.slot.bundle, self.slot.batcher
        options = ItemOptions(top_k=min(request.top_k or DEFAULT_TOP_K, MAX_TOP_K),
                              caption=CAPTION_MODES.get(request.caption_mode, CaptionMode.GENERATE))
        if deadline is not None and received >= deadline:
            raise deadline_expired()
        loop = asyncio.get_running_loop()
        try:
            decoded, pixels = await loop.run_in_executor(self.decode_pool, self._decode, bundle, request.image)
        except ImageDecodeError as error:
            raise EnrichFailure.from_decode(error) from error
        decode_ms = (time.perf_counter() - received) * 1000
        try:
            submitted = batcher.submit(pixels, options, deadline)
            answer = await (submitted if deadline is None else
                            asyncio.wait_for(submitted, max(0.0, deadline - time.perf_counter())))
        except (DeadlineExpired, asyncio.TimeoutError) as error:
            raise deadline_expired() from error
        except Exception as error:  # the model failed on this batch (e.g. out of memory): say so
            log.exception("prediction failed for %s", request_id or "unary request")
            raise prediction_failed(error) from error
        return encode_response(request_id, answer, decoded, len(request.image), decode_ms,
                               (time.perf_counter() - received) * 1000, bundle.model_version)

    def _decode(self, bundle: Bundle, data: bytes) -> tuple[DecodedImage, np.ndarray]:
        decoded = decode_image(data, self.limits.decode, target=bundle.preprocessing.decode_target)
        return decoded, bundle.preprocessing(decoded.image)
