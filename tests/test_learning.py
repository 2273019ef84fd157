"""A model trained briefly on the synthetic catalogue learns what the pixels show."""

from __future__ import annotations

from pathlib import Path

from enrich_model.synth import write_catalogue
from enrich_trainer.train import train

from .conftest import tiny_training_args


def test_beats_the_majority_baseline_by_a_wide_margin(tmp_path: Path):
    data = write_catalogue(tmp_path / "data", 900, seed=11, image_size=(60, 80), progress=False)
    bundle = train(*tiny_training_args(data, tmp_path / "bundle", image_size=64, head_epochs=25, finetune_lr=3e-3,
                                       caption_epochs=12, decoder_layers=2, decoder_width=128, decoder_heads=4,
                                       tokenizer_vocab=800))
    metrics = bundle.config["test_metrics"]
    for attribute, margin in (("articleType", 0.35), ("baseColour", 0.25)):
        m = metrics[attribute]
        print(f"{attribute}: accuracy {m['accuracy']:.3f} vs majority {m['majority_accuracy']:.3f}")
        assert m["accuracy"] >= m["majority_accuracy"] + margin, (attribute, m)
    assert metrics["masterCategory"]["accuracy"] > metrics["masterCategory"]["majority_accuracy"] + 0.2
    assert metrics["productDisplayName"]["bleu"] > 5.0
