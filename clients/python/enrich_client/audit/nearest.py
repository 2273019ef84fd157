"""Duplicates among any number of answers, in bounded memory: the embeddings are streamed from the answers,
never held all at once above EXACT_UP_TO rows.

    up to EXACT_UP_TO   the embeddings in memory, exact search (faiss IndexFlatIP)
    above               a compressed index (faiss IVF with 4-bit product quantisation, fast-scan), trained on a
                        sample, filled and then searched batch by batch. Its scores keep the neighbours' order
                        but not their cosines (they come out well below), so every one of the NEIGHBOURS is a
                        candidate: the pixels check them all (duplicates.same_picture), and the survivors'
                        cosines are computed exactly from their embeddings, read once more

The compressed index holds a code of dimensions / 8 bytes per image where the embeddings take 4 bytes per
dimension. Why this index and not another: the README's "Ten million images" measures them side by side.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..outputs import KEY
from .answers import AuditAnswers
from .duplicates import (
    EXACT_UP_TO,
    MIN_COSINE,
    NEIGHBOURS,
    Pair,
    Signatures,
    candidate_pairs,
    confirmed_pairs,
    neighbours,
    same_picture,
)

COLUMNS = [KEY, "width", "height", "sizeBytes", "perceptualHash", "productHash", "colourFingerprint", "embedding"]
TRAIN_ROWS = 100_000  # a sample this large trains the compressed index's lists and codebooks
LISTS_PER_SQRT_ROW = 2  # inverted lists: twice the square root of the rows
PROBES = 16  # lists searched per query
SUBVECTOR = 4  # dimensions per 4-bit code: the code is dimensions / 8 bytes


def usable(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The rows that can be compared: an embedding and a colour fingerprint."""
    return batch.filter(pc.and_(pc.is_valid(batch.column("embedding")), pc.is_valid(batch.column("colourFingerprint"))))


def embeddings_of(batch: pa.RecordBatch) -> np.ndarray:
    column = batch.column("embedding")
    return np.ascontiguousarray(pc.list_flatten(column).to_numpy().reshape(len(column), -1), np.float32)


def signatures_of(batch: pa.RecordBatch) -> Signatures:
    hashes = batch.column("productHash").to_pylist()
    fingerprint = pc.list_flatten(batch.column("colourFingerprint")).to_numpy().reshape(batch.num_rows, -1)
    return Signatures(batch.column(KEY), batch.column("width").to_numpy(zero_copy_only=False),
                      batch.column("height").to_numpy(zero_copy_only=False),
                      batch.column("sizeBytes").to_numpy(zero_copy_only=False), batch.column("perceptualHash"),
                      fingerprint, np.asarray([int(h or "0", 16) for h in hashes], np.uint64),
                      np.asarray([bool(h) for h in hashes], bool))


def batches(answers: AuditAnswers, columns: list[str]) -> Iterator[pa.RecordBatch]:
    for batch in answers.batches(list(dict.fromkeys([*columns, "embedding", "colourFingerprint"]))):
        ready = usable(batch)
        if ready.num_rows:
            yield ready


def duplicate_pairs_in(answers: AuditAnswers) -> list[Pair]:
    """duplicates.duplicate_pairs over the answers, exact up to EXACT_UP_TO rows, compressed above."""
    if answers.rows <= EXACT_UP_TO:
        parts, vectors = [], []
        for batch in batches(answers, COLUMNS):
            parts.append(signatures_of(batch))
            vectors.append(embeddings_of(batch))
        if sum(map(len, parts)) < 2:
            return []
        cosines, indices = neighbours(np.concatenate(vectors))
        return confirmed_pairs(Signatures.concat(parts), *candidate_pairs(cosines, indices, MIN_COSINE))
    return compressed_pairs(answers)


def compressed_pairs(answers: AuditAnswers) -> list[Pair]:
    import faiss

    signatures, sample = first_pass(answers)
    rows, dimensions = len(signatures), sample.shape[1]
    lists = max(1, min(LISTS_PER_SQRT_ROW * int(math.sqrt(rows)), len(sample) // 39))
    index = faiss.index_factory(dimensions, f"IVF{lists},PQ{dimensions // SUBVECTOR}x4fs", faiss.METRIC_INNER_PRODUCT)
    index.train(sample)
    del sample
    for batch in batches(answers, []):
        index.add(embeddings_of(batch))
    faiss.extract_index_ivf(index).nprobe = PROBES
    found, offset = [], 0
    for batch in batches(answers, []):
        queries = embeddings_of(batch)
        cosines, indices = index.search(queries, NEIGHBOURS + 1)
        first, second, _ = candidate_pairs(cosines, indices, -np.inf, offset)  # approximate scores: all of them
        keep = same_picture(signatures, first, second)
        found.append((first[keep], second[keep]))
        offset += len(queries)
    first = np.concatenate([f for f, _ in found]) if found else np.zeros(0, np.int64)
    second = np.concatenate([s for _, s in found]) if found else np.zeros(0, np.int64)
    _, once = np.unique(first.astype(np.int64) * (1 << 32) + second, return_index=True)  # met from both sides
    first, second = first[once], second[once]
    cosines = exact_cosines(answers, first, second)
    close = cosines >= MIN_COSINE
    return confirmed_pairs(signatures, first[close], second[close], cosines[close])


def first_pass(answers: AuditAnswers) -> tuple[Signatures, np.ndarray]:
    """The signatures, and every so many rows' embeddings: TRAIN_ROWS or so, spread over the whole."""
    every = max(1, answers.rows // TRAIN_ROWS)
    parts, sample, seen = [], [], 0
    for batch in batches(answers, COLUMNS):
        parts.append(signatures_of(batch))
        picked = np.flatnonzero((np.arange(seen, seen + batch.num_rows) % every) == 0)
        sample.append(embeddings_of(batch.take(pa.array(picked))))
        seen += batch.num_rows
    return Signatures.concat(parts), np.concatenate(sample)


def exact_cosines(answers: AuditAnswers, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The pairs' cosines from their embeddings, read in one more pass for just the rows they name."""
    wanted = np.unique(np.concatenate([first, second]))
    vectors: dict[int, np.ndarray] = {}
    offset = 0
    for batch in batches(answers, []):
        mine = wanted[(wanted >= offset) & (wanted < offset + batch.num_rows)]
        if len(mine):
            picked = embeddings_of(batch.take(pa.array(mine - offset)))
            vectors.update(zip(mine.tolist(), picked, strict=True))
        offset += batch.num_rows
    return np.asarray([float(vectors[int(i)] @ vectors[int(j)]) for i, j in zip(first, second, strict=True)],
                      np.float32)
