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
import pyarrow as pa

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
    """(cosines, indices) of each row's k nearest other rows, searched exactly (all rows in memory)."""
    import faiss  # the audit extra

    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    return index.search(embeddings, min(k + 1, len(embeddings)))


@dataclass
class Signatures:
    """The signatures of many answers as arrays, without their embeddings (row i: the i-th answer that has an
    embedding and a colour fingerprint)."""

    keys: pa.Array
    width: np.ndarray
    height: np.ndarray
    size_bytes: np.ndarray
    perceptual_hash: pa.Array
    fingerprint: np.ndarray  # (n, 6)
    product_hash: np.ndarray  # uint64
    hashed: np.ndarray  # bool: the answer had a product hash

    @classmethod
    def of(cls, signatures: list[Signature]) -> Signatures:
        return cls(pa.array([s.key for s in signatures], pa.string()),
                   np.asarray([s.width for s in signatures]), np.asarray([s.height for s in signatures]),
                   np.asarray([s.size_bytes for s in signatures]),
                   pa.array([s.perceptual_hash for s in signatures], pa.string()),
                   np.stack([s.fingerprint for s in signatures]) if signatures else np.zeros((0, 6)),
                   np.asarray([int(s.product_hash or "0", 16) for s in signatures], np.uint64),
                   np.asarray([bool(s.product_hash) for s in signatures], bool))

    @classmethod
    def concat(cls, parts: list[Signatures]) -> Signatures:
        return cls(pa.concat_arrays([p.keys for p in parts]) if parts else pa.array([], pa.string()),
                   *(np.concatenate([getattr(p, name) for p in parts]) if parts else np.zeros(0)
                     for name in ("width", "height", "size_bytes")),
                   pa.concat_arrays([p.perceptual_hash for p in parts]) if parts else pa.array([], pa.string()),
                   np.concatenate([p.fingerprint for p in parts]) if parts else np.zeros((0, 6)),
                   np.concatenate([p.product_hash for p in parts]) if parts else np.zeros(0, np.uint64),
                   np.concatenate([p.hashed for p in parts]) if parts else np.zeros(0, bool))

    def __len__(self) -> int:
        return len(self.width)

    def signature(self, row: int) -> Signature:
        """Row `row` as a Signature (without its embedding)."""
        product = int(self.product_hash[row])
        return Signature(self.keys[row].as_py(), int(self.width[row]), int(self.height[row]),
                         int(self.size_bytes[row]), self.perceptual_hash[row].as_py(), None, self.fingerprint[row],
                         f"{product:016x}" if self.hashed[row] else "")


def duplicate_pairs(signatures: list[Signature]) -> list[Pair]:
    """Pairs that are the same picture: neighbours by embedding whose colour fingerprints and product hashes agree,
    most similar first."""
    usable = [s for s in signatures if s.embedding is not None and s.fingerprint is not None]
    if len(usable) < 2:
        return []
    cosines, indices = neighbours(np.stack([s.embedding for s in usable]))
    first, second, cosines = candidate_pairs(cosines, indices, MIN_COSINE)
    return confirmed_pairs(Signatures.of(usable), first, second, cosines)


def candidate_pairs(cosines: np.ndarray, indices: np.ndarray, at_least: float,
                    offset: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each pair of a row (`offset` + its position) and one of its neighbours at `at_least` cosine, once, the
    lower row first."""
    rows = np.repeat(np.arange(len(indices)) + offset, indices.shape[1])
    cosines, columns = cosines.reshape(-1), indices.reshape(-1)
    candidate = (columns >= 0) & (columns != rows) & (cosines >= at_least)
    rows, columns, cosines = rows[candidate], columns[candidate], cosines[candidate]
    first, second = np.minimum(rows, columns), np.maximum(rows, columns)
    _, unique = np.unique(first.astype(np.int64) * (1 << 32) + second, return_index=True)
    return first[unique], second[unique], cosines[unique]


def same_picture(signatures: Signatures, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Which candidate pairs the pixels confirm: backgrounds alike, and the products' colours and hashes (the
    colours alone, more strictly, where either answer lacks a product hash)."""
    fingerprints = signatures.fingerprint.reshape(-1, 2, 3).astype(np.float64)
    product, background = np.linalg.norm(fingerprints[first] - fingerprints[second], axis=2).T
    hashes, hashed = signatures.product_hash, signatures.hashed
    both = hashed[first] & hashed[second]
    return (background <= MAX_BACKGROUND_DELTA_E) & np.where(
        both, (product <= MAX_PRODUCT_DELTA_E) & (_bit_count(hashes[first] ^ hashes[second]) <= MAX_PRODUCT_HASH_BITS),
        product <= COLOURS_ONLY_PRODUCT_DELTA_E)


def confirmed_pairs(signatures: Signatures, first: np.ndarray, second: np.ndarray,
                    cosines: np.ndarray) -> list[Pair]:
    """The candidates the pixels confirm (same_picture), as Pairs, most similar first."""
    if not len(first):
        return []
    same = same_picture(signatures, first, second)
    rows = {int(i) for i in np.concatenate([first[same], second[same]])}
    shown = {row: signatures.signature(row) for row in rows}
    pairs = [Pair(shown[int(i)], shown[int(j)], float(cosine),
                  hamming(shown[int(i)].perceptual_hash, shown[int(j)].perceptual_hash))
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
