"""The model behind the server, as two batched stages that overlap:

    pixels -> [encoder stage: one encoder pass, heads, template captions] -> prediction
                                         `-> tokens -> [caption stage: the decoder] -> caption

Captions are the slow, autoregressive part: they batch on their own (larger batches amortise each
decoding step) while the next images go through the encoder, and a request that skips them never waits
for them.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from enrich_model.predict import (
    BatchTimings,
    CaptionJob,
    CaptionPrediction,
    ItemOptions,
    ItemPrediction,
    Predictor,
    needs_decoder,
)

from .batcher import DynamicBatcher


@dataclass
class StagedAnswer:
    prediction: ItemPrediction
    timings: BatchTimings  # this item's: its encoder batch, and its caption batch if it had one
    queue_ms: float  # waiting in both stages' queues


@dataclass
class _Classified:
    prediction: ItemPrediction
    timings: BatchTimings
    caption_job: CaptionJob | None


@dataclass
class _Captioned:
    caption: CaptionPrediction
    caption_ms: float


class Pipeline:
    def __init__(self, predictor: Predictor, max_batch_size: int = 8, max_delay_ms: float = 5.0,
                 caption_batch_size: int = 32,
                 on_batch: Callable[[str, int], None] | None = None, encoder_wait_ms: float = 100.0) -> None:
        """`on_batch(stage, size)` hears of every batch (for metrics)."""
        self.predictor = predictor

        def observe(stage: str) -> Callable[[int], None] | None:
            return functools.partial(on_batch, stage) if on_batch else None

        # A partial encoder batch waits (up to encoder_wait_ms) for images still being decoded: with camera
        # originals the decode pool is the wall, and an encoder that runs every image or two as it arrives
        # spends twice the CPU per image that a full batch does, CPU the decoders then lack.
        self.encoder_stage: DynamicBatcher[tuple[np.ndarray, ItemOptions], _Classified] = DynamicBatcher(
            self._classify, max_batch_size, max_delay_ms, "encoder", observe("encoder"),
            more_coming=lambda: self.images_decoding > 0, max_wait_ms=encoder_wait_ms)
        self.images_decoding = 0  # admitted images in the decode pool, bound for the encoder stage
        # Each decoding step costs about the same for 8 captions as for 32, so while the encoder stage holds
        # images that want a caption, a partial caption batch waits for them (images that skip it don't count).
        self.caption_stage: DynamicBatcher[CaptionJob, _Captioned] = DynamicBatcher(
            self._caption, caption_batch_size, max_delay_ms, "caption", observe("caption"),
            more_coming=lambda: self.captions_coming > 0, max_wait_ms=250)
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
        captioned = int(needs_decoder(options.caption))
        self.captions_coming += captioned
        try:
            first = await self.encoder_stage.submit((pixels, options), deadline)
        finally:  # in the same step as the caption stage's submit below: it never misses one coming
            self.captions_coming -= captioned
        classified = first.result
        timings, queue_ms = classified.timings, first.queue_ms
        if classified.caption_job is not None:
            second = await self.caption_stage.submit(classified.caption_job, deadline)
            classified.prediction.caption = second.result.caption
            timings = replace(timings, caption_ms=second.result.caption_ms, caption_batch_size=second.batch_size)
            queue_ms += second.queue_ms
        return StagedAnswer(classified.prediction, timings, queue_ms)

    def _classify(self, items: list[tuple[np.ndarray, ItemOptions]]) -> list[_Classified]:
        options = [opt for _, opt in items]
        result = self.predictor.classify(np.stack([pixels for pixels, _ in items]), options)
        return [_Classified(prediction, result.timings,
                            self.predictor.caption_job(result, row, opt) if needs_decoder(opt.caption) else None)
                for row, (prediction, opt) in enumerate(zip(result.items, options, strict=True))]

    def _caption(self, jobs: list[CaptionJob]) -> list[_Captioned]:
        started = time.perf_counter()
        captions = self.predictor.caption(jobs)
        caption_ms = (time.perf_counter() - started) * 1000
        return [_Captioned(caption, caption_ms) for caption in captions]
