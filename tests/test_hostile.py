"""Hostile input and load against a real `enrich serve` process: huge photos, pixel bombs, a soak of
concurrent streams with bad items mixed in, SIGTERM under load, and fuzzed bytes.

The server runs as its own process so that its memory (RSS) can be measured apart from the test's.
"""

from __future__ import annotations

import io
import os
import random
import signal
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from enrich.v1 import enrich_pb2
from enrich_cli.server_process import start_server
from enrich_client import EnrichClient, EnrichError
from enrich_model.decode import DecodeFailure, DecodeLimits, ImageDecodeError, decode_image, guess_format

MB = 1024 * 1024


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int, full: bool = True) -> bytes:
    """A valid greyscale PNG of zeros (`full`), or just a header claiming the size with a token IDAT.

    The full bomb is built from one compressed block repeated (a full flush makes blocks independent),
    so a 1.6-gigapixel image takes half a second to write and about 1.5 MB to send."""
    header = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    if not full:
        return header + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b"")
    rows = 200
    block = b"\x00" * (width + 1) * rows
    compressor = zlib.compressobj(9)
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    middle = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    checksum = 1
    for _ in range(height // rows):
        checksum = zlib.adler32(block, checksum)
    stream = first + middle * (height // rows - 1) + compressor.flush()[:-4] + struct.pack(">I", checksum)
    return header + png_chunk(b"IDAT", stream) + png_chunk(b"IEND", b"")


def camera_jpeg(width: int, height: int) -> bytes:
    """A large photo-like JPEG: a product on a lit background (smooth, so the file stays small)."""
    image = Image.new("RGB", (width, height), (235, 232, 228))
    draw = ImageDraw.Draw(image)
    for band in range(0, height, height // 16):
        draw.rectangle((0, band, width, band + height // 32), fill=(225 - band * 20 // height, 222, 218))
    draw.ellipse((width // 4, height // 5, 3 * width // 4, 4 * height // 5), fill=(30, 60, 140))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class ServerProcess:
    def __init__(self, bundle: Path, log: Path, *options: str) -> None:
        served = start_server(bundle, log, *options)
        self.process, self.port = served.process, served.port
        self.target = f"127.0.0.1:{self.port}"
        self.memory = psutil.Process(self.process.pid)

    def rss_mb(self) -> float:
        return self.memory.memory_info().rss / MB

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status")
        for line in status.read_text().splitlines() if status.exists() else ():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return self.rss_mb()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


@pytest.fixture(scope="module")
def served(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    server = ServerProcess(bundle_dir, tmp_path_factory.mktemp("served") / "server.log")
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def catalogue_bytes(catalogue_dir: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((catalogue_dir / "images").glob("*.jpg"))]


def test_150_megapixel_jpeg_is_enriched_and_bombs_are_refused_fast(served: ServerProcess, catalogue_bytes):
    with EnrichClient(served.target, timeout=120) as client:
        for data in catalogue_bytes[:8]:  # warm every stage first, so growth below is the image's own
            client.enrich(data)
        big = camera_jpeg(15000, 10000)
        before, peak_before = served.rss_mb(), served.peak_rss_mb()
        started = time.perf_counter()
        response = client.enrich(big, "150mp")
        took = time.perf_counter() - started
        assert response.status.code == 0 and response.metadata.article_type.label
        assert (response.metadata.image.width, response.metadata.image.height) == (15000, 10000)
        growth = served.peak_rss_mb() - peak_before
        print(f"\n150 MP JPEG ({len(big) / MB:.1f} MB): {took:.2f} s, server RSS {before:.0f} MB -> "
              f"{served.rss_mb():.0f} MB, peak grew {growth:.0f} MB")
        assert growth < 200  # decoded at 1/8 scale: ~2.3 MP, not 150

        for name, data in (("40000x40000 PNG bomb", png_bomb(40000, 40000)),
                           ("header claiming 100000x100000", png_bomb(100000, 100000, full=False))):
            before = served.rss_mb()
            started = time.perf_counter()
            with pytest.raises(EnrichError) as raised:
                client.enrich(data, name)
            took = time.perf_counter() - started
            assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert raised.value.reason == "IMAGE_TOO_LARGE" and raised.value.metadata["limit"] == "max_image_pixels"
            assert "100.0 MP" in raised.value.message
            print(f"{name} ({len(data) / MB:.1f} MB): refused in {took * 1000:.0f} ms, RSS {before:.0f} -> "
                  f"{served.rss_mb():.0f} MB: {raised.value.message}")
            assert took < 2.0 and served.rss_mb() - before < 20  # decoding it would take tens of seconds

        with pytest.raises(EnrichError) as raised:  # over the byte limit, but under gRPC's message limit
            client.enrich(b"\xff\xd8\xff" + bytes(64 * MB))
        assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and raised.value.reason == "IMAGE_TOO_LARGE"
        assert raised.value.metadata == {"limit": "max_image_bytes", "limit_value": str(64 * MB),
                                         "seen": str(64 * MB + 3)}


def test_soak_8_streams_of_200_with_bad_items_answers_each_exactly_once(served: ServerProcess, catalogue_bytes):
    streams, per_stream = 8, 200
    junk = [b"", b"GIF89a broken", b"%PDF-1.7 a document", catalogue_bytes[0][:200], os.urandom(3000)]
    plans = []
    for s in range(streams):
        rng = random.Random(s)
        plans.append([(f"s{s}-{n}", rng.choice(junk) if rng.random() < 0.1 else rng.choice(catalogue_bytes))
                      for n in range(per_stream)])
    rss_before = served.rss_mb()

    def run(plan):
        with EnrichClient(served.target) as client:
            return list(client.enrich_stream(iter(plan), caption_mode="generate", timeout=300))

    started = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        results = list(pool.map(run, plans))
    took = time.perf_counter() - started
    rss_after = served.rss_mb()
    total = bad = 0
    for plan, answers in zip(plans, results, strict=True):
        sent = {request_id: data for request_id, data in plan}
        assert sorted(a.request_id for a in answers) == sorted(sent)  # each exactly once
        for answer in answers:
            total += 1
            if answer.status.code:
                bad += 1
                assert sent[answer.request_id] in junk
                assert answer.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
                assert enrich_pb2.ErrorReason.Name(answer.status.reason) in ("IMAGE_EMPTY", "IMAGE_UNDECODABLE")
            else:
                assert sent[answer.request_id] not in junk and answer.metadata.article_type.label
    print(f"\nsoak: {total} items over {streams} streams in {took:.1f} s ({total / took:.0f} img/s), {bad} bad; "
          f"server RSS {rss_before:.0f} -> {rss_after:.0f} MB")
    assert total == streams * per_stream and 0.05 * total < bad < 0.15 * total
    assert rss_after <= rss_before + 200


def test_sigterm_during_a_stream_drains_every_accepted_item_and_exits_0(bundle_dir: Path, tmp_path: Path,
                                                                       catalogue_bytes):
    server = ServerProcess(bundle_dir, tmp_path / "server.log", "--grace-seconds", "20")
    events: list[tuple[float, str]] = []
    try:
        channel = grpc.insecure_channel(server.target)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="enrich.v1.Enrich"))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING

        def watch_health():
            try:
                for update in watch:
                    status = health_pb2.HealthCheckResponse.ServingStatus.Name(update.status)
                    events.append((time.perf_counter(), status))
            except grpc.RpcError as error:  # the server went away
                events.append((time.perf_counter(), error.code().name))

        watcher = threading.Thread(target=watch_health, daemon=True)
        watcher.start()

        def slowly():
            for n in range(200):
                time.sleep(0.01)  # a client still sending while the server is told to stop
                yield f"item-{n}", catalogue_bytes[n % len(catalogue_bytes)]

        answers = []
        with EnrichClient(server.target) as client:
            for answer in client.enrich_stream(slowly(), caption_mode="skip", timeout=120):
                answers.append((time.perf_counter(), answer))
                if len(answers) == 20:
                    server.process.send_signal(signal.SIGTERM)
                    sigterm_at = time.perf_counter()
        assert server.process.wait(60) == 0
        exited_after = time.perf_counter() - sigterm_at
        watcher.join(10)
        channel.close()
    finally:
        server.stop()
    assert sorted(a.request_id for _, a in answers) == sorted(f"item-{n}" for n in range(200))
    assert all(a.status.code == 0 for _, a in answers)  # all 200 read before the drain cutoff
    not_serving = [at for at, status in events if status == "NOT_SERVING"]
    assert not_serving and sigterm_at <= not_serving[0] < answers[-1][0]  # health first, then the last answers
    assert sum(1 for at, _ in answers if at > not_serving[0]) > 50  # the stream went on while draining
    print(f"\nSIGTERM after 20 of 200 answers: NOT_SERVING {1000 * (not_serving[0] - sigterm_at):.0f} ms later, "
          f"{sum(1 for at, _ in answers if at > not_serving[0])} answers after it, exit 0 {exited_after:.1f} s later")
    assert exited_after < 15  # done when the work is, not at the end of the 20 s grace (a watcher was open)


SEEDS = {}


def seed_images() -> dict[str, bytes]:
    if not SEEDS:
        picture = Image.new("RGB", (24, 18), (200, 40, 40))
        ImageDraw.Draw(picture).ellipse((4, 4, 18, 14), fill=(20, 90, 200))
        for fmt in ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"):
            buffer = io.BytesIO()
            picture.save(buffer, fmt)
            SEEDS[fmt] = buffer.getvalue()
    return SEEDS


@st.composite
def mutated_images(draw) -> bytes:
    data = bytearray(seed_images()[draw(st.sampled_from(sorted(seed_images())))])
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(("flip", "cut", "insert", "header")))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif data:  # overwrite bytes near the start, where sizes and kinds live
            position = draw(st.integers(0, min(40, len(data) - 1)))
            data[position:position + 4] = draw(st.binary(min_size=4, max_size=4))
    return bytes(data)


fuzzed = st.one_of(mutated_images(), st.binary(max_size=2048))


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about damaged files as well as failing
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fuzzed)
def test_fuzzed_bytes_decode_or_fail_with_a_documented_reason(data: bytes):
    limits = DecodeLimits(max_pixels=4_000_000, max_jpeg_pixels=16_000_000)
    try:
        decoded = decode_image(data, limits, target=64)
    except ImageDecodeError as error:
        assert error.message and "object at 0x" not in error.message and "Traceback" not in error.message
        # The reason fits the bytes: empty only when they are, too large only past a named limit, and an
        # undecodable image says what the bytes looked like.
        assert (error.reason is DecodeFailure.EMPTY) == (not data)
        if error.reason is DecodeFailure.TOO_LARGE:
            limit = {"max_image_pixels": limits.max_pixels, "max_jpeg_pixels": limits.max_jpeg_pixels}
            assert int(error.details["seen"]) > limit[error.details["limit"]] == int(error.details["limit_value"])
        elif error.reason is DecodeFailure.UNDECODABLE:
            assert error.details["format_guessed"] == guess_format(data)
    else:
        assert decoded.image.mode == "RGB" and decoded.width * decoded.height <= limits.max_jpeg_pixels


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(fuzzed, min_size=1, max_size=6))
def test_fuzzed_bytes_over_grpc_get_documented_reasons_and_the_server_keeps_serving(served: ServerProcess,
                                                                                   items: list[bytes]):
    documented = {"IMAGE_EMPTY", "IMAGE_UNDECODABLE", "IMAGE_TOO_LARGE"}
    with EnrichClient(served.target, timeout=60) as client:
        answers = list(client.enrich_stream(((str(n), data) for n, data in enumerate(items)), caption_mode="skip"))
        assert sorted(int(a.request_id) for a in answers) == list(range(len(items)))
        for answer in answers:
            if answer.status.code:
                assert enrich_pb2.ErrorReason.Name(answer.status.reason) in documented
                assert "object at 0x" not in answer.status.message
        try:
            client.enrich(items[0], caption_mode="skip")
        except EnrichError as error:
            assert error.reason in documented
        assert client.health() == "SERVING"
