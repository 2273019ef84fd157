"""A model trained briefly on the synthetic catalogue learns what the pixels show, and keeps it on photo-like
variants of new images (re-framed, tilted, lit unevenly, noisy, blurred, re-compressed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from enrich_data.catalogue import load_catalogue
from enrich_data.synth import write_catalogue
from enrich_model.bundle import load_bundle
from enrich_model.pipeline import EnrichPipeline
from enrich_trainer.evaluation import evaluate

from .conftest import tiny_training_command


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catalogue(tmp_path_factory.mktemp("learning") / "data", 900, seed=11, image_size=(60, 80),
                           progress=False)


def trained(command: list[str]):
    """`enrich train` in its own process (as a user runs it), and the bundle it wrote."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_bundle(command[command.index("--out") + 1])


@pytest.fixture(scope="module")
def learnt(catalogue: Path, tmp_path_factory: pytest.TempPathFactory):
    data, root = catalogue, tmp_path_factory.mktemp("bundle")
    return trained(tiny_training_command(data, root / "bundle", image_size=64, head_epochs=18, probe_epochs=1,
                                         finetune_lr=3e-3, caption_epochs=12, decoder_layers=2, decoder_width=128,
                                         decoder_heads=4, tokenizer_vocab=800, colour_bins=8))


def test_beats_the_majority_baseline_by_a_wide_margin(learnt):
    metrics = learnt.metrics
    for attribute, margin in (("articleType", 0.45), ("baseColour", 0.55), ("gender", 0.1)):
        m = metrics[attribute]
        print(f"{attribute}: accuracy {m['accuracy']:.3f} vs majority {m['majority_accuracy']:.3f}, "
              f"ECE {m['ece_uncalibrated']:.3f} -> {m['ece']:.3f}")
        assert m["accuracy"] >= m["majority_accuracy"] + margin, (attribute, m)
    assert metrics["masterCategory"]["accuracy"] > metrics["masterCategory"]["majority_accuracy"] + 0.3
    caption = metrics["productDisplayName"]
    assert caption["bleu"] > 10.0 and caption["consistency"]["all"] >= 0.95, caption


def test_photo_like_variants_keep_most_of_the_accuracy(learnt, tmp_path: Path):
    clean = load_catalogue(write_catalogue(tmp_path / "clean", 300, seed=77, image_size=(60, 80), progress=False))
    photo = load_catalogue(write_catalogue(tmp_path / "photo", 300, seed=77, image_size=(60, 80), progress=False,
                                           photo_like=True))
    pipeline = EnrichPipeline.load(learnt.path)  # as it serves
    on_clean, _ = evaluate(pipeline, clean.items, progress=False)
    on_photo, _ = evaluate(pipeline, photo.items, progress=False)
    for attribute in ("articleType", "baseColour"):
        before, after = on_clean[attribute]["accuracy"], on_photo[attribute]["accuracy"]
        print(f"{attribute}: clean {before:.3f}, photo-like {after:.3f}, ECE {on_photo[attribute]['ece']:.3f}")
        assert after >= before - 0.12, (attribute, before, after)


def test_frozen_mode_learns_on_pretrained_features(learnt, catalogue: Path, tmp_path: Path):
    """A backbone fine-tuned once is a 'pretrained' weights file for the frozen mode, which must then learn from
    features computed once (with the class-balanced loss and label smoothing on), flagged as pretrained."""
    weights = tmp_path / "backbone.pth"
    torch.save(learnt.model.encoder.backbone.state_dict(), weights)
    bundle = trained(tiny_training_command(catalogue, tmp_path / "frozen", pretrained=str(weights), image_size=64,
                                           backbone_mode="frozen", head_epochs=12, head_lr=1e-2, caption_epochs=1,
                                           class_balance="logit_adjust", label_smoothing=0.1, colour_bins=8))
    metrics = bundle.metrics
    assert bundle.config.backbone.weights == str(weights) and not bundle.config.backbone.started_random
    for attribute in ("articleType", "baseColour"):
        m = metrics[attribute]
        print(f"frozen {attribute}: accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f} "
              f"vs majority {m['majority_accuracy']:.3f} / {m['majority_macro_f1']:.3f}")
        assert m["accuracy"] >= m["majority_accuracy"] + 0.4 and m["macro_f1"] >= m["majority_macro_f1"] + 0.4, m
    assert not any("random weights" in w for w in bundle.config.warnings)
