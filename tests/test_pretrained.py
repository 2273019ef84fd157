"""The pretrained-weights paths, exercised offline with local files: a timm weights file for the backbone
and a saved GPT-2 for the decoder (the same code loads `distilgpt2` when the hub is reachable)."""

from __future__ import annotations

import json
from pathlib import Path

import timm
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from enrich_model.bundle import load_bundle
from enrich_trainer.arguments import ModelArguments
from enrich_trainer.tokenizer import train_bpe_tokenizer
from enrich_trainer.train import train
from enrich_trainer.weights import resolve_decoder, resolve_encoder

from .conftest import TINY_BACKBONE, tiny_training_args


def write_backbone_weights(path: Path) -> dict[str, torch.Tensor]:
    source = timm.create_model("tiny_vit_5m_224", pretrained=False, **json.loads(TINY_BACKBONE))
    torch.save(source.state_dict(), path)  # as timm's checkpoints are: classifier included
    return {k: v for k, v in source.state_dict().items() if not k.startswith("head.fc")}


def write_gpt2(path: Path) -> Path:
    tokenizer = train_bpe_tokenizer(["Nike Men Black Running Shoes", "Titan Women Silver Watch"] * 20, 300)
    tokenizer.pad_token = None  # like GPT-2's own tokenizer, which has none
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=32, n_head=2, n_positions=32,
                               bos_token_id=0, eos_token_id=0)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_backbone_from_a_local_weights_file(tmp_path: Path):
    expected = write_backbone_weights(tmp_path / "tiny_vit.pth")
    encoder, source = resolve_encoder(ModelArguments(backbone_kwargs=TINY_BACKBONE, image_size=32,
                                                     pretrained=str(tmp_path / "tiny_vit.pth")))
    assert source == str(tmp_path / "tiny_vit.pth")
    loaded = encoder.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items() if k in loaded)
    assert sum(k in loaded for k in expected) > 50


def test_decoder_from_a_saved_gpt2_gains_cross_attention(tmp_path: Path):
    decoder, tokenizer, name = resolve_decoder(ModelArguments(decoder=str(write_gpt2(tmp_path / "gpt2"))), [])
    assert name == str(tmp_path / "gpt2")
    assert decoder.config.add_cross_attention and hasattr(decoder.transformer.h[0], "crossattention")
    assert tokenizer.pad_token_id == tokenizer.eos_token_id


def test_frozen_training_with_local_pretrained_parts(catalogue_dir: Path, tmp_path: Path):
    write_backbone_weights(tmp_path / "tiny_vit.pth")
    out = tmp_path / "bundle"
    bundle = train(*tiny_training_args(catalogue_dir, out, pretrained=str(tmp_path / "tiny_vit.pth"),
                                       decoder=str(write_gpt2(tmp_path / "gpt2")), backbone_mode="frozen"))
    assert bundle.config.backbone.weights == str(tmp_path / "tiny_vit.pth")
    assert bundle.config.training["decoder"] == str(tmp_path / "gpt2")
    assert load_bundle(out).model_version == bundle.model_version
