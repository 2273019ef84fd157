"""What the pipeline answers, as plain data: options in, predictions out. Torch-free, so that hosts and
codecs (the server's messages, evaluation) describe answers without loading a model."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

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


@dataclass(frozen=True)
class ItemOptions:
    top_k: int = DEFAULT_TOP_K
    caption_mode: CaptionMode = CaptionMode.GENERATE


@dataclass
class LabelScore:
    label: str
    confidence: float


@dataclass
class AttributePrediction:
    label: str  # always alternatives[0].label
    confidence: float  # calibrated (temperature fitted on the validation split)
    alternatives: list[LabelScore]  # top-k, best first, including the label itself
    derived: bool = False
    unsure: bool = False  # below the bundle's abstain threshold, or (articleType) the tree of labels disagrees
    uncalibrated_confidence: float = 0.0  # before the temperature: for evaluating calibration


@dataclass
class CaptionPrediction:
    text: str  # agrees with the predicted gender, baseColour and articleType
    mode: CaptionMode
    confidence: float
    decoded_text: str = ""  # the decoder's own words, before agreement with the labels


@dataclass
class ItemPrediction:
    attributes: dict[str, AttributePrediction]
    caption: CaptionPrediction | None


