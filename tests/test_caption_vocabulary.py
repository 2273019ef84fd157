"""The caption vocabulary: the tokens of the training names, kept only where its captions are the whole
vocabulary's, and served by every backend."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from enrich_model.backends import available_backends

from .conftest import RANDOM_CAPTION_TOKENS as TOKENS


def encoder_tokens(features: int, count: int = 40) -> torch.Tensor:
    return torch.randn(count, 49, features, generator=torch.Generator().manual_seed(0)) * 3


def names_written(bundle, tokens: torch.Tensor) -> list[str]:
    """What the decoder writes for `tokens` greedily: every token it uses."""
    from enrich_trainer.caption_vocabulary import graph_captions

    return [bundle.tokenizer.decode(list(ids), skip_special_tokens=True)
            for ids, _ in graph_captions(bundle.model.captioner, None, tokens, 0, 0, TOKENS)]


def confine(captioner, kept: list[int]) -> None:
    """Makes the decoder give the tokens outside `kept` no probability at all: their rows of the output head read a
    hidden unit that the final layer norm (GPT-2's ln_f) pins at 1000, with weight -1."""
    with torch.no_grad():
        head = captioner.decoder.get_output_embeddings().weight  # tied with the input embedding
        head[:, 0] = -1.0
        head[kept, 0] = 0.0
        final = captioner.decoder.transformer.ln_f
        final.weight[0], final.bias[0] = 0.0, 1000.0


def test_the_names_vocabulary_is_kept_only_where_it_writes_the_whole_vocabularys_captions(random_bundle_dir: Path):
    from enrich_model.bundle import load_bundle
    from enrich_trainer.caption_vocabulary import choose_vocabulary

    bundle = load_bundle(random_bundle_dir)
    captioner, tokenizer = bundle.model.captioner, bundle.tokenizer
    tokens = encoder_tokens(bundle.config.backbone.num_features)
    # This random decoder spreads its probability widely: over the tokens it writes alone, confidences change.
    kept, report = choose_vocabulary(captioner, tokenizer, names_written(bundle, tokens), tokens, TOKENS)
    assert kept == [] and report["identical_captions"] == 1.0 and report["largest_confidence_change"] > 0.1
    words = sorted(torch.randperm(298, generator=torch.Generator().manual_seed(2))[:60].add(2).tolist())
    confine(captioner, [0, 1, *words])  # a decoder that never writes another token
    names = [" ".join(f"w{word}" for word in words)]
    kept, report = choose_vocabulary(captioner, tokenizer, names, tokens, TOKENS)
    assert kept == [0, 1, *words] and report["tokens"] == 62 < report["of"] == len(tokenizer)
    assert report["identical_captions"] == report["identical_beam_captions"] == 1.0
    assert report["largest_confidence_change"] < 1e-4
    fewer, report = choose_vocabulary(captioner, tokenizer, [" ".join(f"w{word}" for word in words[:30])], tokens,
                                      TOKENS)
    assert fewer == [] and report["identical_captions"] < 1.0  # names that miss tokens it writes: refused


def test_a_restricted_vocabulary_scores_its_tokens_as_the_whole_one_renormalised(random_bundle_dir: Path):
    from enrich_model.bundle import load_bundle
    from enrich_model.graphs import CaptionCross, CaptionDecoder, CaptionStep

    bundle = load_bundle(random_bundle_dir)
    kept = sorted({0, 1, *range(5, 300, 3)})
    tokens = encoder_tokens(bundle.config.backbone.num_features, 6)
    with torch.inference_mode():
        decoder = CaptionDecoder(bundle.model.captioner, kept)
        cross_keys, cross_values = CaptionCross(decoder)(tokens)
        empty, first = cross_keys[:, :, :, :0], torch.zeros(6, 1, dtype=torch.long)  # the start token, at 0
        scores, chosen, *_ = CaptionStep(decoder)(first, first[:1], empty, empty, cross_keys, cross_values)
    expected = torch.log_softmax(first_logits(bundle, tokens)[:, kept], dim=-1).topk(16)
    np.testing.assert_allclose(scores.numpy(), expected.values.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(chosen.numpy(), expected.indices.numpy())  # positions in the caption vocabulary


def first_logits(bundle, tokens: torch.Tensor) -> torch.Tensor:
    """The whole vocabulary's logits for the first caption token, from transformers' own forward."""
    captioner = bundle.model.captioner
    with torch.inference_mode():
        states = captioner.enc_to_dec_proj(tokens) if hasattr(captioner, "enc_to_dec_proj") else tokens
        return captioner.decoder(input_ids=torch.zeros(len(tokens), 1, dtype=torch.long),
                                 encoder_hidden_states=states).logits[:, -1]


@pytest.mark.skipif("openvino" not in available_backends("cpu"), reason="openvino is not installed")
def test_every_backend_serves_a_bundles_caption_vocabulary(random_bundle_dir: Path, tmp_path: Path):
    from enrich_model.bundle import load_bundle
    from enrich_model.bundle_config import BundleConfig
    from enrich_model.options import RuntimeOptions
    from enrich_model.pipeline import EnrichPipeline
    from enrich_trainer.caption_vocabulary import names_vocabulary

    bundle = load_bundle(random_bundle_dir)
    tokens = encoder_tokens(bundle.config.backbone.num_features)
    texts = names_written(bundle, tokens)
    kept = names_vocabulary(bundle.tokenizer, texts, 0, 0)  # every token the greedy captions use
    copy = tmp_path / "bundle"
    shutil.copytree(random_bundle_dir, copy)
    config = BundleConfig.read(copy)
    dataclasses.replace(config, caption=dataclasses.replace(config.caption, vocabulary=kept)).write(copy)
    eager = EnrichPipeline.eager(load_bundle(copy))
    on_openvino = EnrichPipeline.load(copy, RuntimeOptions(device="cpu", backend="openvino", precision="fp32"))
    assert eager.vocabulary.ids == tuple(kept) and on_openvino.backend.choice.name == "openvino"
    assert eager.generate(list(tokens)).texts == texts
    assert on_openvino.generate(list(tokens.numpy())).texts == texts
