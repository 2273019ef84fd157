"""Deadlines, cancellation and overload over real loopback gRPC, with the model held shut on purpose.

A gate in front of the model's predict lets a test fill the queue deterministically: the first batch
enters the model and waits; everything after it queues until the gate opens.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from enrich.v1 import enrich_pb2, enrich_pb2_grpc
from enrich_client import EnrichClient, EnrichError

from .conftest import LoopbackServer, wait_for


class GatedModel:
    def __init__(self, server: LoopbackServer) -> None:
        self.batcher = server.server.service.model.batched.encoder_stage
        self.process = self.batcher.process
        self.entered, self.gate = threading.Event(), threading.Event()
        self.batcher.process = self

    def __call__(self, items):
        self.entered.set()
        self.gate.wait(60)
        return self.process(items)





@pytest.fixture()
def gated(bundle_dir: Path):
    server = LoopbackServer(bundle_dir, max_batch_size=2, max_queue=4, max_delay_ms=1)
    server.load()
    model = GatedModel(server)
    try:
        yield server, model
    finally:
        model.gate.set()
        server.close()


def images(catalogue_dir: Path, count: int) -> list[bytes]:
    return [p.read_bytes() for p in sorted((catalogue_dir / "images").glob("*.jpg"))[:count]]


def load(client: EnrichClient) -> enrich_pb2.ServerLoad:
    return client.model_info().load


def test_expired_and_cancelled_items_never_reach_the_model(gated, catalogue_dir: Path):
    server, model = gated
    data = images(catalogue_dir, 1)[0]
    with EnrichClient(server.target, timeout=60) as client, ThreadPoolExecutor(2) as pool:
        blocker = pool.submit(client.enrich, data, "blocker")
        assert model.entered.wait(20)
        predicted_before = load(client).predicted

        queue = model.batcher.queue
        with EnrichClient(server.target, timeout=1.5) as hurried:  # queued behind the blocker
            started = time.perf_counter()
            waiting = pool.submit(hurried.enrich, data, "hurried")
            wait_for(lambda: queue.qsize() == 1)  # decoded and queued before its deadline
            with pytest.raises(EnrichError) as raised:
                waiting.result(10)
            assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.perf_counter() - started < 3.0

        stub = enrich_pb2_grpc.EnrichStub(client.channel)
        release = threading.Event()

        def requests():
            for n in range(2):
                yield enrich_pb2.EnrichRequest(request_id=f"s{n}", image=data)
            release.wait(30)  # keep the sending side open until the test cancels

        stream = stub.EnrichStream(requests())
        wait_for(lambda: load(client).in_flight == 3)  # blocker + 2 stream items (the unary one is gone)
        wait_for(lambda: queue.qsize() == 3)  # the stream's items queued behind the expired one
        stream.cancel()
        release.set()
        wait_for(lambda: load(client).in_flight == 1)  # only the blocker is left
        model.gate.set()
        assert blocker.result(30).status.code == 0
        wait_for(lambda: load(client).skipped == 3)  # the batcher dropped all three when it reached them
        final = load(client)
        assert final.in_flight == 0
        assert final.predicted == predicted_before + 1  # the blocker, counted once its batch finished: nothing else


def test_overload_refuses_unary_at_once_with_a_retry_hint_and_slows_streams(gated, catalogue_dir: Path):
    server, model = gated
    data = images(catalogue_dir, 6)
    with EnrichClient(server.target, timeout=60) as client, ThreadPoolExecutor(6) as pool:
        accepted = [pool.submit(client.enrich, data[n], f"u{n}", 3, "skip") for n in range(4)]
        wait_for(lambda: load(client).in_flight == 4)
        started = time.perf_counter()
        with pytest.raises(EnrichError) as raised:
            client.enrich(data[0], "one too many")
        elapsed = time.perf_counter() - started
        assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert raised.value.reason == "OVERLOADED"
        assert raised.value.retry_after and raised.value.retry_after > 0
        print(f"\noverload: refused in {elapsed * 1000:.1f} ms, retry after {raised.value.retry_after:.2f} s")
        assert elapsed < 1.0, f"refusal took {elapsed * 1000:.0f} ms"  # not queued: the call's deadline is 60 s

        streamed = pool.submit(lambda: list(client.enrich_stream(((f"s{n}", d) for n, d in enumerate(data)),
                                                                 caption_mode="skip")))
        wait_for(lambda: server.server.service.admission.waiting == 1)  # the stream's first item, in line
        assert not streamed.done()  # waiting for room, not failed
        health = health_pb2_grpc.HealthStub(client.channel)
        assert health.Check(health_pb2.HealthCheckRequest(service="enrich.v1.Enrich"), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING  # busy is not unhealthy
        model.gate.set()
        assert all(future.result(30).status.code == 0 for future in accepted)
        answers = streamed.result(60)
        assert sorted(a.request_id for a in answers) == [f"s{n}" for n in range(6)]
        assert all(a.status.code == 0 for a in answers)
        assert load(client).in_flight == 0


def test_unary_errors_carry_reasons_in_rich_status(client: EnrichClient, server: LoopbackServer):
    cases = {b"": ("INVALID_ARGUMENT", "IMAGE_EMPTY"), b"<html>hello</html>": ("INVALID_ARGUMENT", "IMAGE_UNDECODABLE")}
    for data, (code, reason) in cases.items():
        with pytest.raises(EnrichError) as raised:
            client.enrich(data)
        assert (raised.value.code.name, raised.value.reason) == (code, reason)
        assert "object at 0x" not in raised.value.message and "<" not in raised.value.message.replace("<html>", "")
    limit = client.model_info().limits.max_image_bytes
    assert limit == 64 * 1024 * 1024


def test_drain_cutoff_answers_accepted_items_then_ends_the_stream_with_shutting_down(gated, catalogue_dir: Path):
    server, model = gated
    data = images(catalogue_dir, 3)
    more = threading.Event()

    def requests():
        for n in range(2):
            yield (f"early-{n}", data[n])
        more.wait(30)  # sent after the cutoff
        yield ("late", data[2])
        time.sleep(30)  # a client that would go on sending

    answers: list = []

    def consume(client: EnrichClient):
        try:
            answers.extend(client.enrich_stream(requests(), caption_mode="skip", timeout=60))
        except EnrichError as error:
            return error
        return None

    with EnrichClient(server.target) as client, ThreadPoolExecutor(1) as pool:
        consuming = pool.submit(consume, client)
        wait_for(lambda: server.server.service.admission.in_flight == 2)
        stopping = asyncio.run_coroutine_threadsafe(server.server.stop(grace=2), server.loop)  # cutoff after 1 s
        service = server.server.service
        wait_for(lambda: service.drain_cutoff is not None and time.perf_counter() > service.drain_cutoff)
        more.set()
        model.gate.set()
        ending = consuming.result(30)
    stopping.result(30)
    by_id = {a.request_id: a for a in answers}
    assert sorted(by_id) == ["early-0", "early-1", "late"]
    assert by_id["early-0"].status.code == 0 and by_id["early-1"].status.code == 0
    assert enrich_pb2.ErrorReason.Name(by_id["late"].status.reason) == "SHUTTING_DOWN"
    assert ending is not None and ending.code == grpc.StatusCode.UNAVAILABLE and ending.reason == "SHUTTING_DOWN"


def test_admission_hands_places_over_and_never_leaks_on_cancellation():
    from enrich_server.admission import Admission

    async def scenario():
        admission = Admission(1)
        assert admission.try_admit() and not admission.try_admit()
        waiting = [asyncio.create_task(admission.admit()) for _ in range(3)]
        await asyncio.sleep(0)
        waiting[0].cancel()  # gives up while waiting
        admission.release()  # hands the place to the next live waiter
        waiting[1].cancel()  # cancelled just after being handed it: passes it on
        await asyncio.gather(*waiting, return_exceptions=True)
        assert waiting[2].done() and not waiting[2].cancelled()
        assert admission.in_flight == 1
        admission.release()
        assert admission.in_flight == 0 and admission.try_admit()

    asyncio.run(scenario())
