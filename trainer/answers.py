"""What a bundle answered on labelled images, gathered for scoring and for the report."""

from __future__ import annotations

from dataclasses import dataclass, field

from enrich_model.answers import ItemPrediction
from enrich_model.schema import ALL_LABEL_ATTRIBUTES, CLASSIFIED_ATTRIBUTES


@dataclass
class Answers:
    """Per attribute, one entry per image, in the order of the images."""

    labels: dict[str, list[str]] = field(default_factory=lambda: {a: [] for a in ALL_LABEL_ATTRIBUTES})
    top3: dict[str, list[list[str]]] = field(default_factory=lambda: {a: [] for a in ALL_LABEL_ATTRIBUTES})
    confidence: dict[str, list[float]] = field(default_factory=lambda: {a: [] for a in ALL_LABEL_ATTRIBUTES})
    raw_confidence: dict[str, list[float]] = field(default_factory=lambda: {a: [] for a in CLASSIFIED_ATTRIBUTES})
    unsure: dict[str, list[bool]] = field(default_factory=lambda: {a: [] for a in ALL_LABEL_ATTRIBUTES})
    captions: list[str] = field(default_factory=list)
    decoded_captions: list[str] = field(default_factory=list)

    def add(self, prediction: ItemPrediction) -> None:
        for attribute, predicted in prediction.attributes.items():
            self.labels[attribute].append(predicted.label)
            self.top3[attribute].append([a.label for a in predicted.alternatives])
            self.confidence[attribute].append(predicted.confidence)
            self.unsure[attribute].append(predicted.unsure)
            if attribute in self.raw_confidence:
                self.raw_confidence[attribute].append(predicted.uncalibrated_confidence)
        self.captions.append(prediction.caption.text if prediction.caption else "")
        self.decoded_captions.append(prediction.caption.decoded_text if prediction.caption else "")
