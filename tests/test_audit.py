"""Auditing a catalogue through the served model: the findings on every surface (gRPC, HTTP, grpcurl), and
`enrich-client audit` as a user runs it, down to the report opened in headless Chromium."""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from enrich.v1 import enrich_pb2
from enrich_client import EnrichClient, EnrichError, to_json
from enrich_contract.posterior import DEFAULT_ERROR_PRIOR, p_wrong
from enrich_data.corrupt import Truth, corrupt

from .conftest import LoopbackServer
from .test_contract import GRPCURL, http

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture()
def row(catalogue_dir: Path) -> dict:
    with open(catalogue_dir / "styles.csv", newline="", encoding="utf-8") as handle:
        first = next(r for r in csv.DictReader(handle) if (catalogue_dir / "images" / f"{r['id']}.jpg").is_file())
    return first


def catalogue_values(row: dict, **changes: str) -> dict[str, str]:
    values = {k: row[k] for k in ("gender", "baseColour", "articleType", "subCategory", "masterCategory",
                                  "productDisplayName")}
    return values | changes


def test_an_audit_answers_one_finding_per_value_as_the_contract_defines_it(client: EnrichClient, row: dict,
                                                                           catalogue_dir: Path):
    image = (catalogue_dir / "images" / f"{row['id']}.jpg").read_bytes()
    info = client.model_info()
    sizes = {attribute.name: len(attribute.labels) for attribute in info.attributes}
    wrong_colour = next(label for label in info.attributes[1].labels if label != row["baseColour"])
    values = catalogue_values(row, baseColour=wrong_colour.upper(), usage="", season="Monsoon")
    answer = client.enrich(image, "audited", catalogue=values, include_embedding=True, include_palette=True,
                           include_signature=True)
    findings = {f.attribute: f for f in answer.audit.findings}
    assert list(findings) == ["gender", "baseColour", "season", "usage", "articleType", "subCategory",
                              "masterCategory", "productDisplayName"]
    assert answer.audit.error_prior == pytest.approx(DEFAULT_ERROR_PRIOR)
    colour = findings["baseColour"]
    assert colour.supplied == wrong_colour.upper() and colour.supplied_label == wrong_colour
    assert colour.predicted == answer.metadata.base_colour.label
    assert colour.kind == (enrich_pb2.FINDING_KIND_AGREES if wrong_colour == colour.predicted
                           else enrich_pb2.FINDING_KIND_DISAGREES)
    for finding in answer.audit.findings:
        if finding.kind in (enrich_pb2.FINDING_KIND_AGREES, enrich_pb2.FINDING_KIND_DISAGREES) and \
                finding.attribute in sizes:
            assert finding.p_wrong == pytest.approx(p_wrong(finding.p_supplied, sizes[finding.attribute],
                                                            DEFAULT_ERROR_PRIOR), rel=1e-4, abs=1e-6)
    assert findings["usage"].kind == enrich_pb2.FINDING_KIND_FILLED and findings["usage"].predicted
    assert findings["season"].kind == enrich_pb2.FINDING_KIND_UNKNOWN_LABEL
    signature = answer.metadata.signature
    assert len(signature.embedding) == info.embedding_size > 0 and len(signature.perceptual_hash) == 16
    assert len(signature.product_hash) == 16
    assert sum(v * v for v in signature.embedding) == pytest.approx(1.0, abs=1e-4)
    assert len(signature.colour_fingerprint) == 6 and 1 <= len(answer.metadata.palette) <= 5
    assert answer.metadata.sure_level != enrich_pb2.TAXONOMY_LEVEL_UNSPECIFIED or \
        answer.metadata.master_category.unsure
    plain = client.enrich(image, "plain")
    assert not plain.HasField("audit") and not plain.metadata.signature.embedding
    assert not plain.metadata.palette and not plain.metadata.signature.perceptual_hash  # computed when asked only
    assert not plain.metadata.signature.colour_fingerprint and not plain.metadata.signature.product_hash


