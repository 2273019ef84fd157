"""The Enrich gRPC servicer: check -> admit -> decode -> batch -> predict -> encode, per call or stream item.

Every image accepted gets exactly one answer: its metadata, or an EnrichFailure with a reason (see
errors.py). Cheap refusals (model loading, draining, too many bytes) come before admission; a full
admission queue refuses unary calls at once and makes streams wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc

from enrich.v1 import enrich_pb2, enrich_pb2_grpc
from enrich_model.bundle import Bundle
from enrich_model.decode import ImageDecodeError

from .admission import Admission
from .batcher import DeadlineExpired
from .cache import CacheKey, ResponseCache
from .errors import (
    EnrichFailure,
    code_name,
    deadline_expired,
    image_too_many_bytes,
    internal_error,
    model_loading,
    overloaded,
    prediction_failed,
    shutting_down,
)
from .logs import CallRecord, printable
from .messages import Limits, cached_response, encode_response, item_options, model_info
from .metrics import Metrics
from .pipeline import Pipeline

log = logging.getLogger("enrich.servicer")

HASH_INLINE_BYTES = 256 * 1024  # larger images are hashed for the cache in the decode pool


class ModelSlot:
    """Holds the loaded model; empty until loading and warm-up finish.

    Draining does not empty it: calls accepted before shutdown, and items still arriving on their
    streams, are answered normally until the drain cutoff; grpc refuses new calls meanwhile."""

    def __init__(self) -> None:
        self.bundle: Bundle | None = None
        self.pipeline: Pipeline | None = None
        self.runtime: enrich_pb2.Runtime | None = None  # what load_model chose

    @property
    def ready(self) -> bool:
        return self.bundle is not None and self.pipeline is not None


def call_deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline as a time.perf_counter() value, or None."""
    remaining = context.time_remaining()
    return None if remaining is None else time.perf_counter() + remaining


def failed_response(request_id: str, failure: EnrichFailure) -> enrich_pb2.EnrichResponse:
    return enrich_pb2.EnrichResponse(request_id=request_id, status=failure.item_status())


