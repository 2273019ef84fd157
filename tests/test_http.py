"""HTTP/JSON beside gRPC on the same server: curl, transcoder-style JSON, multipart, errors, model, health."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from enrich_client import EnrichClient

from .conftest import LoopbackServer


def http(server: LoopbackServer, path: str, data: bytes | None = None, method: str = "GET",
         headers: dict | None = None) -> tuple[int, dict, dict]:
    url = f"http://127.0.0.1:{server.server.ports['http_port']}{path}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, dict(reply.headers), json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def labels(metadata: dict) -> dict:
    return {k: v["label"] for k, v in metadata.items() if isinstance(v, dict) and "label" in v}


@pytest.fixture()
def image(catalogue_dir: Path) -> Path:
    return sorted((catalogue_dir / "images").glob("*.jpg"))[3]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_upload_gives_the_labels_grpc_gives(server: LoopbackServer, image: Path):
    url = f"http://127.0.0.1:{server.server.ports['http_port']}/v1/enrich?top_k=2&caption_mode=template&request_id=c1"
    result = subprocess.run(["curl", "-sS", "-T", str(image), url], capture_output=True, text=True, timeout=60,
                            check=True)
    answer = json.loads(result.stdout)
    with EnrichClient(server.target) as client:
        expected = client.enrich(image.read_bytes(), "g1", top_k=2, caption_mode="template")
    assert answer["requestId"] == "c1" and answer["status"]["code"] == 0
    metadata = answer["metadata"]
    assert labels(metadata) == {
        "gender": expected.metadata.gender.label, "baseColour": expected.metadata.base_colour.label,
        "season": expected.metadata.season.label, "usage": expected.metadata.usage.label,
        "articleType": expected.metadata.article_type.label, "subCategory": expected.metadata.sub_category.label,
        "masterCategory": expected.metadata.master_category.label}
    assert len(metadata["articleType"]["alternatives"]) == 2
    assert metadata["productDisplayName"]["text"] == expected.metadata.product_display_name.text
    assert metadata["productDisplayName"]["method"] == "CAPTION_MODE_TEMPLATE"


def test_transcoder_json_and_multipart_bodies(server: LoopbackServer, image: Path):
    data = image.read_bytes()
    body = json.dumps({"requestId": "j1", "image": base64.b64encode(data).decode(), "captionMode": "CAPTION_MODE_SKIP"})
    status, _, as_json = http(server, "/v1/enrich", body.encode(), "POST", {"Content-Type": "application/json"})
    assert status == 200 and as_json["requestId"] == "j1" and "productDisplayName" not in as_json["metadata"]
    boundary = "enrichboundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{image.name}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    status, _, from_form = http(server, "/v1/enrich?caption_mode=skip", form, "POST",
                                {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200 and labels(from_form["metadata"]) == labels(as_json["metadata"])


def test_errors_are_json_with_the_grpc_reason(server: LoopbackServer):
    status, _, error = http(server, "/v1/enrich", b"%PDF-1.7 not an image", "PUT")
    assert status == 400 and error["code"] == 3 and "PDF" in error["message"]
    info = error["details"][0]
    assert info["@type"].endswith("google.rpc.ErrorInfo") and info["reason"] == "IMAGE_UNDECODABLE"
    status, _, error = http(server, "/v1/enrich?caption_mode=poem", b"x", "PUT")
    assert status == 400 and error["details"][0]["reason"] == "REQUEST_INVALID"
    assert error["message"] == "caption mode 'poem' is not one of generate, beam_search, template, skip"
    status, _, error = http(server, "/v1/enrich", b'{"image": }', "POST", {"Content-Type": "application/json"})
    assert status == 400 and error["details"][0]["reason"] == "REQUEST_INVALID"
    assert error["message"] == "the JSON body is not valid JSON: Expecting value at line 1, column 11"
    for path, method, code in (("/v2/enrich", "GET", 404), ("/v1/enrich", "GET", 405), ("/healthz", "POST", 405)):
        status, _, error = http(server, path, None, method)  # not plain text: JSON, as every other error
        assert status == code and error["code"] in (5, 12) and path in error["message"], (path, error)


def test_model_and_health(server: LoopbackServer):
    status, _, info = http(server, "/v1/model")
    assert status == 200 and info["modelVersion"] == server.server.service.model.pipeline.model_version
    assert any(a["name"] == "articleType" for a in info["attributes"])
    status, _, health = http(server, "/healthz")
    assert (status, health) == (200, {"status": "SERVING"})


def test_http_needs_the_token_when_grpc_does(bundle_dir: Path, image: Path):
    guarded = LoopbackServer(bundle_dir, auth_tokens="s3cret")
    guarded.load()
    try:
        status, _, error = http(guarded, "/v1/enrich", image.read_bytes(), "PUT")
        assert status == 401 and error["details"][0]["reason"] == "TOKEN_INVALID"
        status, _, answer = http(guarded, "/v1/enrich", image.read_bytes(), "PUT",
                                 {"Authorization": "Bearer s3cret"})
        assert status == 200 and answer["status"]["code"] == 0
        assert http(guarded, "/healthz")[0] == 200  # health stays open, as over gRPC
    finally:
        guarded.close()


def test_a_body_over_the_limit_gets_the_json_reason(bundle_dir: Path, image: Path):
    small = LoopbackServer(bundle_dir, max_image_mb=0.001)  # ~1 KB images; bodies up to ~1 MiB are read
    small.load()
    try:
        status, _, error = http(small, "/v1/enrich", image.read_bytes() * 2000, "PUT")  # refused by aiohttp
        assert status == 413 and error["details"][0]["reason"] == "IMAGE_TOO_LARGE"
        status, _, error = http(small, "/v1/enrich", image.read_bytes() + bytes(2048), "PUT")  # read, then refused
        assert status == 413 and error["details"][0]["reason"] == "IMAGE_TOO_LARGE"
    finally:
        small.close()


def test_http_calls_have_deadlines_and_one_access_log_line_each(server: LoopbackServer, image: Path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="enrich.access")
    status, _, error = http(server, "/v1/enrich?request_id=late", image.read_bytes(), "PUT", {"Grpc-Timeout": "1n"})
    assert status == 504 and error["details"][0]["reason"] == "DEADLINE_EXPIRED"
    status, _, error = http(server, "/v1/enrich?request_id=odd", image.read_bytes(), "PUT", {"Grpc-Timeout": "soon"})
    assert status == 400 and error["details"][0]["reason"] == "REQUEST_INVALID" and "Grpc-Timeout" in error["message"]
    status, _, answer = http(server, "/v1/enrich?request_id=in-time", image.read_bytes(), "PUT",
                             {"Grpc-Timeout": "30S"})
    assert status == 200 and answer["requestId"] == "in-time"
    lines = [record for record in caplog.records if record.name == "enrich.access"]
    assert sorted((r.method, r.request_id, r.code) for r in lines) == [
        ("HTTP", "in-time", "OK"), ("HTTP", "late", "DEADLINE_EXCEEDED"), ("HTTP", "odd", "INVALID_ARGUMENT")]


def test_malformed_bodies_are_json_errors_with_a_reason(server: LoopbackServer):
    cases = [
        (b"--nope\r\nnot a form", {"Content-Type": "multipart/form-data"}),  # no boundary at all
        (b"--other\r\n\r\n", {"Content-Type": "multipart/form-data; boundary=expected"}),
        (b'{"image": "", "captionMode": [1]}', {"Content-Type": "application/json"}),
        (b"[1, 2]", {"Content-Type": "application/json"}),
        (b"{not json", {"Content-Type": "application/json"}),
    ]
    for body, headers in cases:
        status, _, error = http(server, "/v1/enrich", body, "POST", headers)
        assert status == 400 and error["details"][0]["reason"] == "REQUEST_INVALID", (body, error)
        assert "Traceback" not in error["message"] and "b'" not in error["message"]
