"""Many images through several EnrichStream calls at once, each answered exactly once: what `bulk` and
`audit` run. A server that restarts or drains is waited for with backoff; items it could not take now are
sent again; an unreadable input is an answer with its reason, never the end of the run."""

from __future__ import annotations

import json
import queue
import random
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc

from enrich.v1 import enrich_pb2
from enrich_contract.wire import to_json

from .client import EnrichClient, EnrichError
from .sources import Source, is_remote

# A stream fails as a whole only when the server goes away or drains (a full server slows streams down
# instead); a message over gRPC's size limit is RESOURCE_EXHAUSTED, which bulk prevents by checking sizes.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
# Item answers that mean "not now", never "not this image": the item is sent again.
RETRY_LATER = {enrich_pb2.SHUTTING_DOWN, enrich_pb2.MODEL_LOADING, enrich_pb2.OVERLOADED, enrich_pb2.DEADLINE_EXPIRED}


class AnswerSink(Protocol):
    """Where answers go (bulk's Output): it knows which keys it already holds, and which of them failed."""

    done: set[str]
    failed: set[str]

    def write(self, response: enrich_pb2.EnrichResponse) -> None: ...


def code_name(code: int) -> str:
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))


class _TooLarge(Exception):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the image is {size:,} bytes, over the server's limit of {limit:,} bytes")


def unreadable(source: Source, error: Exception) -> enrich_pb2.EnrichResponse:
    """A row for an input not sent: one the client could not read (a missing file, a URL that failed), or
    one over the server's size limit (checked here: gRPC would fail the whole stream for it)."""
    if isinstance(error, _TooLarge):
        return enrich_pb2.EnrichResponse(request_id=source.key, status=enrich_pb2.ItemStatus(
            code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message=str(error), reason=enrich_pb2.IMAGE_TOO_LARGE))
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return enrich_pb2.EnrichResponse(request_id=source.key, status=enrich_pb2.ItemStatus(
        code=grpc.StatusCode.NOT_FOUND.value[0], message=f"cannot read {source.location}: {reason}"))


@dataclass
class Summary:
    total: int
    skipped: int  # already in the output
    failed_before: int = 0  # of those, rows whose image failed
    ok: int = 0
    failed: int = 0
    retries: int = 0
    started: float = field(default_factory=time.monotonic)
    failures: dict[str, int] = field(default_factory=dict)  # reason -> count

    def line(self) -> str:
        seconds = time.monotonic() - self.started
        rate = (self.ok + self.failed) / seconds if seconds else 0.0
        already = f"{self.skipped} already in the output" + (f" ({self.failed_before} of them failed)"
                                                             if self.failed_before else "")
        text = (f"{self.ok} enriched, {self.failed} failed, {already}, "
                f"{self.total - self.skipped - self.ok - self.failed} not done; {seconds:.0f} s, {rate:.1f} img/s")
        if self.failures:
            text += " (failures: " + ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())) + ")"
        return text + (f"; {self.retries} stream retries" if self.retries else "")

    @property
    def complete(self) -> bool:
        """Every input image has a row, and none of them failed."""
        return not (self.failed or self.failed_before) and self.ok + self.skipped == self.total


