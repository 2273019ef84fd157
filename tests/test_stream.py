"""The stream call and the service behind it, alone: no gRPC and no model. A stand-in for the batched stages
answers when the test lets it, so every moment (reading ahead, draining, a broken client) is the test's."""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from enrich.v1 import enrich_pb2
from enrich_model.answers import AttributePrediction, ImageLook, ItemOptions, ItemPrediction, LabelScore
from enrich_model.audit import Auditor
from enrich_model.decode import DecodeLimits
from enrich_model.fashion import FASHION_SCHEMA
from enrich_model.preprocess import Preprocessing
from enrich_model.schema import Taxonomy
from enrich_server.batched import StagedAnswer, StageTimings
from enrich_server.messages import Limits
from enrich_server.metrics import Metrics
from enrich_server.service import EnrichService, LoadedModel
from enrich_server.stream import StreamCall

from .conftest import until


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 20, 20)).save(buffer, "PNG")
    return buffer.getvalue()


class HeldStages:
    """Answers each image once `release()` lets it through (all at once, or one by one)."""

    def __init__(self) -> None:
        self.gate = asyncio.Semaphore(0)
        self.entered = 0
        self.predicted = self.skipped = 0
        self.item_seconds = 0.01

    def release(self, count: int = 1000) -> None:
        for _ in range(count):
            self.gate.release()

    def decoding(self):
        import contextlib

        return contextlib.nullcontext()

    async def run(self, pixels, options, deadline=None) -> StagedAnswer:
        self.entered += 1
        await self.gate.acquire()
        attribute = AttributePrediction("Tshirts", 0.9, [LabelScore("Tshirts", 0.9)])
        return StagedAnswer(ItemPrediction({"articleType": attribute}, None), StageTimings(batch_size=1))


class Pipeline:
    model_version = "test-000000000000"
    auditor = Auditor(FASHION_SCHEMA, {}, Taxonomy({}), None)  # what requests may audit: the Fashion columns

    def decode_and_look(self, data: bytes, options: ItemOptions, limits: DecodeLimits):
        decoded, pixels = Preprocessing((4, 4), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).from_bytes(data, limits)
        return decoded, pixels, ImageLook()


def service_with(stages: HeldStages, read_ahead: int = 32, queue: int = 128) -> EnrichService:
    limits = Limits(DecodeLimits(), 1 << 20, 2 << 20, 8, read_ahead, queue)
    service = EnrichService(limits, ThreadPoolExecutor(2), Metrics())
    service.model = LoadedModel(Pipeline(), stages, enrich_pb2.Runtime())
    return service


async def requests_of(items: list[tuple[str, bytes]], pulled: list[str] | None = None,
                      then: asyncio.Event | None = None, fail: bool = False):
    for request_id, data in items:
        if pulled is not None:
            pulled.append(request_id)
        yield enrich_pb2.EnrichRequest(request_id=request_id, image=data)
    if then is not None:
        await then.wait()
    if fail:
        raise ConnectionResetError("the client went away")





def test_every_item_read_gets_exactly_one_answer():
    async def scenario():
        stages = HeldStages()
        stages.release()
        service = service_with(stages)
        items = [(f"ok-{n}", png()) for n in range(6)] + [("empty", b""), ("junk", b"junk bytes")]
        answers: list[enrich_pb2.EnrichResponse] = []

        async def write(answer):
            answers.append(answer)

        ending = await StreamCall(service, requests_of(items), write, None).run()
        return ending, answers, service

    ending, answers, service = asyncio.run(scenario())
    assert ending is None
    assert sorted(a.request_id for a in answers) == sorted([f"ok-{n}" for n in range(6)] + ["empty", "junk"])
    reasons = {a.request_id: enrich_pb2.ErrorReason.Name(a.status.reason) for a in answers if a.status.code}
    assert reasons == {"empty": "IMAGE_EMPTY", "junk": "IMAGE_UNDECODABLE"}
    assert all(a.metadata.article_type.label == "Tshirts" for a in answers if not a.status.code)
    assert service.admission.in_flight == 0 and service.active_calls == 0


