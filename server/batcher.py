"""Dynamic batching: one queue shared by every caller (unary and streaming), one model pass per batch.

A batch closes when it holds `max_batch_size` items or `max_delay_ms` has passed since its first item,
whichever is first; the model runs in one dedicated thread so the event loop keeps serving meanwhile.
Items whose caller went away or whose deadline passed while queued are dropped when the batch forms:
they never reach the model. The queue itself is unbounded; admission (admission.py) bounds it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from enrich_model.predict import BatchResult, BatchTimings, ItemOptions, ItemPrediction

log = logging.getLogger("enrich.batcher")


@dataclass
class BatchedAnswer:
    prediction: ItemPrediction
    timings: BatchTimings
    queue_ms: float


class DeadlineExpired(Exception):
    """The item's deadline passed while it waited for the model."""


@dataclass
class _Job:
    pixels: np.ndarray
    options: ItemOptions
    future: asyncio.Future
    enqueued: float
    deadline: float | None  # time.perf_counter() seconds

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline


class DynamicBatcher:
    def __init__(self, predict: Callable[[np.ndarray, list[ItemOptions]], BatchResult],
                 max_batch_size: int = 8, max_delay_ms: float = 5.0) -> None:
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="enrich-model")
        self.batches = 0
        self.items = 0  # reached the model
        self.skipped = 0  # cancelled or expired before the model
        self.item_seconds = 0.0  # moving average of model time per item, for retry hints
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="enrich-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        await self.queue.join()
        if self._worker:
            self._worker.cancel()
        self.model_thread.shutdown(wait=True)

    async def submit(self, pixels: np.ndarray, options: ItemOptions, deadline: float | None = None) -> BatchedAnswer:
        """The item's answer; DeadlineExpired when `deadline` (perf_counter seconds) passes before the model."""
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Job(pixels, options, future, time.perf_counter(), deadline))
        return await future

    async def _next_batch(self) -> list[_Job]:
        batch = [await self.queue.get()]
        deadline = time.perf_counter() + self.max_delay
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0 and self.queue.empty():
                break
            try:
                batch.append(self.queue.get_nowait() if remaining <= 0 else
                             await asyncio.wait_for(self.queue.get(), remaining))
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            started = time.perf_counter()
            live = self._still_wanted(batch, started)
            try:
                if live:
                    pixels = np.stack([job.pixels for job in live])
                    result = await loop.run_in_executor(
                        self.model_thread, self.predict, pixels, [job.options for job in live]
                    )
                    for job, prediction in zip(live, result.items, strict=True):
                        if not job.future.done():
                            queue_ms = (started - job.enqueued) * 1000
                            job.future.set_result(BatchedAnswer(prediction, result.timings, queue_ms))
                    self.batches += 1
                    self.items += len(live)
                    per_item = (time.perf_counter() - started) / len(live)
                    self.item_seconds = per_item if not self.item_seconds else 0.8 * self.item_seconds + 0.2 * per_item
            except Exception as error:  # the whole batch failed: every caller hears about it
                log.exception("batch of %d failed", len(live))
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(error)
            finally:
                for _ in batch:
                    self.queue.task_done()

    def _still_wanted(self, batch: list[_Job], now: float) -> list[_Job]:
        live = []
        for job in batch:
            if job.future.done():  # cancelled: the caller went away
                self.skipped += 1
            elif job.expired(now):
                job.future.set_exception(DeadlineExpired())
                self.skipped += 1
            else:
                live.append(job)
        return live
