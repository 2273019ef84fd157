import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CaptionMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAPTION_MODE_UNSPECIFIED: _ClassVar[CaptionMode]
    CAPTION_MODE_GENERATE: _ClassVar[CaptionMode]
    CAPTION_MODE_BEAM_SEARCH: _ClassVar[CaptionMode]
    CAPTION_MODE_TEMPLATE: _ClassVar[CaptionMode]
    CAPTION_MODE_SKIP: _ClassVar[CaptionMode]

class FindingKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINDING_KIND_UNSPECIFIED: _ClassVar[FindingKind]
    FINDING_KIND_AGREES: _ClassVar[FindingKind]
    FINDING_KIND_DISAGREES: _ClassVar[FindingKind]
    FINDING_KIND_FILLED: _ClassVar[FindingKind]
    FINDING_KIND_UNKNOWN_LABEL: _ClassVar[FindingKind]
    FINDING_KIND_UNCHECKED: _ClassVar[FindingKind]

class TaxonomyLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TAXONOMY_LEVEL_UNSPECIFIED: _ClassVar[TaxonomyLevel]
    TAXONOMY_LEVEL_ARTICLE_TYPE: _ClassVar[TaxonomyLevel]
    TAXONOMY_LEVEL_SUB_CATEGORY: _ClassVar[TaxonomyLevel]
    TAXONOMY_LEVEL_MASTER_CATEGORY: _ClassVar[TaxonomyLevel]

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    IMAGE_EMPTY: _ClassVar[ErrorReason]
    IMAGE_UNDECODABLE: _ClassVar[ErrorReason]
    IMAGE_TOO_LARGE: _ClassVar[ErrorReason]
    OVERLOADED: _ClassVar[ErrorReason]
    MODEL_LOADING: _ClassVar[ErrorReason]
    SHUTTING_DOWN: _ClassVar[ErrorReason]
    DEADLINE_EXPIRED: _ClassVar[ErrorReason]
    TOKEN_INVALID: _ClassVar[ErrorReason]
    PREDICTION_FAILED: _ClassVar[ErrorReason]
    INTERNAL_ERROR: _ClassVar[ErrorReason]
    REQUEST_INVALID: _ClassVar[ErrorReason]
CAPTION_MODE_UNSPECIFIED: CaptionMode
CAPTION_MODE_GENERATE: CaptionMode
CAPTION_MODE_BEAM_SEARCH: CaptionMode
CAPTION_MODE_TEMPLATE: CaptionMode
CAPTION_MODE_SKIP: CaptionMode
FINDING_KIND_UNSPECIFIED: FindingKind
FINDING_KIND_AGREES: FindingKind
FINDING_KIND_DISAGREES: FindingKind
FINDING_KIND_FILLED: FindingKind
FINDING_KIND_UNKNOWN_LABEL: FindingKind
FINDING_KIND_UNCHECKED: FindingKind
TAXONOMY_LEVEL_UNSPECIFIED: TaxonomyLevel
TAXONOMY_LEVEL_ARTICLE_TYPE: TaxonomyLevel
TAXONOMY_LEVEL_SUB_CATEGORY: TaxonomyLevel
TAXONOMY_LEVEL_MASTER_CATEGORY: TaxonomyLevel
ERROR_REASON_UNSPECIFIED: ErrorReason
IMAGE_EMPTY: ErrorReason
IMAGE_UNDECODABLE: ErrorReason
IMAGE_TOO_LARGE: ErrorReason
OVERLOADED: ErrorReason
MODEL_LOADING: ErrorReason
SHUTTING_DOWN: ErrorReason
DEADLINE_EXPIRED: ErrorReason
TOKEN_INVALID: ErrorReason
PREDICTION_FAILED: ErrorReason
INTERNAL_ERROR: ErrorReason
REQUEST_INVALID: ErrorReason

class EnrichRequest(_message.Message):
    __slots__ = ("request_id", "image", "top_k", "caption_mode", "catalogue", "include_embedding", "include_palette", "include_signature")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    CAPTION_MODE_FIELD_NUMBER: _ClassVar[int]
    CATALOGUE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PALETTE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    image: bytes
    top_k: int
    caption_mode: CaptionMode
    catalogue: CatalogueRecord
    include_embedding: bool
    include_palette: bool
    include_signature: bool
    def __init__(self, request_id: _Optional[str] = ..., image: _Optional[bytes] = ..., top_k: _Optional[int] = ..., caption_mode: _Optional[_Union[CaptionMode, str]] = ..., catalogue: _Optional[_Union[CatalogueRecord, _Mapping]] = ..., include_embedding: _Optional[bool] = ..., include_palette: _Optional[bool] = ..., include_signature: _Optional[bool] = ...) -> None: ...

