"""Dynamic batching: one queue shared by every caller (unary and streaming), one model pass per batch.

A batch closes when it holds `max_batch_size` items or `max_delay_ms` has passed since its first item,
whichever is first; the model runs in one dedicated thread so the event loop keeps serving meanwhile.
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


@dataclass
class _Job:
    pixels: np.ndarray
    options: ItemOptions
    future: asyncio.Future
    enqueued: float


class DynamicBatcher:
    def __init__(self, predict: Callable[[np.ndarray, list[ItemOptions]], BatchResult],
                 max_batch_size: int = 8, max_delay_ms: float = 5.0, max_queue: int = 1024) -> None:
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(max_queue)
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="enrich-model")
        self.batches = 0
        self.items = 0
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="enrich-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        await self.queue.join()
        if self._worker:
            self._worker.cancel()
        self.model_thread.shutdown(wait=True)

    async def submit(self, pixels: np.ndarray, options: ItemOptions) -> BatchedAnswer:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(pixels, options, future, time.perf_counter()))  # waits when full
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
            live = [job for job in batch if not job.future.cancelled()]  # caller gone: skip the work
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
            except Exception as error:  # the whole batch failed: every caller hears about it
                log.exception("batch of %d failed", len(live))
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(error)
            finally:
                for _ in batch:
                    self.queue.task_done()
