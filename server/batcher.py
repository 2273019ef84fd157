"""Dynamic batching: one queue shared by every caller, one `process(list) -> list` call per batch.

A batch closes when it holds `max_batch_size` items or `max_delay_ms` has passed since its first item,
whichever is first; `process` runs in the batcher's own thread so the event loop keeps serving
meanwhile, and two batchers (the encoder and the caption stage) overlap. Items whose caller went away
or whose deadline passed while queued are dropped when the batch forms: they never reach `process`.
A batch that raises fails its own callers only. The queue itself is unbounded; admission bounds it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger("enrich.batcher")

Item = TypeVar("Item")
Result = TypeVar("Result")


class DeadlineExpired(Exception):
    """The item's deadline passed while it waited for its batch."""


@dataclass
class Batched(Generic[Result]):
    result: Result
    queue_ms: float  # from submit to its batch starting
    batch_size: int


@dataclass
class _Job(Generic[Item]):
    item: Item
    future: asyncio.Future
    enqueued: float
    deadline: float | None  # time.perf_counter() seconds

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline


class DynamicBatcher(Generic[Item, Result]):
    def __init__(self, process: Callable[[list[Item]], list[Result]], max_batch_size: int = 8,
                 max_delay_ms: float = 5.0, name: str = "model",
                 on_batch: Callable[[int], None] | None = None,
                 more_coming: Callable[[], bool] | None = None, max_wait_ms: float = 500.0) -> None:
        self.process = process
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000
        self.name = name
        self.on_batch = on_batch  # hears each batch's size: for metrics
        # A later stage fed by an earlier one: while `more_coming()` (the earlier stage holds work for this
        # one), a partial batch waits for it, up to `max_wait_ms`; otherwise nothing waits.
        self.more_coming = more_coming
        self.max_wait = max_wait_ms / 1000
        self.queue: asyncio.Queue[_Job[Item]] = asyncio.Queue()
        self.thread = ThreadPoolExecutor(1, thread_name_prefix=f"enrich-{name}")
        self.batches = 0
        self.items = 0  # reached process
        self.skipped = 0  # cancelled or expired before process
        self.item_seconds = 0.0  # moving average of process time per item, for retry hints
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"enrich-{self.name}-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        await self.queue.join()
        if self._worker:
            self._worker.cancel()
        self.thread.shutdown(wait=True)

    async def submit(self, item: Item, deadline: float | None = None) -> Batched[Result]:
        """The item's result; DeadlineExpired when `deadline` (perf_counter seconds) passes first."""
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Job(item, future, time.perf_counter(), deadline))
        return await future

    async def _next_batch(self) -> list[_Job[Item]]:
        batch = [await self.queue.get()]
        started = time.perf_counter()
        deadline = started + self.max_delay
        while len(batch) < self.max_batch_size:
            now = time.perf_counter()
            if now >= deadline and self.more_coming and self.more_coming() and now < started + self.max_wait:
                deadline = min(now + self.max_delay, started + self.max_wait, self._latest_start(batch))
            remaining = deadline - now
            if remaining <= 0 and self.queue.empty():
                break
            try:
                batch.append(self.queue.get_nowait() if remaining <= 0 else
                             await asyncio.wait_for(self.queue.get(), remaining))
            except asyncio.TimeoutError:
                continue  # the delay ran out: close the batch, unless more is coming
            except asyncio.QueueEmpty:
                break
        return batch

    def _latest_start(self, batch: list[_Job[Item]]) -> float:
        """When the batch must start for its most urgent item to finish in time (at the recent pace)."""
        deadlines = [job.deadline for job in batch if job.deadline is not None]
        margin = max(self.item_seconds * self.max_batch_size, self.max_delay)
        return min(deadlines) - margin if deadlines else float("inf")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            started = time.perf_counter()
            live = self._still_wanted(batch, started)
            try:
                if live:
                    results = await loop.run_in_executor(self.thread, self.process, [job.item for job in live])
                    if len(results) != len(live):
                        raise RuntimeError(f"{self.name}: {len(results)} results for a batch of {len(live)}")
                    seconds = time.perf_counter() - started
                    for job, result in zip(live, results, strict=True):
                        if not job.future.done():
                            job.future.set_result(Batched(result, (started - job.enqueued) * 1000, len(live)))
                    self.batches += 1
                    self.items += len(live)
                    per_item = seconds / len(live)
                    self.item_seconds = per_item if not self.item_seconds else 0.8 * self.item_seconds + 0.2 * per_item
                    if self.on_batch:
                        self.on_batch(len(live))
            except Exception as error:  # the whole batch failed: its callers hear about it, nobody else
                log.exception("%s batch of %d failed", self.name, len(live))
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(error)
            finally:
                for _ in batch:
                    self.queue.task_done()

    def _still_wanted(self, batch: list[_Job[Item]], now: float) -> list[_Job[Item]]:
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
