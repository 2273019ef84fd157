"""The gRPC contract, over real loopback connections to a server holding a tiny trained bundle."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from enrich.v1 import enrich_pb2, enrich_pb2_grpc
from enrich_client import EnrichClient, EnrichError
from enrich_contract.wire import TYPED_ATTRIBUTES as PROTO_FIELD
from enrich_model.bundle_config import BundleConfig
from enrich_model.consistency import CaptionLexicon

from .conftest import LoopbackServer, png_bytes, wait_for

ATTRIBUTE_FIELDS = ("gender", "base_colour", "season", "usage", "article_type", "sub_category", "master_category")


def catalogue_images(catalogue_dir: Path, count: int) -> list[Path]:
    return sorted((catalogue_dir / "images").glob("*.jpg"))[:count]


def test_unary_returns_every_field_with_confidences(client: EnrichClient, catalogue_dir: Path, bundle_dir: Path):
    response = client.enrich(catalogue_images(catalogue_dir, 1)[0].read_bytes(), request_id="one", top_k=3)
    config = BundleConfig.read(bundle_dir)
    assert response.request_id == "one"
    assert response.status.code == 0
    assert response.model_version == config.model_version
    meta = response.metadata
    for name in ATTRIBUTE_FIELDS:
        prediction = getattr(meta, name)
        assert prediction.label, name
        assert 0.0 < prediction.confidence <= 1.0, name
        assert 1 <= len(prediction.alternatives) <= 3, name
        assert prediction.alternatives[0].confidence >= prediction.alternatives[-1].confidence
    article = meta.article_type.label
    assert meta.sub_category.label == config.taxonomy["subCategory"][article]
    assert meta.master_category.label == config.taxonomy["masterCategory"][article]
    for name, field in PROTO_FIELD.items():  # every attribute by its column name too, the same message
        assert meta.attributes[name] == getattr(meta, field), name
    assert set(meta.attributes) == set(PROTO_FIELD)
    assert meta.sub_category.derived and not meta.article_type.derived
    thresholds = config.heads.abstain_thresholds  # the test bundle asked for 0.9 validation accuracy
    assert thresholds
    for name, threshold in thresholds.items():
        prediction = getattr(meta, PROTO_FIELD[name])
        assert prediction.unsure == (prediction.confidence < threshold), name
    assert meta.product_display_name.method == enrich_pb2.CAPTION_MODE_GENERATE
    assert 0.0 <= meta.product_display_name.confidence <= 1.0
    # The name agrees with the badges beside it, whatever the decoder wrote.
    lexicon = CaptionLexicon.from_json(config.caption.lexicon)
    labels = {"gender": meta.gender.label, "baseColour": meta.base_colour.label, "articleType": article}
    assert all(lexicon.agreement(meta.product_display_name.text, labels).values())
    assert lexicon.harmonise(meta.product_display_name.decoded_text, labels) == meta.product_display_name.text
    assert meta.image.format == "JPEG" and meta.image.width == 48 and meta.image.height == 64
    assert response.timings.total_ms > 0 and response.timings.batch_size >= 1


def test_caption_modes(client: EnrichClient, catalogue_dir: Path, bundle_dir: Path):
    data = catalogue_images(catalogue_dir, 1)[0].read_bytes()
    skipped = client.enrich(data, caption_mode="skip")
    assert not skipped.metadata.HasField("product_display_name")
    template = client.enrich(data, caption_mode="template").metadata
    assert template.product_display_name.method == enrich_pb2.CAPTION_MODE_TEMPLATE
    nouns = CaptionLexicon.from_json(BundleConfig.read(bundle_dir).caption.lexicon).nouns
    assert template.product_display_name.text == " ".join(
        (template.gender.label, template.base_colour.label, nouns[template.article_type.label]))
    beam = client.enrich(data, caption_mode="beam_search").metadata.product_display_name
    assert beam.method == enrich_pb2.CAPTION_MODE_BEAM_SEARCH


def test_unary_undecodable_image_is_invalid_argument_and_server_keeps_serving(client: EnrichClient,
                                                                             catalogue_dir: Path):
    for bad, reason, words in ((b"", "IMAGE_EMPTY", "empty image"),
                               (b"this is not an image", "IMAGE_UNDECODABLE", "the bytes are plain text"),
                               (png_bytes()[:40], "IMAGE_UNDECODABLE", "look like a PNG image but cannot be decoded")):
        with pytest.raises(EnrichError) as raised:
            client.enrich(bad)
        assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.reason == reason and words in raised.value.message
    assert client.enrich(catalogue_images(catalogue_dir, 1)[0].read_bytes()).status.code == 0


def test_stream_of_20_with_3_bad_items_answers_all_20(client: EnrichClient, catalogue_dir: Path):
    good = catalogue_images(catalogue_dir, 17)
    items = [(f"img-{i}", path.read_bytes()) for i, path in enumerate(good)]
    bad_ids = {"bad-a", "bad-b", "bad-c"}
    items.insert(2, ("bad-a", b"garbage bytes"))
    items.insert(9, ("bad-b", b""))
    items.insert(15, ("bad-c", b"\x89PNG\r\n\x1a\n truncated"))
    responses = list(client.enrich_stream(iter(items), top_k=2))
    assert len(responses) == 20
    assert sorted(r.request_id for r in responses) == sorted(i for i, _ in items)
    failed = {r.request_id: r for r in responses if r.status.code != 0}
    assert set(failed) == bad_ids
    for response in failed.values():
        assert response.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        expected = enrich_pb2.IMAGE_EMPTY if response.request_id == "bad-b" else enrich_pb2.IMAGE_UNDECODABLE
        assert response.status.reason == expected
        words = {"bad-a": "the bytes are plain text", "bad-b": "empty image", "bad-c": "look like a PNG image"}
        assert words[response.request_id] in response.status.message
        assert not response.HasField("metadata")
    for response in responses:
        if response.request_id not in bad_ids:
            assert response.metadata.article_type.label and len(response.metadata.article_type.alternatives) == 2


def test_stream_fills_in_missing_request_ids_by_position(client: EnrichClient, catalogue_dir: Path):
    images = [("", p.read_bytes()) for p in catalogue_images(catalogue_dir, 3)]
    assert sorted(r.request_id for r in client.enrich_stream(iter(images))) == ["0", "1", "2"]


def test_large_camera_original_over_4_mib(client: EnrichClient):
    from PIL import Image

    noise = random.Random(0).randbytes(1400 * 1400 * 3)  # incompressible: PNG stays ~6 MB
    buffer = io.BytesIO()
    Image.frombytes("RGB", (1400, 1400), noise).save(buffer, format="PNG", compress_level=1)
    data = buffer.getvalue()
    assert len(data) > 4 * 1024 * 1024
    response = client.enrich(data, caption_mode="skip")
    assert response.metadata.image.width == 1400 and response.metadata.image.size_bytes == len(data)


def test_formats_and_transparency(client: EnrichClient):
    from PIL import Image, features

    formats = ["PNG", "WEBP", "GIF", "BMP", "TIFF"] + (["AVIF"] if features.check("avif") else [])
    for fmt in formats:
        buffer = io.BytesIO()
        Image.new("RGBA" if fmt in ("PNG", "WEBP") else "RGB", (50, 70), (10, 120, 200, 255)).save(buffer, fmt)
        response = client.enrich(buffer.getvalue(), caption_mode="skip")
        assert response.metadata.image.format == fmt


def test_model_info_matches_bundle(client: EnrichClient, bundle_dir: Path):
    config = BundleConfig.read(bundle_dir)
    info = client.model_info()
    assert info.model_version == config.model_version
    assert info.backbone == config.backbone.name
    by_name = {a.name: a for a in info.attributes}
    for name, labels in config.attributes.items():
        assert list(by_name[name].labels) == labels
        assert by_name[name].field == PROTO_FIELD[name]
    assert by_name["subCategory"].derived_from == "articleType"
    assert by_name["masterCategory"].derived_from == "subCategory"
    assert {t.article_type: (t.sub_category, t.master_category) for t in info.taxonomy} == {
        a: (config.taxonomy["subCategory"][a], config.taxonomy["masterCategory"][a])
        for a in config.attributes["articleType"]}
    assert list(info.schema.tree) == ["articleType", "subCategory", "masterCategory"]
    assert (info.schema.id_column, info.schema.caption_column) == ("id", "productDisplayName")
    assert {a.name: (a.kind, a.role) for a in info.attributes if a.role} == {
        "gender": ("single", "gender"), "baseColour": ("single", "colour"), "articleType": ("single", "product")}
    assert info.limits.max_message_bytes >= 32 * 1024 * 1024
    assert info.test_metrics["articleType.accuracy"] == pytest.approx(config.test_metrics["articleType"]["accuracy"])
    assert (info.input_height, info.input_width) == tuple(config.preprocessing["input_size"])
    assert info.backbone_weights == "random"
    assert by_name["articleType"].abstain_threshold == pytest.approx(
        config.heads.abstain_thresholds.get("articleType", 0.0))
    assert list(info.warnings) == config.warnings and "random weights" in info.warnings[0]


def test_reflection_lists_the_service(server: LoopbackServer):
    with grpc.insecure_channel(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(stub.ServerReflectionInfo(iter([request])))
    names = {s.name for s in response.list_services_response.service}
    assert {"enrich.v1.Enrich", "grpc.health.v1.Health"} <= names


GRPCURL = shutil.which("grpcurl") or shutil.which("grpcurl", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(GRPCURL is None and not os.environ.get("CI"), reason="grpcurl not installed (.[dev] has it)")
def test_grpcurl_list_describe_and_call(server: LoopbackServer, catalogue_dir: Path):
    def grpcurl(*args: str) -> str:
        return subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout

    assert "enrich.v1.Enrich" in grpcurl(server.target, "list").split()
    described = grpcurl(server.target, "describe", "enrich.v1.Enrich")
    assert "// Enrich one image." in described  # the proto's comments travel with reflection
    assert '"modelVersion"' in grpcurl(server.target, "enrich.v1.Enrich/GetModelInfo")  # proto3 JSON names
    image = base64.b64encode(next((catalogue_dir / "images").glob("*.jpg")).read_bytes()).decode()
    request = {"request_id": "curl", "image": image, "caption_mode": "CAPTION_MODE_SKIP"}
    answer = json.loads(grpcurl("-d", json.dumps(request), server.target, "enrich.v1.Enrich/Enrich"))
    assert answer["requestId"] == "curl" and answer["metadata"]["articleType"]["label"]


def test_reflection_answers_v1_as_well_as_v1alpha(server: LoopbackServer):
    with grpc.insecure_channel(server.target) as channel:
        v1 = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                   request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                   response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="enrich.v1.Enrich")]
        listed, files = list(v1(iter(requests), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {"enrich.v1.Enrich", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= names
    protos = [descriptor_pb2.FileDescriptorProto.FromString(f)
              for f in files.file_descriptor_response.file_descriptor_proto]
    enrich = next(p for p in protos if p.name == "enrich/v1/enrich.proto")
    assert enrich.options.go_package and enrich.options.java_package == "dev.enrich.v1"
    assert any("Enrich one image." in location.leading_comments for location in enrich.source_code_info.location)


def test_health_goes_not_serving_to_serving(bundle_dir: Path):
    fresh = LoopbackServer(bundle_dir)
    try:
        with grpc.insecure_channel(fresh.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "enrich.v1.Enrich"):
                status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
                assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch = health.Watch(health_pb2.HealthCheckRequest(service="enrich.v1.Enrich"), timeout=60)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            stub = enrich_pb2_grpc.EnrichStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                stub.Enrich(enrich_pb2.EnrichRequest(image=png_bytes()), timeout=10)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            fresh.load()
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            assert stub.Enrich(enrich_pb2.EnrichRequest(image=png_bytes()), timeout=60).status.code == 0
            watch.cancel()
    finally:
        fresh.close()


def test_shutdown_drains_accepted_stream_items_and_refuses_new_calls(bundle_dir: Path, catalogue_dir: Path):
    draining = LoopbackServer(bundle_dir, max_batch_size=2)
    try:
        draining.load()
        stage = draining.server.service.model.batched.encoder_stage
        process, gate, held = stage.process, threading.Event(), threading.Event()

        def held_after_the_first_batch(items):  # the drain happens while accepted images wait here
            if stage.batches >= 1:
                held.set()
                gate.wait(60)
            return process(items)

        stage.process = held_after_the_first_batch
        images = [(f"item-{i}", p.read_bytes()) for i, p in enumerate(catalogue_images(catalogue_dir, 12))]
        with EnrichClient(draining.target) as client:
            answers = client.enrich_stream(iter(images), caption_mode="generate")
            first = next(answers)
            assert held.wait(30)
            stopping = asyncio.run_coroutine_threadsafe(draining.server.stop(grace=30), draining.loop)
            wait_for(lambda: draining.server.service.drain_cutoff is not None)
            # Draining, with accepted images still in the model: health says so and new calls are refused.
            with grpc.insecure_channel(draining.target) as channel:
                with pytest.raises(grpc.RpcError) as refused:
                    enrich_pb2_grpc.EnrichStub(channel).Enrich(enrich_pb2.EnrichRequest(image=png_bytes()), timeout=10)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            healthz = f"http://127.0.0.1:{draining.server.ports['http_port']}/healthz"
            with pytest.raises(urllib.error.HTTPError) as unhealthy:
                urllib.request.urlopen(healthz, timeout=10)
            assert unhealthy.value.code == 503
            assert not stopping.done()
            gate.set()
            rest = list(answers)
            stopping.result(60)
            assert sorted(r.request_id for r in [first, *rest]) == sorted(i for i, _ in images)
            assert all(r.status.code == 0 for r in [first, *rest])
    finally:
        gate.set()
        draining.close()





def test_stream_with_a_small_read_ahead_bound_still_answers_everything(bundle_dir: Path, catalogue_dir: Path):
    bounded = LoopbackServer(bundle_dir, stream_in_flight=2, max_batch_size=4)
    try:
        bounded.load()
        images = [(f"i{n}", p.read_bytes()) for n, p in enumerate(catalogue_images(catalogue_dir, 15))]
        images.insert(5, ("bad", b"nope"))
        with EnrichClient(bounded.target) as client:
            answers = list(client.enrich_stream(iter(images), caption_mode="skip"))
        assert sorted(a.request_id for a in answers) == sorted(i for i, _ in images)
        assert [a.request_id for a in answers if a.status.code] == ["bad"]
        assert max(a.timings.batch_size for a in answers) <= 2  # never more than the bound at once
    finally:
        bounded.close()


def test_every_label_leads_its_alternatives_and_the_tree_rule_holds(server: LoopbackServer, bundle_dir: Path,
                                                                   tmp_path: Path):
    """On photo-like images (the unsure ones), at top_k 1, 3 and 5: each label is its first alternative, the
    alternatives are best first, derived attributes are ranked by probability, and where the articleType's
    parents are not the most probable ones the articleType is marked unsure (the proto's documented rule)."""
    from enrich_data.synth import write_catalogue

    photos = write_catalogue(tmp_path, 500, seed=21, image_size=(48, 64), progress=False, photo_like=True,
                             missing_image_rate=0)
    images = [(p.name, p.read_bytes()) for p in sorted((photos / "images").glob("*.jpg"))]
    config = BundleConfig.read(bundle_dir)
    threshold = config.heads.abstain_thresholds.get("articleType", 0.0)
    sizes = {field: len(labels) for field, labels in zip(ATTRIBUTE_FIELDS[:5], config.attributes.values(),
                                                         strict=True)}
    sizes |= {"sub_category": len(set(config.taxonomy["subCategory"].values())),
              "master_category": len(set(config.taxonomy["masterCategory"].values()))}
    disagreeing = 0
    with EnrichClient(server.target) as client:
        for top_k in (1, 3, 5):
            answers = list(client.enrich_stream(iter(images), top_k=top_k, caption_mode="skip"))
            assert len(answers) == 500 and all(a.status.code == 0 for a in answers)
            for answer in answers:
                meta = answer.metadata
                for field in ATTRIBUTE_FIELDS:
                    predicted = getattr(meta, field)
                    scores = [a.confidence for a in predicted.alternatives]
                    assert len(scores) == min(top_k, sizes[field]), field
                    assert predicted.label == predicted.alternatives[0].label and predicted.confidence == scores[0]
                    assert scores == sorted(scores, reverse=True), field
                tree = [config.taxonomy[d][meta.article_type.label] for d in ("subCategory", "masterCategory")]
                agrees = [meta.sub_category.label, meta.master_category.label] == tree
                disagreeing += not agrees
                assert meta.article_type.unsure == (meta.article_type.confidence < threshold or not agrees)
                for parent in (meta.sub_category, meta.master_category):
                    assert parent.derived and parent.unsure == (parent.confidence < threshold)
    print(f"\n{disagreeing} of 1500 answers: the articleType's parents were not the most probable ones")
