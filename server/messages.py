"""The proto codec: requests -> options, predictions -> typed messages, and the served model's description."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from enrich.v1 import enrich_pb2
from enrich_contract.posterior import valid_prior
from enrich_contract.wire import CAPTION_MODES, TYPED_ATTRIBUTES, caption_mode, caption_mode_name
from enrich_model.answers import (
    DEFAULT_TOP_K,
    MAX_TOP_K,
    AttributePrediction,
    CaptionMode,
    Finding,
    ImageLook,
    ItemOptions,
    ItemPrediction,
    LabelScore,
    TaxonomyLevel,
)
from enrich_model.audit import Auditor
from enrich_model.decode import DecodedImage, DecodeLimits
from enrich_model.metrics import is_clearly_learnt
from enrich_model.thresholds import NEVER_ACCEPTED

from .errors import request_invalid

if TYPE_CHECKING:
    from enrich_model.bundle import Bundle

    from .batched import StagedAnswer


@dataclass(frozen=True)
class Limits:
    decode: DecodeLimits
    max_image_bytes: int
    max_message_bytes: int
    max_batch_size: int
    max_stream_in_flight: int
    max_queue: int


def runtime_caption_mode(value: int) -> CaptionMode:
    """The proto's caption mode as the runtime's (the same names); unset means GENERATE. Raises EnrichFailure
    (REQUEST_INVALID) for a value this server's proto does not have."""
    if value == enrich_pb2.CAPTION_MODE_UNSPECIFIED:
        return CaptionMode.GENERATE
    try:
        return CaptionMode(caption_mode_name(value))
    except ValueError:
        raise request_invalid(f"caption_mode {value} is not one of {', '.join(CAPTION_MODES)}") from None


def item_options(request: enrich_pb2.EnrichRequest, auditor: Auditor) -> ItemOptions:
    """Raises EnrichFailure (REQUEST_INVALID) for a caption mode this server does not know, a catalogue column
    its model does not audit, or an error prior that is not a probability."""
    values = request.catalogue.values
    unknown = auditor.unknown_columns(list(values))
    if unknown:
        raise request_invalid(f"catalogue column {', '.join(map(repr, sorted(unknown)))} is not one this model "
                              f"audits: {', '.join(auditor.auditable)}")
    try:
        prior = valid_prior(request.catalogue.error_prior)
    except ValueError as error:
        raise request_invalid(f"catalogue.{error}") from None
    return ItemOptions(top_k=request.top_k or DEFAULT_TOP_K, caption_mode=runtime_caption_mode(request.caption_mode),
                       catalogue=tuple(sorted(values.items())), error_prior=prior,
                       embedding=request.include_embedding, palette=request.include_palette,
                       signature=request.include_signature)


def taxonomy_level(level: TaxonomyLevel | None) -> int:
    return enrich_pb2.TaxonomyLevel.Value(f"TAXONOMY_LEVEL_{level.name}") if level else 0


def encode_finding(finding: Finding) -> enrich_pb2.Finding:
    return enrich_pb2.Finding(
        attribute=finding.attribute, kind=enrich_pb2.FindingKind.Value(f"FINDING_KIND_{finding.kind.name}"),
        supplied=finding.supplied, supplied_label=finding.supplied_label, p_supplied=finding.p_supplied,
        predicted=finding.predicted, p_predicted=finding.p_predicted, p_wrong=finding.p_wrong,
        disagreement_level=taxonomy_level(finding.disagreement_level), predicted_accepted=finding.predicted_accepted)


def encode_scores(scores: list[LabelScore]) -> list[enrich_pb2.LabelScore]:
    return [enrich_pb2.LabelScore(label=s.label, confidence=s.confidence, accepted=s.accepted) for s in scores]


def encode_prediction(value: AttributePrediction) -> enrich_pb2.Prediction:
    return enrich_pb2.Prediction(label=value.label, confidence=value.confidence, derived=value.derived,
                                 unsure=value.unsure, accepted=value.accepted,
                                 alternatives=encode_scores(value.alternatives),
                                 values=encode_scores(value.values or []))


def encode_metadata(prediction: ItemPrediction, decoded: DecodedImage, size_bytes: int,
                    look: ImageLook) -> enrich_pb2.Metadata:
    metadata = enrich_pb2.Metadata(image=enrich_pb2.ImageInfo(
        width=decoded.width, height=decoded.height, format=decoded.format, size_bytes=size_bytes),
        sure_level=taxonomy_level(prediction.sure_level),
        palette=[enrich_pb2.PaletteColour(hex=c.hex, share=c.share, nearest=c.nearest) for c in look.palette],
        signature=enrich_pb2.ImageSignature(perceptual_hash=look.perceptual_hash,
                                            embedding=[] if prediction.embedding is None else prediction.embedding,
                                            colour_fingerprint=look.colour_fingerprint,
                                            product_hash=look.product_hash))
    for attribute, value in prediction.attributes.items():
        encoded = encode_prediction(value)
        metadata.attributes[attribute].CopyFrom(encoded)
        if attribute in TYPED_ATTRIBUTES:
            getattr(metadata, TYPED_ATTRIBUTES[attribute]).CopyFrom(encoded)
    if prediction.caption is not None:
        metadata.product_display_name.CopyFrom(enrich_pb2.Caption(
            text=prediction.caption.text, method=caption_mode(prediction.caption.mode.value),
            confidence=prediction.caption.confidence, decoded_text=prediction.caption.decoded_text))
    return metadata


