"""DynamicBatcher on its own: list in, list out, shared by concurrent callers."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from enrich_server.batcher import DeadlineExpired, DynamicBatcher


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_callers_share_one_batch_and_get_their_own_results():
    seen: list[list[int]] = []

    def double(items: list[int]) -> list[int]:
        seen.append(list(items))
        return [2 * n for n in items]

    async def main():
        batcher = DynamicBatcher(double, max_batch_size=4, max_delay_ms=50, name="test")
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit(n) for n in range(6)))
        await batcher.stop()
        return answers, batcher

    answers, batcher = run(main())
    assert [a.result for a in answers] == [0, 2, 4, 6, 8, 10]
    assert seen == [[0, 1, 2, 3], [4, 5]]  # full batches first, the rest when the delay ran out
    assert [a.batch_size for a in answers] == [4, 4, 4, 4, 2, 2]
    assert batcher.batches == 2 and batcher.items == 6 and batcher.skipped == 0


def test_cancelled_and_expired_items_never_reach_process():
    gate, entered = threading.Event(), threading.Event()
    processed: list[str] = []

    def slow(items: list[str]) -> list[str]:
        entered.set()
        gate.wait(10)
        processed.extend(items)
        return items

    async def main():
        batcher = DynamicBatcher(slow, max_batch_size=8, max_delay_ms=1, name="test")
        batcher.start()
        first = asyncio.create_task(batcher.submit("first"))
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, 10)  # "first" holds the thread
        cancelled = asyncio.create_task(batcher.submit("cancelled"))
        expired = asyncio.create_task(batcher.submit("expired", deadline=time.perf_counter() + 0.05))
        kept = asyncio.create_task(batcher.submit("kept"))
        await asyncio.sleep(0.1)  # the gate holds the thread meanwhile: "expired"'s deadline passes in the queue
        cancelled.cancel()
        gate.set()
        assert (await first).result == "first" and (await kept).result == "kept"
        with pytest.raises(DeadlineExpired):
            await expired
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await batcher.stop()
        return batcher

    batcher = run(main())
    assert processed == ["first", "kept"]
    assert batcher.skipped == 2 and batcher.items == 2


def test_a_failing_batch_fails_only_its_own_callers():
    def fragile(items: list[int]) -> list[int]:
        if 13 in items:
            raise MemoryError("out of memory")
        return items

    async def main():
        batcher = DynamicBatcher(fragile, max_batch_size=2, max_delay_ms=20, name="test")
        batcher.start()
        doomed = await asyncio.gather(batcher.submit(13), batcher.submit(1), return_exceptions=True)
        fine = await asyncio.gather(batcher.submit(2), batcher.submit(3))
        await batcher.stop()
        return doomed, fine

    doomed, fine = run(main())
    assert all(isinstance(outcome, MemoryError) for outcome in doomed)
    assert [a.result for a in fine] == [2, 3]


def test_a_process_returning_the_wrong_count_fails_its_batch_loudly():
    async def main():
        batcher = DynamicBatcher(lambda items: items[:1], max_batch_size=2, max_delay_ms=20, name="test")
        batcher.start()
        outcomes = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        await batcher.stop()
        return outcomes

    outcomes = run(main())
    assert all(isinstance(o, RuntimeError) and "1 results for a batch of 2" in str(o) for o in outcomes)


def test_a_partial_batch_waits_for_items_still_coming_but_not_past_max_wait():
    """While an earlier stage still holds items for this one (images being decoded), a partial batch
    waits for them; with nothing coming, or once max_wait_ms has passed, it closes after max_delay_ms."""
    seen: list[list[int]] = []

    def same(items: list[int]) -> list[int]:
        seen.append(list(items))
        return items

    async def main(coming: list[int], max_wait_ms: float) -> None:
        batcher = DynamicBatcher(same, max_batch_size=4, max_delay_ms=5, name="test",
                                 more_coming=lambda: coming[0] > 0, max_wait_ms=max_wait_ms)
        batcher.start()

        async def late(n: int, after: float) -> None:
            await asyncio.sleep(after)
            coming[0] -= 1
            await batcher.submit(n)

        await asyncio.gather(batcher.submit(0), late(1, 0.05), late(2, 0.1))
        await batcher.stop()

    run(main([2], max_wait_ms=1000))
    assert seen == [[0, 1, 2]]  # 100 ms of "more coming" is far past the 5 ms delay: still one batch
    seen.clear()
    run(main([0], max_wait_ms=1000))  # nothing announced: no waiting
    assert seen == [[0], [1], [2]]
    seen.clear()
    run(main([2], max_wait_ms=30))  # announced, but the wait is capped
    assert seen[0] == [0] and sum(map(len, seen)) == 3


def test_waiting_for_more_never_lets_a_queued_item_miss_its_deadline():
    """More is always "coming" and the wait may last 5 s, but the item's 0.3 s deadline closes the batch early
    enough (a margin of max_delay_ms before it) for the item to be answered in time."""
    async def main() -> tuple[float, object]:
        batcher = DynamicBatcher(lambda items: items, max_batch_size=4, max_delay_ms=50, name="test",
                                 more_coming=lambda: True, max_wait_ms=5000)
        batcher.start()
        started = time.perf_counter()
        answer = await batcher.submit(7, deadline=started + 0.3)
        elapsed = time.perf_counter() - started
        await batcher.stop()
        return elapsed, answer

    elapsed, answer = run(main())
    assert answer.result == 7  # not DeadlineExpired: the batch started before the deadline
    assert elapsed < 2.0  # and long before the 5 s the wait for more would have allowed
