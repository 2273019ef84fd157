"""The stages every host runs, as one object with one hook per stage:

    bytes -> decode -> pixels -> encode -> classify -> caption -> answer
             (preprocessing)    (backend)  (heads)     (decoder)  ItemPrediction

gRPC (unary calls and streams) and HTTP through the server's two batched stages, `enrich bench`,
`enrich evaluate` and the evaluation at the end of training all call these hooks, on a pipeline built by
`EnrichPipeline.load` with the backend and precision the server would choose. `predict` runs encode ->
classify -> caption -> answer on one batch, for hosts that do not batch on their own.

Which attributes there are, of what kind, and which follow from which is the bundle's schema
(`bundle.schema`); nothing here names a catalogue's column. A derived attribute (Fashion Product Images'
subCategory and masterCategory) is ranked like any other: by probability, here the total probability of
the root labels under each parent (its article types), and each label is its first alternative. When the
most probable root label does not sit under the most probable parent (a rare, unsure image), the tree of
labels disagrees: the root is then marked unsure, and the parent, which holds more probability than any
root label under it, is the answer to file the product by.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import look
from .answers import (
    MAX_TOP_K,
    AttributePrediction,
    CaptionMode,
    CaptionPrediction,
    Finding,
    ImageLook,
    ItemOptions,
    ItemPrediction,
    LabelScore,
    sure_level,
)
from .audit import Auditor
from .backends import Backend, choose_backend, cpu_budget, load_backend, resolve_device
from .bundle_config import BundleConfig
from .bundle_info import BundleInfo
from .caption_vocabulary import CaptionText
from .decode import DecodedImage, DecodeLimits
from .encoding import Encoded
from .fashion import COLOUR_RGB
from .options import BackendError, RuntimeOptions
from .schema import CatalogueSchema, Taxonomy
from .search import Captions, generate
from .thresholds import Thresholds


@dataclass
class CaptionJob:
    """One image's caption to write: its encoder tokens, the labels the caption must agree with."""

    tokens: object  # (h*w, C), in the backend's arrays
    labels: dict[str, str]  # the headline attributes' (schema roles) predicted labels
    mode: CaptionMode


@dataclass
class Classified:
    """What `classify` knows about one image: its attributes, and its caption or what the decoder must write."""

    attributes: dict[str, AttributePrediction]
    caption: CaptionPrediction | None = None  # a template caption, made at once
    caption_job: CaptionJob | None = field(default=None, repr=False)  # a caption the decoder must write
    findings: list[Finding] = field(default_factory=list)  # the catalogue's values against the image
    embedding: np.ndarray | None = field(default=None, repr=False)  # (C,) L2-normalised, when asked for


