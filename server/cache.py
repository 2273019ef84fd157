"""A bounded in-memory cache of answers, keyed by what determines them: the image's bytes (their SHA-256),
the request's options and the model version. Bulk jobs re-send the same images (retries, resumed runs,
one photo in many listings); a hit skips decoding and the model and returns the same answer.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from enrich.v1 import enrich_pb2
from enrich_model.answers import ItemOptions


@dataclass(frozen=True)
class CacheKey:
    image_sha256: bytes
    options: ItemOptions  # all of them: an option added later cannot be forgotten here
    model_version: str

    @classmethod
    def of(cls, image: bytes, options: ItemOptions, model_version: str) -> CacheKey:
        return cls(hashlib.sha256(image).digest(), options, model_version)


class ResponseCache:
    """Least-recently-used, bounded by the serialized size of what it holds."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[CacheKey, enrich_pb2.EnrichResponse] = OrderedDict()
        self.sizes: dict[CacheKey, int] = {}
        self.bytes = 0
        self.hits = self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, key: CacheKey) -> enrich_pb2.EnrichResponse | None:
        answer = self.entries.get(key)
        if answer is None:
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return answer

    def put(self, key: CacheKey, answer: enrich_pb2.EnrichResponse) -> None:
        size = answer.ByteSize() + 200  # the key and the dictionaries' own overhead, roughly
        if size > self.max_bytes:
            return
        if key in self.entries:
            self.bytes -= self.sizes[key]
        self.entries[key], self.sizes[key] = answer, size
        self.entries.move_to_end(key)
        self.bytes += size
        while self.bytes > self.max_bytes:
            old, _ = self.entries.popitem(last=False)
            self.bytes -= self.sizes.pop(old)

    def __len__(self) -> int:
        return len(self.entries)
