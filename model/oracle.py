"""transformers' own `generate` over a bundle's captioner: the oracle every backend's captions are checked against
(tests, `enrich bench`). Serving never calls it: every backend runs the caption graphs and `search.py`."""

from __future__ import annotations

import math

import torch
from transformers.modeling_outputs import BaseModelOutput

from .bundle import Bundle
from .search import Captions


@torch.inference_mode()
def generate_captions(bundle: Bundle, tokens: torch.Tensor, beams: int = 1) -> Captions:
    """Captions of encoder tokens (B, N, C) through `generate` (the whole vocabulary), with their confidence as
    the serving pipeline reports it: the geometric mean of the text tokens' probabilities."""
    captioner, tokenizer = bundle.model.captioner, bundle.tokenizer
    tokens = tokens.to(next(captioner.parameters()).device)
    generated = captioner.generate(
        encoder_outputs=BaseModelOutput(last_hidden_state=tokens),
        # generate() extends this mask step by step; without it GPT-2 warns about padding.
        decoder_attention_mask=torch.ones(len(tokens), 1, dtype=torch.long, device=tokens.device),
        num_beams=beams, output_scores=True, return_dict_in_generate=True)
    sequences = generated.sequences
    scores = captioner.compute_transition_scores(sequences, generated.scores, getattr(generated, "beam_indices", None),
                                                 normalize_logits=True)
    special = set(tokenizer.all_special_ids)
    texts, confidences, counts = [], [], []
    for row, row_scores in zip(sequences[:, 1:], scores, strict=True):
        keep = [i for i, token in enumerate(row.tolist()) if token not in special]
        chosen = row_scores[: len(row)][[*keep]] if keep else row_scores[:0]
        finite = chosen[torch.isfinite(chosen)]
        confidences.append(math.exp(float(finite.mean())) if len(finite) else 0.0)
        texts.append(tokenizer.decode(row, skip_special_tokens=True).strip())
        counts.append(len(keep))
    return Captions(texts, confidences, counts)
