"""A bundle with random weights at any shapes: what `enrich bench --shapes real` measures the real recipe's cost
on (architecture, not weights, sets the cost) and what the export's parity tests compare backends with.

Labels come from the synthetic catalogue's taxonomy; a real-size vocabulary comes from a word-level tokenizer
of numbered words, since no GPT-2 tokenizer can be had offline and only its size matters here.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from enrich_data.synth import ARTICLES
from enrich_model.bundle import build_heads, save_weights
from enrich_model.bundle_config import BundleConfig, HeadsConfig
from enrich_model.fashion import BASE_COLOURS, FASHION_SCHEMA, GENDERS, SEASONS, USAGES
from enrich_model.model import DecoderSpec, EnrichModel, build_captioner, build_encoder, build_small_decoder
from enrich_model.schema import LabelVocab, Taxonomy

from .tokenizer import BOS_EOS, PAD
from .weights import preprocessing_for

# The README's real-data recipe: tiny_vit_21m_224 at 224 px and distilgpt2 (6 x 768, 12 heads, 50,257 tokens),
# with a caption vocabulary of 6,000 of those tokens: an assumed size for the tokens a catalogue's product names
# use (the trainer measures the real one, `enrich info` prints it).
REAL_SHAPES = dict(backbone="tiny_vit_21m_224", backbone_kwargs={}, image_size=224,
                   decoder=DecoderSpec(n_layer=6, n_embd=768, n_head=12, n_positions=1024), vocab_size=50257,
                   caption_vocabulary=6000)


def numbered_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """`vocab_size` tokens: GPT-2's boundary token, a pad token and numbered words."""
    vocab = {BOS_EOS: 0, PAD: 1} | {f"w{i}": i for i in range(2, vocab_size)}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token=PAD))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=word_level, bos_token=BOS_EOS, eos_token=BOS_EOS,
                                   pad_token=PAD, unk_token=None)


def random_bundle(out, backbone: str, backbone_kwargs: dict, image_size: int, decoder: DecoderSpec,
                  vocab_size: int, max_new_tokens: int = 20, colour_bins: int = 8, colour_levels: int = 16,
                  seed: int = 0, caption_vocabulary: int = 0) -> BundleConfig:
    """Writes a bundle of random weights to `out` and returns its config. `caption_vocabulary`: the size of a
    caption vocabulary drawn at random from the tokenizer's (as a catalogue's names would use a share of it);
    0: the whole vocabulary."""
    torch.manual_seed(seed)
    encoder = build_encoder(backbone, backbone_kwargs, (image_size, image_size))
    tokenizer = numbered_tokenizer(vocab_size)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    small = build_small_decoder(vocab_size, eos, eos, decoder)
    captioner = build_captioner(encoder, small, eos, eos, pad, max_new_tokens)
    articles = sorted(ARTICLES)
    vocabs = {"gender": list(GENDERS), "baseColour": list(BASE_COLOURS), "season": list(SEASONS),
              "usage": list(USAGES), "articleType": articles}
    taxonomy = Taxonomy({"subCategory": {article: ARTICLES[article][0] for article in articles},
                         "masterCategory": {article: ARTICLES[article][1] for article in articles}})
    preprocessing = preprocessing_for(encoder)
    heads_config = HeadsConfig(colour_bins=colour_bins, colour_levels=colour_levels,
                               colour_attributes=[FASHION_SCHEMA.roles["colour"]])
    heads, colour = build_heads(heads_config, encoder.config.hidden_size, {a: len(v) for a, v in vocabs.items()},
                                preprocessing)
    heads.eval()
    with torch.no_grad():
        heads.norm.running_var.fill_(1e-4)  # a random backbone's features barely vary: give the heads a spread
        heads.temperature.uniform_(0.8, 1.5)
        # At GPT-2's initial scale, the tied LM head echoes its input, so the decoder's first word is EOS and every
        # caption is empty (and free). Larger weights make it write whole captions, as a trained one does.
        projection = getattr(captioner, "enc_to_dec_proj", torch.nn.Identity())
        for parameter in [*small.parameters(), *projection.parameters()]:
            if parameter.dim() == 2:
                parameter.mul_(10)
    model = EnrichModel(captioner, heads, colour).eval()
    kept = sorted({eos, pad, *torch.randperm(vocab_size)[:caption_vocabulary].tolist()}) if caption_vocabulary else []
    config = save_weights(out, model, heads_config, tokenizer, preprocessing, FASHION_SCHEMA,
                          {a: LabelVocab(a, labels) for a, labels in vocabs.items()}, taxonomy, name="random",
                          caption_vocabulary=kept)
    config.write(out)
    return config
