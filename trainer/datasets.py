"""Torch datasets for the two stages: pixels (or cached features) with labels, and encoder tokens with captions."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from enrich_data.catalogue import CatalogueItem
from enrich_model.colour import ColourFeatures
from enrich_model.encoding import Encoded, encode
from enrich_model.model import TinyVitEncoder
from enrich_model.preprocess import Preprocessing
from enrich_model.schema import LabelVocab

from .augment import Augment, PhotoBox


def model_input_and_box(item: CatalogueItem, preprocessing: Preprocessing) -> tuple[np.ndarray, PhotoBox]:
    """The item's bytes through the server's own decode + preprocessing (`Preprocessing.from_bytes`), and
    where the photo lies in the result (inside the letterbox padding): for augmentation."""
    decoded, pixels = preprocessing.from_bytes(item.read_bytes())
    return pixels, preprocessing.photo_box(*decoded.image.size)


class PixelDataset(Dataset):
    """Catalogue items as model input, decoded on access; kept in memory when they fit (small inputs), so
    later epochs skip decoding. The cache lives in the process that reads: with loader workers (GPU
    machines) each worker fills its own and loses it at the epoch's end. Augmentation, when given, applies
    to every access."""

    def __init__(self, items: list[CatalogueItem], preprocessing: Preprocessing, vocabs: dict[str, LabelVocab],
                 augment: Augment | None = None, cache_bytes: int = 2 << 30) -> None:
        self.items, self.preprocessing, self.vocabs, self.augment = items, preprocessing, vocabs, augment
        height, width = preprocessing.input_size
        self.cache: dict[int, tuple[torch.Tensor, PhotoBox]] | None = \
            {} if len(items) * 12 * height * width <= cache_bytes else None
        self.labels = label_tensors(items, vocabs)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        cached = self.cache.get(index) if self.cache is not None else None
        if cached is None:
            array, box = model_input_and_box(self.items[index], self.preprocessing)
            cached = torch.from_numpy(array), box
            if self.cache is not None:
                self.cache[index] = cached
        pixels, box = cached
        if self.augment is not None:
            pixels = self.augment(pixels, box)
        return {"pixel_values": pixels, **{k: v[index] for k, v in self.labels.items()}}


class FeatureDataset(Dataset):
    """Features computed once by a frozen backbone (and the colour features of the same pixels)."""

    def __init__(self, features: Encoded, items: list[CatalogueItem], vocabs: dict[str, LabelVocab]) -> None:
        self.features = features
        self.labels = label_tensors(items, vocabs)

    def __len__(self) -> int:
        return len(self.features.pooled)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = {"pooled": self.features.pooled[index], **{k: v[index] for k, v in self.labels.items()}}
        if self.features.colour is not None:
            row["colour"] = self.features.colour[index]
        return row


def label_tensors(items: list[CatalogueItem], vocabs: dict[str, LabelVocab]) -> dict[str, torch.Tensor]:
    """label_<attribute> -> class indices (-100 where missing or not in the vocabulary); for a multi-valued
    attribute, (N, values) of 0/1 per value (an empty cell: none of them)."""
    out = {}
    for attribute, vocab in vocabs.items():
        if not vocab.multi:
            out[f"label_{attribute}"] = torch.tensor([vocab.encode(item.labels[attribute]) for item in items])
            continue
        rows = torch.zeros(len(items), len(vocab))
        for n, item in enumerate(items):
            cell = item.labels.get(attribute) or ""
            rows[n, vocab.encode_values(v.strip() for v in cell.split(vocab.separator))] = 1.0
        out[f"label_{attribute}"] = rows
    return out


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
def extract_features(encoder: TinyVitEncoder, colour: ColourFeatures | None, items: list[CatalogueItem],
                     preprocessing: Preprocessing, batch_size: int, desc: str, progress: bool,
                     augment: Augment | None = None) -> Encoded:
    """One pass of the backbone as it is now over `items` (as they are, or through `augment`)."""
    encoder.eval()
    pooled, tokens, colours = [], [], []
    for start in tqdm(range(0, len(items), batch_size), desc=desc, unit="batch", disable=not progress):
        chunk = items[start:start + batch_size]
        inputs = [model_input_and_box(item, preprocessing) for item in chunk]
        pixels = torch.from_numpy(np.stack([array for array, _ in inputs]))
        if augment is not None:
            pixels = torch.stack([augment(image, box) for image, (_, box) in zip(pixels, inputs, strict=True)])
        encoded = encode(encoder.features, colour,
                         pixels.to(encoder.device))
        pooled.append(encoded.pooled.float().cpu())
        tokens.append(encoded.tokens.float().cpu())
        if encoded.colour is not None:
            colours.append(encoded.colour.cpu())
    # clone: leave inference mode, so the tensors can feed training
    return Encoded(torch.cat(pooled).clone(), torch.cat(tokens).clone(),
                    torch.cat(colours).clone() if colours else None)