class EnrichServicer(enrich_pb2_grpc.EnrichServicer):
    def __init__(self, slot: ModelSlot, limits: Limits, decode_pool: ThreadPoolExecutor,
                 metrics: Metrics | None = None, cache_bytes: int = 0) -> None:
        self.slot, self.limits, self.decode_pool = slot, limits, decode_pool
        self.metrics = metrics or Metrics()
        self.cache = ResponseCache(cache_bytes)
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
    def active(self) -> Iterator[None]:
        """While an Enrich call (gRPC or HTTP) runs: shutdown waits until none does."""
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
        with self.active():
            return await self._enrich(request, context)

    async def _enrich(self, request: enrich_pb2.EnrichRequest, context: grpc.aio.ServicerContext):
        record = CallRecord("Enrich", request.request_id, bytes_in=len(request.image), items=1)
        try:
            response = await self.enrich_one(request, call_deadline(context))
            record.add_timings(response.timings)
            self.metrics.count_item("Enrich", "OK")
            return response
        except EnrichFailure as failure:
            record.fail(failure.code.name, failure.reason_name)
            self.metrics.count_item("Enrich", failure.code.name, failure.reason_name)
            await failure.abort(context)
        except asyncio.CancelledError:
            record.fail("CANCELLED", "")
            self.metrics.count_item("Enrich", "CANCELLED")
            raise
        except Exception:  # a bug: a clear status for the caller, the traceback for us
            log.exception("Enrich %s failed", printable(request.request_id) or "(no request id)")
            failure = internal_error()
            record.fail(failure.code.name, failure.reason_name)
            self.metrics.count_item("Enrich", failure.code.name, failure.reason_name)
            await failure.abort(context)
        finally:
            record.write()

    async def EnrichStream(self, requests: AsyncIterator[enrich_pb2.EnrichRequest],
                           context: grpc.aio.ServicerContext) -> None:
        # A coroutine that writes (not an async generator): grpc cancels it like any task, so the
        # clean-up below always runs, whatever ends the call.
        with self.active():
            await StreamCall(self, requests, context).run()

    async def GetModelInfo(self, request: enrich_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext):
        if not self.slot.ready:
            await model_loading().abort(context)
        return self.model_info()

    def model_info(self) -> enrich_pb2.ModelInfo:
        """What GetModelInfo answers; the model must be loaded (slot.ready)."""
        pipeline = self.slot.pipeline
        load = enrich_pb2.ServerLoad(in_flight=self.admission.in_flight, capacity=self.admission.capacity,
                                     predicted=pipeline.predicted, skipped=pipeline.skipped,
                                     cache_hits=self.cache.hits, cache_misses=self.cache.misses)
        return model_info(self.slot.bundle, self.limits, load, self.slot.runtime)

    # --- one item -------------------------------------------------------------------------------------
    async def enrich_one(self, request: enrich_pb2.EnrichRequest, deadline: float | None) -> enrich_pb2.EnrichResponse:
        """One image outside a stream (a unary call, an HTTP request): refused at once when the server is
        full; raises EnrichFailure."""
        self._precheck(request)
        if not self.admission.try_admit():
            raise overloaded(self.admission.in_flight, self.admission.capacity, self._retry_after())
        try:
            return await self._process(request, request.request_id, deadline)
        finally:
            self.admission.release()

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
        per_item = self.slot.pipeline.item_seconds if self.slot.pipeline else 0.05
        return min(5.0, max(0.1, self.admission.in_flight * per_item / 2))

    async def _process(self, request: enrich_pb2.EnrichRequest, request_id: str,
                       deadline: float | None) -> enrich_pb2.EnrichResponse:
        """cache -> decode -> pipeline (encoder stage, caption stage) -> encode for one admitted image."""
        received = time.perf_counter()
        bundle, pipeline = self.slot.bundle, self.slot.pipeline
        options = item_options(request)
        if deadline is not None and received >= deadline:
            raise deadline_expired()
        key = None
        loop = asyncio.get_running_loop()
        if self.cache.enabled:
            key_of = functools.partial(CacheKey.of, request.image, options.top_k, options.caption.value,
                                       bundle.model_version)
            # Hashing a camera original takes milliseconds: off the event loop (hashlib releases the GIL).
            key = key_of() if len(request.image) < HASH_INLINE_BYTES else \
                await loop.run_in_executor(self.decode_pool, key_of)
            cached = self.cache.get(key)
            self.metrics.count_cache(cached is not None)
            if cached is not None:
                total_ms = (time.perf_counter() - received) * 1000
                self.metrics.observe_stage("total", total_ms)
                return cached_response(request_id, cached, bundle.model_version, total_ms)
        try:
            with pipeline.decoding():
                decoded, pixels = await loop.run_in_executor(self.decode_pool, bundle.preprocessing.from_bytes,
                                                             request.image, self.limits.decode)
        except ImageDecodeError as error:
            raise EnrichFailure.from_decode(error) from error
        decode_ms = (time.perf_counter() - received) * 1000
        try:
            submitted = pipeline.run(pixels, options, deadline)
            answer = await (submitted if deadline is None else
                            asyncio.wait_for(submitted, max(0.0, deadline - time.perf_counter())))
        except (DeadlineExpired, asyncio.TimeoutError) as error:
            raise deadline_expired() from error
        except Exception as error:  # the model failed on this batch (e.g. out of memory): say so
            log.exception("prediction failed for %s", printable(request_id) or "unary request")
            raise prediction_failed(error) from error
        response = encode_response(request_id, answer, decoded, len(request.image), decode_ms,
                                   (time.perf_counter() - received) * 1000, bundle.model_version)
        if key is not None:
            self.cache.put(key, response.metadata)
        self._observe(response.timings)
        return response

    def _observe(self, timings: enrich_pb2.Timings) -> None:
        for stage in ("decode", "queue", "encoder", "heads", "total"):
            self.metrics.observe_stage(stage, getattr(timings, f"{stage}_ms"))
        if timings.caption_batch_size:
            self.metrics.observe_stage("caption", timings.caption_ms)


