"""The Enrich gRPC servicer: decode -> batch -> predict -> encode, per request or per stream item."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import numpy as np

from enrich.v1 import enrich_pb2, enrich_pb2_grpc
from enrich_model.bundle import Bundle
from enrich_model.predict import MAX_TOP_K, CaptionMode, ItemOptions, ItemPrediction
from enrich_model.preprocess import DecodedImage, ImageDecodeError, decode_image
from enrich_model.schema import ALL_LABEL_ATTRIBUTES, DERIVED_ATTRIBUTES, PROTO_FIELD

from .batcher import BatchedAnswer, DynamicBatcher

log = logging.getLogger("enrich.servicer")

DEFAULT_TOP_K = 3
CAPTION_MODES = {
    enrich_pb2.CAPTION_MODE_UNSPECIFIED: CaptionMode.GENERATE,
    enrich_pb2.CAPTION_MODE_GENERATE: CaptionMode.GENERATE,
    enrich_pb2.CAPTION_MODE_BEAM_SEARCH: CaptionMode.BEAM_SEARCH,
    enrich_pb2.CAPTION_MODE_TEMPLATE: CaptionMode.TEMPLATE,
    enrich_pb2.CAPTION_MODE_SKIP: CaptionMode.SKIP,
}
PROTO_CAPTION_MODE = {mode: value for value, mode in CAPTION_MODES.items() if value}


@dataclass
class Limits:
    max_message_bytes: int
    max_image_pixels: int
    max_batch_size: int
    max_stream_in_flight: int


class ItemError(Exception):
    """A failure that belongs to one item: reported with its status code, the rest carries on."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class ModelSlot:
    """Holds the loaded model; empty until loading and warm-up finish.

    Draining does not empty it: calls accepted before shutdown, and items still arriving on their
    streams, are answered normally until the grace period ends; grpc refuses new calls meanwhile."""

    def __init__(self) -> None:
        self.bundle: Bundle | None = None
        self.batcher: DynamicBatcher | None = None

    @property
    def ready(self) -> bool:
        return self.bundle is not None and self.batcher is not None