class EnrichPipeline:
    def __init__(self, bundle: BundleInfo, backend: Backend,
                 caption_beams: int = RuntimeOptions.caption_beams) -> None:
        if not 1 <= caption_beams <= backend.candidates // 2:
            raise BackendError(f"caption beams {caption_beams}: the caption graphs take 1 to {backend.candidates // 2}")
        self.bundle, self.backend, self.caption_beams = bundle, backend, caption_beams
        self.caption_text = CaptionText.read(bundle.path, bundle.config)
        self.vocabulary = self.caption_text.vocabulary
        self.schema = schema = bundle.schema
        self.labels = {a: bundle.vocabs[a].labels for a in schema.classified}
        self.parents = Parents.of(schema, bundle.taxonomy, self.labels)
        self.temperatures = {a: np.float32(backend.temperatures[a]) for a in schema.classified}
        self.multi = set(schema.multi)
        self.auditor = Auditor(schema, self.labels | self.parents.labels, bundle.taxonomy, bundle.lexicon)
        self.use_thresholds(bundle.config.heads)
        colours = self.labels.get(schema.roles.get("colour", ""), [])
        self.colour_names = {c: COLOUR_RGB[c] for c in colours if c in COLOUR_RGB}  # what palettes are named by

    def use_thresholds(self, heads) -> None:
        """Abstain, accept and multi-valued listing thresholds from a HeadsConfig (the bundle's, or new ones)."""
        self.thresholds = self.auditor.thresholds = Thresholds.of(heads, self.multi)

    @classmethod
    def load(cls, path: Path | str, options: RuntimeOptions | None = None,
             config: BundleConfig | None = None) -> EnrichPipeline:
        """The bundle at `path` on the backend and precision `options` choose (`auto`: as `enrich serve`
        would); `config` as in `load_bundle`. On torch, sets its thread count to the options' budget."""
        options = options or RuntimeOptions()
        threads = options.threads or cpu_budget()
        device = resolve_device(options.device)
        choice = choose_backend(options.backend, options.precision, device.split(":")[0], options.compile)
        bundle = BundleInfo.read(path, config)
        if choice.name == "torch":
            import torch

            torch.set_num_threads(threads)
        backend = load_backend(bundle, choice, device, threads, options.compile, options.export_cache)
        return cls(bundle, backend, options.caption_beams)

    @classmethod
    def eager(cls, bundle, channels_last: bool = True) -> EnrichPipeline:
        """A loaded `bundle.Bundle` on eager torch at fp32 (with `channels_last=False`, in the memory layout
        training uses): the reference other backends and precisions are compared with."""
        from .torch_backend import TorchBackend

        return cls(bundle, TorchBackend(bundle, channels_last=channels_last))

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def model_version(self) -> str:
        return self.bundle.model_version

    # --- the stages ---------------------------------------------------------------------------------
    def decode(self, data: bytes, limits: DecodeLimits | None = None) -> tuple[DecodedImage, np.ndarray]:
        """Image bytes -> (what was decoded, model input (3, H, W)); raises ImageDecodeError with a reason."""
        return self.bundle.preprocessing.from_bytes(data, limits)

    def decode_and_look(self, data: bytes, options: ItemOptions,
                        limits: DecodeLimits | None = None) -> tuple[DecodedImage, np.ndarray, ImageLook]:
        """The decode stage: `decode`, then `look` at what the request asked for."""
        decoded, pixels = self.decode(data, limits)
        return decoded, pixels, self.look(decoded, options)

    def look(self, decoded: DecodedImage, options: ItemOptions) -> ImageLook:
        """What `options` ask for of the product's palette, the image's perceptual hash and its colour fingerprint,
        from the decoded pixels (no model); nothing is computed for a request that asks for none."""
        return look.look(decoded.image, self.colour_names, options.palette, options.signature)

    def encode(self, pixels: np.ndarray) -> Encoded:
        """(B, 3, H, W) model input -> one encoder pass on the backend (with the colour features)."""
        return self.backend.encode(pixels)

    def logits(self, encoded: Encoded) -> dict[str, np.ndarray]:
        """Raw (uncalibrated) logits per classified attribute."""
        return self.backend.logits(encoded)

    def probabilities(self, encoded: Encoded) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(calibrated, raw) probabilities per classified attribute: softmax of the logits over each head's
        temperature, and without it; for a multi-valued attribute, each value's sigmoid."""
        logits = self.logits(encoded)
        calibrated = {a: probabilities(logits[a] / t, a in self.multi) for a, t in self.temperatures.items()}
        return calibrated, {a: probabilities(logits[a], a in self.multi) for a in self.temperatures}

    def classify(self, encoded: Encoded, options: list[ItemOptions]) -> list[Classified]:
        """The calibrated heads, the derived attributes and template captions; what the decoder must write."""
        calibrated, raw = self.probabilities(encoded)
        classified = []
        for row, option in enumerate(options):
            attributes = self._attributes(calibrated, raw, row, option.top_k)
            labels = {a: attributes[a].label for a in self.schema.headline}
            item = Classified(attributes)
            if option.catalogue:
                distributions = self.parents.distributions({a: p[row] for a, p in calibrated.items()})
                item.findings = self.auditor.findings(option.catalogue, {a: d.tolist() for a, d in
                                                                          distributions.items()},
                                                      attributes, option.error_prior)
            if option.embedding:
                pooled = encoded.pooled[row]
                item.embedding = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
            if option.caption_mode is CaptionMode.TEMPLATE:
                item.caption = self._template_caption(attributes)
            elif option.caption_mode.needs_decoder:
                item.caption_job = CaptionJob(encoded.tokens[row], labels, option.caption_mode)
            classified.append(item)
        return classified

    def caption(self, jobs: list[CaptionJob]) -> list[CaptionPrediction]:
        """Decoder captions for a batch of jobs (any mix of greedy and beam search), made to agree with the
        labels: the heads are the better judges of gender, colour and article type."""
        captions: list[CaptionPrediction | None] = [None] * len(jobs)
        lexicon = self.bundle.lexicon
        for mode, beams in ((CaptionMode.GENERATE, 1), (CaptionMode.BEAM_SEARCH, self.caption_beams)):
            rows = [i for i, job in enumerate(jobs) if job.mode is mode]
            if not rows:
                continue
            generated = self.generate([jobs[i].tokens for i in rows], beams)
            for i, text, confidence in zip(rows, generated.texts, generated.confidences, strict=True):
                agreed = lexicon.harmonise(text, jobs[i].labels) if lexicon else text
                captions[i] = CaptionPrediction(agreed, mode, confidence, decoded_text=text)
        return captions

    def generate(self, tokens: list, beams: int = 1) -> Captions:
        """The decoder's own captions for some images' encoder tokens (greedy, or beam search with `beams`)."""
        run, vocabulary = self.backend.start_captions(tokens), self.vocabulary
        return self.caption_text.captions(generate(run, vocabulary.start, vocabulary.eos, vocabulary.max_new_tokens,
                                                   beams))

    def answer(self, classified: Classified, caption: CaptionPrediction | None = None) -> ItemPrediction:
        return ItemPrediction(classified.attributes, caption or classified.caption, classified.findings,
                              classified.embedding, sure_level(classified.attributes, self.schema.tree))

    def predict(self, pixels: np.ndarray, options: list[ItemOptions]) -> list[ItemPrediction]:
        """encode -> classify -> caption -> answer for one batch; one options entry per image."""
        classified = self.classify(self.encode(pixels), options)
        jobs = [item.caption_job for item in classified if item.caption_job is not None]
        captions = iter(self.caption(jobs) if jobs else [])
        return [self.answer(item, next(captions) if item.caption_job is not None else None) for item in classified]

    def warm(self, *batch_sizes: int) -> None:
        """The first passes allocate memory and pick kernels: done before a server reports SERVING."""
        height, width = self.bundle.preprocessing.input_size
        for size in batch_sizes:
            self.predict(np.zeros((size, 3, height, width), np.float32), [ItemOptions()] * size)
        self.backend.release_loading_memory()

    # --- helpers --------------------------------------------------------------------------------------
    def _attributes(self, calibrated: dict[str, np.ndarray], raw: dict[str, np.ndarray], row: int,
                    top_k: int) -> dict[str, AttributePrediction]:
        return attribute_predictions({a: p[row] for a, p in calibrated.items()}, {a: p[row] for a, p in raw.items()},
                                     self.labels, self.parents, self.thresholds, top_k)

    def _template_caption(self, attributes: dict[str, AttributePrediction]) -> CaptionPrediction:
        # The product noun names use ("T-shirt"), where the training names taught one.
        lexicon = self.bundle.lexicon
        words = {role: attributes[a].label for role, a in self.schema.roles.items()}
        if lexicon and "product" in words:
            words["product"] = lexicon.nouns.get(words["product"]) or words["product"]
        confidence = float(np.prod([attributes[a].confidence for a in self.schema.headline]))
        return CaptionPrediction(" ".join(words.values()), CaptionMode.TEMPLATE, confidence)


