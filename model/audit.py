"""Catalogue values against the image: one Finding per value a request supplied (enrich.v1.Finding).

Torch-free: it reads the calibrated distribution of every attribute, which `EnrichPipeline.classify`
computes anyway, and the p_wrong that `enrich_contract.posterior` defines for server and client alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from enrich_contract.posterior import any_wrong, p_wrong

from .answers import TAXONOMY_LEVELS, AttributePrediction, Finding, FindingKind, TaxonomyLevel
from .consistency import CaptionLexicon
from .schema import CatalogueSchema, Taxonomy
from .thresholds import Thresholds


def normalised(value: str) -> str:
    """How catalogue values are matched to labels: case and repeated spaces ignored."""
    return " ".join(value.split()).casefold()


class Auditor:
    """The schema, vocabularies and tree of labels a bundle's findings are made with."""

    def __init__(self, schema: CatalogueSchema, labels: Mapping[str, Sequence[str]], taxonomy: Taxonomy,
                 lexicon: CaptionLexicon | None, thresholds: Thresholds | None = None) -> None:
        """`labels`: every label attribute's labels, in the order of its distribution; `thresholds`: the
        pipeline's, which say whether an image shows a multi-valued attribute's value."""
        self.schema, self.labels, self.taxonomy, self.lexicon = schema, labels, taxonomy, lexicon
        self.thresholds = thresholds or Thresholds()
        self.lookup = {a: {normalised(label): label for label in values} for a, values in labels.items()}
        self.name = schema.caption  # the free-text column, checked through what it mentions
        # The columns a request may send: the attributes, then the name.
        self.auditable: tuple[str, ...] = (*schema.names, *((self.name,) if self.name else ()))

    def unknown_columns(self, columns: Sequence[str]) -> list[str]:
        return [column for column in columns if column not in self.auditable]

    def findings(self, supplied: Sequence[tuple[str, str]], distributions: Mapping[str, Sequence[float]],
                 attributes: Mapping[str, AttributePrediction], prior: float) -> list[Finding]:
        """One finding per supplied (column, value), in the order of `auditable` (a multi-valued cell: one per value
        it holds and per value the image shows that it lacks); `distributions` holds the calibrated probability of
        every label of every label attribute."""
        values = dict(supplied)
        out = []
        for attribute in self.auditable:
            if attribute not in values:
                continue
            value = values[attribute]
            if attribute == self.name:
                out.append(self._name(value, distributions, attributes, prior))
            elif self.schema[attribute].multi:
                out += self._values(attribute, value, distributions[attribute], prior)
            else:
                out.append(self._label(attribute, value, distributions[attribute], attributes[attribute], prior))
        return out

    def read(self, attribute: str, value: str) -> str | None:
        """The label a catalogue value means, or None when the model has no such label."""
        return self.lookup[attribute].get(normalised(value))

    def _label(self, attribute: str, value: str, distribution: Sequence[float], predicted: AttributePrediction,
               prior: float) -> Finding:
        finding = Finding(attribute, FindingKind.FILLED, value, predicted=predicted.label,
                          p_predicted=predicted.confidence, predicted_accepted=predicted.accepted)
        if not value.strip():
            return finding
        label = self.read(attribute, value)
        if label is None:
            finding.kind = FindingKind.UNKNOWN_LABEL
            return finding
        labels = self.labels[attribute]
        p_supplied = float(distribution[labels.index(label)])
        finding.supplied_label, finding.p_supplied = label, p_supplied
        finding.p_wrong = float(p_wrong(p_supplied, len(labels), prior))
        finding.kind = FindingKind.AGREES if label == predicted.label else FindingKind.DISAGREES
        level = self.disagreement_level(attribute, label, predicted.label) if label != predicted.label else None
        finding.disagreement_level = level
        return finding

    def _values(self, attribute: str, cell: str, distribution: Sequence[float], prior: float) -> list[Finding]:
        """A multi-valued cell against the image: each value it holds, shown or not (p_wrong: that the image lacks
        it), then each value the image shows that the cell lacks (supplied empty; p_wrong: that it belongs)."""
        labels, thresholds = self.labels[attribute], self.thresholds
        held = self.schema[attribute].values(cell)
        out, known = [], set()
        for value in held:
            label = self.read(attribute, value)
            if label is None:
                out.append(Finding(attribute, FindingKind.UNKNOWN_LABEL, value))
                continue
            known.add(label)
            p = float(distribution[labels.index(label)])
            shown = thresholds.listed(attribute, label, p)
            out.append(Finding(attribute, FindingKind.AGREES if shown else FindingKind.DISAGREES, value, label, p,
                               label if shown else "", p if shown else 1.0 - p, float(p_wrong(p, 2, prior)),
                               predicted_accepted=shown and thresholds.value_accepted(attribute, label, p)))
        for label, p in zip(labels, map(float, distribution), strict=True):
            if label not in known and thresholds.listed(attribute, label, p):
                out.append(Finding(attribute, FindingKind.DISAGREES, "", "", 1.0 - p, label, p,
                                   float(p_wrong(1.0 - p, 2, prior)),
                                   predicted_accepted=thresholds.value_accepted(attribute, label, p)))
        return out

    def disagreement_level(self, attribute: str, supplied: str, predicted: str) -> TaxonomyLevel | None:
        """The broadest level of the tree of labels (root, parent, grandparent) at which two labels of
        `attribute` differ; None for an attribute outside any tree."""
        root = self.schema.root(attribute)
        chain = self.schema.chain(root)
        if len(chain) < 2:
            return None
        levels = list(TAXONOMY_LEVELS)[: len(chain)]
        position = chain.index(attribute)
        if position >= len(levels):  # deeper than the three levels the contract names
            return None
        ours, theirs = (self.taxonomy.lift(self.schema, attribute, label) for label in (supplied, predicted))
        for level, name in reversed(list(zip(levels[position:], chain[position:], strict=False))):
            if ours.get(name) != theirs.get(name):
                return level
        return levels[position]

    def _name(self, value: str, distributions: Mapping[str, Sequence[float]],
              attributes: Mapping[str, AttributePrediction], prior: float) -> Finding:
        """A name is checked through what it mentions: its gender word, colour and product noun."""
        finding = Finding(self.name, FindingKind.FILLED, value)
        predicted = {a: attributes[a].label for a in self.schema.headline}
        if not value.strip():
            return finding
        if self.lexicon is None:
            finding.kind = FindingKind.UNCHECKED
            return finding
        mentioned = {a: labels[0] for a, labels in self.lexicon.mentions(value).items() if labels}
        checks = [self._label(a, label, distributions[a], attributes[a], prior) for a, label in mentioned.items()]
        checks = [check for check in checks if check.kind in (FindingKind.AGREES, FindingKind.DISAGREES)]
        finding.predicted = self.lexicon.harmonise(value, predicted)
        finding.predicted_accepted = all(attributes[a].accepted for a in self.schema.headline if a in mentioned)
        finding.p_predicted = float(math.prod(attributes[a].confidence for a in self.schema.headline if a in mentioned))
        if not checks:
            finding.kind = FindingKind.UNCHECKED
            return finding
        finding.supplied_label = " / ".join(check.supplied_label for check in checks)
        finding.p_supplied = float(math.prod(check.p_supplied for check in checks))
        finding.p_wrong = any_wrong(check.p_wrong for check in checks)
        agrees = all(check.kind is FindingKind.AGREES for check in checks)
        finding.kind = FindingKind.AGREES if agrees else FindingKind.DISAGREES
        return finding