def encode_audit(prediction: ItemPrediction, options: ItemOptions) -> enrich_pb2.Audit | None:
    if not options.catalogue:
        return None
    return enrich_pb2.Audit(findings=[encode_finding(f) for f in prediction.findings], error_prior=options.error_prior)


def encode_response(request_id: str, answer: StagedAnswer, decoded: DecodedImage, look: ImageLook, size_bytes: int,
                    decode_ms: float, total_ms: float, model_version: str,
                    options: ItemOptions) -> enrich_pb2.EnrichResponse:
    timings = answer.timings
    return enrich_pb2.EnrichResponse(
        request_id=request_id,
        status=enrich_pb2.ItemStatus(code=0, message="OK"),
        metadata=encode_metadata(answer.prediction, decoded, size_bytes, look),
        audit=encode_audit(answer.prediction, options),
        model_version=model_version,
        timings=enrich_pb2.Timings(
            decode_ms=decode_ms, queue_ms=timings.queue_ms, encoder_ms=timings.encoder_ms,
            heads_ms=timings.heads_ms, caption_ms=timings.caption_ms, total_ms=total_ms,
            batch_size=timings.batch_size, caption_batch_size=timings.caption_batch_size),
    )


def cached_response(request_id: str, cached: enrich_pb2.EnrichResponse, total_ms: float) -> enrich_pb2.EnrichResponse:
    """A cached answer for another request with the same bytes and options (a copy: later hits share it)."""
    response = enrich_pb2.EnrichResponse()
    response.CopyFrom(cached)
    response.request_id = request_id
    response.timings.CopyFrom(enrich_pb2.Timings(total_ms=total_ms, cache_hit=True))
    return response


def model_info(bundle: Bundle, limits: Limits, load: enrich_pb2.ServerLoad,
               runtime: enrich_pb2.Runtime) -> enrich_pb2.ModelInfo:
    config = bundle.config
    height, width = bundle.preprocessing.input_size
    return enrich_pb2.ModelInfo(
        model_version=bundle.model_version, bundle_format=config.format, backbone=config.backbone.name,
        backbone_weights=config.backbone.weights, input_height=height, input_width=width,
        attributes=attribute_infos(bundle), taxonomy=taxonomy_entries(bundle), warnings=config.warnings,
        limits=enrich_pb2.Limits(
            max_message_bytes=limits.max_message_bytes, max_image_pixels=limits.decode.max_pixels,
            max_top_k=MAX_TOP_K, max_batch_size=limits.max_batch_size,
            max_stream_in_flight=limits.max_stream_in_flight, max_image_bytes=limits.max_image_bytes,
            max_jpeg_pixels=limits.decode.max_jpeg_pixels, max_queue=limits.max_queue),
        load=load,
        runtime=runtime,
        caption_decoder=config.caption.decoder,
        embedding_size=config.backbone.num_features,
        test_metrics=flatten_metrics(config.test_metrics),
        created=config.created,
        schema=enrich_pb2.Schema(id_column=bundle.schema.id_column, caption_column=bundle.schema.caption,
                                 tree=bundle.schema.tree),
    )


def taxonomy_entries(bundle: Bundle) -> list[enrich_pb2.TaxonomyEntry]:
    """The schema's tree of labels, one entry per root label (its levels in TaxonomyEntry's three fields)."""
    tree = bundle.schema.tree
    if not tree:
        return []
    names = ("article_type", "sub_category", "master_category")
    return [enrich_pb2.TaxonomyEntry(**{names[0]: label},
                                     **{n: bundle.taxonomy.parent(a, label) for n, a in zip(names[1:], tree[1:],
                                                                                           strict=False)})
            for label in bundle.vocabs[tree[0]].labels]


def attribute_infos(bundle: Bundle) -> list[enrich_pb2.AttributeInfo]:
    infos = []
    heads = bundle.config.heads
    for spec in bundle.schema:
        attribute = spec.name
        if spec.derived:
            labels, root = bundle.taxonomy.parent_labels(attribute), bundle.schema.root(attribute)
        else:
            labels, root = bundle.vocabs[attribute].labels, attribute
        metrics = bundle.config.test_metrics.get(attribute) or {}
        barely = bool(metrics.get("support")) and "majority_accuracy" in metrics and not is_clearly_learnt(metrics)
        infos.append(enrich_pb2.AttributeInfo(
            name=attribute, field=TYPED_ATTRIBUTES.get(attribute, ""), labels=labels, derived_from=spec.derived_from,
            abstain_threshold=bundle.abstain_thresholds.get(root, 0.0), barely_learnt=barely, kind=spec.kind,
            role=spec.role, accept_threshold=heads.accept_thresholds.get(attribute, NEVER_ACCEPTED),
            target_precision=heads.target_precision, value_thresholds=heads.value_thresholds.get(attribute, {}),
            value_accept_thresholds=heads.value_accept_thresholds.get(attribute, {})))
    return infos


def flatten_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat
