"""Exact and near-duplicate images from their answers' signatures: the encoder's embedding finds each image's
nearest neighbours (faiss), and two checks from the pixels confirm them: the colour fingerprint (copies of one
photo keep the product's dominant colour and the background's) and the product hash (the pHash of the product's
own bounding box: copies keep its proportions, print and logo, which two look-alike products do not share). The
photo's perceptual hash tells exact copies; it misses re-framed ones (a few per cent of framing moves many bits).

faiss was the fastest of the nearest-neighbour libraries measured side by side (README, "Audit a
catalogue"): exact search below EXACT_UP_TO rows, HNSW above.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEIGHBOURS = 50  # look-alike products crowd a photo's nearest neighbours: its copies need room among them
EXACT_UP_TO = 50_000
MIN_COSINE = 0.85  # below this, two images are not of the same product
MAX_PRODUCT_HASH_BITS = 12  # of 64: product hashes of a photo's copies mostly differ in fewer
MAX_PRODUCT_DELTA_E = 3.0  # CIELAB distance of the products' dominant colours that a copy stays within
COLOURS_ONLY_PRODUCT_DELTA_E = 2.0  # the same, for a pair without product hashes (answers of older servers)
MAX_BACKGROUND_DELTA_E = 1.0  # and of the backgrounds' (flat, so measured more exactly)


@dataclass
class Signature:
    key: str
    width: int
    height: int
    size_bytes: int
    perceptual_hash: str
    embedding: np.ndarray | None  # L2-normalised
    fingerprint: np.ndarray | None  # CIELAB of the product's dominant colour, then of the background
    product_hash: str = ""  # empty from a server that does not send it: then the colours decide alone

    @classmethod
    def of(cls, answer: dict) -> Signature:
        metadata = answer["metadata"]
        image, signature = metadata["image"], metadata.get("signature", {})
        embedding, fingerprint = signature.get("embedding") or None, signature.get("colourFingerprint") or None
        return cls(answer["requestId"], int(image["width"]), int(image["height"]), int(image["sizeBytes"]),
                   signature.get("perceptualHash", ""), np.asarray(embedding, np.float32) if embedding else None,
                   np.asarray(fingerprint, np.float64) if fingerprint else None, signature.get("productHash", ""))


@dataclass
class Pair:
    a: Signature
    b: Signature
    similarity: float  # the embeddings' cosine
    hamming: int  # perceptual-hash bits that differ

    @property
    def exact(self) -> bool:
        """The same file, as far as the answers tell: same bytes count, size and hash, one picture to the encoder."""
        return (self.hamming == 0 and self.similarity >= 0.9999 and self.a.size_bytes == self.b.size_bytes
                and (self.a.width, self.a.height) == (self.b.width, self.b.height))


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count() if a and b else 64


def _bit_count(words: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    return np.unpackbits(words.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def neighbours(embeddings: np.ndarray, k: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """(cosines, indices) of each row's k nearest other rows."""
    import faiss  # the audit extra

    dimensions = embeddings.shape[1]
    if len(embeddings) <= EXACT_UP_TO:
        index = faiss.IndexFlatIP(dimensions)
    else:
        index = faiss.IndexHNSWFlat(dimensions, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 64
    index.add(embeddings)
    return index.search(embeddings, min(k + 1, len(embeddings)))


def duplicate_pairs(signatures: list[Signature]) -> list[Pair]:
    """Pairs that are the same picture: neighbours by embedding whose colour fingerprints and product hashes agree,
    most similar first."""
    usable = [s for s in signatures if s.embedding is not None and s.fingerprint is not None]
    if len(usable) < 2:
        return []
    cosines, indices = neighbours(np.stack([s.embedding for s in usable]))
    rows = np.repeat(np.arange(len(usable)), indices.shape[1])
    cosines, columns = cosines.reshape(-1), indices.reshape(-1)
    candidate = (columns >= 0) & (columns != rows) & (cosines >= MIN_COSINE)
    rows, columns, cosines = rows[candidate], columns[candidate], cosines[candidate]
    first, second = np.minimum(rows, columns), np.maximum(rows, columns)
    _, unique = np.unique(first * len(usable) + second, return_index=True)  # each pair once
    first, second, cosines = first[unique], second[unique], cosines[unique]
    fingerprints = np.stack([s.fingerprint for s in usable]).reshape(-1, 2, 3)
    product, background = np.linalg.norm(fingerprints[first] - fingerprints[second], axis=2).T
    hashed = np.asarray([bool(s.product_hash) for s in usable])
    hashes = np.asarray([int(s.product_hash or "0", 16) for s in usable], np.uint64)
    both = hashed[first] & hashed[second]
    same = (background <= MAX_BACKGROUND_DELTA_E) & np.where(
        both, (product <= MAX_PRODUCT_DELTA_E) & (_bit_count(hashes[first] ^ hashes[second]) <= MAX_PRODUCT_HASH_BITS),
        product <= COLOURS_ONLY_PRODUCT_DELTA_E)
    pairs = [Pair(usable[i], usable[j], float(cosine),
                  hamming(usable[i].perceptual_hash, usable[j].perceptual_hash))
             for i, j, cosine in zip(first[same], second[same], cosines[same], strict=True)]
    pairs.sort(key=lambda pair: (-pair.similarity, pair.hamming))
    return pairs


def groups(pairs: list[Pair]) -> list[list[Signature]]:
    """Connected groups of duplicates, each with the copy to keep first: the most pixels, then the most bytes."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    members: dict[str, Signature] = {}
    for pair in pairs:
        members[pair.a.key], members[pair.b.key] = pair.a, pair.b
        parent[root(pair.a.key)] = root(pair.b.key)
    grouped: dict[str, list[Signature]] = {}
    for key, signature in members.items():
        grouped.setdefault(root(key), []).append(signature)
    ordered = [sorted(group, key=lambda s: (-s.width * s.height, -s.size_bytes, s.key)) for group in grouped.values()]
    return sorted(ordered, key=lambda group: group[0].key)
