"""The bundle round trip, and what training writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from enrich_data.catalogue import load_catalogue
from enrich_model.answers import CaptionMode, ItemOptions
from enrich_model.bundle import BundleError, load_bundle, save_weights
from enrich_model.bundle_config import BundleConfig
from enrich_model.fashion import FASHION_SCHEMA
from enrich_model.pipeline import EnrichPipeline


def predictions(pipeline: EnrichPipeline, pixels: np.ndarray):
    options = [ItemOptions(top_k=5, caption_mode=mode) for mode in
               (CaptionMode.GENERATE, CaptionMode.BEAM_SEARCH, CaptionMode.TEMPLATE, CaptionMode.SKIP)]
    return pipeline.predict(pixels, options)


def sample_pixels(catalogue_dir: Path, preprocessing) -> np.ndarray:
    items = load_catalogue(catalogue_dir).items[:4]
    return np.stack([preprocessing.from_bytes(item.read_bytes())[1] for item in items])


def test_round_trip_gives_identical_outputs(trained, catalogue_dir: Path, tmp_path: Path):
    out, in_memory = trained
    loaded = load_bundle(out)
    pixels = sample_pixels(catalogue_dir, loaded.preprocessing)
    expected = predictions(EnrichPipeline.eager(in_memory), pixels)
    assert predictions(EnrichPipeline.eager(loaded), pixels) == expected
    a, b = EnrichPipeline.eager(in_memory).encode(pixels), EnrichPipeline.eager(loaded).encode(pixels)
    assert all(np.array_equal(np.asarray(getattr(a, part)), np.asarray(getattr(b, part)))
               for part in ("pooled", "tokens", "colour"))
    # Saving a loaded bundle again reproduces the same weights, hence the same version.
    config = save_weights(tmp_path / "again", loaded.model, loaded.config.heads, loaded.tokenizer,
                          loaded.preprocessing, loaded.schema, loaded.vocabs, loaded.taxonomy, lexicon=loaded.lexicon)
    assert not (tmp_path / "again" / "enrich.json").exists()  # not a bundle until its config is written
    config.write(tmp_path / "again")
    assert config.model_version == loaded.model_version
    assert predictions(EnrichPipeline.eager(load_bundle(tmp_path / "again")), pixels) == expected


def test_bundle_is_self_describing(bundle_dir: Path):
    config = BundleConfig.read(bundle_dir)
    assert set(FASHION_SCHEMA.classified) <= set(config.attributes)
    assert config.backbone.name == "tiny_vit_5m_224"
    assert config.preprocessing["input_size"] == [32, 32]
    assert config.training["split"]["train"] > config.training["split"]["test"] > 0
    assert config.schema == FASHION_SCHEMA.to_json()  # styles.csv: Fashion Product Images' schema, unchanged
    for derived in ("subCategory", "masterCategory"):
        assert set(config.taxonomy[derived]) == set(config.attributes["articleType"])
    assert set(config.heads.accept_thresholds) == set(FASHION_SCHEMA.names)
    metrics = json.loads((bundle_dir / "metrics.json").read_text())
    assert metrics == config.test_metrics
    assert {"accuracy", "macro_f1", "majority_accuracy"} <= set(metrics["articleType"])
    assert "bleu" in metrics["productDisplayName"]
    for picture in ("training_curves.png", "confusion_articleType.png", "confusion_baseColour.png"):
        assert (bundle_dir / picture).read_bytes().startswith(b"\x89PNG")
    assert (bundle_dir / "captioner" / "config.json").is_file()
    assert (bundle_dir / "tokenizer" / "tokenizer.json").is_file()
    assert not (bundle_dir / "_checkpoints").exists()


def test_not_a_bundle_is_a_clear_error(tmp_path: Path):
    with pytest.raises(BundleError, match=r"enrich\.json"):
        load_bundle(tmp_path)


def test_one_backbone_pass_per_batch_feeds_heads_and_captions(bundle_dir: Path, catalogue_dir: Path):
    bundle = load_bundle(bundle_dir)
    backbone = bundle.model.encoder.backbone
    calls = []
    original = backbone.forward_features
    backbone.forward_features = lambda x: calls.append(x.shape[0]) or original(x)
    try:
        pixels = sample_pixels(catalogue_dir, bundle.preprocessing)
        items = predictions(EnrichPipeline.eager(bundle), pixels)
    finally:
        del backbone.forward_features
    assert calls == [4]  # one pass for the batch of four, though two of them were captioned by the decoder
    assert items[0].caption.mode is CaptionMode.GENERATE and items[1].caption.mode is CaptionMode.BEAM_SEARCH
