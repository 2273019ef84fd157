"""The audit's parts alone: what p_wrong means, the error-rate estimate, findings, the image's look, duplicate
pairs and the corruption tool that the audit is measured with."""

from __future__ import annotations

import io
import random
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageDraw

from enrich_client.audit.duplicates import MAX_PRODUCT_HASH_BITS, Signature, duplicate_pairs, groups
from enrich_client.audit.findings import estimate_error_rate
from enrich_contract.posterior import DEFAULT_ERROR_PRIOR, p_wrong, uniform_mistake, valid_prior
from enrich_data.corrupt import Truth, corrupt, near_duplicate, nearest_colour
from enrich_model.answers import AttributePrediction, FindingKind, LabelScore, TaxonomyLevel
from enrich_model.audit import Auditor
from enrich_model.consistency import CaptionLexicon
from enrich_model.fashion import COLOUR_RGB, FASHION_SCHEMA, legacy_taxonomy
from enrich_model.look import look, perceptual_hash


def test_p_wrong_is_bayes_rule_over_a_catalogue_that_errs_uniformly():
    rng = np.random.default_rng(0)
    labels, prior = 6, 0.1
    for _ in range(20):
        image = rng.dirichlet(np.ones(labels))  # p(true label | image)
        supplied = int(rng.integers(labels))
        # P(catalogue writes `supplied` and the truth is y): right when y == supplied, else a uniform mistake.
        joint = image * np.where(np.arange(labels) == supplied, 1 - prior, prior / (labels - 1))
        assert p_wrong(image[supplied], labels, prior) == pytest.approx(1 - joint[supplied] / joint.sum())
    assert valid_prior(0) == DEFAULT_ERROR_PRIOR and valid_prior(0.2) == 0.2
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        valid_prior(1.0)


def simulated_catalogue(rows: int, labels: int, error_rate: float, confusable_share: float, seed: int):
    """A calibrated model's p(supplied) over a catalogue with known mistakes (the true label is drawn from the
    model's own distribution, so the model is calibrated by construction). A confusion writes the label the
    model finds nearest, here the next one."""
    rng = np.random.default_rng(seed)
    centre = rng.integers(labels, size=rows)
    probabilities = rng.dirichlet(np.full(labels, 0.3), size=rows) * 0.1
    probabilities[np.arange(rows), centre] += 0.9 * rng.uniform(0.5, 1.0, size=rows)
    probabilities[np.arange(rows), (centre + 1) % labels] += 0.02  # the neighbour looks a little alike
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    truth = np.asarray([rng.choice(labels, p=row) for row in probabilities])
    supplied = truth.copy()
    wrong = rng.random(rows) < error_rate
    confusion = rng.random(rows) < confusable_share
    supplied[wrong & confusion] = ((truth + 1) % labels)[wrong & confusion]
    others = (truth + rng.integers(1, labels, size=rows)) % labels
    supplied[wrong & ~confusion] = others[wrong & ~confusion]
    p = probabilities[np.arange(rows), supplied]
    confusable = probabilities[np.arange(rows), (supplied - 1) % labels]  # the label whose neighbour it is
    return p, uniform_mistake(p, labels), confusable, wrong.mean()


def test_the_error_rate_estimate_recovers_the_truth_and_its_interval_covers_it():
    p, uniform, confusable, true_rate = simulated_catalogue(4000, 20, 0.06, 0.5, seed=1)
    estimate = estimate_error_rate(p, uniform, confusable, runs=100)
    assert abs(estimate.rate - true_rate) < 0.01
    assert estimate.low <= true_rate <= estimate.high and estimate.high - estimate.low < 0.03
    assert 0.3 < estimate.confusable_share < 0.7
    clean = estimate_error_rate(*simulated_catalogue(2000, 20, 0.0, 0.5, seed=2)[:3], runs=50)
    assert clean.rate < 0.005


@pytest.fixture()
def auditor() -> Auditor:
    taxonomy = legacy_taxonomy({"Tshirts": ("Topwear", "Apparel"), "Shirts": ("Topwear", "Apparel"),
                                "Jeans": ("Bottomwear", "Apparel"), "Watches": ("Watches", "Accessories")})
    labels = {"gender": ["Men", "Women"], "baseColour": ["Black", "Navy Blue", "White"],
              "articleType": ["Tshirts", "Shirts", "Jeans", "Watches"],
              "subCategory": ["Bottomwear", "Topwear", "Watches"], "masterCategory": ["Accessories", "Apparel"]}
    lexicon = CaptionLexicon(colours=labels["baseColour"], genders=labels["gender"],
                             nouns={"Tshirts": "T-shirt", "Shirts": "Shirt", "Jeans": "Jeans", "Watches": "Watch"})
    return Auditor(FASHION_SCHEMA, labels, taxonomy, lexicon)


