"""What a bundle says of itself, without its weights: the config and what is built from it (preprocessing,
vocabularies, taxonomy, caption lexicon). Torch-free: the pipeline and a server on the OpenVINO backend need
no more; `bundle.Bundle` adds the torch weights and the tokenizer."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from .bundle_config import BundleConfig, BundleError, open_bundle
from .consistency import CaptionLexicon
from .fashion import legacy_taxonomy
from .preprocess import Preprocessing
from .schema import CatalogueSchema, LabelVocab, Taxonomy


@dataclass(kw_only=True)
class BundleInfo:
    schema: CatalogueSchema
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
    try:
        schema = config.catalogue_schema()
    except BundleError as error:
        raise BundleError(f"{path}: {error}") from error
    vocabs = {name: LabelVocab(name, labels, schema[name].separator if name in schema else "")
              for name, labels in config.attributes.items()}
    missing = set(schema.classified) - set(vocabs)
    if missing:
        raise BundleError(f"{path}: no vocabulary for {sorted(missing)}")
    legacy = not config.schema  # format 2: articleType -> [subCategory, masterCategory]
    taxonomy = legacy_taxonomy(config.taxonomy) if legacy else Taxonomy.from_json(config.taxonomy)
    unmapped = {a: [label for label in vocabs[schema.root(a)].labels if not taxonomy.covers(a, label)]
                for a in schema.derived}
    if any(unmapped.values()):
        missing = "; ".join(f"{a}: {', '.join(labels)}" for a, labels in unmapped.items() if labels)
        raise BundleError(f"{path}: the taxonomy has no parent for ({missing}); the bundle is incomplete")
    return dict(schema=schema, preprocessing=Preprocessing.from_json(config.preprocessing), vocabs=vocabs,
                taxonomy=taxonomy, config=config, path=path)
