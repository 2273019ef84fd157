"""What the pipeline answers, as plain data: options in, predictions out. Torch-free, so that hosts and
codecs (the server's messages, evaluation) describe answers without loading a model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from enrich_contract.posterior import DEFAULT_ERROR_PRIOR

DEFAULT_TOP_K = 3  # alternatives per attribute when a request does not say
MAX_TOP_K = 20  # most alternatives a request may ask for


class CaptionMode(Enum):
    """How productDisplayName is made; each value is enrich.v1.CaptionMode's name without CAPTION_MODE_."""

    GENERATE = "generate"  # the decoder writes the name (greedy)
    BEAM_SEARCH = "beam_search"  # the decoder with beam search: slower, often better
    TEMPLATE = "template"  # composed from the predicted attributes: instant
    SKIP = "skip"

    @property
    def needs_decoder(self) -> bool:
        return self in (CaptionMode.GENERATE, CaptionMode.BEAM_SEARCH)


class TaxonomyLevel(Enum):
    """A level of a tree of labels, most specific first: a root attribute and the ones that follow from it
    (Fashion Product Images' articleType -> subCategory -> masterCategory); values are enrich.v1.TaxonomyLevel's
    names without TAXONOMY_LEVEL_."""

    ARTICLE_TYPE = "article_type"
    SUB_CATEGORY = "sub_category"
    MASTER_CATEGORY = "master_category"


TAXONOMY_LEVELS: tuple[TaxonomyLevel, ...] = tuple(TaxonomyLevel)  # by depth: root, parent, grandparent


class FindingKind(Enum):
    """What a catalogue value is against the image; values are enrich.v1.FindingKind's names without
    FINDING_KIND_."""

    AGREES = "agrees"
    DISAGREES = "disagrees"
    FILLED = "filled"  # the catalogue had nothing
    UNKNOWN_LABEL = "unknown_label"  # not in the model's vocabulary
    UNCHECKED = "unchecked"  # a name that mentions nothing the model can check


@dataclass(frozen=True)
class ItemOptions:
    top_k: int = DEFAULT_TOP_K
    caption_mode: CaptionMode = CaptionMode.GENERATE
    catalogue: tuple[tuple[str, str], ...] = ()  # (column, value as the catalogue has it): audit these
    error_prior: float = DEFAULT_ERROR_PRIOR  # how often a catalogue value is wrong before seeing the image
    embedding: bool = False  # return the image's embedding
    palette: bool = False  # return the product's palette (look.py)
    signature: bool = False  # return the perceptual hash and colour fingerprint (look.py)

    @property
    def looks(self) -> bool:
        """Whether the decode stage reads anything from the pixels for this request besides the model input."""
        return self.palette or self.signature


@dataclass
class LabelScore:
    label: str
    confidence: float
    accepted: bool = False  # a multi-valued attribute's value at or above its accept threshold


@dataclass
class AttributePrediction:
    label: str  # always alternatives[0].label
    confidence: float  # calibrated (temperature fitted on the validation split)
    alternatives: list[LabelScore]  # top-k, best first, including the label itself
    derived: bool = False
    unsure: bool = False  # below the bundle's abstain threshold, or (a tree's root) the tree of labels disagrees
    uncalibrated_confidence: float = 0.0  # before the temperature: for evaluating calibration
    accepted: bool = False  # at or above the accept threshold: right at the target precision on validation
    values: list[LabelScore] | None = None  # multi-valued attributes: the values above their thresholds


@dataclass
class CaptionPrediction:
    text: str  # agrees with the predicted gender, baseColour and articleType
    mode: CaptionMode
    confidence: float
    decoded_text: str = ""  # the decoder's own words, before agreement with the labels


@dataclass
class Finding:
    """One catalogue value against the image (enrich.v1.Finding documents each field)."""

    attribute: str
    kind: FindingKind
    supplied: str
    supplied_label: str = ""
    p_supplied: float = 0.0
    predicted: str = ""
    p_predicted: float = 0.0
    p_wrong: float = 0.0
    disagreement_level: TaxonomyLevel | None = None
    predicted_accepted: bool = False  # the predicted label reaches its accept threshold


@dataclass
class PaletteColour:
    hex: str  # "#1a2b3c"
    share: float  # of the product's pixels
    nearest: str  # the nearest baseColour name


@dataclass
class ImageLook:
    """What the decode stage sees in the pixels themselves, without the model: what a request asked for."""

    palette: list[PaletteColour] = field(default_factory=list)
    perceptual_hash: str = ""  # 16 hex digits
    product_hash: str = ""  # 16 hex digits: the pHash of the product's bounding box (look.product_hash)
    colour_fingerprint: tuple[float, ...] = ()  # CIELAB of the product's dominant colour, then of the background


@dataclass
class ItemPrediction:
    attributes: dict[str, AttributePrediction]
    caption: CaptionPrediction | None
    findings: list[Finding] = field(default_factory=list)  # when the options carried catalogue values
    embedding: Sequence[float] | None = None  # L2-normalised, when the options asked for it
    # The most specific level of the schema's tree of labels that is not unsure (`sure_level`)
    sure_level: TaxonomyLevel | None = None


def sure_level(attributes: Mapping[str, AttributePrediction], tree: Sequence[str]) -> TaxonomyLevel | None:
    """The most specific level of the tree of labels `tree` (attributes, most specific first) that is not unsure
    (None: all are, or there is no tree)."""
    for attribute, level in zip(tree, TAXONOMY_LEVELS, strict=False):
        prediction = attributes.get(attribute)
        if prediction is not None and not prediction.unsure:
            return level
    return None


