"""The pipeline's stages batched across callers, as two batchers that overlap:

    pixels -> [encoder stage: encode + classify (heads, template captions)] -> answer
                                    `-> caption job -> [caption stage: the decoder] -> answer with its caption

Captions are the slow, autoregressive part: they batch on their own (larger batches amortise each
decoding step) while the next images go through the encoder, and a request that skips them never waits
for them. Both stages call `EnrichPipeline`'s hooks, as every other host does.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from enrich_model.answers import CaptionPrediction, ItemOptions, ItemPrediction

from .batcher import DynamicBatcher
from .settings import ServerSettings

if TYPE_CHECKING:
    from enrich_model.pipeline import CaptionJob, Classified, EnrichPipeline


@dataclass
class StageTimings:
    """One image's share of its batches: each stage's duration and how many images it served at once."""

    encoder_ms: float = 0.0
    heads_ms: float = 0.0
    caption_ms: float = 0.0
    batch_size: int = 0  # images in the encoder batch
    caption_batch_size: int = 0  # captions written together; 0 when none
    queue_ms: float = 0.0  # waiting in both stages' queues


@dataclass
class StagedAnswer:
    prediction: ItemPrediction
    timings: StageTimings


@dataclass
class _Classified:
    item: Classified
    timings: StageTimings


@dataclass
class _Captioned:
    caption: CaptionPrediction
    caption_ms: float


class BatchedPipeline:
    def __init__(self, pipeline: EnrichPipeline, max_batch_size: int = ServerSettings.max_batch_size,
                 max_delay_ms: float = ServerSettings.max_delay_ms,
                 caption_batch_size: int = ServerSettings.caption_batch_size,
                 on_batch: Callable[[str, int], None] | None = None,
                 encoder_wait_ms: float = ServerSettings.encoder_wait_ms, caption_wait_ms: float = 250.0) -> None:
        """`on_batch(stage, size)` hears of every batch (for metrics); `encoder_wait_ms` and `caption_wait_ms`
        bound how long a partial batch of each stage waits for what is still coming to it."""
        self.pipeline = pipeline

        def observe(stage: str) -> Callable[[int], None] | None:
            return functools.partial(on_batch, stage) if on_batch else None

        # A partial encoder batch waits (up to encoder_wait_ms) for images still being decoded: with camera
        # originals the decode pool is the wall, and an encoder that runs every image or two as it arrives
        # spends more CPU per image than a full batch does, CPU the decoders then lack.
        self.encoder_stage: DynamicBatcher[tuple[np.ndarray, ItemOptions], _Classified] = DynamicBatcher(
            self._classify, max_batch_size, max_delay_ms, "encoder", observe("encoder"),
            more_coming=lambda: self.images_decoding > 0, max_wait_ms=encoder_wait_ms)
        self.images_decoding = 0  # admitted images in the decode pool, bound for the encoder stage
        # A decoding step costs little more for many captions than for a few, so while the encoder stage holds
        # images that want a caption, a partial caption batch waits for them (images that skip it don't count).
        self.caption_stage: DynamicBatcher[CaptionJob, _Captioned] = DynamicBatcher(
            self._caption, caption_batch_size, max_delay_ms, "caption", observe("caption"),
            more_coming=lambda: self.captions_coming > 0, max_wait_ms=caption_wait_ms)
        self.captions_coming = 0  # images in the encoder stage whose caption the decoder will write

    @property
    def stages(self) -> tuple[DynamicBatcher, DynamicBatcher]:
        return self.encoder_stage, self.caption_stage

    def start(self) -> None:
        for stage in self.stages:
            stage.start()

    async def stop(self) -> None:
        for stage in self.stages:  # in order: the encoder stage may still hand work to the caption stage
            await stage.stop()

    @property
    def predicted(self) -> int:
        return self.encoder_stage.items

    @property
    def skipped(self) -> int:
        return self.encoder_stage.skipped + self.caption_stage.skipped

    @property
    def item_seconds(self) -> float:
        return self.encoder_stage.item_seconds + self.caption_stage.item_seconds

    @contextlib.contextmanager
    def decoding(self) -> Iterator[None]:
        """Around an image's decode: the encoder stage knows it is coming."""
        self.images_decoding += 1
        try:
            yield
        finally:
            self.images_decoding -= 1

    async def run(self, pixels: np.ndarray, options: ItemOptions, deadline: float | None = None) -> StagedAnswer:
        captioned = int(options.caption_mode.needs_decoder)
        self.captions_coming += captioned
        try:
            first = await self.encoder_stage.submit((pixels, options), deadline)
        finally:  # in the same step as the caption stage's submit below: it never misses one coming
            self.captions_coming -= captioned
        classified, timings = first.result.item, first.result.timings
        timings.queue_ms = first.queue_ms
        caption = None
        if classified.caption_job is not None:
            second = await self.caption_stage.submit(classified.caption_job, deadline)
            caption = second.result.caption
            timings.caption_ms, timings.caption_batch_size = second.result.caption_ms, second.batch_size
            timings.queue_ms += second.queue_ms
        return StagedAnswer(self.pipeline.answer(classified, caption), timings)

    def _classify(self, items: list[tuple[np.ndarray, ItemOptions]]) -> list[_Classified]:
        started = time.perf_counter()
        encoded = self.pipeline.encode(np.stack([pixels for pixels, _ in items]))
        encoded_at = time.perf_counter()
        classified = self.pipeline.classify(encoded, [options for _, options in items])
        encoder_ms, heads_ms = (encoded_at - started) * 1000, (time.perf_counter() - encoded_at) * 1000
        return [_Classified(item, StageTimings(encoder_ms, heads_ms, batch_size=len(items))) for item in classified]

    def _caption(self, jobs: list[CaptionJob]) -> list[_Captioned]:
        started = time.perf_counter()
        captions = self.pipeline.caption(jobs)
        caption_ms = (time.perf_counter() - started) * 1000
        return [_Captioned(caption, caption_ms) for caption in captions]