def predicted(label: str, confidence: float) -> AttributePrediction:
    return AttributePrediction(label, confidence, [LabelScore(label, confidence)])


def test_the_server_audits_the_columns_the_client_sends(auditor: Auditor):
    from enrich_client.audit.catalogue import AUDIT_COLUMNS

    # For Fashion Product Images' schema: the client's columns from the proto, the server's from the bundle
    assert auditor.auditable == AUDIT_COLUMNS


def test_the_report_page_cannot_be_broken_by_what_a_catalogue_holds(tmp_path: Path):
    from enrich_client.audit.findings import FindingRow
    from enrich_client.audit.report import write_report

    hostile = '</script><!--<script>{{data}}'
    row = FindingRow(hostile, "baseColour", "disagrees", hostile, "Red", 0.01, 0.9, 0.99)
    page = write_report(tmp_path, "{{data}} & <b>", {}, [row], 1, [], {}, {}).read_text()
    script = page[page.index('<script id="audit-data"'):]
    script = script[:script.index("</script>")]
    assert "<!--" not in script and "</" not in script.split(">", 1)[1]
    assert "<title>{{data}} &amp; &lt;b&gt;</title>" in page and page.count('"total_findings"') == 1


def test_findings_say_agrees_disagrees_filled_or_unknown_and_where_the_tree_disagrees(auditor: Auditor):
    distributions = {"gender": [0.9, 0.1], "baseColour": [0.05, 0.9, 0.05], "articleType": [0.8, 0.15, 0.04, 0.01],
                     "subCategory": [0.04, 0.95, 0.01], "masterCategory": [0.01, 0.99]}
    attributes = {"gender": predicted("Men", 0.9), "baseColour": predicted("Navy Blue", 0.9),
                  "articleType": predicted("Tshirts", 0.8), "subCategory": predicted("Topwear", 0.95),
                  "masterCategory": predicted("Apparel", 0.99)}
    supplied = (("articleType", "shirts"), ("baseColour", " navy   BLUE "), ("gender", ""),
                ("masterCategory", "Free Items"), ("productDisplayName", "Nike Women Black T-shirt"),
                ("subCategory", "Watches"))
    findings = {f.attribute: f for f in auditor.findings(supplied, distributions, attributes, 0.05)}
    assert list(findings) == ["gender", "baseColour", "articleType", "subCategory", "masterCategory",
                              "productDisplayName"]  # the proto's order, whatever the request's
    colour = findings["baseColour"]
    assert (colour.kind, colour.supplied_label, colour.p_supplied) == (FindingKind.AGREES, "Navy Blue", 0.9)
    assert colour.p_wrong == pytest.approx(p_wrong(0.9, 3, 0.05))
    article = findings["articleType"]
    assert article.kind is FindingKind.DISAGREES and article.predicted == "Tshirts"
    assert article.disagreement_level is TaxonomyLevel.ARTICLE_TYPE  # both under Topwear
    sub = findings["subCategory"]
    assert sub.kind is FindingKind.DISAGREES and sub.disagreement_level is TaxonomyLevel.MASTER_CATEGORY
    assert findings["gender"].kind is FindingKind.FILLED and findings["gender"].predicted == "Men"
    unknown = findings["masterCategory"]
    assert unknown.kind is FindingKind.UNKNOWN_LABEL and unknown.p_wrong == 0 and unknown.supplied == "Free Items"
    name = findings["productDisplayName"]
    assert name.kind is FindingKind.DISAGREES and name.predicted == "Nike Men Navy Blue T-shirt"
    mentioned = [p_wrong(0.1, 2, 0.05), p_wrong(0.05, 3, 0.05), p_wrong(0.8, 4, 0.05)]
    assert name.p_wrong == pytest.approx(1 - np.prod([1 - v for v in mentioned]))
    unchecked = auditor.findings((("productDisplayName", "Gift card"),), distributions, attributes, 0.05)[0]
    assert unchecked.kind is FindingKind.UNCHECKED and unchecked.p_wrong == 0