class CatalogueRecord(_message.Message):
    __slots__ = ("values", "error_prior")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    ERROR_PRIOR_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, str]
    error_prior: float
    def __init__(self, values: _Optional[_Mapping[str, str]] = ..., error_prior: _Optional[float] = ...) -> None: ...

class EnrichResponse(_message.Message):
    __slots__ = ("request_id", "status", "metadata", "model_version", "timings", "audit")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    status: ItemStatus
    metadata: Metadata
    model_version: str
    timings: Timings
    audit: Audit
    def __init__(self, request_id: _Optional[str] = ..., status: _Optional[_Union[ItemStatus, _Mapping]] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ..., model_version: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., audit: _Optional[_Union[Audit, _Mapping]] = ...) -> None: ...

class Audit(_message.Message):
    __slots__ = ("findings", "error_prior")
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    ERROR_PRIOR_FIELD_NUMBER: _ClassVar[int]
    findings: _containers.RepeatedCompositeFieldContainer[Finding]
    error_prior: float
    def __init__(self, findings: _Optional[_Iterable[_Union[Finding, _Mapping]]] = ..., error_prior: _Optional[float] = ...) -> None: ...

class Finding(_message.Message):
    __slots__ = ("attribute", "kind", "supplied", "supplied_label", "p_supplied", "predicted", "p_predicted", "p_wrong", "disagreement_level", "predicted_accepted")
    ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUPPLIED_FIELD_NUMBER: _ClassVar[int]
    SUPPLIED_LABEL_FIELD_NUMBER: _ClassVar[int]
    P_SUPPLIED_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    P_PREDICTED_FIELD_NUMBER: _ClassVar[int]
    P_WRONG_FIELD_NUMBER: _ClassVar[int]
    DISAGREEMENT_LEVEL_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    attribute: str
    kind: FindingKind
    supplied: str
    supplied_label: str
    p_supplied: float
    predicted: str
    p_predicted: float
    p_wrong: float
    disagreement_level: TaxonomyLevel
    predicted_accepted: bool
    def __init__(self, attribute: _Optional[str] = ..., kind: _Optional[_Union[FindingKind, str]] = ..., supplied: _Optional[str] = ..., supplied_label: _Optional[str] = ..., p_supplied: _Optional[float] = ..., predicted: _Optional[str] = ..., p_predicted: _Optional[float] = ..., p_wrong: _Optional[float] = ..., disagreement_level: _Optional[_Union[TaxonomyLevel, str]] = ..., predicted_accepted: _Optional[bool] = ...) -> None: ...

class ItemStatus(_message.Message):
    __slots__ = ("code", "message", "reason", "metadata", "retry_delay")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RETRY_DELAY_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    reason: ErrorReason
    metadata: _containers.ScalarMap[str, str]
    retry_delay: _duration_pb2.Duration
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., reason: _Optional[_Union[ErrorReason, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., retry_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Metadata(_message.Message):
    __slots__ = ("gender", "base_colour", "season", "usage", "article_type", "sub_category", "master_category", "product_display_name", "image", "sure_level", "palette", "signature", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Prediction
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Prediction, _Mapping]] = ...) -> None: ...
    GENDER_FIELD_NUMBER: _ClassVar[int]
    BASE_COLOUR_FIELD_NUMBER: _ClassVar[int]
    SEASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ARTICLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SUB_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MASTER_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SURE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    PALETTE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    gender: Prediction
    base_colour: Prediction
    season: Prediction
    usage: Prediction
    article_type: Prediction
    sub_category: Prediction
    master_category: Prediction
    product_display_name: Caption
    image: ImageInfo
    sure_level: TaxonomyLevel
    palette: _containers.RepeatedCompositeFieldContainer[PaletteColour]
    signature: ImageSignature
    attributes: _containers.MessageMap[str, Prediction]
    def __init__(self, gender: _Optional[_Union[Prediction, _Mapping]] = ..., base_colour: _Optional[_Union[Prediction, _Mapping]] = ..., season: _Optional[_Union[Prediction, _Mapping]] = ..., usage: _Optional[_Union[Prediction, _Mapping]] = ..., article_type: _Optional[_Union[Prediction, _Mapping]] = ..., sub_category: _Optional[_Union[Prediction, _Mapping]] = ..., master_category: _Optional[_Union[Prediction, _Mapping]] = ..., product_display_name: _Optional[_Union[Caption, _Mapping]] = ..., image: _Optional[_Union[ImageInfo, _Mapping]] = ..., sure_level: _Optional[_Union[TaxonomyLevel, str]] = ..., palette: _Optional[_Iterable[_Union[PaletteColour, _Mapping]]] = ..., signature: _Optional[_Union[ImageSignature, _Mapping]] = ..., attributes: _Optional[_Mapping[str, Prediction]] = ...) -> None: ...

