"""The stages every host runs (enrich_model.pipeline): how attributes are ranked, derived ones included, and
the same labels from `enrich evaluate` as from `enrich serve` for the same bundle, backend and images."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from enrich_client import EnrichClient
from enrich_contract.wire import TYPED_ATTRIBUTES
from enrich_model.backends import available_backends
from enrich_model.fashion import FASHION_SCHEMA, legacy_taxonomy
from enrich_model.pipeline import Parents, attribute_predictions
from enrich_model.thresholds import Thresholds

from .conftest import LoopbackServer

TREE = {"Tshirts": ("Topwear", "Apparel"), "Shirts": ("Topwear", "Apparel"), "Jeans": ("Bottomwear", "Apparel"),
        "Trousers": ("Bottomwear", "Apparel"), "Watches": ("Watches", "Accessories")}
TAXONOMY = legacy_taxonomy(TREE)
ARTICLES = list(TREE)
VOCABS = {a: ["x", "y"] for a in FASHION_SCHEMA.classified} | {"articleType": ARTICLES}


def predict(article_probabilities: list[float], top_k: int, thresholds: dict[str, float] | None = None):
    flat = torch.tensor([0.6, 0.4])
    calibrated = {a: flat for a in FASHION_SCHEMA.classified} | {"articleType": torch.tensor(article_probabilities)}
    return attribute_predictions(calibrated, calibrated, VOCABS, Parents.of(FASHION_SCHEMA, TAXONOMY, VOCABS),
                                 Thresholds(abstain=thresholds or {}), top_k)


@pytest.mark.parametrize("top_k", [1, 2, 3, 5])
def test_a_parent_is_ranked_by_the_probability_of_its_article_types(top_k: int):
    # Tshirts is the likeliest article, but Bottomwear (Jeans + Trousers) the likeliest subCategory.
    out = predict([0.40, 0.05, 0.30, 0.20, 0.05], top_k)
    article, sub, master = out["articleType"], out["subCategory"], out["masterCategory"]
    assert article.label == "Tshirts" and sub.label == "Bottomwear" and master.label == "Apparel"
    for prediction in out.values():
        assert prediction.label == prediction.alternatives[0].label
        scores = [a.confidence for a in prediction.alternatives]
        assert scores == sorted(scores, reverse=True) and prediction.confidence == scores[0]
    assert sub.confidence == pytest.approx(0.50) and master.confidence == pytest.approx(0.95)
    assert [a.label for a in sub.alternatives] == ["Bottomwear", "Topwear", "Watches"][:top_k]
    assert sub.derived and master.derived and not article.derived
    assert article.unsure  # the tree of labels disagrees: the articleType is the unsure one
    assert not sub.unsure and not master.unsure


def test_where_the_tree_agrees_only_the_thresholds_decide_unsure():
    out = predict([0.10, 0.05, 0.55, 0.25, 0.05], 3, thresholds={"articleType": 0.6})
    assert (out["articleType"].label, out["subCategory"].label) == ("Jeans", "Bottomwear")
    assert out["articleType"].unsure  # 0.55, under the 0.6 threshold
    assert not out["subCategory"].unsure  # 0.80: its parent is sure, so a client can file it there
    calm = predict([0.10, 0.05, 0.75, 0.05, 0.05], 3, thresholds={"articleType": 0.6})
    assert not calm["articleType"].unsure


BACKEND = "openvino" if "openvino" in available_backends("cpu") else "torch"  # what `enrich serve` picks on CPU


def test_evaluate_and_serve_give_the_same_labels(bundle_dir: Path, catalogue_dir: Path, tmp_path: Path):
    """`enrich evaluate` runs the pipeline the server runs: at fp32 on the same backend, every label alike."""
    backend = BACKEND
    done = subprocess.run([sys.executable, "-m", "enrich_cli.main", "evaluate", "--model", str(bundle_dir), "--data",
                           str(catalogue_dir), "--split", "test", "--out", str(tmp_path), "--backend", backend,
                           "--precision", "fp32"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"measured as served: {backend}/fp32 on cpu" in done.stdout
    with (tmp_path / "predictions.csv").open(newline="") as handle:
        evaluated = {(row["id"], row["attribute"]): row["predicted"] for row in csv.DictReader(handle)}
    ids = sorted({image_id for image_id, _ in evaluated})
    server = LoopbackServer(bundle_dir, backend=backend, precision="fp32", cache_mb=0, max_batch_size=4)
    try:
        server.load()
        with EnrichClient(server.target) as client:
            answers = list(client.enrich_stream(((i, (catalogue_dir / "images" / f"{i}.jpg").read_bytes())
                                                 for i in ids), caption_mode="skip"))
    finally:
        server.close()
    served = {(a.request_id, attribute): getattr(a.metadata, field).label
              for a in answers for attribute, field in TYPED_ATTRIBUTES.items()}
    assert len(ids) >= 20 and served == evaluated
