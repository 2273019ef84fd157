"""Any catalogue's own columns: the schema inferred (or declared in taxonomy.json), carried by the bundle, and
answered through gRPC, HTTP, enrich-client and Node by column name."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from enrich_client import EnrichClient
from enrich_contract.wire import TYPED_ATTRIBUTES
from enrich_data.catalogue import load_catalogue
from enrich_data.synth_home import COLUMNS, CSV_FILE, PRODUCT_TYPES, make_product, write_home_catalogue
from enrich_data.taxonomy_file import JSON_SCHEMA
from enrich_model.fashion import FASHION_SCHEMA
from enrich_model.schema import MULTI, CatalogueSchema

from .conftest import LoopbackServer, node_command, tiny_training_args

HOME_ATTRIBUTES = ("product_type", "department", "material", "colour_family", "style")


def home_rows(count: int, seed: int = 0) -> list[dict[str, str]]:
    import random

    rng = random.Random(seed)
    rows = []
    for n in range(count):
        p = make_product(rng, n)
        rows.append(dict(zip(COLUMNS, [p.sku, p.title, p.product_type, PRODUCT_TYPES[p.product_type][0], p.material,
                                       p.colour, "|".join(p.styles), p.price, p.barcode], strict=True)))
    return rows


def write_rows(folder: Path, rows: list[dict[str, str]], name: str = CSV_FILE, taxonomy: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / name).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if taxonomy is not None:
        (folder / "taxonomy.json").write_text(json.dumps(taxonomy))
    (folder / "images").mkdir(exist_ok=True)
    for row in rows:  # the files are listed, not read, until training
        if row.get("sku"):
            (folder / "images" / f"{row['sku']}.png").touch()
    return folder


def test_the_schema_of_a_catalogue_is_inferred_and_says_why(tmp_path: Path):
    catalogue = load_catalogue(write_rows(tmp_path / "home", home_rows(300)))
    schema = catalogue.schema
    assert schema.id_column == "sku" and schema.caption == "title"
    assert schema.names == HOME_ATTRIBUTES
    assert schema["department"].derived_from == "product_type" and schema.tree == ("product_type", "department")
    assert schema["style"].kind == MULTI and schema["style"].separator == "|"
    assert schema.roles == {"colour": "colour_family", "product": "product_type"}
    notes = "\n".join(catalogue.notes)
    assert "price: left out (numeric" in notes and "barcode: left out" in notes
    assert "department: follows from product_type" in notes
    # Serialised in the bundle and read back as it was.
    assert CatalogueSchema.from_json(json.loads(json.dumps(schema.to_json()))) == schema


def test_the_fashion_layout_keeps_its_schema(catalogue_dir: Path):
    assert load_catalogue(catalogue_dir).schema == FASHION_SCHEMA


def test_a_taxonomy_file_overrides_what_inference_cannot_know(tmp_path: Path):
    rows = [row | {"style": row["style"].replace("|", ";")} for row in home_rows(300)]
    folder = write_rows(tmp_path / "home", rows, taxonomy={
        "exclude": ["material"], "caption": "", "rare": "other", "min_examples": 40,
        "attributes": {"style": {"kind": "multi", "separator": ";"}, "colour_family": {"role": ""}}})
    catalogue = load_catalogue(folder)
    schema = catalogue.schema
    assert "material" not in schema and schema.caption == "" and "title" not in schema.names
    assert schema["style"].separator == ";" and "colour" not in schema.roles
    rare = catalogue.fold_rare(40)
    assert rare["product_type"] and {i.labels["product_type"] for i in catalogue.items} >= {"other"}
    again = load_catalogue(folder, schema=schema)  # as `enrich evaluate` reads it, then folds by the bundle's record
    again.fold_into_other(rare)
    assert [i.labels for i in again.items] == [i.labels for i in catalogue.items]


@pytest.mark.parametrize(("change", "rows_change", "expected"), [
    ({}, lambda r: {k: v for k, v in r.items() if k != "sku"}, "no id column: none of title, product_type"),
    ({"attributes": {"colour": {}}}, None, "names column 'colour', which the catalogue does not have"),
    ({"attributes": {"price": {}}}, lambda r: r | {"price": "9.99"}, "attribute price is declared, but has 1 value"),
    ({"attributes": {"material": {"kind": "multi", "separator": "/"}}}, None,
     "separator '/' splits none of its cells"),
    ({"attributes": {"material": {"derived_from": "product_type"}}}, None,
     "material is declared to follow from product_type, but is not a function of it: product_type Bowl, Clock"),
    ({"attributes": {"style": {"kind": "several"}}}, None,
     "at $.attributes.style.kind: 'several' is not one of ['single', 'multi']"),
])
def test_a_catalogue_that_cannot_be_learnt_is_one_line_and_exit_2(tmp_path: Path, change, rows_change, expected):
    """`enrich train` says what is wrong in one line, exits 2, and writes nothing."""
    from enrich_trainer.train import main

    rows = [rows_change(r) if rows_change else r for r in home_rows(200)]
    folder = write_rows(tmp_path / "data", rows, taxonomy=change)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["--data", str(folder), "--out", str(tmp_path / "bundle")])
    lines = [line for line in stderr.getvalue().splitlines() if line.startswith("enrich train: error")]
    assert code == 2 and len(lines) == 1 and expected in lines[0], stderr.getvalue()[-2000:]
    assert not (tmp_path / "bundle").exists()


def test_the_taxonomy_files_json_schema_is_published(tmp_path: Path):
    published = Path(__file__).resolve().parent.parent / "docs" / "taxonomy.schema.json"
    assert json.loads(published.read_text()) == JSON_SCHEMA  # `python -m enrich_data.taxonomy_file` rewrites it


# --- a second catalogue, end to end ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def home_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from enrich_trainer.train import train

    data = write_home_catalogue(tmp_path_factory.mktemp("home"), 240, seed=5, image_size=(40, 40), progress=False)
    out = tmp_path_factory.mktemp("home-bundle")
    train(*tiny_training_args(data, out))
    return out


@pytest.fixture(scope="session")
def home_server(home_bundle: Path):
    running = LoopbackServer(home_bundle, max_batch_size=4, max_delay_ms=10, cache_mb=0)
    running.load()
    yield running
    running.close()


def home_image(home_bundle: Path) -> Path:
    data = Path(json.loads((home_bundle / "enrich.json").read_text())["training"]["data"])
    return sorted((data / "images").glob("*.png"))[0]


def test_random_weights_train_without_layer_decay(home_bundle: Path):
    training = json.loads((home_bundle / "enrich.json").read_text())["training"]
    assert training["arguments"]["pretrained"] == "none" and training["arguments"]["layer_decay"] == 1.0


def test_a_custom_bundle_answers_by_column_name_over_grpc(home_bundle: Path, home_server: LoopbackServer):
    config = json.loads((home_bundle / "enrich.json").read_text())
    assert config["schema"]["id_column"] == "sku" and set(config["attributes"]) == set(HOME_ATTRIBUTES) - {"department"}
    with EnrichClient(home_server.target) as client:
        info = client.model_info()
        answer = client.enrich(home_image(home_bundle).read_bytes(), top_k=2)
    by_name = {a.name: a for a in info.attributes}
    assert list(by_name) == list(HOME_ATTRIBUTES)
    assert by_name["style"].kind == "multi" and by_name["department"].derived_from == "product_type"
    assert by_name["colour_family"].role == "colour" and not by_name["material"].field
    assert list(info.schema.tree) == ["product_type", "department"] and info.schema.caption_column == "title"
    assert set(by_name["style"].value_thresholds) == set(by_name["style"].labels)
    metadata = answer.metadata
    assert set(metadata.attributes) == set(HOME_ATTRIBUTES)
    for name in HOME_ATTRIBUTES:
        prediction = metadata.attributes[name]
        assert prediction.label in by_name[name].labels and 0 < prediction.confidence <= 1
        assert prediction.accepted == (prediction.confidence >= by_name[name].accept_threshold) or name == "style"
    style = metadata.attributes["style"]
    thresholds = by_name["style"].value_thresholds
    assert all(v.confidence >= thresholds[v.label] for v in style.values)
    assert not any(metadata.HasField(field) for field in TYPED_ATTRIBUTES.values())  # no Fashion columns here
    assert metadata.attributes["department"].derived
    assert metadata.product_display_name.text  # the caption learnt from "title"


def test_a_custom_bundle_answers_over_http_the_client_cli_and_node(home_bundle: Path, home_server: LoopbackServer,
                                                                   node_client: Path):
    image = home_image(home_bundle)
    url = f"http://127.0.0.1:{home_server.server.ports['http_port']}/v1/enrich?caption_mode=skip"
    request = urllib.request.Request(url, data=image.read_bytes(), method="POST")
    with urllib.request.urlopen(request, timeout=60) as reply:
        over_http = json.loads(reply.read())["metadata"]["attributes"]
    done = subprocess.run([sys.executable, "-m", "enrich_client.cli", "--target", home_server.target, "enrich",
                           str(image), "--caption-mode", "skip"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    over_cli = json.loads(done.stdout)["metadata"]["attributes"]
    node = subprocess.run(node_command(node_client, "--target", home_server.target, "--caption-mode", "skip",
                                       str(image)), capture_output=True, text=True, timeout=120)
    assert node.returncode == 0, node.stderr
    over_node = json.loads(node.stdout)["metadata"]["attributes"]
    listed = [v["label"] for v in over_http["style"]["values"]]  # every surface writes the field, empty or not
    for answers in (over_http, over_cli, over_node):
        assert set(answers) == set(HOME_ATTRIBUTES)
        assert {k: v["label"] for k, v in answers.items()} == {k: v["label"] for k, v in over_http.items()}
        assert [v["label"] for v in answers["style"]["values"]] == listed


def test_enrich_client_audits_a_custom_catalogue_by_its_own_columns(home_bundle: Path, home_server: LoopbackServer,
                                                                   tmp_path: Path):
    """The audit reads the served model's columns (its id, single-valued attributes and caption) from the
    catalogue's own CSV and image files; a replaced value is found wrong more often than a kept one."""
    import shutil

    data = Path(json.loads((home_bundle / "enrich.json").read_text())["training"]["data"])
    with (data / CSV_FILE).open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:40]
    folder = tmp_path / "catalogue"
    (folder / "images").mkdir(parents=True)
    for row in rows:
        shutil.copy(data / "images" / f"{row['sku']}.png", folder / "images")
    colours = sorted({r["colour_family"] for r in rows})
    changed = {r["sku"] for r in rows[:8]}
    for row in rows[:8]:
        row["colour_family"] = next(c for c in colours if c != row["colour_family"])
    write_rows(folder, rows)
    out = tmp_path / "audit"
    done = subprocess.run([sys.executable, "-m", "enrich_client.cli", "--target", home_server.target, "audit",
                           "--quiet", str(folder), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with (out / "findings.csv").open(newline="") as handle:
        findings = list(csv.DictReader(handle))
    audited = {f["attribute"] for f in findings}
    assert audited == {"product_type", "department", "material", "colour_family", "style", "title"}
    style = [f for f in findings if f["attribute"] == "style"]
    assert {f["kind"] for f in style} <= {"agrees", "disagrees"} and all(0 <= float(f["p_wrong"]) <= 1 for f in style)
    colour = {f["id"]: float(f["p_wrong"]) for f in findings if f["attribute"] == "colour_family"}
    assert len(colour) == 40
    wrong = sorted(colour[i] for i in changed)
    right = sorted(v for i, v in colour.items() if i not in changed)
    assert sum(w > r for w in wrong for r in right) / (len(wrong) * len(right)) >= 0.75  # AUC of p_wrong
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["attributes"]) == [*HOME_ATTRIBUTES, "title"]


def test_corrupt_replaces_any_attribute_of_any_catalogue(tmp_path: Path):
    from enrich_data.corrupt import Truth, corrupt

    source = write_home_catalogue(tmp_path / "home", 100, seed=2, image_size=(32, 32), progress=False)
    truth = corrupt(source, tmp_path / "corrupted", seed=1, duplicate_rate=0.05, rates={"material": 0.1})
    assert Truth.read(tmp_path / "corrupted") == truth and set(truth.replaced) == {"material"}
    with (tmp_path / "corrupted" / CSV_FILE).open(newline="") as handle:
        rows = {row["sku"]: row for row in csv.DictReader(handle)}
    assert len(rows) == truth.rows == 105 and list(next(iter(rows.values()))) == list(COLUMNS)
    for sku, original in truth.replaced["material"].items():
        assert rows[sku]["material"] != original
    assert all((tmp_path / "corrupted" / "images" / f"{copy}.jpg").is_file() for copy in truth.duplicates)
    default = corrupt(source, tmp_path / "default", seed=1)  # the colour and product attributes
    assert set(default.replaced) == {"colour_family", "product_type"}
    with pytest.raises(ValueError, match="not a single-valued attribute"):
        corrupt(source, tmp_path / "bad", rates={"style": 0.1})


def test_inference_needs_evidence_before_it_makes_a_column_a_parent():
    """A near-constant column follows from anything, and a sparse column's few values say nothing: neither makes
    a tree (the colour keeps its role)."""
    from enrich_data.schema_inference import infer_schema

    rows = [{"sku": f"s{n}", "product_type": f"t{n % 8}", "colour": f"c{n % 6}",
             "collection": f"k{n % 10}" if n < 40 else "", "flag": "yes" if n == 0 else "no"} for n in range(1000)]
    schema = infer_schema(list(rows[0]), rows).schema
    assert not schema.derived and schema.roles["colour"] == "colour"


def test_an_accept_threshold_never_cuts_inside_a_tie():
    import numpy as np

    from enrich_trainer.evaluation import accept_threshold

    confidences = np.array([1.0] * 20 + [0.5] * 5)
    correct = np.array([True] * 18 + [False] * 2 + [True] * 5)
    assert accept_threshold(confidences, correct, 0.95) > 1  # all twenty at 1.0 are 90 % right: none accepted
    assert accept_threshold(confidences, correct, 0.9) == 0.5
