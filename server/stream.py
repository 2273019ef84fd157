"""One EnrichStream call: a reader admits items and starts their work; the call writes answers as they come.

Every item read gets exactly one answer. After the drain cutoff the reader answers the item it holds with
SHUTTING_DOWN and stops reading; the call then ends UNAVAILABLE (reason SHUTTING_DOWN) once every accepted
item has been answered, and the client resends whatever has no answer. The call knows nothing of gRPC: it
reads requests from an async iterator and hands answers to `write`, so it runs (and is tested) alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from enrich.v1 import enrich_pb2
from enrich_model.answers import ItemOptions

from .errors import EnrichFailure, code_name, internal_error
from .logs import CallRecord, printable
from .service import EnrichService

log = logging.getLogger("enrich.stream")

METHOD = "EnrichStream"


def failed_response(request_id: str, failure: EnrichFailure) -> enrich_pb2.EnrichResponse:
    return enrich_pb2.EnrichResponse(request_id=request_id, status=failure.item_status())


class StreamCall:
    def __init__(self, service: EnrichService, requests: AsyncIterator[enrich_pb2.EnrichRequest],
                 write: Callable[[enrich_pb2.EnrichResponse], Awaitable[None]], deadline: float | None) -> None:
        self.service, self.requests, self.write, self.deadline = service, requests, write, deadline
        self.answers: asyncio.Queue[enrich_pb2.EnrichResponse | None] = asyncio.Queue()
        # Read-ahead bound: a place is held from reading a request until its answer is handed to `write`, so a
        # client that sends fast but reads slowly stalls its own reads instead of growing our memory.
        self.read_ahead = asyncio.Semaphore(service.limits.max_stream_in_flight)
        self.pending: set[asyncio.Task] = set()
        self.ending: EnrichFailure | None = None  # how the call ends when not OK

    async def run(self) -> EnrichFailure | None:
        """Reads, answers and writes until the client closes its side (or the drain cutoff); returns how the
        call must end when not OK, for the host to report."""
        with self.service.call(METHOD) as record:
            reader = asyncio.create_task(self.read(record))
            try:
                while (answer := await self.answers.get()) is not None:
                    status = answer.status
                    reason = enrich_pb2.ErrorReason.Name(status.reason) if status.code else ""
                    self.service.count(METHOD, record, code_name(status.code), reason)
                    record.add_timings(answer.timings)
                    await self.write(answer)
                    self.read_ahead.release()
                if self.ending is not None:
                    record.fail(self.ending.code.name, self.ending.reason_name)
                return self.ending
            finally:
                reader.cancel()
                for task in list(self.pending):
                    task.cancel()

    async def read(self, record: CallRecord) -> None:
        try:
            index = 0
            async for request in self.requests:
                record.bytes_in += len(request.image)
                await self.read_ahead.acquire()
                request_id = request.request_id or str(index)
                index += 1
                try:
                    options = self.service.precheck(request)
                except EnrichFailure as failure:
                    await self.answers.put(failed_response(request_id, failure))
                    if failure.reason == enrich_pb2.SHUTTING_DOWN:
                        self.ending = failure
                        break
                    continue
                await self.service.admit()  # waits while the server is full: flow control slows the sender
                task = asyncio.create_task(self.answer(request, request_id, options))
                # Released when the task ends, even if it is cancelled before it ever runs.
                task.add_done_callback(lambda _: self.service.release())
                self.pending.add(task)
                task.add_done_callback(self.pending.discard)
        except Exception as error:  # the client's side of the stream broke: answer what was accepted
            log.warning("EnrichStream: reading requests failed (%s); answering the %d accepted items",
                        type(error).__name__, len(self.pending))
            self.ending = internal_error()
        while self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)
        await self.answers.put(None)

    async def answer(self, request: enrich_pb2.EnrichRequest, request_id: str, options: ItemOptions) -> None:
        try:
            response = await self.service.process(request, request_id, options, self.deadline)
        except EnrichFailure as failure:
            response = failed_response(request_id, failure)
        except Exception:  # a bug, not a bad item: still answer, never drop it
            log.exception("stream item %s failed", printable(request_id))
            response = failed_response(request_id, internal_error())
        await self.answers.put(response)
