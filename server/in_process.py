"""The server's own service without its ports: admission, the decode pool, the batched stages and the proto
codec, answering EnrichRequests inside another process exactly as a gRPC stream is answered. Batch jobs (the
actors of `--engine ray`) and `enrich bench` use it, so their answers are `enrich serve`'s.

    service = InProcessService(ServerSettings(model=Path("bundles/synth")))
    answers = service.answer(requests)       # one EnrichResponse per request, in the requests' order
    service.close()
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import hashlib
import tempfile
import threading
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from enrich.v1 import enrich_pb2
from enrich_model.bundle_info import BundleInfo

from .messages import model_info
from .metrics import Metrics
from .ports import limits_of, loaded_model
from .service import EnrichService
from .settings import ServerSettings
from .stream import StreamCall

T = TypeVar("T")


class InProcessService:
    """An EnrichService on an event loop of its own (a daemon thread), with the bundle loaded and warmed. The
    response cache is off: every image reaches the model."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = dataclasses.replace(settings, cache_mb=0)
        self.model_threads, self.decode_threads = self.settings.thread_budget
        self.model = loaded_model(self.settings)
        self.pipeline = self.model.pipeline
        self.pool = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="enrich-decode")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="enrich-in-process", daemon=True)
        self.thread.start()
        self.service = self._run(self._start())

    async def _start(self) -> EnrichService:
        service = EnrichService(limits_of(self.settings), self.pool, Metrics())
        self.model.batched.start()
        service.model = self.model
        return service

    def model_info(self) -> enrich_pb2.ModelInfo:
        return self.service.model_info()

    def answer(self, requests: list[enrich_pb2.EnrichRequest]) -> list[enrich_pb2.EnrichResponse]:
        """One answer per request, in their order, through one stream call (each needs its own request_id)."""
        return self._run(self.stream(requests))

    def answer_streams(self, streams: list[list[enrich_pb2.EnrichRequest]]) -> list[list[enrich_pb2.EnrichResponse]]:
        """`answer` for several stream calls at once, as several clients would send them."""
        async def together() -> list[list[enrich_pb2.EnrichResponse]]:
            return list(await asyncio.gather(*map(self.stream, streams)))

        return self._run(together())

    async def stream(self, requests: list[enrich_pb2.EnrichRequest]) -> list[enrich_pb2.EnrichResponse]:
        answers: dict[str, enrich_pb2.EnrichResponse] = {}

        async def write(response: enrich_pb2.EnrichResponse) -> None:
            answers[response.request_id] = response

        ending = await StreamCall(self.service, _iterate(requests), write, None).run()
        missing = [r.request_id for r in requests if r.request_id not in answers]
        if ending is not None or missing:
            raise RuntimeError(f"the in-process service left {len(missing)} of {len(requests)} images unanswered"
                               + (f" ({ending.reason_name}: {ending})" if ending is not None else ""))
        return [answers[r.request_id] for r in requests]

    def close(self) -> None:
        self._run(self.model.batched.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.pool.shutdown(wait=False)

    def _run(self, coroutine: Coroutine[object, object, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


async def _iterate(requests: list[enrich_pb2.EnrichRequest]) -> AsyncIterator[enrich_pb2.EnrichRequest]:
    for request in requests:
        yield request


def local_bundle(source: str | Path) -> Path:
    """A bundle folder on this machine: `source` itself when it is one, else fetched (`enrich fetch`: an object
    store, a URL, the hub) into a cache folder of this machine's, once for all the processes that ask."""
    if Path(source).is_dir():
        return Path(source)
    from enrich_data.fetch import fetch_bundle

    cache = Path(tempfile.gettempdir()) / "enrich-bundles"
    cache.mkdir(exist_ok=True)
    dest = cache / hashlib.sha256(str(source).encode()).hexdigest()[:16]
    with open(cache / f"{dest.name}.lock", "w") as lock:  # one fetch per machine; the others wait for it
        fcntl.flock(lock, fcntl.LOCK_EX)
        fetch_bundle(str(source), dest, progress=False)
    return dest


def describe_bundle(path: Path, settings: ServerSettings | None = None) -> enrich_pb2.ModelInfo:
    """What GetModelInfo would answer for the bundle, read without loading its graphs."""
    settings = settings or ServerSettings(model=path)
    return model_info(BundleInfo.read(path), limits_of(settings), enrich_pb2.ServerLoad(), enrich_pb2.Runtime())
