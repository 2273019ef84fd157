"""Where the starting weights come from: the hub, a local file, or random (said loudly)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import timm
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from enrich_data.hub import hub_reachable
from enrich_model.bundle_config import RANDOM_WEIGHTS
from enrich_model.model import DecoderSpec, TinyVitEncoder, build_encoder, build_small_decoder
from enrich_model.preprocess import Preprocessing
from enrich_trainer.tokenizer import ensure_pad_token, train_bpe_tokenizer

from .arguments import ModelArguments, UsageError


class WeightsUnavailable(RuntimeError):
    """No pretrained backbone could be had and none was asked for explicitly; the message says what to do."""


def resolve_encoder(args: ModelArguments) -> tuple[TinyVitEncoder, str]:
    """The backbone and where its weights came from: "hub", a file path, or RANDOM_WEIGHTS.

    `auto` never falls back to random weights silently: a randomly initialised backbone needs a recipe
    sized for it (a small network, fine-tuned), so the user must ask for it with --pretrained none."""
    try:
        kwargs = json.loads(args.backbone_kwargs)
    except json.JSONDecodeError as error:
        raise UsageError(f"--backbone_kwargs is not valid JSON ({error.msg} at character {error.pos})") from error
    size = (args.image_size, args.image_size) if args.image_size else None
    if args.pretrained not in ("auto", "hub", "none", RANDOM_WEIGHTS) and not Path(args.pretrained).is_file():
        raise WeightsUnavailable(f"--pretrained {args.pretrained}: no such weights file")
    if args.pretrained not in ("auto", "hub"):
        source = "none" if args.pretrained in ("none", RANDOM_WEIGHTS) else args.pretrained
        try:
            encoder = build_encoder(args.backbone, kwargs, size, source)
        except (RuntimeError, KeyError, TypeError, ValueError) as error:  # unknown model, weights that do not fit
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise UsageError(f"cannot build backbone {args.backbone} {kwargs or ''} from {source}: {reason}") from error
        return encoder, RANDOM_WEIGHTS if source == "none" else source
    reason = "the Hugging Face hub is not reachable from here (or HF_HUB_OFFLINE is set)"
    if hub_reachable():
        try:
            return build_encoder(args.backbone, kwargs, size, "hub"), "hub"
        except Exception as error:  # no such weights, or a changed architecture
            reason = f"{type(error).__name__}: {str(error).strip()[:200]}"
    raise WeightsUnavailable(
        f"no pretrained weights for {args.backbone}: {reason}. Either download them where the hub is reachable "
        f"(python -c \"import timm; timm.create_model('{args.backbone}', pretrained=True)\" fills the hub cache; "
        "or save the model's state_dict with torch.save) and pass --pretrained FILE, or train from random "
        "weights on purpose with --pretrained none (fine-tuned; see the README's offline recipe)"
    )


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
                reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
                raise UsageError(f"cannot load the decoder {name!r}: {reason}") from error
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