@dataclass(frozen=True)
class Parents:
    """Per derived attribute, its labels, its root attribute and the parent of each root label (by index), to
    add up the probability of the root labels under each parent."""

    labels: dict[str, list[str]]
    root: dict[str, str]  # derived attribute -> the classified attribute it follows from
    index: dict[str, np.ndarray]  # derived attribute -> (root labels,) parent index

    @classmethod
    def of(cls, schema: CatalogueSchema, taxonomy: Taxonomy, vocabs: dict[str, list[str]]) -> Parents:
        labels = {a: taxonomy.parent_labels(a) for a in schema.derived}
        root = {a: schema.root(a) for a in schema.derived}
        index = {a: np.array([labels[a].index(taxonomy.parent(a, label)) for label in vocabs[root[a]]])
                 for a in schema.derived}
        return cls(labels, root, index)

    def parent(self, attribute: str, root_index: int) -> str:
        return self.labels[attribute][int(self.index[attribute][root_index])]

    def mass(self, attribute: str, root: np.ndarray) -> np.ndarray:
        """The probability of each parent label: the total of the root labels under it."""
        return np.bincount(self.index[attribute], weights=root, minlength=len(self.labels[attribute]))

    def distributions(self, probabilities: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One image's classified distributions with the derived ones added."""
        return probabilities | {a: self.mass(a, probabilities[self.root[a]]) for a in self.labels}


def attribute_predictions(calibrated: dict[str, np.ndarray], raw: dict[str, np.ndarray],
                          vocabs: dict[str, list[str]], parents: Parents, thresholds: Thresholds,
                          top_k: int) -> dict[str, AttributePrediction]:
    """One image's attributes from its probabilities per classified attribute (calibrated and raw): each
    ranked best first, its label the first alternative; the derived ones by the total probability of their
    root labels, and the root marked unsure where the tree of labels disagrees (module docstring); a
    multi-valued one's values above their thresholds."""
    top_k = max(1, min(top_k, MAX_TOP_K))
    out: dict[str, AttributePrediction] = {}
    for attribute, labels in vocabs.items():
        prediction = ranked(calibrated[attribute], raw[attribute], labels, top_k)
        prediction.unsure = prediction.confidence < thresholds.abstain.get(attribute, 0.0)
        if attribute in thresholds.value:
            prediction.values = listed_values(attribute, calibrated[attribute], labels, thresholds)
        else:
            prediction.accepted = thresholds.accepted(attribute, prediction.confidence)
        out[attribute] = prediction
    for attribute, labels in parents.labels.items():
        root = parents.root[attribute]
        mass, raw_mass = (parents.mass(attribute, p[root]) for p in (calibrated, raw))
        parent = ranked(mass, raw_mass, labels, top_k)
        parent.derived = True
        parent.unsure = parent.confidence < thresholds.abstain.get(root, 0.0)
        parent.accepted = thresholds.accepted(attribute, parent.confidence)
        if parents.parent(attribute, vocabs[root].index(out[root].label)) != parent.label:
            out[root].unsure = True  # the tree disagrees: the parent is the surer answer
        out[attribute] = parent
    return out


def listed_values(attribute: str, probabilities: np.ndarray, labels: list[str],
                  thresholds: Thresholds) -> list[LabelScore]:
    """A multi-valued attribute's values at or above their listing thresholds, most probable first."""
    ranked_values = ((labels[i], float(probabilities[i])) for i in np.argsort(-probabilities, kind="stable"))
    return [LabelScore(value, p, thresholds.value_accepted(attribute, value, p))
            for value, p in ranked_values if thresholds.listed(attribute, value, p)]


def ranked(probabilities: np.ndarray, uncalibrated: np.ndarray, labels: list[str],
           top_k: int) -> AttributePrediction:
    """The top-k labels, best first (ties: the lower index first); the label is the first of them."""
    indices = np.argsort(-probabilities, kind="stable")[: min(top_k, len(labels))]
    alternatives = [LabelScore(labels[i], float(probabilities[i])) for i in indices.tolist()]
    best = int(indices[0])
    return AttributePrediction(alternatives[0].label, alternatives[0].confidence, alternatives,
                               uncalibrated_confidence=float(uncalibrated[best]))


def probabilities(logits: np.ndarray, multi: bool) -> np.ndarray:
    """A head's logits as probabilities: one distribution (softmax), or each value's own (sigmoid)."""
    return sigmoid(logits) if multi else softmax(logits)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float32)))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Along the last axis, in fp32."""
    shifted = np.exp(logits.astype(np.float32) - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