def product_shot(fill: tuple[int, int, int], stripe: tuple[int, int, int], size=(120, 160)) -> Image.Image:
    image = Image.new("RGB", size, (250, 250, 248))
    pen = ImageDraw.Draw(image)
    pen.rectangle((20, 20, 100, 140), fill=fill)
    pen.rectangle((20, 110, 100, 140), fill=stripe)
    return image


def test_the_look_names_the_products_colours_and_leaves_the_background_out():
    image = product_shot(COLOUR_RGB["Red"], COLOUR_RGB["Navy Blue"])
    palette = look(image, COLOUR_RGB).palette
    assert [c.nearest for c in palette] == ["Red", "Navy Blue"]
    assert palette[0].share == pytest.approx(0.75, abs=0.05) and sum(c.share for c in palette) == pytest.approx(1)
    assert palette[0].hex == "#{:02x}{:02x}{:02x}".format(*COLOUR_RGB["Red"])


def test_the_look_computes_what_a_request_asks_for_and_nothing_for_one_that_asks_for_none(monkeypatch):
    from enrich_model import look as looks

    image = product_shot(COLOUR_RGB["Red"], COLOUR_RGB["Navy Blue"])
    computed: list[str] = []

    def counting(part: str):
        real = getattr(looks, part)

        def counted(*args):
            computed.append(part)
            return real(*args)
        return counted

    for part in ("palette", "perceptual_hash", "product_pixels"):
        monkeypatch.setattr(looks, part, counting(part))

    def seen(palette: bool, signature: bool) -> tuple[set[str], looks.ImageLook]:
        computed.clear()
        found = look(image, COLOUR_RGB, palette, signature)
        return set(computed), found

    assert seen(False, False) == (set(), looks.ImageLook())
    parts, found = seen(True, False)
    assert parts == {"palette", "product_pixels"} and found.palette and not found.perceptual_hash
    assert not found.product_hash
    parts, found = seen(False, True)
    assert "perceptual_hash" in parts and not found.palette and len(found.colour_fingerprint) == 6
    assert len(found.product_hash) == 16


def test_the_perceptual_hash_is_imagehash_phash():
    rng = random.Random(0)
    for n in range(20):
        image = product_shot(tuple(rng.randrange(256) for _ in range(3)), tuple(rng.randrange(256) for _ in range(3)),
                             size=(rng.randrange(40, 300), rng.randrange(40, 300)))
        if n % 2:
            image = image.rotate(rng.uniform(-20, 20), fillcolor=(255, 255, 255))
        assert perceptual_hash(image) == str(imagehash.phash(image))


def test_a_copy_keeps_the_colour_fingerprint_and_another_photo_does_not():
    def fingerprint(image: Image.Image) -> np.ndarray:
        return np.asarray(look(image, COLOUR_RGB).colour_fingerprint).reshape(2, 3)

    original = product_shot((200, 40, 40), (30, 30, 120))
    rng = random.Random(1)
    copy = Image.open(io.BytesIO(near_duplicate(original, rng)))
    other = product_shot((208, 40, 40), (30, 30, 120))  # the same design, a shade apart
    assert np.linalg.norm(fingerprint(original) - fingerprint(copy), axis=1).max() < 1.0
    assert np.linalg.norm(fingerprint(original) - fingerprint(other), axis=1)[0] > 2.0


def test_the_product_hash_keeps_a_re_framed_copy_and_tells_another_product_of_the_kind():
    from enrich_data.synth import Detail, draw, make_row

    def hashes(image: Image.Image) -> tuple[int, int]:
        found = look(image.convert("RGB"), COLOUR_RGB, with_palette=False)
        return int(found.product_hash, 16), int(found.perceptual_hash, 16)

    rows, details = random.Random(4), random.Random(9)
    kept, told, photo_kept = 0, 0, 0
    for n in range(40):
        row, pattern = make_row(rows, n)
        original = draw(row, pattern, (120, 160), random.Random(n), Detail.draw(details))
        another = draw(row, pattern, (120, 160), random.Random(n), Detail.draw(details))  # same labels and shot
        copy = Image.open(io.BytesIO(near_duplicate(original, random.Random(n))))
        (product, photo), (copy_product, copy_photo) = hashes(original), hashes(copy)
        kept += (product ^ copy_product).bit_count() <= MAX_PRODUCT_HASH_BITS
        told += (product ^ hashes(another)[0]).bit_count() > MAX_PRODUCT_HASH_BITS
        photo_kept += (photo ^ copy_photo).bit_count() <= MAX_PRODUCT_HASH_BITS
    assert kept >= 34 and told >= 28, (kept, told)  # most: a plain product without a graphic is its twin
    assert photo_kept < kept, (photo_kept, kept)  # re-framing moves the photo's own hash more