@pytest.mark.parametrize(("values", "prior", "words"), [
    ({"colour": "Red"}, 0.0, "catalogue column 'colour' is not one this model audits"),
    ({"baseColour": "Red"}, 1.5, "error_prior 1.5 is not a probability"),
])
def test_an_audit_the_server_cannot_do_is_refused_with_its_reason(client: EnrichClient, catalogue_dir: Path,
                                                                  values: dict, prior: float, words: str):
    image = next((catalogue_dir / "images").glob("*.jpg")).read_bytes()
    with pytest.raises(EnrichError) as refused:
        client.enrich(image, catalogue=values, error_prior=prior)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and refused.value.reason == "REQUEST_INVALID"
    assert words in str(refused.value)


def test_http_json_query_and_grpcurl_audit_alike(server: LoopbackServer, client: EnrichClient, row: dict,
                                                 catalogue_dir: Path):
    path = catalogue_dir / "images" / f"{row['id']}.jpg"
    values = catalogue_values(row)
    expected = to_json(client.enrich(path.read_bytes(), "same", caption_mode="skip", catalogue=values,
                                     error_prior=0.1))["audit"]
    body = json.dumps({"requestId": "same", "image": base64.b64encode(path.read_bytes()).decode(),
                       "captionMode": "CAPTION_MODE_SKIP", "catalogue": {"values": values, "errorPrior": 0.1}}).encode()
    status, over_json = http(server, "/v1/enrich", body, {"Content-Type": "application/json"})
    assert status == 200 and over_json["audit"] == expected
    query = "&".join(f"catalogue.{k}={v.replace(' ', '+')}" for k, v in values.items())
    status, over_query = http(server, f"/v1/enrich?caption_mode=skip&catalogue.error_prior=0.1&{query}",
                              path.read_bytes())
    assert status == 200 and over_query["audit"] == expected
    status, refused = http(server, "/v1/enrich?catalogue.error_prior=often", path.read_bytes())
    assert status == 400 and "catalogue.error_prior must be a number" in refused["message"]
    if GRPCURL is None:
        if os.environ.get("CI"):
            pytest.fail("grpcurl is part of the dev extra")
        pytest.skip("grpcurl is not installed")
    done = subprocess.run([GRPCURL, "-plaintext", "-emit-defaults", "-d", "@", server.target,
                           "enrich.v1.Enrich/Enrich"], input=body.decode(), capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout)["audit"] == expected


def auc(positives: list[float], negatives: list[float]) -> float:
    """The chance that a positive scores above a negative (ties count half)."""
    pairs = [(p > n) + 0.5 * (p == n) for p in positives for n in negatives]
    return sum(pairs) / len(pairs)


def audit_command(target: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "enrich_client.cli", "--target", target, "audit", "--quiet", *args]


@pytest.fixture()
def corrupted(catalogue_dir: Path, tmp_path: Path) -> Path:
    corrupt(catalogue_dir, tmp_path / "corrupted", seed=4, colour_rate=0.1, article_rate=0.1, duplicate_rate=0.05)
    return tmp_path / "corrupted"


