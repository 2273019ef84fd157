"""Where the starting weights come from: the hub, a local file, or random (said loudly)."""

from __future__ import annotations

import functools
import json
import os
import socket
import urllib.parse
import warnings

import timm
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from enrich_model.model import DecoderSpec, TinyVitEncoder, build_encoder, build_small_decoder
from enrich_model.preprocess import Preprocessing
from enrich_model.tokenizer import ensure_pad_token, train_bpe_tokenizer

from .arguments import ModelArguments


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick connection attempt, so that "auto" does not spend a minute in the hub client's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    url = urllib.parse.urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def resolve_encoder(args: ModelArguments) -> tuple[TinyVitEncoder, str]:
    kwargs = json.loads(args.backbone_kwargs)
    size = (args.image_size, args.image_size) if args.image_size else None
    if args.pretrained != "auto":
        return build_encoder(args.backbone, kwargs, size, args.pretrained), args.pretrained
    try:
        if not hub_reachable():
            raise ConnectionError("the Hugging Face hub is not reachable")
        return build_encoder(args.backbone, kwargs, size, "hub"), "hub"
    except Exception as error:  # offline, no such weights, or a changed architecture
        warnings.warn(
            f"No pretrained weights for {args.backbone} ({type(error).__name__}: {str(error)[:160]}). "
            "The backbone starts from RANDOM weights: expect far lower accuracy than a pretrained model. "
            "Pass --pretrained PATH to use a local weights file.", stacklevel=2,
        )
        return build_encoder(args.backbone, kwargs, size, "none"), "none"


def resolve_decoder(args: ModelArguments, captions: list[str]) -> tuple[GPT2LMHeadModel, object, str]:
    if args.decoder != "small":
        name = "distilgpt2" if args.decoder == "auto" else args.decoder
        try:
            if args.decoder == "auto" and not hub_reachable():
                raise ConnectionError("the Hugging Face hub is not reachable")
            tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(name))
            config = GPT2Config.from_pretrained(name)
            config.add_cross_attention = True  # the image tokens enter through new cross-attention layers
            config.is_decoder = True
            decoder = GPT2LMHeadModel.from_pretrained(name, config=config)
            return decoder, tokenizer, name
        except Exception as error:
            if args.decoder != "auto":
                raise
            warnings.warn(
                f"Pretrained decoder {name} unavailable ({type(error).__name__}); training a small GPT-2 "
                f"({args.decoder_layers}x{args.decoder_width}) and a BPE tokenizer on the captions instead.",
                stacklevel=2,
            )
    tokenizer = train_bpe_tokenizer(captions, vocab_size=args.tokenizer_vocab)
    spec = DecoderSpec(args.decoder_layers, args.decoder_width, args.decoder_heads, args.max_caption_tokens + 2)
    decoder = build_small_decoder(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, spec)
    return decoder, tokenizer, "small"


def preprocessing_for(encoder: TinyVitEncoder) -> Preprocessing:
    data_config = timm.data.resolve_data_config({}, model=encoder.backbone)
    return Preprocessing(
        input_size=tuple(encoder.config.image_size),
        mean=tuple(float(m) for m in data_config["mean"]),
        std=tuple(float(s) for s in data_config["std"]),
        interpolation=data_config.get("interpolation", "bicubic"),
    )

