"""`enrich-client bulk`: a whole catalogue through several streams, into JSON lines or CSV, resumable.

    enrich-client bulk photos/ --out results.jsonl                # a folder, recursively, by extension
    enrich-client bulk 'shoots/**/*.jpg' manifest.csv --out results.csv --streams 4

Every input image gets exactly one row. A rerun with the same --out skips what the file already holds,
so an interrupted run (Ctrl-C, a killed process, a lost server) continues where it stopped; at most
the images in flight are sent again. A server that restarts or drains mid-run is waited for, with
backoff. A bad image is a row with its reason, never the end of the run.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import os
import queue
import random
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from enrich.v1 import enrich_pb2

from .client import EnrichClient, EnrichError, image_files, to_json

# The Prediction-typed fields of Metadata, in the proto's order: one CSV column pair each.
ATTRIBUTES = [f.name for f in enrich_pb2.Metadata.DESCRIPTOR.fields
              if f.message_type is not None and f.message_type.name == "Prediction"]
CSV_COLUMNS = ["request_id", "status", "reason", "message",
               *[c for a in ATTRIBUTES for c in (a, f"{a}_confidence")],
               "product_display_name", "product_display_name_confidence", "width", "height", "format",
               "model_version"]
# A stream fails as a whole only when the server goes away or drains (a full server slows streams down
# instead); a message over gRPC's size limit is RESOURCE_EXHAUSTED, which bulk prevents by checking sizes.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
# Item answers that mean "not now", never "not this image": the item is sent again.
RETRY_LATER = {enrich_pb2.SHUTTING_DOWN, enrich_pb2.MODEL_LOADING, enrich_pb2.OVERLOADED, enrich_pb2.DEADLINE_EXPIRED}


# --- inputs ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    key: str  # the request id and the output row's key: the path or URL as given
    location: str  # a local path or an http(s) URL

    @classmethod
    def of(cls, location: str) -> Source:
        # A file name that is not UTF-8 (undecodable bytes kept as surrogates) gets a key that is.
        key = location.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return cls(key, location)

    @property
    def is_url(self) -> bool:
        return self.location.startswith(("http://", "https://"))

    def read(self) -> bytes:
        if self.is_url:
            with urllib.request.urlopen(self.location, timeout=60) as reply:  # only http(s), checked above
                return reply.read()
        return Path(self.location).read_bytes()


def collect(inputs: list[str]) -> list[Source]:
    """Folders (recursive, by extension), globs, single files, and CSV/JSONL manifests of paths or URLs."""
    found: dict[str, Source] = {}
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            paths = image_files(path)
            found.update((source.key, source) for source in map(Source.of, map(str, paths)))
        elif path.suffix.lower() in (".csv", ".jsonl") and path.is_file():
            found.update((s.key, s) for s in read_manifest(path))
        elif path.is_file():
            source = Source.of(given)
            found[source.key] = source
        elif any(char in given for char in "*?["):
            paths = sorted(p for p in glob.glob(given, recursive=True) if Path(p).is_file())
            found.update((source.key, source) for source in map(Source.of, paths))
        else:
            raise FileNotFoundError(f"{given}: no such file, folder or matching glob")
    return list(found.values())


def read_manifest(path: Path) -> Iterator[Source]:
    """Rows with a `path` or `url` column (CSV) or key (JSON lines); relative paths are relative to the manifest."""
    text = path.read_text(encoding="utf-8")
    rows = csv.DictReader(io.StringIO(text)) if path.suffix.lower() == ".csv" else \
        (json.loads(line) for line in text.splitlines() if line.strip())
    for number, row in enumerate(rows, start=2 if path.suffix.lower() == ".csv" else 1):
        location = (row.get("url") or row.get("path") or "").strip()
        if not location:
            raise ValueError(f"{path}:{number}: no `path` or `url`")
        if not location.startswith(("http://", "https://")) and not Path(location).is_absolute():
            location = str(path.parent / location)
        yield Source.of(location)


# --- output ------------------------------------------------------------------------------------------
def csv_row(response: enrich_pb2.EnrichResponse) -> dict[str, object]:
    status = response.status
    row: dict[str, object] = {"request_id": response.request_id,
                              "status": grpc.StatusCode.OK.name if not status.code else code_name(status.code),
                              "reason": enrich_pb2.ErrorReason.Name(status.reason) if status.reason else "",
                              "message": "" if not status.code else status.message,
                              "model_version": response.model_version}
    if not status.code:
        metadata = response.metadata
        for attribute in ATTRIBUTES:
            prediction = getattr(metadata, attribute)
            row[attribute], row[f"{attribute}_confidence"] = prediction.label, round(prediction.confidence, 4)
        if metadata.HasField("product_display_name"):
            row["product_display_name"] = metadata.product_display_name.text
            row["product_display_name_confidence"] = round(metadata.product_display_name.confidence, 4)
        row.update(width=metadata.image.width, height=metadata.image.height, format=metadata.image.format)
    return row


def code_name(code: int) -> str:
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))


class Output:
    """Appends one row per image, flushed as it is written; on open, reads the keys already done and cuts
    a last line that a killed run left half-written, so the file stays valid."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.format = path, fmt
        self.done: set[str] = set()
        if path.exists():
            data = path.read_bytes()
            complete = data[: data.rfind(b"\n") + 1]
            if len(complete) != len(data):
                os.truncate(path, len(complete))  # in place: an interruption now cannot lose earlier rows
            text = complete.decode("utf-8")
            if fmt == "csv":
                self.done = {row["request_id"] for row in csv.DictReader(io.StringIO(text))}
            else:
                self.done = {json.loads(line)["request_id"] for line in text.split("\n") if line.strip()}
        fresh = not path.exists() or path.stat().st_size == 0
        self.file = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - closed by close()
        self.csv = csv.DictWriter(self.file, CSV_COLUMNS) if fmt == "csv" else None
        if self.csv and fresh:
            self.csv.writeheader()
        self.lock = threading.Lock()

    def write(self, response: enrich_pb2.EnrichResponse) -> None:
        with self.lock:
            if self.csv:
                self.csv.writerow(csv_row(response))
            else:
                self.file.write(json.dumps(to_json(response), ensure_ascii=False) + "\n")
            self.file.flush()

    def close(self) -> None:
        self.file.close()


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