class _StreamState:
    """What one stream has taken from the queue and not yet answered. gRPC reads the request iterator in
    its own thread, so taking an item and closing the stream exclude each other: nothing taken after the
    close can be lost."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.closed = False
        self.in_flight: dict[str, Source] = {}

    def take(self, pending: queue.SimpleQueue[Source]) -> Source | None:
        with self.lock:
            if self.closed:
                return None
            try:
                source = pending.get_nowait()
            except queue.Empty:
                return None
            self.in_flight[source.key] = source
            return source

    def answered(self, key: str) -> Source | None:
        with self.lock:
            return self.in_flight.pop(key, None)

    def stop_taking(self) -> None:
        with self.lock:
            self.closed = True

    def close(self) -> list[Source]:
        with self.lock:
            self.closed = True
            left, self.in_flight = list(self.in_flight.values()), {}
            return left



@dataclass(frozen=True)
class RequestOptions:
    """What every request of a run asks for (bulk's and audit's options; `include`: contract.INCLUDE_FLAGS to set)."""

    top_k: int | None = None
    caption_mode: str | None = None
    error_prior: float | None = None
    include: tuple[str, ...] = ()

    def request(self, source: Source, data: bytes) -> enrich_pb2.EnrichRequest:
        """The request for one image: its catalogue values, when it has any, are audited."""
        return EnrichClient.request(data, source.key, self.top_k, self.caption_mode,
                                    dict(source.catalogue) if source.catalogue else None, self.error_prior,
                                    **dict.fromkeys(self.include, True))


class BulkRun:
    def __init__(self, client: EnrichClient, sources: list[Source], output: AnswerSink, streams: int = 4,
                 top_k: int | None = None, caption_mode: str | None = None, sidecars: bool = False,
                 retry_seconds: float = 120.0, on_answer=None, error_prior: float | None = None,
                 include: Iterable[str] = ()) -> None:
        """Sources with catalogue values are audited (with `error_prior`); `include`: the request's include_*
        flags to set (contract.INCLUDE_FLAGS)."""
        self.client, self.output, self.streams = client, output, streams
        self.options, self.sidecars = RequestOptions(top_k, caption_mode, error_prior, tuple(include)), sidecars
        self.retry_seconds = retry_seconds
        todo = [s for s in sources if s.key not in output.done]
        self.summary = Summary(total=len(sources), skipped=len(sources) - len(todo),
                               failed_before=sum(s.key in output.failed for s in sources))
        self.pending: queue.SimpleQueue[Source] = queue.SimpleQueue()
        for source in todo:
            self.pending.put(source)
        self.stop = threading.Event()
        self.calls: list[grpc.Call] = []
        self.lock = threading.Lock()
        self.fatal: EnrichError | None = None
        self.on_answer = on_answer or (lambda response: None)
        self.max_image_bytes = 0  # the server's limit, when known (bulk_main asks GetModelInfo)

    def run(self) -> Summary:
        workers = [threading.Thread(target=self._worker, name=f"bulk-stream-{n}", daemon=True)
                   for n in range(self.streams)]
        for worker in workers:
            worker.start()
        try:
            for worker in workers:
                while worker.is_alive():
                    worker.join(0.2)  # short joins: Ctrl-C reaches the main thread
        except KeyboardInterrupt:
            self.cancel()  # the streams end; what was answered is written, nothing after
            for worker in workers:
                worker.join(10)
            raise
        if self.fatal:
            raise self.fatal
        return self.summary

    def cancel(self) -> None:
        self.stop.set()
        with self.lock:
            for call in self.calls:
                call.cancel()

    def _worker(self) -> None:
        try:
            self._work()
        except Exception as error:  # e.g. the disk is full: stop the run rather than lose images quietly
            self.fatal = self.fatal or EnrichError(grpc.StatusCode.UNKNOWN, f"{type(error).__name__}: {error}")
            self.cancel()

    def _work(self) -> None:
        failing_since: float | None = None  # since when nothing got through
        backoff = 0.5
        while not self.stop.is_set():
            stream = _StreamState()
            answered_any, not_now = False, None
            try:
                for response in self._stream(stream):
                    source = stream.answered(response.request_id)
                    if response.status.reason in RETRY_LATER and source is not None:
                        # The server cannot take it now (loading, draining, full): send it again after a pause,
                        # and take nothing more on this stream.
                        self.pending.put(source)
                        stream.stop_taking()
                        delay = response.status.retry_delay.ToTimedelta().total_seconds()
                        not_now = EnrichError(grpc.StatusCode.UNAVAILABLE, response.status.message,
                                              retry_after=delay or None)
                    else:
                        answered_any = True
                        self._record(response, source)
                error = not_now
            except EnrichError as failure:
                error = failure
            for source in stream.close():  # taken but never answered: sent again
                self.pending.put(source)
            if error is None:
                if self.pending.empty():
                    return  # everything this stream took was answered, and nothing is left
                continue
            if self.stop.is_set():
                return
            now = time.monotonic()
            failing_since = now if answered_any or failing_since is None else failing_since
            if error.code not in RETRYABLE or now - failing_since > self.retry_seconds:
                self.fatal = self.fatal or error
                self.cancel()
                return
            with self.lock:
                self.summary.retries += 1
            delay = error.retry_after or backoff
            backoff = min(10.0, backoff * 2) if not answered_any else 0.5
            self.stop.wait(delay * random.uniform(0.8, 1.2))

    def _stream(self, stream: _StreamState) -> Iterator[enrich_pb2.EnrichResponse]:
        def requests() -> Iterator[enrich_pb2.EnrichRequest]:
            while not self.stop.is_set():
                source = stream.take(self.pending)
                if source is None:
                    return
                try:
                    data = source.read()
                    if self.max_image_bytes and len(data) > self.max_image_bytes:
                        raise _TooLarge(len(data), self.max_image_bytes)
                    request = self.options.request(source, data)
                except Exception as error:  # an unreadable input is a row, not the end of the run
                    if stream.answered(source.key) is not None:  # still ours: the stream may have ended
                        self._record(unreadable(source, error), None)
                    continue
                yield request

        call = self.client.stub.EnrichStream(requests(), metadata=self.client.metadata)
        with self.lock:
            self.calls.append(call)
        try:
            yield from call
        except grpc.RpcError as error:
            raise EnrichError.from_rpc_error(error) from error
        finally:
            with self.lock:
                self.calls.remove(call)

    def _record(self, response: enrich_pb2.EnrichResponse, source: Source | None) -> None:
        self.output.write(response)
        with self.lock:
            if response.status.code:
                self.summary.failed += 1
                reason = enrich_pb2.ErrorReason.Name(response.status.reason) if response.status.reason else \
                    code_name(response.status.code)
                self.summary.failures[reason] = self.summary.failures.get(reason, 0) + 1
            else:
                self.summary.ok += 1
        if self.sidecars and source is not None and not is_remote(source.location) and not source.is_url \
                and not response.status.code:
            sidecar = Path(source.location + ".json")
            sidecar.write_text(json.dumps(to_json(response.metadata), indent=2, ensure_ascii=False) + "\n",
                               encoding="utf-8")
        self.on_answer(response)
