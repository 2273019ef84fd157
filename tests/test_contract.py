"""One contract on every surface: the same JSON from HTTP, grpcurl, enrich-client and Node; one caption-mode
vocabulary with the same refusal everywhere; an image over the limit refused with its reason on every path."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from enrich.v1 import enrich_pb2, enrich_pb2_grpc
from enrich_client import EnrichClient, EnrichError

from .conftest import LoopbackServer, node_command

GRPCURL = shutil.which("grpcurl") or shutil.which("grpcurl", path=str(Path(sys.executable).parent))
VALID = "generate, beam_search, template, skip"


def shape(value: object) -> object:
    """Keys and kinds of a JSON value, without its numbers and words. null is an unset message, as absent is
    (the JSON mapping reads both alike; grpcurl writes null)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [shape(item) for item in value[:1]]
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, int | float) else type(value).__name__


def labels(answer: dict) -> dict[str, str]:
    return {name: field["label"] for name, field in answer["metadata"].items() if "label" in field}


def http(server: LoopbackServer, path: str, data: bytes, headers: dict | None = None) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{server.server.ports['http_port']}{path}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers or {}, method="PUT"), timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture()
def image(catalogue_dir: Path) -> Path:
    return sorted((catalogue_dir / "images").glob("*.jpg"))[5]


def test_http_grpcurl_python_and_node_write_the_same_json(server: LoopbackServer, image: Path, node_client: Path):
    status, over_http = http(server, "/v1/enrich?top_k=2&caption_mode=template&request_id=same", image.read_bytes())
    assert status == 200
    python = subprocess.run([sys.executable, "-m", "enrich_client.cli", "--target", server.target, "enrich", str(image),
                             "--top-k", "2", "--caption-mode", "template"], capture_output=True, text=True, timeout=60)
    node = subprocess.run(node_command(node_client, "--target", server.target, "--top-k", "2", "--caption-mode",
                                       "template", str(image)), capture_output=True, text=True, timeout=60)
    answers = {"http": over_http, "python": json.loads(python.stdout), "node": json.loads(node.stdout)}
    if GRPCURL is not None:
        body = json.dumps({"requestId": "same", "image": base64.b64encode(image.read_bytes()).decode(), "topK": 2,
                           "captionMode": "CAPTION_MODE_TEMPLATE"})
        done = subprocess.run([GRPCURL, "-plaintext", "-emit-defaults", "-d", "@", server.target,
                               "enrich.v1.Enrich/Enrich"], input=body, capture_output=True, text=True, timeout=60)
        answers["grpcurl"] = json.loads(done.stdout)
    elif os.environ.get("CI"):
        pytest.fail("grpcurl is part of the dev extra")
    reference = answers["http"]
    for name, answer in answers.items():
        assert shape(answer) == shape(reference), name
        assert labels(answer) == labels(reference), name
        assert answer["metadata"]["articleType"]["confidence"] == pytest.approx(
            reference["metadata"]["articleType"]["confidence"], abs=1e-6), name
        assert answer["metadata"]["image"]["sizeBytes"] == str(image.stat().st_size), name  # uint64: a string
        assert answer["metadata"]["productDisplayName"]["method"] == "CAPTION_MODE_TEMPLATE", name
    assert {"requestId", "modelVersion", "metadata", "status", "timings"} <= set(reference)
    assert {"baseColour", "articleType", "subCategory", "masterCategory", "productDisplayName"} <= set(
        reference["metadata"])