def test_a_slow_reader_stops_the_stream_reading_ahead():
    """A client that sends fast and reads slowly stalls its own sending: at most `read_ahead` requests are held."""
    async def scenario():
        stages = HeldStages()
        stages.release()
        service = service_with(stages, read_ahead=3)
        pulled: list[str] = []
        written = asyncio.Semaphore(0)
        answers = []

        async def write(answer):
            await written.acquire()  # the client takes its answers only when the test says
            answers.append(answer)

        call = asyncio.create_task(StreamCall(service, requests_of([(str(n), png()) for n in range(10)], pulled),
                                              write, None).run())
        await until(lambda: len(pulled) >= 3)
        await asyncio.sleep(0.2)  # time to read more, were it allowed
        held = len(pulled)
        for _ in range(10):
            written.release()
        assert await call is None
        return held, answers

    held, answers = asyncio.run(scenario())
    assert held <= 4  # three held, and the fourth read but waiting for a slot
    assert len(answers) == 10


def test_after_the_drain_cutoff_the_stream_answers_what_it_accepted_and_ends_shutting_down():
    async def scenario():
        stages = HeldStages()
        service = service_with(stages)
        more = asyncio.Event()
        answers = []

        async def write(answer):
            answers.append(answer)

        items = [("early-0", png()), ("early-1", png())]
        late = [("late", png()), ("never-read", png())]

        async def requests():
            async for request in requests_of(items, then=more):
                yield request
            async for request in requests_of(late):
                yield request

        call = asyncio.create_task(StreamCall(service, requests(), write, None).run())
        await until(lambda: stages.entered == 2)  # both accepted and in the stages
        service.begin_drain(0)  # the cutoff is now
        more.set()
        stages.release()
        return await call, answers

    ending, answers = asyncio.run(scenario())
    by_id = {a.request_id: a for a in answers}
    assert sorted(by_id) == ["early-0", "early-1", "late"]  # the item after "late" was never read
    assert by_id["early-0"].status.code == 0 and by_id["early-1"].status.code == 0
    assert enrich_pb2.ErrorReason.Name(by_id["late"].status.reason) == "SHUTTING_DOWN"
    assert ending is not None and ending.reason == enrich_pb2.SHUTTING_DOWN


def test_a_broken_request_stream_still_answers_every_accepted_item():
    async def scenario():
        stages = HeldStages()
        service = service_with(stages)
        answers = []

        async def write(answer):
            answers.append(answer)

        call = asyncio.create_task(StreamCall(service, requests_of([("a", png()), ("b", png())], fail=True),
                                              write, None).run())
        await until(lambda: stages.entered == 2)
        stages.release()
        return await call, answers, service

    ending, answers, service = asyncio.run(scenario())
    assert sorted(a.request_id for a in answers) == ["a", "b"] and all(a.status.code == 0 for a in answers)
    assert ending is not None and ending.reason == enrich_pb2.INTERNAL_ERROR
    assert service.admission.in_flight == 0


def test_a_cancelled_call_gives_back_every_place_it_held():
    async def scenario():
        stages = HeldStages()  # never released: the items wait in the stages
        service = service_with(stages)
        open_forever = asyncio.Event()

        async def write(answer):
            pytest.fail("nothing is answered before the cancellation")

        call = asyncio.create_task(StreamCall(service, requests_of([(str(n), png()) for n in range(4)],
                                                                   then=open_forever), write, None).run())
        await until(lambda: stages.entered == 4)
        assert service.admission.in_flight == 4 and service.active_calls == 1
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await until(lambda: service.admission.in_flight == 0)
        return service

    service = asyncio.run(scenario())
    assert service.active_calls == 0 and service.idle.is_set()


def test_a_full_server_makes_a_stream_wait_instead_of_failing_it():
    async def scenario():
        stages = HeldStages()
        service = service_with(stages, queue=2)
        answers = []

        async def write(answer):
            answers.append(answer)

        call = asyncio.create_task(StreamCall(service, requests_of([(str(n), png()) for n in range(5)]),
                                              write, None).run())
        await until(lambda: stages.entered == 2 and service.admission.waiting == 1)
        entered_while_full = stages.entered
        stages.release()
        assert await call is None
        return entered_while_full, answers

    entered_while_full, answers = asyncio.run(scenario())
    assert entered_while_full == 2
    assert sorted(a.request_id for a in answers) == [str(n) for n in range(5)]
    assert all(a.status.code == 0 for a in answers)
