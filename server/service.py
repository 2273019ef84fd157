"""What every host of the Enrich API shares, in one place: the loaded model, admission, the response cache,
decoding, the batched stages, deadlines, metrics and the access log. The gRPC servicer and the HTTP API
only translate their wire formats into calls of this object.

    check -> admit -> cache -> decode (worker threads) -> batched stages -> typed answer

Every image accepted gets exactly one answer: its metadata, or an EnrichFailure with a reason (errors.py).
Cheap refusals (model loading, draining, too many bytes) come before admission; a full admission queue
refuses a single image at once (`enrich`) and makes a stream wait (`admit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from enrich.v1 import enrich_pb2
from enrich_model.answers import ItemOptions
from enrich_model.decode import ImageDecodeError

from .admission import Admission
from .batcher import DeadlineExpired
from .cache import CacheKey, ResponseCache
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
from .logs import CallRecord, printable
from .messages import Limits, cached_response, encode_response, item_options, model_info
from .metrics import Metrics

if TYPE_CHECKING:

    from enrich_model.pipeline import EnrichPipeline

    from .batched import BatchedPipeline

log = logging.getLogger("enrich.service")

HASH_INLINE_BYTES = 256 * 1024  # larger images are hashed for the cache in the decode pool
TIMED_STAGES = ("decode", "queue", "encoder", "heads", "total")


@dataclass
class LoadedModel:
    pipeline: EnrichPipeline
    batched: BatchedPipeline
    runtime: enrich_pb2.Runtime  # what was chosen to run it


class EnrichService:
    def __init__(self, limits: Limits, decode_pool: ThreadPoolExecutor, metrics: Metrics | None = None,
                 cache_bytes: int = 0) -> None:
        self.limits, self.decode_pool = limits, decode_pool
        self.metrics = metrics or Metrics()
        self.cache = ResponseCache(cache_bytes)
        self.admission = Admission(limits.max_queue)
        self.model: LoadedModel | None = None  # None until loaded and warmed; draining keeps it
        self.drain_cutoff: float | None = None  # perf_counter time after which new images are refused
        self.active_calls = 0
        self.idle = asyncio.Event()
        self.idle.set()

    # --- lifecycle ------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.model is not None

    @property
    def serving(self) -> bool:
        """Ready and not draining: what health checks report."""
        return self.ready and self.drain_cutoff is None

    def begin_drain(self, accept_for_seconds: float) -> None:
        """Calls accepted before now, and stream items read in the next `accept_for_seconds`, are answered."""
        self.drain_cutoff = time.perf_counter() + accept_for_seconds

    async def wait_until_idle(self, timeout: float) -> None:
        """Until no Enrich call is running (or `timeout` seconds)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.idle.wait(), timeout)

    @contextlib.contextmanager
    def call(self, method: str, request_id: str = "", bytes_in: int = 0) -> Iterator[CallRecord]:
        """Around every call of every host: shutdown waits for it, and it writes one access-log line."""
        self.active_calls += 1
        self.idle.clear()
        record = CallRecord(method, request_id, bytes_in=bytes_in)
        try:
            yield record
        except asyncio.CancelledError:
            record.fail("CANCELLED", "")
            self.metrics.count_item(method, "CANCELLED")
            raise
        finally:
            record.write()
            self.active_calls -= 1
            if not self.active_calls:
                self.idle.set()

    def refuse(self, method: str, failure: EnrichFailure, request_id: str = "") -> EnrichFailure:
        """A call refused before it reached the service (a bad token, an unreadable HTTP body): logged and
        counted like any other."""
        with self.call(method, request_id) as record:
            self.failed(method, record, failure)
        return failure

    def count(self, method: str, record: CallRecord, code: str = "OK", reason: str = "") -> None:
        """One image answered: in the call's access-log line and in the metrics."""
        record.count_item(reason)
        self.metrics.count_item(method, code, reason)

    def failed(self, method: str, record: CallRecord, failure: EnrichFailure) -> None:
        """A call that failed as a whole (a unary call, an HTTP request)."""
        record.fail(failure.code.name, failure.reason_name)
        self.count(method, record, failure.code.name, failure.reason_name)

    # --- one image ------------------------------------------------------------------------------------
    async def enrich(self, method: str, request: enrich_pb2.EnrichRequest,
                     deadline: float | None) -> enrich_pb2.EnrichResponse:
        """One image outside a stream (a unary call, an HTTP request): refused at once when the server is
        full. Raises EnrichFailure."""
        with self.call(method, request.request_id, len(request.image)) as record:
            try:
                options = self.precheck(request)
                if not self.admission.try_admit():
                    raise overloaded(self.admission.in_flight, self.admission.capacity, self.retry_after())
                try:
                    response = await self.process(request, request.request_id, options, deadline)
                finally:
                    self.admission.release()
            except EnrichFailure as failure:
                self.failed(method, record, failure)
                raise
            except Exception as error:  # a bug: a clear status for the caller, the traceback for us
                log.exception("%s %s failed", method, printable(request.request_id) or "(no request id)")
                failure = internal_error()
                self.failed(method, record, failure)
                raise failure from error
            record.add_timings(response.timings)
            self.count(method, record)
            return response

    def precheck(self, request: enrich_pb2.EnrichRequest) -> ItemOptions:
        """Refusals that cost nothing, before the image takes a place in the queue; the request's options."""
        if not self.ready:
            raise model_loading()
        if self.drain_cutoff is not None and time.perf_counter() >= self.drain_cutoff:
            raise shutting_down()
        if len(request.image) > self.limits.max_image_bytes:
            raise image_too_many_bytes(len(request.image), self.limits.max_image_bytes)
        return item_options(request, self.model.pipeline.auditor)  # refuses an unknown caption mode or column

    async def admit(self) -> None:
        """A place in the queue, waiting for one while the server is full (streams: flow control slows the
        sender). Give it back with `release`."""
        await self.admission.admit()

    def release(self) -> None:
        self.admission.release()

    def retry_after(self) -> float:
        """About how long until the queue has room: the work ahead at the recent model speed."""
        per_item = self.model.batched.item_seconds if self.model else 0.05
        return min(5.0, max(0.1, self.admission.in_flight * per_item / 2))

    async def process(self, request: enrich_pb2.EnrichRequest, request_id: str, options: ItemOptions,
                      deadline: float | None) -> enrich_pb2.EnrichResponse:
        """cache -> decode -> batched stages -> typed answer, for one admitted image (`precheck`ed)."""
        received = time.perf_counter()
        if deadline is not None and received >= deadline:
            raise deadline_expired()
        model = self.model
        key = None
        if self.cache.enabled:
            key = await self._cache_key(request.image, options, model.pipeline.model_version)
            cached = self.cache.get(key)
            self.metrics.count_cache(cached is not None)
            if cached is not None:
                total_ms = (time.perf_counter() - received) * 1000
                self.metrics.observe_stage("total", total_ms)
                return cached_response(request_id, cached, total_ms)
        decoded, pixels, look = await self._decode(model, request.image, options)
        decode_ms = (time.perf_counter() - received) * 1000
        try:
            submitted = model.batched.run(pixels, options, deadline)
            answer = await (submitted if deadline is None else
                            asyncio.wait_for(submitted, max(0.0, deadline - time.perf_counter())))
        except (DeadlineExpired, asyncio.TimeoutError) as error:
            raise deadline_expired() from error
        except Exception as error:  # the model failed on this batch (e.g. out of memory): say so
            log.exception("prediction failed for %s", printable(request_id) or "a request without id")
            raise prediction_failed(error) from error
        response = encode_response(request_id, answer, decoded, look, len(request.image), decode_ms,
                                   (time.perf_counter() - received) * 1000, model.pipeline.model_version, options)
        if key is not None:
            self.cache.put(key, response)
        self._observe(response.timings)
        return response

    async def _cache_key(self, image: bytes, options: ItemOptions, model_version: str) -> CacheKey:
        key_of = functools.partial(CacheKey.of, image, options, model_version)
        if len(image) < HASH_INLINE_BYTES:
            return key_of()
        # Hashing a camera original takes milliseconds: off the event loop (hashlib releases the GIL).
        return await asyncio.get_running_loop().run_in_executor(self.decode_pool, key_of)

    async def _decode(self, model: LoadedModel, image: bytes, options: ItemOptions):
        loop = asyncio.get_running_loop()
        try:
            with model.batched.decoding():
                return await loop.run_in_executor(self.decode_pool, model.pipeline.decode_and_look, image, options,
                                                  self.limits.decode)
        except ImageDecodeError as error:
            raise EnrichFailure.from_decode(error) from error

    def _observe(self, timings: enrich_pb2.Timings) -> None:
        for stage in TIMED_STAGES:
            self.metrics.observe_stage(stage, getattr(timings, f"{stage}_ms"))
        if timings.caption_batch_size:
            self.metrics.observe_stage("caption", timings.caption_ms)

    # --- the model ------------------------------------------------------------------------------------
    def model_info(self, method: str = "GetModelInfo") -> enrich_pb2.ModelInfo:
        """What GetModelInfo answers (one access-log line); raises EnrichFailure (MODEL_LOADING) until the model
        is loaded."""
        with self.call(method) as record:
            if self.model is None:
                failure = model_loading()
                record.fail(failure.code.name, failure.reason_name)
                raise failure
            return self._describe()

    def _describe(self) -> enrich_pb2.ModelInfo:
        batched = self.model.batched
        load = enrich_pb2.ServerLoad(in_flight=self.admission.in_flight, capacity=self.admission.capacity,
                                     predicted=batched.predicted, skipped=batched.skipped,
                                     cache_hits=self.cache.hits, cache_misses=self.cache.misses)
        return model_info(self.model.pipeline.bundle, self.limits, load, self.model.runtime)
