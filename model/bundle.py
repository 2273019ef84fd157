"""The model bundle: one self-describing directory that training writes and serving loads.

    BUNDLE/
      enrich.json          BundleConfig: version, backbone, preprocessing, schema, vocabularies, taxonomy,
                           thresholds, metrics
      heads.safetensors    the attribute heads and their calibration temperatures
      captioner/           VisionEncoderDecoderModel.save_pretrained (holds the one backbone copy), with
                           auto_map and the model code, so plain transformers can load it
      tokenizer/           the caption tokenizer, save_pretrained
      README.md            model card: data, split, metrics, limits, intended use
      metrics.json         test-split metrics; report.md and *.png beside it (written by evaluation)
      openvino/            every stage as OpenVINO IR, for serving without torch (`export.py`, `enrich export`)
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import safetensors.torch
import timm
import torch
import transformers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, VisionEncoderDecoderModel

from . import model as model_module
from .bundle_config import (
    BUNDLE_FORMAT,
    CAPTIONER_DIR,
    CONFIG_FILE,
    HEADS_FILE,
    BackboneConfig,
    BundleConfig,
    BundleError,
    CaptionConfig,
    HeadsConfig,
    open_bundle,
    weights_digest,
)
from .bundle_info import BundleInfo, describe
from .colour import ColourFeatures, colour_features
from .consistency import CaptionLexicon
from .model import AttributeHeads, EnrichModel
from .preprocess import Preprocessing
from .schema import CatalogueSchema, LabelVocab, Taxonomy

__all__ = ["BUNDLE_FORMAT", "CONFIG_FILE", "Bundle", "BundleError", "build_heads", "load_bundle", "save_weights"]

MODEL_CODE_FILE = "modeling_enrich_tinyvit.py"  # copied beside the captioner weights, for trust_remote_code


@dataclass(kw_only=True)
class Bundle(BundleInfo):
    """The bundle with its torch weights and tokenizer."""

    model: EnrichModel
    tokenizer: PreTrainedTokenizerBase


def save_weights(
    out: Path,
    model: EnrichModel,
    heads: HeadsConfig,
    tokenizer: PreTrainedTokenizerBase,
    preprocessing: Preprocessing,
    schema: CatalogueSchema,
    vocabs: dict[str, LabelVocab],
    taxonomy: Taxonomy,
    name: str = "enrich",
    weights: str = "random",
    lexicon: CaptionLexicon | None = None,
    training: dict | None = None,
    caption_vocabulary: list[int] | None = None,
) -> BundleConfig:
    """Every file of the bundle but enrich.json (which makes the folder a bundle), and the config that describes
    them (`config.write(out)` makes it a bundle): the trainer loads the weights back with it, evaluates them,
    and then writes it, once, with the metrics. `heads`: the config `build_heads` made the heads from."""
    out.mkdir(parents=True, exist_ok=True)
    # Remote-code loading: the encoder config names its classes, whose code travels with the weights.
    module = MODEL_CODE_FILE.removesuffix(".py")
    model.encoder.config.auto_map = {"AutoConfig": f"{module}.TinyVitEncoderConfig",
                                     "AutoModel": f"{module}.TinyVitEncoder"}
    model.captioner.save_pretrained(out / CAPTIONER_DIR)
    shutil.copyfile(model_module.__file__, out / CAPTIONER_DIR / MODEL_CODE_FILE)
    tokenizer.save_pretrained(out / "tokenizer")
    heads_state = {k: v.detach().contiguous() for k, v in model.heads.state_dict().items()}
    safetensors.torch.save_file(heads_state, out / HEADS_FILE)
    digest = weights_digest(out)
    encoder_config, decoder_config = model.encoder.config, model.captioner.decoder.config
    return BundleConfig(
        model_version=f"{name}-{digest[:12]}", weights_sha256=digest,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        backbone=BackboneConfig(encoder_config.backbone, encoder_config.backbone_kwargs, encoder_config.hidden_size,
                                weights),
        preprocessing=preprocessing.to_json(),
        attributes={name: vocab.labels for name, vocab in vocabs.items()},
        taxonomy=taxonomy.to_json(),
        schema=schema.to_json(),
        heads=heads,
        caption=CaptionConfig(
            decoder=decoder_config.name_or_path or "small", decoder_layers=decoder_config.n_layer,
            decoder_width=decoder_config.n_embd, vocab_size=len(tokenizer),
            max_new_tokens=model.captioner.generation_config.max_new_tokens,
            lexicon=lexicon.to_json() if lexicon else {}, vocabulary=list(caption_vocabulary or []),
        ),
        versions={"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
                  "transformers": transformers.__version__},
        training=dict(training or {}),
    )


def build_heads(config: HeadsConfig, in_features: int, num_classes: dict[str, int],
                preprocessing: Preprocessing) -> tuple[AttributeHeads, ColourFeatures | None]:
    """The heads and colour features a HeadsConfig describes: the trainer builds them from its arguments,
    `load_bundle` from enrich.json, so the two cannot disagree."""
    colour = colour_features(config, preprocessing)
    heads = AttributeHeads(in_features, num_classes, config.dropout, colour.num_features if colour else 0,
                           tuple(config.colour_attributes))
    return heads, colour


def load_bundle(path: Path | str, device: str = "cpu", config: BundleConfig | None = None) -> Bundle:
    """The bundle at `path`, its weights checked against enrich.json first. `config`: its description when the
    caller has it already, checked (a server checks the bundle before it imports torch) or just made
    (`save_weights`), so that it is not read or hashed twice."""
    path = Path(path)
    config = config or open_bundle(path)
    captioner = VisionEncoderDecoderModel.from_pretrained(path / CAPTIONER_DIR)
    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
    info = describe(path, config)
    heads, colour = build_heads(config.heads, config.backbone.num_features,
                                {n: len(v) for n, v in info["vocabs"].items()}, info["preprocessing"])
    heads.load_state_dict(safetensors.torch.load_file(path / HEADS_FILE))
    model = EnrichModel(captioner, heads, colour).to(device).eval()
    return Bundle(model=model, tokenizer=tokenizer, **info)
