"""The model bundle: one self-describing directory that training writes and serving loads.

    BUNDLE/
      enrich.json          format, model version, backbone, preprocessing, vocabularies, taxonomy, versions
      heads.safetensors    the attribute heads
      captioner/           VisionEncoderDecoderModel.save_pretrained (holds the one backbone copy)
      tokenizer/           the caption tokenizer, save_pretrained
      metrics.json         test-split metrics (written by the trainer)
      *.png                training curves, confusion matrices
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import safetensors.torch
import timm
import torch
import transformers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, VisionEncoderDecoderModel

from .model import AttributeHeads, EnrichModel
from .preprocess import Preprocessing
from .schema import CLASSIFIED_ATTRIBUTES, LabelVocab, Taxonomy

BUNDLE_FORMAT = "enrich-bundle/1"
CONFIG_FILE = "enrich.json"
HEADS_FILE = "heads.safetensors"
METRICS_FILE = "metrics.json"


class BundleError(RuntimeError):
    """The directory is not a loadable Enrich bundle; the message says what is wrong."""


@dataclass
class Bundle:
    model: EnrichModel
    tokenizer: PreTrainedTokenizerBase
    preprocessing: Preprocessing
    vocabs: dict[str, LabelVocab]
    taxonomy: Taxonomy
    config: dict  # the whole enrich.json

    @property
    def model_version(self) -> str:
        return self.config["model_version"]

    @property
    def metrics(self) -> dict:
        return self.config.get("test_metrics", {})


def save_bundle(
    out: Path,
    model: EnrichModel,
    tokenizer: PreTrainedTokenizerBase,
    preprocessing: Preprocessing,
    vocabs: dict[str, LabelVocab],
    taxonomy: Taxonomy,
    extra: dict | None = None,
    name: str = "enrich",
) -> dict:
    """Write the bundle and return its config; the model version is derived from the weights' hash."""
    out.mkdir(parents=True, exist_ok=True)
    model.captioner.save_pretrained(out / "captioner")
    tokenizer.save_pretrained(out / "tokenizer")
    heads_state = {k: v.detach().contiguous() for k, v in model.heads.state_dict().items()}
    safetensors.torch.save_file(heads_state, out / HEADS_FILE)
    digest = hashlib.sha256()
    for path in sorted([out / HEADS_FILE, *sorted((out / "captioner").glob("*.safetensors"))]):
        digest.update(path.read_bytes())
    encoder_config = model.encoder.config
    config = {
        "format": BUNDLE_FORMAT,
        "model_version": f"{name}-{digest.hexdigest()[:12]}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "backbone": {
            "name": encoder_config.backbone,
            "kwargs": encoder_config.backbone_kwargs,
            "num_features": encoder_config.hidden_size,
        },
        "preprocessing": preprocessing.to_json(),
        "attributes": {name: vocab.labels for name, vocab in vocabs.items()},
        "taxonomy": taxonomy.to_json(),
        "heads": {"dropout": model.heads.dropout.p},
        "caption": {
            "decoder": model.captioner.decoder.config.name_or_path or "gpt2-small-config",
            "decoder_layers": model.captioner.decoder.config.n_layer,
            "decoder_width": model.captioner.decoder.config.n_embd,
            "vocab_size": len(tokenizer),
            "max_new_tokens": model.captioner.generation_config.max_new_tokens,
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "timm": timm.__version__,
            "transformers": transformers.__version__,
        },
        **(extra or {}),
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return config


def read_bundle_config(path: Path) -> dict:
    config_path = Path(path) / CONFIG_FILE
    if not config_path.is_file():
        raise BundleError(f"{path} is not an Enrich bundle: {CONFIG_FILE} is missing")
    config = json.loads(config_path.read_text())
    if config.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: bundle format {config.get('format')!r}, this build reads {BUNDLE_FORMAT!r}")
    return config


def load_bundle(path: Path | str, device: str = "cpu") -> Bundle:
    path = Path(path)
    config = read_bundle_config(path)
    captioner = VisionEncoderDecoderModel.from_pretrained(path / "captioner")
    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
    vocabs = {name: LabelVocab(name, labels) for name, labels in config["attributes"].items()}
    missing = set(CLASSIFIED_ATTRIBUTES) - set(vocabs)
    if missing:
        raise BundleError(f"{path}: no vocabulary for {sorted(missing)}")
    heads = AttributeHeads(
        config["backbone"]["num_features"], {name: len(v) for name, v in vocabs.items()},
        dropout=config["heads"]["dropout"],
    )
    heads.load_state_dict(safetensors.torch.load_file(path / HEADS_FILE))
    model = EnrichModel(captioner, heads).to(device).eval()
    return Bundle(
        model=model,
        tokenizer=tokenizer,
        preprocessing=Preprocessing.from_json(config["preprocessing"]),
        vocabs=vocabs,
        taxonomy=Taxonomy.from_json(config["taxonomy"]),
        config=config,
    )