def test_one_caption_mode_vocabulary_on_every_surface(server: LoopbackServer, image: Path, node_client: Path):
    data = image.read_bytes()
    for spelling in ("beam_search", "BEAM_SEARCH", "CAPTION_MODE_BEAM_SEARCH", "Beam_Search"):
        status, answer = http(server, f"/v1/enrich?caption_mode={spelling}", data)
        assert status == 200 and answer["metadata"]["productDisplayName"]["method"] == "CAPTION_MODE_BEAM_SEARCH"
    body = json.dumps({"image": base64.b64encode(data).decode(), "captionMode": "skip"}).encode()
    status, answer = http(server, "/v1/enrich", body, {"Content-Type": "application/json"})
    assert status == 200 and "productDisplayName" not in answer["metadata"]
    with EnrichClient(server.target) as client:
        assert client.enrich(data, caption_mode="Template").metadata.product_display_name.method == \
            enrich_pb2.CAPTION_MODE_TEMPLATE
        with pytest.raises(ValueError) as raised:
            client.enrich(data, caption_mode="beam")
        assert str(raised.value) == f"caption mode 'beam' is not one of {VALID}"
        stub = enrich_pb2_grpc.EnrichStub(client.channel)
        with pytest.raises(grpc.RpcError) as unknown:  # a number this server's proto does not have
            stub.Enrich(enrich_pb2.EnrichRequest(image=data, caption_mode=99), timeout=30)
        assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT and VALID in unknown.value.details()
    refusals = {
        "HTTP query": http(server, "/v1/enrich?caption_mode=beam", data)[1]["message"],
        "HTTP JSON": http(server, "/v1/enrich", json.dumps({"image": "", "captionMode": "beam"}).encode(),
                          {"Content-Type": "application/json"})[1]["message"],
        "Node": subprocess.run(node_command(node_client, "--target", server.target, "--caption-mode", "beam",
                                            str(image)), capture_output=True, text=True, timeout=60).stderr,
        "enrich-client": subprocess.run([sys.executable, "-m", "enrich_client.cli", "--target", server.target,
                                         str(image), "--caption-mode", "beam"], capture_output=True, text=True,
                                        timeout=60).stderr,
    }
    for surface, words in refusals.items():
        assert f"caption mode 'beam' is not one of {VALID}" in words.replace('"beam"', "'beam'"), surface


def test_an_image_over_the_limit_is_refused_with_its_reason_on_every_path(bundle_dir: Path, image: Path):
    small = LoopbackServer(bundle_dir, max_image_mb=0.05)  # 51 KiB images; gRPC reads twice that
    small.load()
    big = image.read_bytes() + bytes(120 * 1024)  # over the limit, and over half of gRPC's own
    try:
        with EnrichClient(small.target) as client:
            with pytest.raises(EnrichError) as unary:
                client.enrich(big)
            [streamed] = client.enrich_stream([("big", big)])
        status, over_http = http(small, "/v1/enrich", big)
    finally:
        small.close()
    assert unary.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and unary.value.reason == "IMAGE_TOO_LARGE"
    assert unary.value.metadata["limit"] == "max_image_bytes" and "over the limit" in unary.value.message
    assert enrich_pb2.ErrorReason.Name(streamed.status.reason) == "IMAGE_TOO_LARGE"
    assert status == 413 and over_http["details"][0]["reason"] == "IMAGE_TOO_LARGE"
    # What this client itself cannot send is refused before it is sent, with the same reason.
    with EnrichClient(small.target, max_message_mb=0.1) as tight, pytest.raises(EnrichError) as local:
        tight.enrich(image.read_bytes() + bytes(200 * 1024))
    assert local.value.reason == "IMAGE_TOO_LARGE" and "this client sends" in local.value.message


def test_node_and_python_clients_read_the_target_and_answer_help_alike(server: LoopbackServer, image: Path,
                                                                          node_client: Path):
    environment = {**os.environ, "ENRICH_TARGET": server.target}
    python = [sys.executable, "-m", "enrich_client.cli"]
    for command in (node_command(node_client, str(image)), [*python, str(image)]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=environment)
        assert done.returncode == 0 and json.loads(done.stdout)["status"]["code"] == 0, done.stderr
    helps = {"node": [node_command(node_client, "--help")],
             "python": [[*python, "--help"], [*python, "enrich", "--help"]]}
    for client, commands in helps.items():
        text = " ".join(subprocess.run(c, capture_output=True, text=True, timeout=60, check=True).stdout
                        for c in commands)
        assert "ENRICH_TARGET" in text and "--caption-mode" in text and "--top-k" in text, client


def test_the_clients_send_what_a_default_server_reads():
    import re

    from enrich_client.client import MAX_MESSAGE_MB
    from enrich_server.settings import ServerSettings

    server = ServerSettings(model=Path("bundle")).max_message_bytes
    assert int(MAX_MESSAGE_MB * 1024 * 1024) == server
    node = (Path(__file__).resolve().parents[1] / "clients" / "node" / "enrich.js").read_text()
    mib = int(re.search(r"const MAX_MESSAGE = (\d+) \* 1024 \* 1024", node).group(1))
    assert mib * 1024 * 1024 == server
