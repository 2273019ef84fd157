"""The bundle's model card (README.md), written at training time from what was measured."""

from __future__ import annotations

from pathlib import Path

from enrich_model.bundle_config import BundleConfig
from enrich_model.metrics import format_metrics

from .report import confusion_picture, table_attributes
from .split import stratum_attribute

CARD = """---
library_name: transformers
pipeline_tag: image-to-text
tags: [enrich, product-metadata, image-classification, image-captioning, tiny-vit]
---

# {model_version}

Product photo in, catalogue metadata out: {predicts}, each with a calibrated confidence{caption}.
Served by the Enrich gRPC service (`enrich serve --model THIS_FOLDER`).

## Model
- Backbone: timm `{backbone}` {backbone_kwargs}, {weights}; input
  {input_size} letterboxed onto white, mean {mean},
  std {std}.
- Heads: one linear classifier per attribute over the pooled features{colour}; one temperature
  per head fitted on the validation split (kept where it lowers the calibration error there).
- Caption decoder: GPT-2 ({decoder}, {decoder_layers} layers x
  {decoder_width}) reading the same backbone pass through cross-attention.
- Abstain thresholds (calibrated confidence below which a prediction is flagged unsure): {abstain}.
- Accept thresholds (calibrated confidence from which a label reached {target_precision} precision on
  validation, so it can be filed without review): {accept}.

## Loading
```python
import enrich_model  # registers the TinyViT encoder with transformers' Auto classes
from transformers import VisionEncoderDecoderModel
captioner = VisionEncoderDecoderModel.from_pretrained("THIS_FOLDER/captioner")

# Without enrich installed: the encoder's code travels with the weights (captioner/modeling_enrich_tinyvit.py,
# named by the encoder config's auto_map); importing it registers the encoder, then load as above.
from transformers.dynamic_module_utils import get_class_from_dynamic_module
get_class_from_dynamic_module("modeling_enrich_tinyvit.TinyVitEncoder", "THIS_FOLDER/captioner")

from enrich_model.bundle import load_bundle  # the whole model: heads, calibration, preprocessing
bundle = load_bundle("THIS_FOLDER")
```

## Data
- Source: `{data}`, {items} items
  (skipped: {skipped}).
- Split (seeded, stratified by {stratum}): {train} train / {validation}
  validation / {test} test.

## Test-split metrics
```
{metrics}
```
Pictures beside this card: `training_curves.png`, `reliability.png`{confusions}; full numbers in
`metrics.json` and `report.md`.

## Warnings
{warnings}

## Intended use and limits
- Intended use: suggesting catalogue metadata for product photos on plain backgrounds, with a human
  or a confidence threshold deciding what to accept. Use `unsure` and the confidences.
- Vocabularies are closed: the model can only answer labels it saw at least
  {min_class_count} times in training (listed in `enrich.json`).
- Captions are written by a small decoder and edited to agree with the predicted {headline}; brand
  names in captions are guesses.
- Trained on the data above only: accuracy on other photography (models wearing clothes, lifestyle
  shots, busy backgrounds) is unmeasured.
"""


def write_model_card(out: Path, config: BundleConfig) -> None:
    (out / "README.md").write_text(CARD.format(**card_fields(config)))


def card_fields(config: BundleConfig) -> dict[str, object]:
    training, split = config.training, config.training.get("split", {})
    colour = config.heads.colour_attributes
    schema = config.catalogue_schema()
    parts = [f"{a.name} (derived from {a.derived_from})" if a.derived else f"{a.name} (multi-valued)" if a.multi
             else a.name for a in schema]
    stratum = stratum_attribute(schema) or "nothing"
    return {
        "predicts": ", ".join(parts),
        "caption": f", and a {schema.caption} caption that agrees with those labels" if schema.caption else "",
        "headline": ", ".join(schema.headline) or "labels", "stratum": stratum,
        "confusions": "".join(f", `{confusion_picture(a)}`" for a in table_attributes(schema)),
        "target_precision": config.heads.target_precision,
        "accept": ", ".join(f"{a} {t:.2f}" if t <= 1 else f"{a} never"
                            for a, t in config.heads.accept_thresholds.items()) or "none",
        "model_version": config.model_version, "backbone": config.backbone.name,
        "backbone_kwargs": config.backbone.kwargs or "",
        "weights": "random initialisation (no pretrained weights)" if config.backbone.started_random
        else f"pretrained ({config.backbone.weights})",
        "input_size": config.preprocessing["input_size"], "mean": config.preprocessing["mean"],
        "std": config.preprocessing["std"],
        "colour": f" (+ foreground colour features for {', '.join(colour)})" if colour else "",
        "decoder": config.caption.decoder, "decoder_layers": config.caption.decoder_layers,
        "decoder_width": config.caption.decoder_width, "abstain": config.heads.abstain_thresholds or "none",
        "data": training.get("data", "?"), "items": training.get("items", "?"),
        "skipped": training.get("skipped", {}) or "none", "train": split.get("train", "?"),
        "validation": split.get("validation", "?"), "test": split.get("test", "?"),
        "metrics": format_metrics(config.test_metrics),
        "warnings": "\n".join(f"- **{w}**" for w in config.warnings) or "- none",
        "min_class_count": training.get("arguments", {}).get("min_class_count", "?"),
    }