def signature(key: str, embedding: list[float], fingerprint: list[float], size=(60, 80), hash_="ff00ff00ff00ff00",
              product_hash="0f0f0f0f0f0f0f0f"):
    vector = np.asarray(embedding, np.float32)
    return Signature(key, *size, 1000, hash_, vector / np.linalg.norm(vector), np.asarray(fingerprint, float),
                     product_hash)


def test_duplicates_need_a_near_embedding_the_same_colours_and_product_and_keep_the_largest_copy():
    photo = [50.0, 40.0, 20.0, 97.0, 0.0, 1.0]
    signatures = [signature("a", [1, 0.02, 0], photo), signature("b", [1, 0, 0.01], [50.5, 40.2, 20.1, 97.1, 0, 1],
                                                                (120, 160), product_hash="0f0f0f0f0f0f0f0e"),
                  signature("c", [1, 0.01, 0.01], [55.0, 40.0, 20.0, 97.0, 0.0, 1.0]),  # look-alike, other colour
                  signature("d", [0, 1, 0], photo),  # same colours, another product
                  signature("e", [0.99, 0.05, 0], [50.2, 40.1, 20.0, 97.2, 0.1, 1.0], hash_="ff00ff00ff00ff01"),
                  # same colours, another print or logo on the same product type
                  signature("f", [1, 0.02, 0.001], photo, product_hash="f0f0f0f0f0f0f00f")]
    pairs = duplicate_pairs(signatures)
    assert {frozenset((p.a.key, p.b.key)) for p in pairs} == {frozenset("ab"), frozenset("ae"), frozenset("be")}
    assert [[s.key for s in group] for group in groups(pairs)] == [["b", "a", "e"]]  # the 120x160 copy first
    older = [signature(s.key, list(s.embedding), list(s.fingerprint), product_hash="") for s in signatures]
    assert frozenset("af") in {frozenset((p.a.key, p.b.key)) for p in duplicate_pairs(older)}  # colours alone
    # One answer without a product hash (an older server's, resumed) keeps the hash check for the other pairs, and
    # its own pairs need the colours within the stricter limit.
    near = [50.0, 40.0, 22.5, 97.0, 0.0, 1.0]  # 2.5 ΔE from the photo: within 3, not within 2
    mixed = [*signatures, signature("g", [1, 0.02, 0.002], near, product_hash=""),
             signature("h", [1, 0.02, 0.003], near)]
    found = {frozenset((p.a.key, p.b.key)) for p in duplicate_pairs(mixed)}
    assert frozenset("af") not in found and frozenset("ah") in found and frozenset("ag") not in found


def test_corrupt_replaces_what_it_says_and_adds_decodable_near_duplicates(tmp_path: Path):
    from enrich_data.synth import write_catalogue

    source = write_catalogue(tmp_path / "clean", 200, seed=5, progress=False)
    truth = corrupt(source, tmp_path / "corrupted", seed=3, colour_rate=0.1, article_rate=0.05, duplicate_rate=0.05)
    assert Truth.read(tmp_path / "corrupted") == truth
    rows = {line.split(",")[0]: line for line in (tmp_path / "corrupted" / "styles.csv").read_text().splitlines()[1:]}
    assert len(truth.replaced["baseColour"]) == 20 and len(truth.replaced["articleType"]) == 10
    assert len(truth.duplicates) == 10 and truth.rows == len(rows)
    assert len(truth.neighbour_colours) == 10
    for copy, original in truth.duplicates.items():
        data = (tmp_path / "corrupted" / "images" / f"{copy}.jpg").read_bytes()
        assert data != (source / "images" / f"{original}.jpg").read_bytes()
        Image.open(io.BytesIO(data)).verify()
    assert nearest_colour("Navy Blue", ["Black", "Navy Blue", "Yellow", "Blue"]) in ("Black", "Blue")