class StreamCall:
    """One EnrichStream: a reader admits items and starts their work; the call writes answers as they come.

    Every item read gets exactly one answer. After the drain cutoff the reader answers the item it
    holds with SHUTTING_DOWN, stops reading, and the call ends UNAVAILABLE (reason SHUTTING_DOWN) once
    every accepted item has been answered: the client resends whatever has no answer.
    """

    def __init__(self, servicer: EnrichServicer, requests: AsyncIterator[enrich_pb2.EnrichRequest],
                 context: grpc.aio.ServicerContext) -> None:
        self.servicer, self.requests, self.context = servicer, requests, context
        self.record = CallRecord("EnrichStream")
        self.deadline = call_deadline(context)
        self.answers: asyncio.Queue = asyncio.Queue()
        # Read-ahead bound: a slot is held from reading a request until its answer is handed to grpc, so
        # a client that sends fast but reads slowly stalls its own reads instead of growing our memory.
        self.slots = asyncio.Semaphore(servicer.limits.max_stream_in_flight)
        self.pending: set[asyncio.Task] = set()
        self.ending: EnrichFailure | None = None  # how the call ends when not OK

    async def run(self) -> None:
        reader = asyncio.create_task(self.read())
        try:
            while (item := await self.answers.get()) is not None:
                reason = enrich_pb2.ErrorReason.Name(item.status.reason) if item.status.code else ""
                self.record.count_item(reason)
                self.servicer.metrics.count_item("EnrichStream", code_name(item.status.code), reason)
                self.record.add_timings(item.timings)
                await self.context.write(item)
                self.slots.release()
            if self.ending is not None:
                self.record.fail(self.ending.code.name, self.ending.reason_name)
                await self.ending.abort(self.context)
        except asyncio.CancelledError:
            self.record.fail(grpc.StatusCode.CANCELLED.name, "")
            raise
        finally:
            reader.cancel()
            for task in list(self.pending):
                task.cancel()
            self.record.write()

    async def read(self) -> None:
        servicer = self.servicer
        try:
            index = 0
            async for request in self.requests:
                self.record.bytes_in += len(request.image)
                await self.slots.acquire()
                request_id = request.request_id or str(index)
                index += 1
                try:
                    servicer._precheck(request)
                except EnrichFailure as failure:
                    await self.answers.put(failed_response(request_id, failure))
                    if failure.reason == enrich_pb2.SHUTTING_DOWN:
                        self.ending = failure
                        break
                    continue
                await servicer.admission.admit()  # waits while the server is full: flow control slows the sender
                task = asyncio.create_task(self.answer(request, request_id))
                # Released when the task ends, even if it is cancelled before it ever runs.
                task.add_done_callback(lambda _: servicer.admission.release())
                self.pending.add(task)
                task.add_done_callback(self.pending.discard)
        except Exception as error:  # the client's side of the stream broke: answer what was accepted
            log.warning("EnrichStream: reading requests failed (%s); answering the %d accepted items",
                        type(error).__name__, len(self.pending))
            self.ending = internal_error()
        while self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)
        await self.answers.put(None)

    async def answer(self, request: enrich_pb2.EnrichRequest, request_id: str) -> None:
        try:
            response = await self.servicer._process(request, request_id, self.deadline)
        except EnrichFailure as failure:
            response = failed_response(request_id, failure)
        except Exception:  # a bug, not a bad item: still answer, never drop it
            log.exception("stream item %s failed", printable(request_id))
            response = failed_response(request_id, internal_error())
        await self.answers.put(response)
