"""What a bundle answered on labelled images, gathered for scoring and for the report."""

from __future__ import annotations

from dataclasses import dataclass, field

from enrich_model.answers import ItemPrediction
from enrich_model.schema import CatalogueSchema


@dataclass
class Answers:
    """Per attribute of the schema, one entry per image, in the order of the images."""

    schema: CatalogueSchema
    labels: dict[str, list[str]] = field(default_factory=dict)
    top3: dict[str, list[list[str]]] = field(default_factory=dict)
    confidence: dict[str, list[float]] = field(default_factory=dict)
    raw_confidence: dict[str, list[float]] = field(default_factory=dict)  # classified attributes
    unsure: dict[str, list[bool]] = field(default_factory=dict)
    accepted: dict[str, list[bool]] = field(default_factory=dict)
    values: dict[str, list[list[str]]] = field(default_factory=dict)  # multi-valued: the listed values
    accepted_values: dict[str, list[list[str]]] = field(default_factory=dict)  # ...and those accepted
    captions: list[str] = field(default_factory=list)
    decoded_captions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for table in (self.labels, self.top3, self.confidence, self.unsure, self.accepted):
            table.update({a: [] for a in self.schema.names})
        self.raw_confidence.update({a: [] for a in self.schema.classified})
        for table in (self.values, self.accepted_values):
            table.update({a: [] for a in self.schema.multi})

    def add(self, prediction: ItemPrediction) -> None:
        for attribute, predicted in prediction.attributes.items():
            self.labels[attribute].append(predicted.label)
            self.top3[attribute].append([a.label for a in predicted.alternatives])
            self.confidence[attribute].append(predicted.confidence)
            self.unsure[attribute].append(predicted.unsure)
            self.accepted[attribute].append(predicted.accepted)
            if attribute in self.raw_confidence:
                self.raw_confidence[attribute].append(predicted.uncalibrated_confidence)
            if attribute in self.values:
                self.values[attribute].append([v.label for v in predicted.values or []])
                self.accepted_values[attribute].append([v.label for v in predicted.values or [] if v.accepted])
        self.captions.append(prediction.caption.text if prediction.caption else "")
        self.decoded_captions.append(prediction.caption.decoded_text if prediction.caption else "")
