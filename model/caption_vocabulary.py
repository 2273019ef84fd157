"""The tokens a bundle's decoder writes captions with, read from the bundle alone (torch-free).

The caption graphs (`graphs.py`) score a caption vocabulary: the tokens the training catalogue's names use
(`enrich.json` caption.vocabulary, chosen and parity-checked by the trainer) or, when none is recorded, every
token of the tokenizer. Token indices in the graphs and in `search.py` are positions in that vocabulary; this
module maps them back to the tokenizer's ids and to text.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .bundle_config import CAPTIONER_DIR, BundleConfig
from .search import Captions, Generated

TOKENIZER_FILE = Path("tokenizer") / "tokenizer.json"


@dataclass(frozen=True)
class CaptionVocabulary:
    ids: tuple[int, ...] | None  # position in the caption vocabulary -> tokenizer id; None: the tokenizer's own
    start: int  # the decoder's start token, as a position in the caption vocabulary
    eos: int
    special: frozenset[int]  # positions of the tokenizer's special tokens (start, end, padding): never text
    max_new_tokens: int  # longest caption, in tokens

    @classmethod
    def read(cls, path: Path, config: BundleConfig, tokenizer=None) -> CaptionVocabulary:
        """The bundle's caption vocabulary; `tokenizer`: its tokenizer when loaded already."""
        generation = json.loads((path / CAPTIONER_DIR / "generation_config.json").read_text())
        decoder = json.loads((path / CAPTIONER_DIR / "config.json").read_text()).get("decoder", {})
        positions = decoder.get("n_positions") or decoder.get("max_position_embeddings") or math.inf
        added = (tokenizer or load_tokenizer(path)).get_added_tokens_decoder()
        special = {token_id for token_id, token in added.items() if token.special}
        ids = cls.ids_of(config)
        index = {token_id: n for n, token_id in enumerate(ids)} if ids else None

        def position(token_id: int) -> int:
            return index[token_id] if index is not None else token_id

        return cls(ids, position(generation["decoder_start_token_id"]), position(generation["eos_token_id"]),
                   frozenset(position(t) for t in special if index is None or t in index),
                   int(min(generation.get("max_new_tokens") or config.caption.max_new_tokens, positions)))

    @staticmethod
    def ids_of(config: BundleConfig) -> tuple[int, ...] | None:
        """The tokenizer ids the caption graphs score, in order; None: every one (enrich.json records none)."""
        return tuple(config.caption.vocabulary) or None

    def token_ids(self, positions: list[int]) -> list[int]:
        return list(positions) if self.ids is None else [self.ids[p] for p in positions]


def load_tokenizer(path: Path):
    """The bundle's caption tokenizer, for the `tokenizers` library."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path / TOKENIZER_FILE))


class CaptionText:
    """Generated tokens -> captions: text (special tokens left out), confidence and length."""

    def __init__(self, tokenizer, vocabulary: CaptionVocabulary) -> None:
        self.tokenizer, self.vocabulary = tokenizer, vocabulary

    @classmethod
    def read(cls, path: Path, config: BundleConfig) -> CaptionText:
        tokenizer = load_tokenizer(path)
        return cls(tokenizer, CaptionVocabulary.read(path, config, tokenizer))

    def captions(self, generated: Generated) -> Captions:
        special = self.vocabulary.special
        texts = [self.tokenizer.decode(self.vocabulary.token_ids(row), skip_special_tokens=True).strip()
                 for row in generated.tokens]
        counts = [sum(token not in special for token in row) for row in generated.tokens]
        return Captions(texts, generated.confidences(special), counts)

