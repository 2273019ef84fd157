"""The server's two batched stages alone, over a stand-in pipeline whose stages the test holds and releases:
captions batch on their own, a request that skips them never waits for them, and a partial caption batch
waits for the captions still in the encoder stage (and only for those)."""

from __future__ import annotations

import asyncio
import threading

from enrich_model.answers import CaptionMode, CaptionPrediction, ItemOptions, ItemPrediction
from enrich_model.pipeline import CaptionJob, Classified
from enrich_server.batched import BatchedPipeline

from .conftest import until


class Stages:
    """encode/classify/caption/answer as EnrichPipeline has them; `hold_encoder` and `hold_caption` block."""

    def __init__(self, hold_from: int = 0) -> None:
        self.hold_encoder, self.hold_caption = threading.Event(), threading.Event()
        self.hold_encoder.set()
        self.hold_caption.set()
        self.hold_from = hold_from  # the encoder holds batches with an image numbered this or higher
        self.entered: list[list[int]] = []
        self.encoder_batches: list[list[int]] = []
        self.caption_batches: list[int] = []

    def encode(self, pixels):
        numbers = [int(p[0]) for p in pixels]
        self.entered.append(numbers)
        if max(numbers) >= self.hold_from:
            self.hold_encoder.wait(30)
        self.encoder_batches.append(numbers)
        return pixels

    def classify(self, encoded, options: list[ItemOptions]) -> list[Classified]:
        return [Classified({}, caption_job=CaptionJob(None, {}, option.caption_mode)
                           if option.caption_mode.needs_decoder else None) for option in options]

    def caption(self, jobs: list[CaptionJob]) -> list[CaptionPrediction]:
        self.hold_caption.wait(30)
        self.caption_batches.append(len(jobs))
        return [CaptionPrediction("a caption", job.mode, 0.5) for job in jobs]

    def answer(self, classified: Classified, caption: CaptionPrediction | None = None) -> ItemPrediction:
        return ItemPrediction(classified.attributes, caption)


def pixels(n: int) -> list[int]:
    return [n]





GENERATE, SKIP = ItemOptions(caption_mode=CaptionMode.GENERATE), ItemOptions(caption_mode=CaptionMode.SKIP)


def test_an_image_that_skips_captions_never_waits_for_the_decoder():
    async def scenario():
        stages = Stages()
        stages.hold_caption.clear()
        batched = BatchedPipeline(stages, max_batch_size=1, max_delay_ms=1)
        batched.start()
        captioned = asyncio.create_task(batched.run(pixels(0), GENERATE))
        skipped = await asyncio.wait_for(batched.run(pixels(1), SKIP), 10)  # the decoder is held all along
        assert not captioned.done()
        stages.hold_caption.set()
        answer = await captioned
        await batched.stop()
        return skipped, answer

    skipped, answer = asyncio.run(scenario())
    assert skipped.prediction.caption is None and skipped.timings.caption_batch_size == 0
    assert answer.prediction.caption.text == "a caption" and answer.timings.caption_batch_size == 1


def test_a_partial_caption_batch_waits_for_captions_still_in_the_encoder_stage():
    async def scenario(later: ItemOptions) -> list[int]:
        stages = Stages(hold_from=2)
        batched = BatchedPipeline(stages, max_batch_size=2, max_delay_ms=1, caption_batch_size=8,
                                  caption_wait_ms=30_000)  # bounded far beyond this test's 50 ms look
        submitted, submit = [], batched.caption_stage.submit

        async def counted(job, deadline=None):
            submitted.append(job)
            return await submit(job, deadline)

        batched.caption_stage.submit = counted
        batched.start()
        stages.hold_encoder.clear()  # images 2 and 3 stay in the encoder stage until the test says
        first = [asyncio.create_task(batched.run(pixels(n), GENERATE)) for n in range(2)]
        second = [asyncio.create_task(batched.run(pixels(n), later)) for n in (2, 3)]
        await until(lambda: len(submitted) == 2 and [2, 3] in stages.entered)
        # A caption batch closes after max_delay_ms (1 ms) unless more captions are coming, when it waits up to
        # caption_wait_ms: 50 ms later it has either long gone alone or is still waiting.
        await asyncio.sleep(0.05)
        waited = not stages.caption_batches
        stages.hold_encoder.set()
        answers = await asyncio.gather(*first, *second)
        await batched.stop()
        assert all(a.prediction.caption is not None for a in answers[:2])
        return waited, stages.caption_batches, answers

    waited, batches, answers = asyncio.run(scenario(GENERATE))
    assert waited and batches == [4]  # one decoder batch for all four
    assert [a.timings.caption_batch_size for a in answers] == [4, 4, 4, 4]
    assert all(a.timings.batch_size == 2 for a in answers)
    waited, batches, _ = asyncio.run(scenario(SKIP))
    assert not waited and batches == [2]  # images that skip captions are nothing to wait for


def test_the_wait_for_more_captions_is_bounded():
    async def scenario():
        stages = Stages(hold_from=1)
        batched = BatchedPipeline(stages, max_batch_size=1, max_delay_ms=1, caption_batch_size=8, caption_wait_ms=100)
        batched.start()
        stages.hold_encoder.clear()  # the second image stays in the encoder stage until the test says
        first = asyncio.create_task(batched.run(pixels(0), GENERATE))
        await until(lambda: stages.encoder_batches == [[0]])
        second = asyncio.create_task(batched.run(pixels(1), GENERATE))
        answer = await asyncio.wait_for(first, 10)  # its caption went alone once the wait ran out
        stages.hold_encoder.set()
        await second
        await batched.stop()
        return answer, stages.caption_batches

    answer, batches = asyncio.run(scenario())
    assert answer.timings.caption_batch_size == 1 and batches == [1, 1]
