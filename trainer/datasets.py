"""Torch datasets for the two stages: pixels (or cached features) with labels, and encoder tokens with captions."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from enrich_model.data import CatalogueItem
from enrich_model.model import TinyVitEncoder
from enrich_model.preprocess import Preprocessing
from enrich_model.schema import LabelVocab


def model_input(item: CatalogueItem, preprocessing: Preprocessing) -> np.ndarray:
    """The same decode + preprocessing as the server applies to request bytes."""
    return preprocessing(item.read_image(preprocessing.decode_target))


class PixelDataset(Dataset):
    """Catalogue items as model input, decoded on access (the real catalogue does not fit in memory)."""

    def __init__(self, items: list[CatalogueItem], preprocessing: Preprocessing, vocabs: dict[str, LabelVocab],
                 augment: bool = False) -> None:
        self.items, self.preprocessing, self.vocabs, self.augment = items, preprocessing, vocabs, augment

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.items[index]
        pixels = torch.from_numpy(model_input(item, self.preprocessing))
        if self.augment and torch.rand(()) < 0.5:
            pixels = pixels.flip(-1)  # product shots face either way
        labels = {f"label_{a}": torch.tensor(v.encode(item.labels[a])) for a, v in self.vocabs.items()}
        return {"pixel_values": pixels, **labels}


class FeatureDataset(Dataset):
    def __init__(self, pooled: torch.Tensor, items: list[CatalogueItem], vocabs: dict[str, LabelVocab]) -> None:
        self.pooled = pooled
        self.labels = {
            f"label_{a}": torch.tensor([v.encode(item.labels[a]) for item in items]) for a, v in vocabs.items()
        }

    def __len__(self) -> int:
        return len(self.pooled)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pooled": self.pooled[index], **{k: v[index] for k, v in self.labels.items()}}


class CaptionDataset(Dataset):
    def __init__(self, tokens: torch.Tensor, captions: list[str], tokenizer, max_tokens: int) -> None:
        self.tokens = tokens
        eos = tokenizer.eos_token_id
        encoded = tokenizer(captions, add_special_tokens=False, truncation=True, max_length=max_tokens - 1)
        self.targets = [[*ids, eos] for ids in encoded["input_ids"]]  # the decoder start token is prepended

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict:
        return {"tokens": self.tokens[index], "target": self.targets[index]}


def collate_captions(batch: list[dict]) -> dict:
    longest = max(len(b["target"]) for b in batch)
    labels = torch.full((len(batch), longest), -100, dtype=torch.long)
    for row, b in enumerate(batch):
        labels[row, : len(b["target"])] = torch.tensor(b["target"])
    # The decoder reads [start] + labels[:-1]; mask the right padding in that shifted sequence.
    decoder_attention_mask = torch.cat([torch.ones(len(batch), 1, dtype=torch.long),
                                        (labels[:, :-1] != -100).long()], dim=1)
    return {"encoder_outputs": (torch.stack([b["tokens"] for b in batch]),), "labels": labels,
            "decoder_attention_mask": decoder_attention_mask}


@torch.inference_mode()
def extract_features(encoder: TinyVitEncoder, items: list[CatalogueItem], preprocessing: Preprocessing,
                     batch_size: int, desc: str, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    encoder.eval()
    pooled, tokens = [], []
    for start in tqdm(range(0, len(items), batch_size), desc=desc, unit="batch", disable=not progress):
        chunk = items[start:start + batch_size]
        pixels = torch.from_numpy(np.stack([model_input(item, preprocessing) for item in chunk]))
        p, t = encoder.features(pixels.to(encoder.device))
        pooled.append(p.cpu())
        tokens.append(t.cpu())
    return torch.cat(pooled).clone(), torch.cat(tokens).clone()  # clone: leave inference mode