class EnrichServicer(enrich_pb2_grpc.EnrichServicer):
    def __init__(self, slot: ModelSlot, limits: Limits, decode_pool: ThreadPoolExecutor) -> None:
        self.slot, self.limits, self.decode_pool = slot, limits, decode_pool

    # --- RPCs ---------------------------------------------------------------------------------------
    async def Enrich(self, request: enrich_pb2.EnrichRequest, context: grpc.aio.ServicerContext):
        try:
            return await self._answer(request, request.request_id)
        except ItemError as error:
            await context.abort(error.code, error.message)

    async def EnrichStream(self, requests: AsyncIterator[enrich_pb2.EnrichRequest],
                           context: grpc.aio.ServicerContext) -> AsyncIterator[enrich_pb2.EnrichResponse]:
        answers: asyncio.Queue = asyncio.Queue()
        # Read-ahead bound: a slot is held from reading a request until its answer is handed to grpc, so
        # a client that sends fast but reads slowly stalls its own reads instead of growing our memory.
        slots = asyncio.Semaphore(self.limits.max_stream_in_flight)
        pending: set[asyncio.Task] = set()
        finished = object()

        async def answer(request: enrich_pb2.EnrichRequest, request_id: str) -> None:
            try:
                response = await self._answer(request, request_id)
            except ItemError as error:
                response = enrich_pb2.EnrichResponse(
                    request_id=request_id, status=enrich_pb2.ItemStatus(code=error.code.value[0],
                                                                        message=error.message))
            except Exception as error:  # a bug, not a bad item: still answer, never drop it
                log.exception("stream item %s failed", request_id)
                response = enrich_pb2.EnrichResponse(
                    request_id=request_id, status=enrich_pb2.ItemStatus(
                        code=grpc.StatusCode.INTERNAL.value[0], message=f"internal error: {error}"))
            await answers.put(response)

        async def read() -> None:
            try:
                index = 0
                async for request in requests:
                    await slots.acquire()
                    task = asyncio.create_task(answer(request, request.request_id or str(index)))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    index += 1
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
                    raise item
                yield item
                slots.release()
        finally:
            reader.cancel()
            for task in list(pending):
                task.cancel()

    async def GetModelInfo(self, request: enrich_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext):
        if self.slot.bundle is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the model is still loading")
        return model_info(self.slot.bundle, self.limits)

    # --- one item: decode -> batch -> encode ----------------------------------------------------------
    async def _answer(self, request: enrich_pb2.EnrichRequest, request_id: str) -> enrich_pb2.EnrichResponse:
        received = time.perf_counter()
        if not self.slot.ready:
            raise ItemError(grpc.StatusCode.UNAVAILABLE, "the model is still loading")
        bundle, batcher = self.slot.bundle, self.slot.batcher
        options = ItemOptions(top_k=min(request.top_k or DEFAULT_TOP_K, MAX_TOP_K),
                              caption=CAPTION_MODES.get(request.caption_mode, CaptionMode.GENERATE))
        loop = asyncio.get_running_loop()
        try:
            decoded, pixels = await loop.run_in_executor(self.decode_pool, self._decode, bundle, request.image)
        except ImageDecodeError as error:
            raise ItemError(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from error
        decode_ms = (time.perf_counter() - received) * 1000
        try:
            answer = await batcher.submit(pixels, options)
        except Exception as error:  # the model failed on this batch (e.g. out of memory): say so
            log.exception("prediction failed for %s", request_id or "unary request")
            raise ItemError(grpc.StatusCode.INTERNAL, f"prediction failed: {type(error).__name__}: {error}") from error
        return encode_response(request_id, answer, decoded, len(request.image), decode_ms,
                               (time.perf_counter() - received) * 1000, bundle.model_version)

    def _decode(self, bundle: Bundle, data: bytes) -> tuple[DecodedImage, np.ndarray]:
        decoded = decode_image(data, self.limits.max_image_pixels, target=bundle.preprocessing.decode_target)
        return decoded, bundle.preprocessing(decoded.image)


# --- typed messages --------------------------------------------------------------------------------
def encode_metadata(prediction: ItemPrediction, decoded: DecodedImage, size_bytes: int) -> enrich_pb2.Metadata:
    metadata = enrich_pb2.Metadata(image=enrich_pb2.ImageInfo(
        width=decoded.width, height=decoded.height, format=decoded.format, size_bytes=size_bytes))
    for attribute, value in prediction.attributes.items():
        getattr(metadata, PROTO_FIELD[attribute]).CopyFrom(enrich_pb2.Prediction(
            label=value.label, confidence=value.confidence, derived=value.derived, unsure=value.unsure,
            alternatives=[enrich_pb2.LabelScore(label=a.label, confidence=a.confidence) for a in value.alternatives],
        ))
    if prediction.caption is not None:
        metadata.product_display_name.CopyFrom(enrich_pb2.Caption(
            text=prediction.caption.text, method=PROTO_CAPTION_MODE[prediction.caption.mode],
            confidence=prediction.caption.confidence, decoded_text=prediction.caption.decoded_text))
    return metadata


def encode_response(request_id: str, answer: BatchedAnswer, decoded: DecodedImage, size_bytes: int,
                    decode_ms: float, total_ms: float, model_version: str) -> enrich_pb2.EnrichResponse:
    timings = answer.timings
    return enrich_pb2.EnrichResponse(
        request_id=request_id,
        status=enrich_pb2.ItemStatus(code=0, message="OK"),
        metadata=encode_metadata(answer.prediction, decoded, size_bytes),
        model_version=model_version,
        timings=enrich_pb2.Timings(
            decode_ms=decode_ms, queue_ms=answer.queue_ms, encoder_ms=timings.encoder_ms,
            heads_ms=timings.heads_ms, caption_ms=timings.caption_ms, total_ms=total_ms,
            batch_size=timings.batch_size),
    )


def model_info(bundle: Bundle, limits: Limits) -> enrich_pb2.ModelInfo:
    config = bundle.config
    height, width = bundle.preprocessing.input_size
    attributes = []
    for attribute in ALL_LABEL_ATTRIBUTES:
        if attribute in DERIVED_ATTRIBUTES:
            labels = bundle.taxonomy.parent_labels(attribute)
            derived_from = "articleType"
        else:
            labels, derived_from = bundle.vocabs[attribute].labels, ""
        threshold = config.heads.abstain_thresholds.get(derived_from or attribute, 0.0)
        attributes.append(enrich_pb2.AttributeInfo(
            name=attribute, field=PROTO_FIELD[attribute], labels=labels, derived_from=derived_from,
            abstain_threshold=threshold))
    taxonomy = [enrich_pb2.TaxonomyEntry(article_type=a, sub_category=sub, master_category=master)
                for a, (sub, master) in bundle.taxonomy.parents.items()]
    return enrich_pb2.ModelInfo(
        model_version=bundle.model_version, bundle_format=config.format, backbone=config.backbone.name,
        backbone_weights=config.backbone.weights, input_height=height, input_width=width,
        attributes=attributes, taxonomy=taxonomy, warnings=config.warnings,
        limits=enrich_pb2.Limits(
            max_message_bytes=limits.max_message_bytes, max_image_pixels=limits.max_image_pixels,
            max_top_k=MAX_TOP_K, max_batch_size=limits.max_batch_size,
            max_stream_in_flight=limits.max_stream_in_flight),
        caption_decoder=config.caption.decoder,
        test_metrics=flatten_metrics(config.test_metrics),
        created=config.created,
    )


def flatten_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat
