"""The training recipe's parts: calibration, abstaining, augmentation, colour features, photo-like variants,
clear refusals, the frozen mode, and the bundle as a Hugging Face citizen."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from enrich_data.catalogue import load_catalogue
from enrich_data.photolike import photo_like
from enrich_data.synth import write_catalogue
from enrich_model.colour import ColourFeatures
from enrich_model.metrics import expected_calibration_error, is_clearly_learnt
from enrich_model.model import AttributeHeads
from enrich_model.preprocess import Preprocessing
from enrich_trainer.arguments import ModelArguments
from enrich_trainer.augment import Augment
from enrich_trainer.calibration import abstain_threshold, choose_temperature, fit_temperature
from enrich_trainer.classifier import attribute_loss
from enrich_trainer.weights import WeightsUnavailable, resolve_encoder

from .conftest import TINY_BACKBONE

PREPROCESSING = Preprocessing((64, 64), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MEAN, STD = torch.tensor(PREPROCESSING.mean).view(3, 1, 1), torch.tensor(PREPROCESSING.std).view(3, 1, 1)
ENRICH = [sys.executable, "-m", "enrich_cli.main"]


def test_temperature_fixes_an_over_confident_head():
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 5, (2000,), generator=generator)
    honest = torch.randn(2000, 5, generator=generator)
    honest[torch.arange(2000), targets] += 1.5  # right about 60% of the time
    over_confident = honest * 6  # same answers, far too sure of them
    confidence = over_confident.softmax(-1).max(-1)
    correct = (confidence.indices == targets).numpy()
    before = expected_calibration_error(confidence.values.numpy(), correct)
    temperature = fit_temperature(over_confident, targets)
    after = expected_calibration_error((over_confident / temperature).softmax(-1).max(-1).values.numpy(), correct)
    assert 3 < temperature < 8
    assert before > 0.2 and after < 0.05
    assert choose_temperature(over_confident, targets)["temperature"] == temperature


def test_a_calibrated_head_keeps_its_confidences():
    """Likelihood would sharpen a head that is right about its sure answers, though its unsure ones are
    calibrated already; that raises ECE, so the temperature stays 1."""
    margins = torch.tensor([1.0986] * 100 + [4.0] * 100)  # P(class 0) = 0.75, then 0.98
    logits = torch.stack([margins, torch.zeros(200)], dim=1)
    targets = torch.zeros(200, dtype=torch.long)
    targets[torch.arange(100)[::4]] = 1  # the unsure ones are right 3 times in 4: calibrated
    chosen = choose_temperature(logits, targets)
    assert chosen["fitted_temperature"] < 0.95 and chosen["temperature"] == 1.0
    assert chosen["ece_after"] == chosen["ece_before"] < 0.01


def test_abstain_threshold_reaches_the_target_accuracy():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0, 1, 5000)
    correct = rng.uniform(0, 1, 5000) < confidence  # calibrated: right with probability = confidence
    threshold = abstain_threshold(confidence, correct, 0.9)
    answered = confidence >= threshold
    assert correct[answered].mean() >= 0.9 and 0.7 < threshold < 0.9
    assert abstain_threshold(confidence, np.ones(5000, bool), 0.9) is None  # always right: never abstain


def test_missing_labels_are_masked_per_attribute():
    """A row without a baseColour still teaches articleType; the missing colour adds nothing to the loss."""
    logits = {"baseColour": torch.randn(3, 4), "articleType": torch.randn(3, 5)}
    colour = torch.tensor([1, -100, 2])
    article = torch.tensor([0, 4, 3])
    loss = attribute_loss(logits, {"baseColour": colour, "articleType": article})
    expected = (torch.nn.functional.cross_entropy(logits["baseColour"][[0, 2]], colour[[0, 2]])
                + torch.nn.functional.cross_entropy(logits["articleType"], article))
    assert torch.allclose(loss, expected)
    nothing = attribute_loss(logits, {"baseColour": torch.full((3,), -100), "articleType": article})
    assert torch.allclose(nothing, torch.nn.functional.cross_entropy(logits["articleType"], article))
    # logit adjustment changes the loss, not the logits the heads return
    prior = {"articleType": torch.log(torch.tensor([0.6, 0.1, 0.1, 0.1, 0.1]))}
    adjusted = attribute_loss(logits, {"articleType": article}, logit_adjustment=prior)
    assert not torch.allclose(adjusted, attribute_loss(logits, {"articleType": article}))


def test_a_multi_valued_attribute_weighs_each_value_as_one_decision():
    """Its loss is the sum of its values' binary cross-entropies per row (a mean would weigh four values as one
    quarter of a single-valued attribute each); rows marked missing are left out."""
    logits = {"style": torch.randn(3, 4)}
    target = torch.tensor([[1, 0, 0, 1], [-100, -100, -100, -100], [0, 0, 1, 0]])
    per_value = torch.nn.functional.binary_cross_entropy_with_logits(logits["style"][[0, 2]], target[[0, 2]].float(),
                                                                     reduction="none")
    assert torch.allclose(attribute_loss(logits, {"style": target}), per_value.sum(dim=1).mean())


def test_heads_train_on_a_batch_of_one():
    """The last batch of an epoch may hold one image; BatchNorm cannot measure a spread there."""
    heads = AttributeHeads(8, {"articleType": 3, "baseColour": 4}, colour_features=5,
                           colour_attributes=("baseColour",)).train()
    logits = heads(torch.randn(1, 8), torch.randn(1, 5))
    assert logits["articleType"].shape == (1, 3) and logits["baseColour"].shape == (1, 4)
    assert torch.isfinite(logits["baseColour"]).all()


def test_best_epoch_metric_counts_every_label_once():
    """Validation macro-F1 averages over every label of every attribute: an attribute with many labels
    weighs more than one with few, and missing labels (-100) are ignored."""
    from types import SimpleNamespace

    from enrich_trainer.heads_stage import heads_metrics

    def one_hot(indices: list[int], classes: int) -> np.ndarray:
        return np.eye(classes)[indices]

    right = [0, 1, 2, 3]
    predictions = [one_hot(right, 4) for _ in range(5)]
    targets = [np.array(right) for _ in range(5)]
    targets[2] = np.array([1, 0, -100, -100])  # season: both labelled items wrong -> F1 0 for its 2 labels
    names = ["gender", "baseColour", "season", "usage", "articleType"]
    metrics = heads_metrics(SimpleNamespace(predictions=predictions, label_ids=targets), names)
    assert metrics["acc_season"] == 0.0 and metrics["acc_articleType"] == 1.0
    assert metrics["macro_f1"] == pytest.approx(16 / 18)  # 16 labels with F1 1, season's 2 with F1 0
    # A multi-valued attribute: each value counts once, by its F1 at probability 0.5 (logit 0).
    style = np.array([[1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]]), np.array([[1, 0], [1, 0], [-100, -100]])
    with_style = heads_metrics(SimpleNamespace(predictions=[*predictions, style[0]], label_ids=[*targets, style[1]]),
                               [*names, "style"])
    assert with_style["f1_style"] == pytest.approx(1.0)  # the second value has no positives: not counted
    assert with_style["macro_f1"] == pytest.approx(17 / 19)


def test_clearly_learnt_needs_a_margin_over_the_majority():
    assert not is_clearly_learnt({"accuracy": 0.255, "majority_accuracy": 0.25})
    assert is_clearly_learnt({"accuracy": 0.40, "majority_accuracy": 0.25})
    assert is_clearly_learnt({"accuracy": 0.94, "majority_accuracy": 0.92})  # a quarter of the errors gone


def red_square(size: int = 64, lit: bool = False) -> np.ndarray:
    pixels = np.full((size, size, 3), 250, np.float32)
    pixels[16:48, 20:44] = (200, 30, 35)
    if lit:  # light falling off by 20% from left to right
        pixels *= np.linspace(1.0, 0.8, size, dtype=np.float32)[None, :, None]
    return PREPROCESSING(Image.fromarray(pixels.astype(np.uint8)))


def test_colour_features_see_the_product_not_the_light():
    histogram = ColourFeatures(PREPROCESSING.mean, PREPROCESSING.std, bins=6, levels=0)
    even, lit = histogram(torch.from_numpy(np.stack([red_square(), red_square(lit=True)])))
    assert histogram.num_features == 6 ** 3 + 4 == even.shape[0]
    bins = even[: 6 ** 3].view(6, 6, 6) ** 2  # the features are square roots of the shares
    r, g, b = np.unravel_index(int(bins.argmax()), (6, 6, 6))
    assert r >= 4 and g <= 1 and b <= 1  # the red product, not the white background
    assert abs(float(even[6 ** 3]) - 24 * 32 / 64 ** 2) < 0.05  # foreground share: the square's area
    assert torch.nn.functional.cosine_similarity(even, lit, dim=0) > 0.97


def test_dominant_colour_is_the_products_own_under_light_outline_and_print():
    """The fill's exact colour, not the outline's, the dark stripes' (a third of the product) or the
    light's; and the fine encoding tells apart two names 10 levels apart (Beige and Nude)."""
    features = ColourFeatures(PREPROCESSING.mean, PREPROCESSING.std, bins=6, levels=16)

    def product(fill: tuple[int, int, int], lit: bool = False) -> np.ndarray:
        pixels = np.full((64, 64, 3), 250, np.float32)
        pixels[12:52, 16:48] = [c * 0.6 for c in fill]  # outline
        pixels[14:50, 18:46] = fill
        pixels[14:50:6, 18:46] = pixels[15:50:6, 18:46] = (25, 25, 30)  # dark stripes, a third of the rows
        if lit:
            pixels *= np.linspace(1.0, 0.8, 64, dtype=np.float32)[None, :, None]
        return PREPROCESSING(Image.fromarray(pixels.astype(np.uint8)))

    beige, nude = (225, 205, 170), (230, 195, 170)
    batch = torch.from_numpy(np.stack([product(beige), product(beige, lit=True), product(nude)]))
    out = features(batch)
    assert features.num_features == 6 ** 3 + 4 + 3 * 16 + 4 == out.shape[1]
    dominant = out[:, 6 ** 3 + 4 + 3 * 16:][:, :3] * 255  # the median colour, after its encoding
    for found, fill in zip(dominant, [beige, beige, nude], strict=True):
        assert (found - torch.tensor(fill)).abs().max() < 8, (found, fill)
    encoded = out[:, 6 ** 3 + 4:][:, :3 * 16]
    assert torch.dist(encoded[0], encoded[1]) < torch.dist(encoded[0], encoded[2])  # light moves it less


def test_augmentation_keeps_shape_and_fills_with_white():
    torch.manual_seed(0)
    white = torch.from_numpy(PREPROCESSING(Image.new("RGB", (64, 64), (255, 255, 255))))
    augment = Augment(PREPROCESSING.mean, PREPROCESSING.std, noise=0.0, blur=0.0, exposure=(1, 1),
                      light_gradient=0.0)
    moved = augment(white)
    assert moved.shape == white.shape and torch.allclose(moved, white, atol=1e-4)  # what came into view is white
    square = torch.from_numpy(red_square())
    out = Augment(PREPROCESSING.mean, PREPROCESSING.std)(square)
    assert out.shape == square.shape and torch.isfinite(out).all()


def test_photo_box_is_where_the_letterbox_puts_the_photo():
    for size in [(32, 64), (64, 32), (60, 80), (333, 500), (64, 64), (7, 64)]:
        image = Image.new("RGB", size, (240, 240, 240))
        input_ = torch.from_numpy(PREPROCESSING(image)) * STD + MEAN
        padding = (input_ > 1 - 1e-4).all(dim=0)  # exact white: only the padding is
        top, left, bottom, right = PREPROCESSING.photo_box(*size)
        assert not padding[top:bottom, left:right].any(), size
        assert padding.sum() == 64 * 64 - (bottom - top) * (right - left), size


def test_augmentation_lights_and_reframes_the_photo_not_the_letterbox_padding():
    """An unevenly lit, off-centre upload is a grey photo inside the server's white padding: the padding
    stays exactly white, whatever the light, the noise and the re-framing did to the photo."""
    torch.manual_seed(0)
    portrait = Image.new("RGB", (32, 64), (240, 240, 240))  # padded left and right
    pixels, box = torch.from_numpy(PREPROCESSING(portrait)), PREPROCESSING.photo_box(*portrait.size)
    assert box == (0, 16, 64, 48)
    dim = Augment(PREPROCESSING.mean, PREPROCESSING.std, flip=0.0, scale=(1, 1), shift=0.0, rotate=0.0,
                  blur=0.0, exposure=(0.8, 0.8))
    lit = dim(pixels, box) * STD + MEAN
    assert torch.allclose(lit[:, :, :16], torch.ones(3, 64, 16), atol=1e-4)  # padding: no light, no noise
    assert lit[:, :, 18:46].mean() < 0.8  # the photo: darker
    moved = Augment(PREPROCESSING.mean, PREPROCESSING.std, scale=(0.8, 1.05), shift=0.2, rotate=10)
    for _ in range(5):
        out = moved(pixels, box) * STD + MEAN
        padding = torch.cat([out[:, :, :16], out[:, :, 48:]], dim=-1)
        assert torch.allclose(padding, torch.ones_like(padding), atol=1e-4)


def test_photo_like_catalogue_keeps_rows_and_labels(tmp_path: Path):
    clean = write_catalogue(tmp_path / "clean", 12, seed=5, image_size=(48, 64), progress=False)
    photo = write_catalogue(tmp_path / "photo", 12, seed=5, image_size=(48, 64), progress=False, photo_like=True)
    assert (clean / "styles.csv").read_text() == (photo / "styles.csv").read_text()
    a = np.asarray(Image.open(next((clean / "images").glob("*.jpg"))), np.float32)
    name = next((clean / "images").glob("*.jpg")).name
    b = np.asarray(Image.open(photo / "images" / name), np.float32)
    assert a.shape == b.shape and np.abs(a - b).mean() > 3  # same product, photographed differently
    variant = photo_like(Image.new("RGB", (40, 30), (250, 250, 250)), random.Random(1))
    assert variant.size == (40, 30) and variant.mode == "RGB"


def test_no_silent_random_backbone():
    """`auto` without the hub refuses and says how to get weights; `none` is random on purpose."""
    with pytest.raises(WeightsUnavailable, match=r"--pretrained FILE.*--pretrained none"):
        resolve_encoder(ModelArguments(backbone_kwargs=TINY_BACKBONE, pretrained="auto"))
    _, weights = resolve_encoder(ModelArguments(backbone_kwargs=TINY_BACKBONE, pretrained="none"))
    assert weights == "random"


@pytest.mark.parametrize("arguments, message", [
    (["--data", "/no/such/dir"], "no catalogue at /no/such/dir"),
    (["--data", "someone/fashion-products"], "hub is not reachable"),
    (["--data", "CATALOGUE"], "no pretrained weights for tiny_vit_5m_224"),
    (["--data", "CATALOGUE", "--pretrained", "none", "--backbone_mode", "frozen"], "learns nothing"),
    (["--data", "CATALOGUE", "--pretrained", "none", "--backbone_kwargs", "{depths: 1}"], "not valid JSON"),
    (["--data", "CATALOGUE", "--pretrained", "none", "--precision", "fp16"], "needs a GPU"),
])
def test_train_refuses_with_one_line_and_exit_2(arguments, message, catalogue_dir: Path, tmp_path: Path, capsys):
    from enrich_cli.main import main as enrich  # in process: the command's own code, without a new interpreter

    arguments = [str(catalogue_dir) if a == "CATALOGUE" else a for a in arguments]
    assert enrich(["train", *arguments, "--out", str(tmp_path / "b")]) == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("enrich train: error:")]
    assert len(errors) == 1 and message in errors[0], stderr[-2000:]
    assert "Traceback" not in stderr and not (tmp_path / "b" / "enrich.json").exists()


def test_bundle_metrics_calibration_and_report(bundle_dir: Path):
    config = json.loads((bundle_dir / "enrich.json").read_text())
    article = config["test_metrics"]["articleType"]
    assert {"top3_accuracy", "ece", "ece_uncalibrated", "per_class", "majority_macro_f1"} <= set(article)
    assert config["test_metrics"]["baseColour"]["per_class"][0]["support"] >= 1
    caption = config["test_metrics"]["productDisplayName"]
    assert {"bleu", "rouge_l", "consistency"} <= set(caption)
    assert caption["consistency"]["all"] >= 0.95  # captions are made to agree with the heads
    assert set(config["training"]["calibration"]) == {"gender", "baseColour", "season", "usage", "articleType"}
    assert any("random weights" in w for w in config["warnings"])  # the test bundle starts from random weights
    for name in ("report.md", "README.md", "reliability.png", "training_curves.png"):
        assert (bundle_dir / name).is_file(), name
    card = (bundle_dir / "README.md").read_text()
    assert "## Test-split metrics" in card and "random initialisation" in card and "Intended use" in card


def test_captioner_loads_with_plain_transformers_in_a_fresh_process(bundle_dir: Path):
    captioner = str(bundle_dir / "captioner")
    with_enrich = ("import sys, enrich_model\n"
                   "from transformers import VisionEncoderDecoderModel\n"
                   f"model = VisionEncoderDecoderModel.from_pretrained({captioner!r})\n"
                   "print(type(model.encoder).__name__)\n")
    # Without enrich: the encoder's code, named by auto_map, travels with the weights.
    remote_code = ("import sys\nsys.modules['enrich_model'] = None  # as if enrich were not installed\n"
                   "from transformers import VisionEncoderDecoderModel\n"
                   "from transformers.dynamic_module_utils import get_class_from_dynamic_module\n"
                   f"get_class_from_dynamic_module('modeling_enrich_tinyvit.TinyVitEncoder', {captioner!r})\n"
                   f"model = VisionEncoderDecoderModel.from_pretrained({captioner!r})\n"
                   "print(type(model.encoder).__name__)\n")
    for code in (with_enrich, remote_code):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.split() == ["TinyVitEncoder"]
    config = json.loads((bundle_dir / "captioner" / "config.json").read_text())
    assert config["encoder"]["auto_map"]["AutoModel"] == "modeling_enrich_tinyvit.TinyVitEncoder"


def test_info_reads_a_bundle_without_torch(bundle_dir: Path):
    code = ("import sys\nfrom enrich_cli.main import main\ncode = main(['info', sys.argv[1]])\n"
            "assert 'torch' not in sys.modules and 'enrich_trainer' not in sys.modules, 'imported torch'\n"
            "raise SystemExit(code)\n")
    result = subprocess.run([sys.executable, "-c", code, str(bundle_dir)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RANDOM initialisation" in result.stdout and "WARNING: the backbone started from random weights" \
        in result.stdout and "top-3" in result.stdout


def test_evaluate_command_prints_the_table_and_writes_the_report(bundle_dir: Path, catalogue_dir: Path,
                                                                 tmp_path: Path):
    result = subprocess.run([*ENRICH, "evaluate", "--model", str(bundle_dir), "--data", str(catalogue_dir),
                             "--split", "test", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "articleType" in result.stdout and "ROUGE-L" in result.stdout
    saved = json.loads((bundle_dir / "metrics.json").read_text())
    again = json.loads((tmp_path / "metrics.json").read_text())
    assert again["articleType"]["accuracy"] == saved["articleType"]["accuracy"]  # the same test split, as served
    assert (tmp_path / "report.md").read_text().startswith("# Evaluation of")
    assert len(load_catalogue(catalogue_dir).items) > again["test_items"]


def test_refit_fits_a_separable_problem_and_respects_logit_adjustment():
    from enrich_trainer.refit import fit_linear, score

    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=generator) * 3
    target = torch.arange(400) % 4
    design = centres[target] + torch.randn(400, 16, generator=generator)
    weight, bias = fit_linear(design, target, 4, 1e-3, None)
    assert score(weight, bias, design, target) > 0.95
    target_with_gaps = target.clone()
    target_with_gaps[::5] = -100  # missing labels are left out of the fit and of the score
    weight, bias = fit_linear(design, target_with_gaps, 4, 1e-3, None)
    assert score(weight, bias, design, target_with_gaps) > 0.95
    # Logit adjustment is added for the loss only: the fitted scores leave out the prior, so the class the
    # adjustment favours during fitting gets a lower bias than without it.
    adjustment = torch.tensor([2.0, 0.0, 0.0, 0.0])
    _, adjusted_bias = fit_linear(design, target, 4, 1e-3, adjustment)
    assert adjusted_bias[0] - adjusted_bias[1:].mean() < bias[0] - bias[1:].mean() - 1.0


def test_a_refit_replaces_the_fine_tuned_head_only_by_a_clear_margin():
    from enrich_trainer.refit import MIN_GAIN, Candidate, choose

    weight, bias = torch.zeros(2, 3), torch.zeros(2)
    fine = Candidate("fine-tuned", weight, bias, 0.80)
    slightly = Candidate("refit", weight, bias, 0.80 + MIN_GAIN / 2)
    clearly = Candidate("colour only", weight, bias, 0.80 + MIN_GAIN * 1.5)
    assert choose([fine, slightly]) is fine  # within the noise of a validation split
    assert choose([fine, slightly, clearly]) is clearly
    assert choose([fine, Candidate("refit", weight, bias, 0.7)]) is fine


def test_training_refits_a_head_only_where_validation_improves(trained):
    """The tiny session bundle: every head's choice is recorded, and a refit only where it gained MIN_GAIN."""
    from enrich_trainer.refit import MIN_GAIN

    _, bundle = trained
    refit = bundle.config.training["refit"]
    assert set(refit) == set(bundle.vocabs)
    for name, choice in refit.items():
        assert choice["kept"] in ("fine-tuned", "refit", "colour only"), name
        if choice["kept"] == "fine-tuned":
            assert choice["validation_score"] == choice["fine_tuned_score"], name
        else:  # scores are recorded to 4 digits
            assert choice["validation_score"] >= choice["fine_tuned_score"] + MIN_GAIN - 1e-4, name
        if choice["kept"] == "colour only":
            assert name in bundle.model.heads.colour_attributes
            pooled = bundle.model.heads.norm.num_features
            assert not bundle.model.heads.heads[name].weight[:, :pooled].any()
