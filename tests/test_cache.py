"""The response cache alone: keyed by bytes, options and model; bounded by the bytes it holds, least recently
used first out."""

from __future__ import annotations

from enrich.v1 import enrich_pb2
from enrich_model.answers import CaptionMode, ItemOptions
from enrich_server.cache import CacheKey, ResponseCache

DEFAULT = ItemOptions()


def metadata(label: str, padding: int = 0) -> enrich_pb2.EnrichResponse:
    return enrich_pb2.EnrichResponse(metadata=enrich_pb2.Metadata(
        article_type=enrich_pb2.Prediction(label=label + "x" * padding, confidence=0.5)))


def test_the_key_is_the_bytes_every_option_and_the_model():
    key = CacheKey.of(b"image", DEFAULT, "m-1")
    assert key == CacheKey.of(b"image", ItemOptions(), "m-1")
    audit = (("baseColour", "Red"),)
    others = [CacheKey.of(b"image!", DEFAULT, "m-1"), CacheKey.of(b"image", ItemOptions(top_k=5), "m-1"),
              CacheKey.of(b"image", ItemOptions(caption_mode=CaptionMode.SKIP), "m-1"),
              CacheKey.of(b"image", DEFAULT, "m-2"), CacheKey.of(b"image", ItemOptions(catalogue=audit), "m-1"),
              CacheKey.of(b"image", ItemOptions(catalogue=audit, error_prior=0.2), "m-1"),
              CacheKey.of(b"image", ItemOptions(catalogue=(("baseColour", "Blue"),)), "m-1"),
              CacheKey.of(b"image", ItemOptions(embedding=True), "m-1")]
    assert len({key, *others}) == 1 + len(others)


def test_hits_misses_and_the_least_recently_used_goes_first():
    cache = ResponseCache(max_bytes=3 * (metadata("k0", 100).ByteSize() + 200))  # room for three of these
    keys = [CacheKey.of(bytes([n]), DEFAULT, "m") for n in range(4)]
    for n, key in enumerate(keys[:3]):
        cache.put(key, metadata(f"k{n}", 100))
    assert cache.get(keys[0]) is not None  # now the most recently used
    cache.put(keys[3], metadata("k3", 100))  # evicts keys[1], the least recently used
    assert cache.get(keys[1]) is None and cache.get(keys[2]) is not None and cache.get(keys[3]) is not None
    assert len(cache) == 3 and cache.bytes <= cache.max_bytes
    assert (cache.hits, cache.misses) == (3, 1)


def test_an_answer_larger_than_the_cache_is_not_kept_and_a_new_one_replaces_the_old():
    cache = ResponseCache(max_bytes=500)
    key = CacheKey.of(b"x", DEFAULT, "m")
    cache.put(key, metadata("huge", 1000))
    assert cache.get(key) is None and len(cache) == 0 and cache.bytes == 0
    cache.put(key, metadata("first"))
    cache.put(key, metadata("second"))
    assert cache.get(key).metadata.article_type.label == "second" and len(cache) == 1
    assert cache.bytes == metadata("second").ByteSize() + 200
    assert not ResponseCache(0).enabled and cache.enabled
