"""Catalogue loading: the real file's quirks, the HF dataset path, splits, vocabularies, taxonomy."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from enrich_data.catalogue import DataError, load_catalogue, read_styles_csv
from enrich_data.synth import ARTICLES, write_catalogue
from enrich_model.decode import decode_image
from enrich_model.fashion import BASE_COLOURS, FASHION_SCHEMA, GENDERS
from enrich_model.schema import LabelVocab, Taxonomy
from enrich_trainer.split import stratified_split

HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName\n"


def test_unquoted_commas_in_names_are_rejoined_not_dropped(tmp_path: Path):
    (tmp_path / "styles.csv").write_text(
        HEADER
        + "1,Men,Apparel,Topwear,Tshirts,Navy Blue,Fall,2011,Casual,Turtle Check Men Navy Blue Shirt\n"
        + "2,Women,Apparel,Topwear,Tops,Red,Summer,2012,Casual,Tokyo Talkies Women Red, White Top\n"
        + "3,Men,Footwear,Shoes,Casual Shoes,,Fall,2012,,Puma Men Shoes, Black, Grey\n"
        + "4,Men,Apparel\n"
    )
    rows, skipped = read_styles_csv(tmp_path / "styles.csv")
    assert [r["id"] for r in rows] == ["1", "2", "3"]
    assert rows[1]["productDisplayName"] == "Tokyo Talkies Women Red, White Top"
    assert rows[2]["productDisplayName"] == "Puma Men Shoes, Black, Grey"
    assert rows[2]["baseColour"] is None and rows[2]["usage"] is None and rows[2]["season"] == "Fall"
    assert skipped == Counter({"malformed row": 1})


def test_folder_catalogue_skips_missing_images_and_keeps_missing_labels(tmp_path: Path):
    write_catalogue(tmp_path, 400, seed=1, image_size=(24, 32), missing_image_rate=0.02,
                    missing_label_rate=0.02, comma_name_rate=0.05, progress=False)
    catalogue = load_catalogue(tmp_path)
    on_disk = len(list((tmp_path / "images").glob("*.jpg")))
    assert len(catalogue) == on_disk < 400
    assert catalogue.skipped["image file missing"] == 400 - on_disk
    assert any(item.labels["baseColour"] is None for item in catalogue.items)
    assert any("," in (item.name or "") for item in catalogue.items)
    item = catalogue.items[0]
    image = decode_image(item.read_bytes()).image
    assert image.mode == "RGB" and image.size == (24, 32)
    assert item.labels["articleType"] in ARTICLES and item.labels["gender"] in GENDERS
    assert all(i.labels["baseColour"] in BASE_COLOURS for i in catalogue.items if i.labels["baseColour"])


def test_hf_dataset_with_the_same_columns(tmp_path: Path):
    import datasets

    rows, _ = read_styles_csv(write_catalogue(tmp_path / "src", 20, image_size=(24, 32), missing_image_rate=0,
                                              progress=False) / "styles.csv")
    columns = {key: [r[key] for r in rows] for key in rows[0]}
    columns["id"] = [int(v) for v in columns["id"]]
    columns["image"] = [Image.open(tmp_path / "src" / "images" / f"{r['id']}.jpg") for r in rows]
    # Row 5 is a phone photo stored sideways with an EXIF orientation tag: it must come out upright,
    # exactly as the server would decode the same bytes.
    sideways = Image.new("RGB", (32, 24), (200, 30, 30))
    exif = sideways.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    sideways.save(buffer, format="JPEG", exif=exif)
    columns["image"][5] = {"bytes": buffer.getvalue(), "path": None}
    features = datasets.Features({k: datasets.Value("int64" if k == "id" else "string") for k in rows[0]}
                                 | {"image": datasets.Image()})
    datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(tmp_path / "hf"))
    catalogue = load_catalogue(tmp_path / "hf")
    assert len(catalogue) == 20
    assert catalogue.items[3].labels["articleType"] == rows[3]["articleType"]
    assert catalogue.items[3].id == rows[3]["id"]
    assert decode_image(catalogue.items[3].read_bytes()).image.size == (24, 32)
    assert catalogue.items[5].read_bytes() == buffer.getvalue()  # the stored bytes, decoded as a request's are
    assert decode_image(catalogue.items[5].read_bytes()).image.size == (24, 32)  # upright: EXIF applied


def test_wrong_data_is_one_clear_error(tmp_path: Path):
    with pytest.raises(DataError, match="no catalogue at"):
        load_catalogue(tmp_path / "no" / "such" / "dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"neither a catalogue CSV"):
        load_catalogue(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "styles.csv").write_text("id,name\n1,x\n")
    with pytest.raises(DataError, match="the schema has no attributes"):
        load_catalogue(tmp_path / "bad")
    with pytest.raises(DataError, match="hub is not reachable"):  # HF_HUB_OFFLINE is set for the tests
        load_catalogue("someone/fashion-product-images")


def test_stratified_split_is_seeded_and_proportional():
    items = [(i, "common" if i % 10 else "rare") for i in range(1000)]
    train, val, test = stratified_split(items, lambda x: x[1], seed=7)
    assert (len(train), len(val), len(test)) == (700, 100, 200)
    assert sum(x[1] == "rare" for x in test) == 20
    assert stratified_split(items, lambda x: x[1], seed=7) == (train, val, test)
    assert stratified_split(items, lambda x: x[1], seed=8) != (train, val, test)
    assert not set(train) & set(test)


def test_vocab_and_taxonomy_most_common_parent():
    vocab = LabelVocab.from_values("gender", ["Men", "Women", "Men", None, "Boys"], min_count=2)
    assert vocab.labels == ["Men"] and vocab.encode("Women") == -100 and vocab.encode(None) == -100
    rows = [{"articleType": "Socks", "subCategory": "Socks", "masterCategory": "Accessories"}] * 5 + [
        {"articleType": "Socks", "subCategory": "Free Gifts", "masterCategory": "Free Items"}]
    taxonomy = Taxonomy.from_rows(FASHION_SCHEMA, rows)
    assert taxonomy.parents == {"subCategory": {"Socks": "Socks"}, "masterCategory": {"Socks": "Accessories"}}
    assert Taxonomy.from_json(taxonomy.to_json()).parents == taxonomy.parents
