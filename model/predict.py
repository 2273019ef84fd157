"""Inference on a batch: preprocessed pixels -> one encoder pass -> heads and captioner -> predictions.

Used by the server (behind its batcher) and by the trainer to score the test split, so the metrics in
a bundle are measured through the same code that serves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import torch

from .backends import EncoderBackend
from .bundle import Bundle
from .schema import CLASSIFIED_ATTRIBUTES, DERIVED_ATTRIBUTES

CAPTION_LABELS = ("gender", "baseColour", "articleType")  # what a caption must agree with

MAX_TOP_K = 20


class CaptionMode(Enum):
    GENERATE = "generate"  # the decoder writes the name (greedy)
    BEAM_SEARCH = "beam_search"  # the decoder with beam search: slower, often better
    TEMPLATE = "template"  # composed from the predicted attributes: instant
    SKIP = "skip"


@dataclass(frozen=True)
class ItemOptions:
    top_k: int = 3
    caption: CaptionMode = CaptionMode.GENERATE


@dataclass
class LabelScore:
    label: str
    confidence: float


@dataclass
class AttributePrediction:
    label: str
    confidence: float  # calibrated (temperature fitted on the validation split)
    alternatives: list[LabelScore]  # top-k, best first, including the label itself
    derived: bool = False
    unsure: bool = False  # confidence below the bundle's abstain threshold for this attribute


@dataclass
class CaptionPrediction:
    text: str  # agrees with the predicted gender, baseColour and articleType
    mode: CaptionMode
    confidence: float
    decoded_text: str = ""  # the decoder's own words, before agreement with the labels


@dataclass
class ItemPrediction:
    attributes: dict[str, AttributePrediction]
    caption: CaptionPrediction | None


@dataclass
class BatchTimings:
    encoder_ms: float = 0.0
    heads_ms: float = 0.0
    caption_ms: float = 0.0
    batch_size: int = 0  # images in the encoder batch
    caption_batch_size: int = 0  # captions generated together (the caption stage batches on its own)


@dataclass
class BatchResult:
    items: list[ItemPrediction]
    timings: BatchTimings = field(default_factory=BatchTimings)
    logits: dict[str, torch.Tensor] = field(default_factory=dict)  # raw, per classified attribute (evaluation)
    tokens: torch.Tensor | None = None  # (B, h*w, C): the encoder's tokens, for the caption stage


@dataclass
class CaptionJob:
    """One image's caption to generate: its encoder tokens, the labels the caption must agree with."""

    tokens: torch.Tensor  # (h*w, C)
    labels: dict[str, str]
    mode: CaptionMode


def needs_decoder(mode: CaptionMode) -> bool:
    return mode in (CaptionMode.GENERATE, CaptionMode.BEAM_SEARCH)


