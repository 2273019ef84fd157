"""Simulated audit answers at any scale, for the audit's scale benchmark (`enrich bench audit-scale`): rows in
the Parquet layout of `bulk` and `audit` (enrich_client.answer_parts), as a Fashion-like model would answer an
audit of a catalogue, written part by part without images or a model.

What is planted, and so can be scored:
- catalogue errors: each audited value is wrong with probability `error_rate` (any other label); what the image
  shows is drawn from the model's own probabilities (a calibrated model), so the error rate can be estimated;
- duplicate pairs: `duplicate_share` of the rows are copies of another row of their part: an embedding at
  about 0.99 cosine, the colour fingerprint within about 1.5 ΔE, a few product-hash bits flipped, the image
  re-encoded (other bytes). Other rows of the same look (cluster) sit near 0.8 cosine with other colours and
  hashes: the look-alikes an audit must not call copies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from enrich.v1 import enrich_pb2
from enrich_client.answer_parts import AnswerLayout

ATTRIBUTES = {"articleType": 40, "baseColour": 30, "usage": 6, "season": 4, "gender": 5}  # labels each
LOOKS = 5_000  # clusters of look-alike products
LOOK_SPREAD = 0.5  # products of one look: cosine about 1 / (1 + spread²)
COPY_SPREAD = 0.15  # a copy: about 1 / sqrt(1 + spread²)
PLANTED = "planted.json"


def simulated_model(dimensions: int = 576) -> enrich_pb2.ModelInfo:
    info = enrich_pb2.ModelInfo(model_version="simulated", embedding_size=dimensions)
    for name, size in ATTRIBUTES.items():
        info.attributes.add(name=name, labels=[f"{name}-{n}" for n in range(size)], kind="single")
    info.schema.caption_column = "productDisplayName"
    info.schema.id_column = "id"
    return info


def write_simulated_answers(folder: Path, rows: int, dimensions: int = 576, duplicate_share: float = 0.01,
                            error_rate: float = 0.05, seed: int = 0, part_rows: int = 50_000) -> dict:
    """Parts of `rows` answers in `folder`, and planted.json: the duplicate pairs and the wrong values."""
    folder.mkdir(parents=True, exist_ok=True)
    layout = AnswerLayout.of(simulated_model(dimensions))
    schema = layout.schema()
    rng = np.random.default_rng(seed)
    looks = rng.standard_normal((LOOKS, dimensions), np.float32)
    looks /= np.linalg.norm(looks, axis=1, keepdims=True)
    pairs, wrong = [], 0
    for part, start in enumerate(range(0, rows, part_rows)):
        size = min(part_rows, rows - start)
        columns, planted, errors = simulated_part(rng, looks, start, size, duplicate_share, error_rate)
        absent = {f.name: pa.nulls(size, f.type) for f in schema if f.name not in columns}  # caption, palette
        pq.write_table(pa.table(columns | absent, schema=schema), folder / f"part-{part:06d}.parquet")
        pairs += planted
        wrong += errors
    truth = {"rows": rows, "duplicate_pairs": pairs, "wrong_values": wrong,
             "values": rows * len(ATTRIBUTES), "error_rate": error_rate}
    (folder / PLANTED).write_text(json.dumps(truth), encoding="utf-8")
    return truth


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def simulated_part(rng: np.random.Generator, looks: np.ndarray, start: int, size: int, duplicate_share: float,
                   error_rate: float) -> tuple[dict, list[list[str]], int]:
    dimensions = looks.shape[1]
    ids = np.array([f"sim{n:09d}" for n in range(start, start + size)])
    look = rng.integers(0, len(looks), size)
    noise = rng.standard_normal((size, dimensions), np.float32) / np.sqrt(dimensions, dtype=np.float32)
    embedding = _unit(looks[look] + LOOK_SPREAD * noise)
    product = np.column_stack([rng.uniform(20, 90, size), rng.uniform(-60, 60, (size, 2))])
    background = np.column_stack([rng.uniform(85, 100, size), rng.uniform(-3, 3, (size, 2))])
    product_hash = rng.integers(0, 2**64, size, dtype=np.uint64)
    copies = rng.choice(np.arange(1, size), int(size * duplicate_share), replace=False) if size > 1 else []
    kept = np.setdiff1d(np.arange(size), copies)  # originals are never copies themselves
    originals = [int(rng.choice(kept[kept < c])) for c in copies]
    for copy, original in zip(copies, originals, strict=True):
        noise = rng.standard_normal(dimensions).astype(np.float32) / np.sqrt(dimensions)
        embedding[copy] = _unit((embedding[original] + COPY_SPREAD * noise)[None])[0]
        product[copy] = product[original] + rng.normal(0, 0.8, 3)
        background[copy] = background[original] + rng.normal(0, 0.15, 3)
        flips = rng.choice(64, rng.integers(0, 5), replace=False)
        product_hash[copy] = product_hash[original] ^ np.uint64(sum(1 << int(b) for b in flips))
    columns = {"requestId": ids, "code": np.zeros(size, np.int32), "reason": [""] * size, "message": [""] * size,
               "modelVersion": ["simulated"] * size, "width": rng.integers(400, 2400, size).astype(np.int32),
               "height": rng.integers(400, 2400, size).astype(np.int32), "format": ["JPEG"] * size,
               "sizeBytes": rng.integers(20_000, 900_000, size),
               "perceptualHash": [f"{h:016x}" for h in rng.integers(0, 2**63, size)],
               "productHash": [f"{int(h):016x}" for h in product_hash],
               "colourFingerprint": pa.FixedSizeListArray.from_arrays(
                   pa.array(np.column_stack([product, background]).astype(np.float32).reshape(-1)), 6),
               "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embedding.reshape(-1)), dimensions),
               "errorPrior": np.full(size, 0.05, np.float32)}
    findings, errors = simulated_findings(rng, size, error_rate)
    columns |= findings
    pairs = [[str(ids[o]), str(ids[c])] for c, o in zip(copies, originals, strict=True)]
    return columns, pairs, errors


def simulated_findings(rng: np.random.Generator, size: int, error_rate: float) -> tuple[dict, int]:
    """Each attribute's prediction column, and the findings: one per attribute per row."""
    columns, findings, errors = {}, [], 0
    for name, labels in ATTRIBUTES.items():
        names = np.array([f"{name}-{n}" for n in range(labels)])
        top = rng.uniform(0.55, 0.999, size)
        ranked = np.argsort(rng.random((size, labels)), axis=1)[:, :3]  # the model's three most probable labels
        ranked_p = np.column_stack([top, (1 - top) * 0.8, (1 - top) * 0.15])
        rest = (1 - top) * 0.05 / max(1, labels - 3)
        # The model is calibrated: what the image shows is drawn from its probabilities.
        draw = rng.random(size)
        pick = np.where(draw < top, 0, np.where(draw < top + ranked_p[:, 1], 1, np.where(
            draw < ranked_p.sum(axis=1), 2, 3)))
        other = _other_than(rng, ranked, labels)
        truth = np.where(pick < 3, ranked[np.arange(size), np.minimum(pick, 2)], other)
        wrong = rng.random(size) < error_rate
        supplied = np.where(wrong, (truth + 1 + rng.integers(0, labels - 1, size)) % labels, truth)
        errors += int(wrong.sum())
        position = [supplied == ranked[:, k] for k in range(3)]
        p_supplied = np.select(position, [ranked_p[:, 0], ranked_p[:, 1], ranked_p[:, 2]], rest)
        mistake = (1 - p_supplied) / (labels - 1)
        predicted = ranked[:, 0]
        columns[name] = _struct({"label": names[predicted], "confidence": top.astype(np.float32), "accepted": top > 0.9,
                                 "unsure": np.zeros(size, bool), "derived": np.zeros(size, bool),
                                 "alternatives": _lists(_struct({"label": names[ranked].reshape(-1),
                                                                 "confidence": ranked_p.reshape(-1).astype(np.float32),
                                                                 "accepted": np.zeros(3 * size, bool)}), 3),
                                 "values": _lists(_struct({"label": np.array([], str),
                                                           "confidence": np.array([], np.float32),
                                                           "accepted": np.array([], bool)}), 0, size)})
        findings.append({"attribute": np.full(size, name),
                         "kind": np.where(supplied == predicted, "agrees", "disagrees"),
                         "supplied": names[supplied], "suppliedLabel": names[supplied],
                         "pSupplied": p_supplied.astype(np.float32), "predicted": names[predicted],
                         "pPredicted": top.astype(np.float32),
                         "pWrong": (0.05 * mistake / (0.05 * mistake + 0.95 * p_supplied)).astype(np.float32),
                         "level": np.full(size, ""), "predictedAccepted": top > 0.9})
    interleaved = {key: np.stack([f[key] for f in findings], axis=1).reshape(-1) for key in findings[0]}
    return columns | {"findings": _lists(_struct(interleaved), len(findings))}, errors


def _other_than(rng: np.random.Generator, ranked: np.ndarray, labels: int) -> np.ndarray:
    """Per row, a label that is none of its ranked ones."""
    other = rng.integers(0, labels, len(ranked))
    for _ in range(ranked.shape[1]):
        clash = (other[:, None] == ranked).any(axis=1)
        other = np.where(clash, (other + 1) % labels, other)
    return other


def _struct(fields: dict) -> pa.StructArray:
    return pa.StructArray.from_arrays([pa.array(values) for values in fields.values()], names=list(fields))


def _lists(values: pa.Array, each: int, rows: int | None = None) -> pa.ListArray:
    """`values` cut into lists of `each` (rows of them; by default all the values)."""
    rows = len(values) // each if rows is None else rows
    return pa.ListArray.from_arrays(pa.array(np.arange(rows + 1, dtype=np.int32) * each), values)
