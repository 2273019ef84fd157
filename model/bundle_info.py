"""What a bundle says of itself, without its weights: the config and what is built from it (preprocessing,
vocabularies, taxonomy, caption lexicon). Torch-free: the pipeline and a server on the OpenVINO backend need
no more; `bundle.Bundle` adds the torch weights and the tokenizer."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from .bundle_config import BundleConfig, BundleError, open_bundle
from .consistency import CaptionLexicon
from .preprocess import Preprocessing
from .schema import CLASSIFIED_ATTRIBUTES, LabelVocab, Taxonomy


@dataclass(kw_only=True)
class BundleInfo:
    preprocessing: Preprocessing
    vocabs: dict[str, LabelVocab]
    taxonomy: Taxonomy
    config: BundleConfig  # the whole enrich.json
    path: Path | None = None  # where it was loaded from (exports are cached beside it)

    @classmethod
    def read(cls, path: Path | str, config: BundleConfig | None = None) -> BundleInfo:
        """The bundle at `path`; `config` as in `bundle.load_bundle` (read and checked here when not given)."""
        path = Path(path)
        return cls(**describe(path, config or open_bundle(path)))

    @property
    def model_version(self) -> str:
        return self.config.model_version

    @property
    def metrics(self) -> dict:
        return self.config.test_metrics

    @functools.cached_property
    def lexicon(self) -> CaptionLexicon | None:
        return CaptionLexicon.from_json(self.config.caption.lexicon) if self.config.caption.lexicon else None

    @property
    def abstain_thresholds(self) -> dict[str, float]:
        return self.config.heads.abstain_thresholds


def describe(path: Path, config: BundleConfig) -> dict:
    """BundleInfo's fields, built from `config`."""
    vocabs = {name: LabelVocab(name, labels) for name, labels in config.attributes.items()}
    missing = set(CLASSIFIED_ATTRIBUTES) - set(vocabs)
    if missing:
        raise BundleError(f"{path}: no vocabulary for {sorted(missing)}")
    return dict(preprocessing=Preprocessing.from_json(config.preprocessing), vocabs=vocabs,
                taxonomy=Taxonomy.from_json(config.taxonomy), config=config, path=path)
