"""The caption vocabulary: the tokens the training names use, which the serving graphs score instead of the
tokenizer's whole vocabulary (a pretrained GPT-2 has 50,257 tokens; a catalogue's names use a few thousand).

It is kept only where, on the validation images, it writes the whole vocabulary's captions token for token,
greedy and with the server's beam search. Probabilities are then normalised over the names' tokens, of which a
trained decoder leaves little outside: a caption's confidence moves a little (the largest change is recorded,
and must stay within CONFIDENCE_TOLERANCE)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase, VisionEncoderDecoderModel

from enrich_model.graphs import CANDIDATES, CaptionCross, CaptionDecoder, CaptionStep
from enrich_model.options import RuntimeOptions
from enrich_model.search import generate
from enrich_model.torch_backend import TorchRun

log = logging.getLogger("enrich.train")

CHECKED_IMAGES = 512  # validation images whose captions must come out the same
CONFIDENCE_TOLERANCE = 0.1  # largest relative change of a greedy caption's confidence
BATCH = 64


def names_vocabulary(tokenizer: PreTrainedTokenizerBase, names: Sequence[str], start: int, eos: int) -> list[int]:
    """The token ids of the names as the tokenizer encodes them (as training does), and the special tokens."""
    used = {token for ids in tokenizer(list(names))["input_ids"] for token in ids}
    return sorted(used | set(tokenizer.all_special_ids) | {start, eos})


@torch.inference_mode()
def graph_captions(captioner: VisionEncoderDecoderModel, vocabulary: Sequence[int] | None, tokens: torch.Tensor,
                   start: int, eos: int, max_new_tokens: int, beams: int = 1) -> list[tuple[tuple[int, ...], float]]:
    """Captions of encoder tokens through the serving graphs over `vocabulary` (greedy, or beam search): per image,
    the tokenizer ids and the mean log-probability of the tokens."""
    ids = list(vocabulary) if vocabulary is not None else None
    position = (lambda token: ids.index(token)) if ids else (lambda token: token)
    decoder = CaptionDecoder(captioner, ids)
    cross, step = CaptionCross(decoder), CaptionStep(decoder)
    device = next(captioner.parameters()).device
    out = []
    for chunk in tokens.split(BATCH):
        run = TorchRun(step, *cross(chunk.to(device).float()))
        generated = generate(run, position(start), position(eos), max_new_tokens, beams)
        out += [(tuple(ids[t] if ids else t for t in row), float(np.mean(scores)))
                for row, scores in zip(generated.tokens, generated.log_probs, strict=True)]
    return out


def choose_vocabulary(captioner: VisionEncoderDecoderModel, tokenizer: PreTrainedTokenizerBase, names: Sequence[str],
                      validation_tokens: torch.Tensor, max_new_tokens: int) -> tuple[list[int], dict]:
    """The names' vocabulary when its captions of the validation images are the whole vocabulary's, else [] (the
    whole one); and what was checked, for enrich.json's training report."""
    generation = captioner.generation_config
    start, eos = int(generation.decoder_start_token_id), int(generation.eos_token_id)
    vocabulary = names_vocabulary(tokenizer, names, start, eos)
    report = {"tokens": len(tokenizer), "of": len(tokenizer), "names_tokens": len(vocabulary)}
    if not CANDIDATES <= len(vocabulary) < len(tokenizer):  # nothing to gain, or too few for beam search's candidates
        log.info("caption vocabulary: the whole one (the names use %d of its %d tokens)", len(vocabulary),
                 len(tokenizer))
        return [], report
    checked = validation_tokens[:CHECKED_IMAGES]
    identical, drift = {}, 0.0
    for beams in (1, RuntimeOptions.caption_beams):
        whole = graph_captions(captioner, None, checked, start, eos, max_new_tokens, beams)
        ours = graph_captions(captioner, vocabulary, checked, start, eos, max_new_tokens, beams)
        identical[beams] = float(np.mean([a[0] == b[0] for a, b in zip(ours, whole, strict=True)])) if whole else 1.0
        if beams == 1:  # exp(mean log-probability) is close to the confidence: its change is exp(difference) - 1
            drift = max((abs(math.expm1(a[1] - b[1])) for a, b in zip(ours, whole, strict=True)), default=0.0)
    kept = min(identical.values()) == 1.0 and drift <= CONFIDENCE_TOLERANCE
    report |= {"tokens": len(vocabulary) if kept else len(tokenizer), "validation_images": len(checked),
               "identical_captions": identical[1], "identical_beam_captions": identical[RuntimeOptions.caption_beams],
               "largest_confidence_change": round(drift, 6)}
    log.info("caption vocabulary: %s (the names use %d of %d tokens; on %d validation images, captions identical: "
             "greedy %.1f%%, beam search %.1f%%; confidences within %.2g%%)",
             "the names' tokens" if kept else "the whole one", len(vocabulary), len(tokenizer), len(checked),
             100 * identical[1], 100 * identical[RuntimeOptions.caption_beams], 100 * drift)
    return (vocabulary if kept else []), report