# --- the run -----------------------------------------------------------------------------------------
@dataclass
class Summary:
    total: int
    skipped: int  # already in the output
    ok: int = 0
    failed: int = 0
    retries: int = 0
    started: float = field(default_factory=time.monotonic)
    failures: dict[str, int] = field(default_factory=dict)  # reason -> count

    def line(self) -> str:
        seconds = time.monotonic() - self.started
        rate = (self.ok + self.failed) / seconds if seconds else 0.0
        text = (f"{self.ok} enriched, {self.failed} failed, {self.skipped} already in the output, "
                f"{self.total - self.skipped - self.ok - self.failed} not done; {seconds:.0f} s, {rate:.1f} img/s")
        if self.failures:
            text += " (failures: " + ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())) + ")"
        return text + (f"; {self.retries} stream retries" if self.retries else "")


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


class BulkRun:
    def __init__(self, client: EnrichClient, sources: list[Source], output: Output, streams: int = 4,
                 top_k: int = 3, caption: str = "generate", sidecars: bool = False, retry_seconds: float = 120.0,
                 on_answer=None) -> None:
        self.client, self.output, self.streams = client, output, streams
        self.top_k, self.caption, self.sidecars = top_k, caption, sidecars
        self.retry_seconds = retry_seconds
        todo = [s for s in sources if s.key not in output.done]
        self.summary = Summary(total=len(sources), skipped=len(sources) - len(todo))
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
                    request = self.client.request(data, source.key, self.top_k, self.caption)
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
        if self.sidecars and source is not None and not source.is_url and not response.status.code:
            sidecar = Path(source.location + ".json")
            sidecar.write_text(json.dumps(to_json(response.metadata), indent=2, ensure_ascii=False) + "\n",
                               encoding="utf-8")
        self.on_answer(response)


def output_format(path: Path, given: str | None) -> str:
    if given:
        return given
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


def bulk_main(client: EnrichClient, args) -> int:
    from tqdm import tqdm

    try:
        sources = collect(args.inputs)
    except (OSError, ValueError) as error:
        print(f"enrich-client bulk: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    output = Output(out, output_format(out, args.format))
    bar = tqdm(total=len(sources), initial=0, unit="img", desc="enrich", file=sys.stderr, disable=args.quiet,
               dynamic_ncols=True)
    run = None

    def answered(response: enrich_pb2.EnrichResponse) -> None:
        bar.update()
        if response.status.code:
            bar.set_postfix(failed=run.summary.failed, refresh=False)

    run = BulkRun(client, sources, output, args.streams, args.top_k, args.caption, args.sidecars,
                  args.retry_seconds, answered)
    with contextlib.suppress(EnrichError):  # not serving yet: the streams wait for it; gRPC checks sizes then
        run.max_image_bytes = client.model_info().limits.max_image_bytes
    bar.update(run.summary.skipped)
    try:
        summary = run.run()
    except KeyboardInterrupt:
        run.cancel()
        bar.close()
        output.close()
        print(f"\ninterrupted: {run.summary.line()}\nrun the same command again to continue", file=sys.stderr)
        return 130
    except EnrichError as error:
        bar.close()
        output.close()
        print(f"enrich-client bulk: stopped: {error}\n{run.summary.line()}", file=sys.stderr)
        return 1
    bar.close()
    output.close()
    print(summary.line(), file=sys.stderr)
    return 1 if summary.failed or summary.ok + summary.failed + summary.skipped < summary.total else 0