def test_enrich_client_audit_writes_findings_duplicates_summary_and_a_report(server: LoopbackServer,
                                                                             corrupted: Path, tmp_path: Path):
    out = tmp_path / "audit"
    done = subprocess.run(audit_command(server.target, str(corrupted), "--out", str(out)), capture_output=True,
                          text=True, timeout=300)
    truth = Truth.read(corrupted)
    assert done.returncode == 0, done.stderr
    assert f"{truth.rows} enriched, 0 failed" in done.stderr and "estimated error rate" in done.stderr
    with open(out / "findings.csv", newline="", encoding="utf-8") as handle:
        findings = list(csv.DictReader(handle))
    assert set(findings[0]) >= {"id", "attribute", "supplied", "predicted", "p_supplied", "p_predicted", "p_wrong",
                                "kind"}
    assert len({f["id"] for f in findings}) == truth.rows and len(findings) == 8 * truth.rows
    assert [float(f["p_wrong"]) for f in findings] == sorted((float(f["p_wrong"]) for f in findings), reverse=True)
    # The audit's p_wrong ranks the colours that were replaced above those that were not (the session's model
    # learns baseColour; its other heads barely learn anything in two epochs).
    colours = [(float(f["p_wrong"]), f["id"] in truth.replaced["baseColour"]) for f in findings
               if f["attribute"] == "baseColour" and f["kind"] in ("agrees", "disagrees")]
    wrong = [p for p, replaced in colours if replaced]
    right = [p for p, replaced in colours if not replaced]
    assert len(wrong) >= 5 and auc(wrong, right) >= 0.75, (auc(wrong, right), wrong)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == summary["answered"] == truth.rows
    colour = summary["attributes"]["baseColour"]
    assert colour["audited"] == truth.rows and 0 <= colour["error_rate_interval_95"][0] <= \
        colour["estimated_error_rate"] <= colour["error_rate_interval_95"][1] <= 1
    with open(out / "duplicates.csv", newline="", encoding="utf-8") as handle:
        pairs = list(csv.DictReader(handle))
    assert len(pairs) == summary["duplicates"]["pairs"]
    assert all(set(p) == {"id_a", "id_b", "similarity", "hash_bits_differing", "kind", "keep"} for p in pairs)
    keep = {}  # every id of a group names the same copy to keep, and that copy is one of the group's
    for pair in pairs:
        for key in (pair["id_a"], pair["id_b"]):
            assert keep.setdefault(key, pair["keep"]) == pair["keep"]
    assert all(kept in keep for kept in keep.values())
    report = (out / "report.html").read_text()
    assert "<script id=\"audit-data\"" in report and (out / "thumbs").is_dir()
    again = subprocess.run(audit_command(server.target, str(corrupted), "--out", str(out)), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and f"0 enriched, 0 failed, {truth.rows} already in the output" in again.stderr
    changed = subprocess.run(audit_command(server.target, str(corrupted), "--out", str(out), "--error-prior", "0.2"),
                             capture_output=True, text=True, timeout=60)
    assert changed.returncode == 2 and "error_prior the server's default -> 0.2" in changed.stderr
    styles = (corrupted / "styles.csv").read_text().splitlines()
    first = styles[1].split(",")
    first[5] = "Navy Blue" if first[5] != "Navy Blue" else "Black"  # baseColour, edited in the catalogue
    (corrupted / "styles.csv").write_text("\n".join([styles[0], ",".join(first), *styles[2:]]) + "\n")
    edited = subprocess.run(audit_command(server.target, str(corrupted), "--out", str(out)), capture_output=True,
                            text=True, timeout=300)
    assert edited.returncode == 0 and f"1 enriched, 0 failed, {truth.rows - 1} already in the output" in edited.stderr
    with open(out / "findings.csv", newline="", encoding="utf-8") as handle:
        now = {(f["id"], f["attribute"]): f["supplied"] for f in csv.DictReader(handle)}
    assert now[first[0], "baseColour"] == first[5]
    open_in_chromium(out / "report.html", tmp_path / "report.png")


def open_in_chromium(page: Path, screenshot: Path) -> None:
    """The report renders without script errors and shows its thumbnails; a screenshot is written."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs Debian's chromium to open the audit report")
        pytest.skip("chromium is not installed")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1600"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    body = dom.stdout[dom.stdout.index("<body"):].split(">", 1)[0]
    attributes = {k: v.strip('"') for k, v in (part.split("=", 1) for part in body.split()[1:])}
    assert "data-errors" not in attributes, dom.stdout[:2000]
    assert int(attributes["data-images-loaded"]) == int(attributes["data-images"]) > 0
    assert int(attributes["data-loaded-ms"]) < 5000 and "estimated error rate" in dom.stdout
    subprocess.run([*flags, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, timeout=120)
    assert screenshot.stat().st_size > 10_000