class PaletteColour(_message.Message):
    __slots__ = ("hex", "share", "nearest")
    HEX_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    NEAREST_FIELD_NUMBER: _ClassVar[int]
    hex: str
    share: float
    nearest: str
    def __init__(self, hex: _Optional[str] = ..., share: _Optional[float] = ..., nearest: _Optional[str] = ...) -> None: ...

class ImageSignature(_message.Message):
    __slots__ = ("perceptual_hash", "embedding", "colour_fingerprint", "product_hash")
    PERCEPTUAL_HASH_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    COLOUR_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_HASH_FIELD_NUMBER: _ClassVar[int]
    perceptual_hash: str
    embedding: _containers.RepeatedScalarFieldContainer[float]
    colour_fingerprint: _containers.RepeatedScalarFieldContainer[float]
    product_hash: str
    def __init__(self, perceptual_hash: _Optional[str] = ..., embedding: _Optional[_Iterable[float]] = ..., colour_fingerprint: _Optional[_Iterable[float]] = ..., product_hash: _Optional[str] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("label", "confidence", "alternatives", "derived", "unsure", "accepted", "values")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    DERIVED_FIELD_NUMBER: _ClassVar[int]
    UNSURE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    label: str
    confidence: float
    alternatives: _containers.RepeatedCompositeFieldContainer[LabelScore]
    derived: bool
    unsure: bool
    accepted: bool
    values: _containers.RepeatedCompositeFieldContainer[LabelScore]
    def __init__(self, label: _Optional[str] = ..., confidence: _Optional[float] = ..., alternatives: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., derived: _Optional[bool] = ..., unsure: _Optional[bool] = ..., accepted: _Optional[bool] = ..., values: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "confidence", "accepted")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    label: str
    confidence: float
    accepted: bool
    def __init__(self, label: _Optional[str] = ..., confidence: _Optional[float] = ..., accepted: _Optional[bool] = ...) -> None: ...

class Caption(_message.Message):
    __slots__ = ("text", "method", "confidence", "decoded_text")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    DECODED_TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    method: CaptionMode
    confidence: float
    decoded_text: str
    def __init__(self, text: _Optional[str] = ..., method: _Optional[_Union[CaptionMode, str]] = ..., confidence: _Optional[float] = ..., decoded_text: _Optional[str] = ...) -> None: ...

class ImageInfo(_message.Message):
    __slots__ = ("width", "height", "format", "size_bytes")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    format: str
    size_bytes: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., format: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("decode_ms", "queue_ms", "encoder_ms", "heads_ms", "caption_ms", "total_ms", "batch_size", "caption_batch_size", "cache_hit")
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODER_MS_FIELD_NUMBER: _ClassVar[int]
    HEADS_MS_FIELD_NUMBER: _ClassVar[int]
    CAPTION_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    CAPTION_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    decode_ms: float
    queue_ms: float
    encoder_ms: float
    heads_ms: float
    caption_ms: float
    total_ms: float
    batch_size: int
    caption_batch_size: int
    cache_hit: bool
    def __init__(self, decode_ms: _Optional[float] = ..., queue_ms: _Optional[float] = ..., encoder_ms: _Optional[float] = ..., heads_ms: _Optional[float] = ..., caption_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., batch_size: _Optional[int] = ..., caption_batch_size: _Optional[int] = ..., cache_hit: _Optional[bool] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_version", "bundle_format", "backbone", "input_height", "input_width", "attributes", "taxonomy", "limits", "caption_decoder", "test_metrics", "created", "warnings", "backbone_weights", "load", "runtime", "embedding_size", "schema")
    class TestMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TAXONOMY_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    CAPTION_DECODER_FIELD_NUMBER: _ClassVar[int]
    TEST_METRICS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_SIZE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    bundle_format: str
    backbone: str
    input_height: int
    input_width: int
    attributes: _containers.RepeatedCompositeFieldContainer[AttributeInfo]
    taxonomy: _containers.RepeatedCompositeFieldContainer[TaxonomyEntry]
    limits: Limits
    caption_decoder: str
    test_metrics: _containers.ScalarMap[str, float]
    created: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    backbone_weights: str
    load: ServerLoad
    runtime: Runtime
    embedding_size: int
    schema: Schema
    def __init__(self, model_version: _Optional[str] = ..., bundle_format: _Optional[str] = ..., backbone: _Optional[str] = ..., input_height: _Optional[int] = ..., input_width: _Optional[int] = ..., attributes: _Optional[_Iterable[_Union[AttributeInfo, _Mapping]]] = ..., taxonomy: _Optional[_Iterable[_Union[TaxonomyEntry, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., caption_decoder: _Optional[str] = ..., test_metrics: _Optional[_Mapping[str, float]] = ..., created: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., backbone_weights: _Optional[str] = ..., load: _Optional[_Union[ServerLoad, _Mapping]] = ..., runtime: _Optional[_Union[Runtime, _Mapping]] = ..., embedding_size: _Optional[int] = ..., schema: _Optional[_Union[Schema, _Mapping]] = ...) -> None: ...

class Schema(_message.Message):
    __slots__ = ("id_column", "caption_column", "tree")
    ID_COLUMN_FIELD_NUMBER: _ClassVar[int]
    CAPTION_COLUMN_FIELD_NUMBER: _ClassVar[int]
    TREE_FIELD_NUMBER: _ClassVar[int]
    id_column: str
    caption_column: str
    tree: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id_column: _Optional[str] = ..., caption_column: _Optional[str] = ..., tree: _Optional[_Iterable[str]] = ...) -> None: ...

class Runtime(_message.Message):
    __slots__ = ("backend", "precision", "device", "model_threads", "decode_threads", "max_caption_batch_size", "cache_max_bytes")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_THREADS_FIELD_NUMBER: _ClassVar[int]
    DECODE_THREADS_FIELD_NUMBER: _ClassVar[int]
    MAX_CAPTION_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    CACHE_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    backend: str
    precision: str
    device: str
    model_threads: int
    decode_threads: int
    max_caption_batch_size: int
    cache_max_bytes: int
    def __init__(self, backend: _Optional[str] = ..., precision: _Optional[str] = ..., device: _Optional[str] = ..., model_threads: _Optional[int] = ..., decode_threads: _Optional[int] = ..., max_caption_batch_size: _Optional[int] = ..., cache_max_bytes: _Optional[int] = ...) -> None: ...

class ServerLoad(_message.Message):
    __slots__ = ("in_flight", "capacity", "predicted", "skipped", "cache_hits", "cache_misses")
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    CACHE_MISSES_FIELD_NUMBER: _ClassVar[int]
    in_flight: int
    capacity: int
    predicted: int
    skipped: int
    cache_hits: int
    cache_misses: int
    def __init__(self, in_flight: _Optional[int] = ..., capacity: _Optional[int] = ..., predicted: _Optional[int] = ..., skipped: _Optional[int] = ..., cache_hits: _Optional[int] = ..., cache_misses: _Optional[int] = ...) -> None: ...

class AttributeInfo(_message.Message):
    __slots__ = ("name", "field", "labels", "derived_from", "abstain_threshold", "barely_learnt", "kind", "role", "accept_threshold", "target_precision", "value_thresholds", "value_accept_thresholds")
    class ValueThresholdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ValueAcceptThresholdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DERIVED_FROM_FIELD_NUMBER: _ClassVar[int]
    ABSTAIN_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    BARELY_LEARNT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TARGET_PRECISION_FIELD_NUMBER: _ClassVar[int]
    VALUE_THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    VALUE_ACCEPT_THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    field: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    derived_from: str
    abstain_threshold: float
    barely_learnt: bool
    kind: str
    role: str
    accept_threshold: float
    target_precision: float
    value_thresholds: _containers.ScalarMap[str, float]
    value_accept_thresholds: _containers.ScalarMap[str, float]
    def __init__(self, name: _Optional[str] = ..., field: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., derived_from: _Optional[str] = ..., abstain_threshold: _Optional[float] = ..., barely_learnt: _Optional[bool] = ..., kind: _Optional[str] = ..., role: _Optional[str] = ..., accept_threshold: _Optional[float] = ..., target_precision: _Optional[float] = ..., value_thresholds: _Optional[_Mapping[str, float]] = ..., value_accept_thresholds: _Optional[_Mapping[str, float]] = ...) -> None: ...

class TaxonomyEntry(_message.Message):
    __slots__ = ("article_type", "sub_category", "master_category")
    ARTICLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SUB_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MASTER_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    article_type: str
    sub_category: str
    master_category: str
    def __init__(self, article_type: _Optional[str] = ..., sub_category: _Optional[str] = ..., master_category: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_message_bytes", "max_image_pixels", "max_top_k", "max_batch_size", "max_stream_in_flight", "max_image_bytes", "max_jpeg_pixels", "max_queue")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAM_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_JPEG_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_image_pixels: int
    max_top_k: int
    max_batch_size: int
    max_stream_in_flight: int
    max_image_bytes: int
    max_jpeg_pixels: int
    max_queue: int
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., max_top_k: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., max_stream_in_flight: _Optional[int] = ..., max_image_bytes: _Optional[int] = ..., max_jpeg_pixels: _Optional[int] = ..., max_queue: _Optional[int] = ...) -> None: ...
