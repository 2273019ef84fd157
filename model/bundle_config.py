"""`enrich.json`, the bundle's self-description, as one typed class.

Torch-free on purpose: `enrich info`, the client side and tools that only read a bundle's metadata must
not pay for importing torch. `bundle.py` (which needs torch) writes and loads the weights beside it.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .schema import CatalogueSchema, SchemaError

BUNDLE_FORMAT = "enrich-bundle/3"  # 3: the catalogue's schema; 2: colour features, temperatures, lexicon
READABLE_FORMATS = ("enrich-bundle/2", BUNDLE_FORMAT)  # 2 holds Fashion Product Images' schema, unwritten
CONFIG_FILE = "enrich.json"
HEADS_FILE = "heads.safetensors"
CAPTIONER_DIR = "captioner"
RANDOM_WEIGHTS = "random"  # BackboneConfig.weights when no pretrained weights were used
MAX_NEW_TOKENS = 32  # longest caption the decoder writes, in tokens


class BundleError(RuntimeError):
    """The directory is not a loadable Enrich bundle; the message says what is wrong."""


@dataclass
class BackboneConfig:
    name: str  # timm model name, e.g. tiny_vit_5m_224
    kwargs: dict = field(default_factory=dict)  # extra timm.create_model arguments (a smaller variant)
    num_features: int = 0
    weights: str = RANDOM_WEIGHTS  # where training started: "hub", a weights file, or "random"

    @property
    def started_random(self) -> bool:
        return self.weights in (RANDOM_WEIGHTS, "none")


@dataclass
class HeadsConfig:
    dropout: float = 0.1
    colour_bins: int = 0  # per channel of the colour histogram; 0 = no colour features
    colour_levels: int = 0  # per channel of the dominant colour's encoding; 0 = none (bundles before it)
    colour_attributes: list[str] = field(default_factory=list)  # heads that read the colour features
    # attribute -> calibrated confidence below which a prediction is flagged unsure (absent = never)
    abstain_thresholds: dict[str, float] = field(default_factory=dict)
    # attribute -> calibrated confidence from which a label is accepted without review: the lowest at which
    # validation reached target_precision (absent: nothing is accepted)
    accept_thresholds: dict[str, float] = field(default_factory=dict)
    target_precision: float = 0.95
    # multi-valued attribute -> value -> probability from which the value is listed (best F1 on validation),
    # and from which it is accepted (target_precision on validation)
    value_thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    value_accept_thresholds: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class CaptionConfig:
    decoder: str = "small"
    decoder_layers: int = 0
    decoder_width: int = 0
    vocab_size: int = 0
    max_new_tokens: int = MAX_NEW_TOKENS
    lexicon: dict = field(default_factory=dict)  # CaptionLexicon.to_json(): colour/gender words, nouns
    # The tokens the decoder writes with (tokenizer ids, ascending): those of the training names and the special
    # ones, checked by the trainer to give the whole vocabulary's captions. Empty: the whole vocabulary.
    vocabulary: list[int] = field(default_factory=list)


@dataclass
class BundleConfig:
    model_version: str  # "<name>-<first 12 hex of weights_sha256>"
    created: str
    backbone: BackboneConfig
    preprocessing: dict  # Preprocessing.to_json()
    attributes: dict[str, list[str]]  # classified attribute -> labels, index = logit
    taxonomy: dict  # derived attribute -> {its root attribute's label -> its label} (schema.Taxonomy)
    schema: dict = field(default_factory=dict)  # schema.CatalogueSchema.to_json(); {} in format 2: Fashion's
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    versions: dict[str, str] = field(default_factory=dict)
    training: dict = field(default_factory=dict)  # data, split, arguments, majority labels
    test_metrics: dict = field(default_factory=dict)  # what `enrich evaluate` measured on the test split
    warnings: list[str] = field(default_factory=list)  # said at the end of training and by GetModelInfo
    format: str = BUNDLE_FORMAT
    weights_sha256: str = ""  # of the weight files (`weights_digest`); bundles written before it: see verify

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> BundleConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["backbone"] = BackboneConfig(**data["backbone"])
        values["heads"] = HeadsConfig(**data.get("heads", {}))
        values["caption"] = CaptionConfig(**data.get("caption", {}))
        return cls(**values)

    @classmethod
    def read(cls, path: Path | str) -> BundleConfig:
        config_path = Path(path) / CONFIG_FILE
        if not config_path.is_file():
            raise BundleError(f"{path} is not an Enrich bundle: {CONFIG_FILE} is missing")
        try:
            data = json.loads(config_path.read_text())
        except json.JSONDecodeError as error:
            raise BundleError(f"{config_path} is not valid JSON (line {error.lineno}): {error.msg}") from error
        if data.get("format") not in READABLE_FORMATS:
            raise BundleError(f"{path}: bundle format {data.get('format')!r}, this build reads {BUNDLE_FORMAT!r}; "
                              "retrain it with this version (`enrich train`)")
        try:
            return cls.from_json(data)
        except (KeyError, TypeError) as error:
            raise BundleError(f"{config_path} is incomplete or from another build: {error}") from error

    def verify_weights(self, path: Path | str) -> None:
        """Refuses weights that are not the ones this enrich.json was written with: a changed or corrupt file
        would otherwise serve, and be cached, under the old model version."""
        recorded = self.weights_sha256 or self.model_version.rsplit("-", 1)[-1]
        actual = weights_digest(path)
        if not actual.startswith(recorded) or not recorded:
            raise BundleError(f"{path}: the weights do not match the bundle's recorded hash (sha256 {recorded[:12]}, "
                              f"the files give {actual[:12]}): {HEADS_FILE} or {CAPTIONER_DIR}/*.safetensors changed "
                              "or is damaged since the bundle was written; fetch or copy the bundle again")

    def write(self, path: Path | str) -> None:
        (Path(path) / CONFIG_FILE).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def catalogue_schema(self) -> CatalogueSchema:
        """The schema the bundle was trained on; bundles of format 2 hold Fashion Product Images' without saying so.
        Raises BundleError when it cannot be read."""
        from .fashion import FASHION_SCHEMA

        if not self.schema:
            return FASHION_SCHEMA
        try:
            return CatalogueSchema.from_json(self.schema)
        except (SchemaError, KeyError, TypeError) as error:
            raise BundleError(f"enrich.json's schema cannot be read: {error}") from error

    def majority_label(self, attribute: str) -> str | None:
        """The most frequent training label (vocabularies are ordered most frequent first)."""
        recorded = self.training.get("majority", {}).get(attribute)
        labels = self.attributes.get(attribute)
        return recorded or (labels[0] if labels else None)


def weight_files(path: Path | str) -> list[Path]:
    """The files whose bytes make the model version: the captioner's safetensors (the backbone and the
    decoder) and the heads."""
    path = Path(path)
    files = sorted([path / HEADS_FILE, *(path / CAPTIONER_DIR).glob("*.safetensors")])
    missing = [str(f.relative_to(path)) for f in files if not f.is_file()]
    if missing or len(files) < 2:
        raise BundleError(f"{path}: incomplete bundle, {', '.join(missing) or CAPTIONER_DIR + '/*.safetensors'} "
                          "missing")
    return files


def weights_digest(path: Path | str) -> str:
    """SHA-256 over the weight files' bytes, in a fixed order."""
    digest = hashlib.sha256()
    for file in weight_files(path):
        hash_file(file, digest)
    return digest.hexdigest()


def hash_file(path: Path, digest: hashlib._Hash | None = None) -> hashlib._Hash:
    """`digest` (a new SHA-256 when None) updated with the file's bytes, read through a memory map: hashing a
    model's weights at start allocates no buffers that the process would keep."""
    digest = digest or hashlib.sha256()
    with path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size:  # an empty file cannot be mapped (and adds nothing)
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                digest.update(mapped)
    return digest


def open_bundle(path: Path | str) -> BundleConfig:
    """enrich.json, read and checked against the weights beside it; torch-free, so that a server refuses a bad
    bundle in a moment, before it loads any model code."""
    config = BundleConfig.read(path)
    config.verify_weights(path)
    return config