class Predictor:
    """Two stages over one encoder pass: `classify` (encoder, heads, template captions) and `caption`
    (the autoregressive decoder, batched on its own). `predict` runs both, for callers without a pipeline."""

    def __init__(self, bundle: Bundle, caption_beams: int = 3, encoder: EncoderBackend | None = None) -> None:
        self.bundle = bundle
        self.model = bundle.model.eval()
        self.device = next(self.model.parameters()).device
        self.encoder = encoder
        self.caption_beams = caption_beams
        self.lexicon = bundle.lexicon
        self.abstain = bundle.abstain_thresholds
        taxonomy, articles = bundle.taxonomy, bundle.vocabs["articleType"]
        # articleType index -> parent index, for marginalising article probabilities onto parents.
        self.parent_labels: dict[str, list[str]] = {}
        self.parent_index: dict[str, torch.Tensor] = {}
        for attribute in DERIVED_ATTRIBUTES:
            labels = taxonomy.parent_labels(attribute)
            self.parent_labels[attribute] = labels
            self.parent_index[attribute] = torch.tensor(
                [labels.index(taxonomy.parent(attribute, a)) for a in articles.labels]
            )

    def predict(self, pixels: np.ndarray | torch.Tensor, options: list[ItemOptions]) -> BatchResult:
        """pixels: (B, 3, H, W) from `bundle.preprocessing`; one options entry per image."""
        result = self.classify(pixels, options)
        rows = [i for i, opt in enumerate(options) if needs_decoder(opt.caption)]
        if rows:
            start = time.perf_counter()
            jobs = [self.caption_job(result, i, options[i]) for i in rows]
            for i, caption in zip(rows, self.caption(jobs), strict=True):
                result.items[i].caption = caption
            result.timings.caption_ms += (time.perf_counter() - start) * 1000
            result.timings.caption_batch_size = len(rows)
        return result

    def classify(self, pixels: np.ndarray | torch.Tensor, options: list[ItemOptions]) -> BatchResult:
        """Encoder pass, heads and template captions; decoder captions are left for `caption`."""
        timings = BatchTimings(batch_size=len(options))
        start = time.perf_counter()
        batch = torch.as_tensor(pixels)
        if self.encoder is not None:
            pooled, tokens, colour = self.encoder.encode(batch)
        else:
            pooled, tokens, colour = self.model.encode(batch.to(self.device))
        timings.encoder_ms = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        logits = self.model.logits(pooled.to(self.device), None if colour is None else colour.to(self.device))
        probabilities = self.model.heads.probabilities(logits)
        items = [self._attributes(probabilities, i, opt.top_k) for i, opt in enumerate(options)]
        results = [ItemPrediction(attrs, self._template_caption(attrs) if opt.caption is CaptionMode.TEMPLATE
                                  else None) for attrs, opt in zip(items, options, strict=True)]
        timings.heads_ms = (time.perf_counter() - start) * 1000
        return BatchResult(results, timings, logits, tokens)

    def caption_job(self, result: BatchResult, row: int, options: ItemOptions) -> CaptionJob:
        attributes = result.items[row].attributes
        return CaptionJob(result.tokens[row], {a: attributes[a].label for a in CAPTION_LABELS}, options.caption)

    def caption(self, jobs: list[CaptionJob]) -> list[CaptionPrediction]:
        """Decoder captions for a batch of jobs (any mix of greedy and beam search)."""
        captions: list[CaptionPrediction | None] = [None] * len(jobs)
        for mode, beams in ((CaptionMode.GENERATE, 1), (CaptionMode.BEAM_SEARCH, self.caption_beams)):
            rows = [i for i, job in enumerate(jobs) if job.mode is mode]
            if not rows:
                continue
            tokens = torch.stack([jobs[i].tokens for i in rows]).to(self.device)
            generated = self.model.caption(tokens, self.bundle.tokenizer, num_beams=beams)
            for i, text, confidence in zip(rows, generated.texts, generated.confidences, strict=True):
                # The heads are the better judges of these three; the caption is made to agree with them.
                agreed = self.lexicon.harmonise(text, jobs[i].labels) if self.lexicon else text
                captions[i] = CaptionPrediction(agreed, mode, confidence, decoded_text=text)
        return captions

    def _attributes(self, probabilities: dict[str, torch.Tensor], row: int, top_k: int) -> dict:
        top_k = max(1, min(top_k, MAX_TOP_K))
        out: dict[str, AttributePrediction] = {}
        for attribute in CLASSIFIED_ATTRIBUTES:
            out[attribute] = _ranked(probabilities[attribute][row], self.bundle.vocabs[attribute].labels, top_k)
            out[attribute].unsure = out[attribute].confidence < self.abstain.get(attribute, 0.0)
        # Parents follow the predicted articleType (consistent by construction); their confidence is
        # the probability mass of all articleTypes under that parent.
        article = out["articleType"].label
        article_probs = probabilities["articleType"][row]
        for attribute in DERIVED_ATTRIBUTES:
            labels = self.parent_labels[attribute]
            mass = torch.zeros(len(labels)).index_add_(0, self.parent_index[attribute], article_probs.cpu())
            ranked = _ranked(mass, labels, top_k)
            label = self.bundle.taxonomy.parent(attribute, article)
            ranked.label, ranked.confidence = label, float(mass[labels.index(label)])
            ranked.derived = True
            ranked.unsure = out["articleType"].unsure
            out[attribute] = ranked
        return out

    def _template_caption(self, attrs: dict[str, AttributePrediction]) -> CaptionPrediction:
        # The product noun names use ("T-shirt"), where the training names taught one.
        noun = self.lexicon.nouns.get(attrs["articleType"].label) if self.lexicon else None
        text = " ".join([attrs["gender"].label, attrs["baseColour"].label, noun or attrs["articleType"].label])
        confidence = float(np.prod([attrs[a].confidence for a in CAPTION_LABELS]))
        return CaptionPrediction(text, CaptionMode.TEMPLATE, confidence)


def _ranked(probs: torch.Tensor, labels: list[str], top_k: int) -> AttributePrediction:
    values, indices = probs.float().cpu().topk(min(top_k, len(labels)))
    alternatives = [LabelScore(labels[i], float(v)) for v, i in zip(values.tolist(), indices.tolist(), strict=True)]
    return AttributePrediction(alternatives[0].label, alternatives[0].confidence, alternatives)
