"""`enrich-client bulk`: a whole catalogue through several streams, into JSON lines or CSV, resumable.

    enrich-client bulk photos/ --out results.jsonl                # a folder, recursively, by extension
    enrich-client bulk 'shoots/**/*.jpg' manifest.csv --out results.csv --streams 4

Every input image gets exactly one row. A rerun with the same --out skips what the file already holds,
so an interrupted run (Ctrl-C, a killed process, a lost server) continues where it stopped; at most
the images in flight are sent again. A server that restarts or drains mid-run is waited for, with
backoff. A bad image is a row with its reason, never the end of the run. The options a run asked for are
kept beside the output (OUT.bulk.json): a rerun with other options is refused unless told to mix them.

Exit status: 0 when every input image has an OK row; 1 when some row failed (in this run or an earlier one)
or the run stopped; 2 when an input matches no image, or the options do not match the output's.
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

from . import contract
from .client import IMAGE_SUFFIXES, EnrichClient, EnrichError, image_files
from .contract import to_json

# The Prediction-typed fields of Metadata, in the proto's order: one CSV column pair each, named as in the
# JSON (the catalogue's own column names: baseColour, articleType, ...).
ATTRIBUTES = [f for f in enrich_pb2.Metadata.DESCRIPTOR.fields
              if f.message_type is not None and f.message_type.name == "Prediction"]
CAPTION = enrich_pb2.Metadata.DESCRIPTOR.fields_by_name["product_display_name"].json_name
KEY = enrich_pb2.EnrichResponse.DESCRIPTOR.fields_by_name["request_id"].json_name  # requestId
CSV_COLUMNS = [KEY, "status", "reason", "message",
               *[c for a in ATTRIBUTES for c in (a.json_name, f"{a.json_name}Confidence")],
               CAPTION, f"{CAPTION}Confidence", "width", "height", "format", "modelVersion"]
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
    """Folders (recursive, by extension), globs, single files, and CSV/JSONL manifests of paths or URLs.
    An input that yields no image is an error: a typo must not pass for an empty catalogue."""
    found: dict[str, Source] = {}
    for given in inputs:
        sources = list(expand(given))
        if not sources:
            raise FileNotFoundError(f"{given}: no image files there (by suffix: {', '.join(sorted(IMAGE_SUFFIXES))})"
                                    if Path(given).is_dir() else f"{given}: matches no image")
        found.update((source.key, source) for source in sources)
    return list(found.values())


def expand(given: str) -> Iterator[Source]:
    path = Path(given)
    if path.is_dir():
        yield from map(Source.of, map(str, image_files(path)))
    elif path.suffix.lower() in (".csv", ".jsonl") and path.is_file():
        yield from read_manifest(path)
    elif path.is_file():
        yield Source.of(given)
    elif any(char in given for char in "*?["):
        yield from map(Source.of, sorted(p for p in glob.glob(given, recursive=True) if Path(p).is_file()))
    else:
        raise FileNotFoundError(f"{given}: no such file, folder or matching glob")


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
    row: dict[str, object] = {KEY: response.request_id,
                              "status": grpc.StatusCode.OK.name if not status.code else code_name(status.code),
                              "reason": enrich_pb2.ErrorReason.Name(status.reason) if status.reason else "",
                              "message": "" if not status.code else status.message,
                              "modelVersion": response.model_version}
    if not status.code:
        metadata = response.metadata
        for attribute in ATTRIBUTES:
            prediction = getattr(metadata, attribute.name)
            row[attribute.json_name] = prediction.label
            row[f"{attribute.json_name}Confidence"] = round(prediction.confidence, 4)
        if metadata.HasField("product_display_name"):
            row[CAPTION] = metadata.product_display_name.text
            row[f"{CAPTION}Confidence"] = round(metadata.product_display_name.confidence, 4)
        row.update(width=metadata.image.width, height=metadata.image.height, format=metadata.image.format)
    return row


def code_name(code: int) -> str:
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))


class OptionsMismatch(ValueError):
    """The output was made with other options than this run asks for."""


class Output:
    """Appends one row per image, flushed as it is written; on open, reads the keys already done (and which
    of them failed) and cuts a last line that a killed run left half-written, so the file stays valid."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.format = path, fmt
        self.done: set[str] = set()
        self.failed: set[str] = set()  # rows already there whose image failed
        if path.exists():
            data = path.read_bytes()
            complete = data[: data.rfind(b"\n") + 1]
            if len(complete) != len(data):
                os.truncate(path, len(complete))  # in place: an interruption now cannot lose earlier rows
            for key, ok in self._rows(complete.decode("utf-8")):
                self.done.add(key)
                if not ok:
                    self.failed.add(key)
        fresh = not path.exists() or path.stat().st_size == 0
        self.file = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - closed by close()
        self.csv = csv.DictWriter(self.file, CSV_COLUMNS) if fmt == "csv" else None
        if self.csv and fresh:
            self.csv.writeheader()
        self.lock = threading.Lock()

    def _rows(self, text: str) -> Iterator[tuple[str, bool]]:
        """(key, OK?) of every complete row."""
        if self.format == "csv":
            for row in csv.DictReader(io.StringIO(text)):
                if KEY not in row:
                    raise OptionsMismatch(f"{self.path} is not a CSV this version of enrich-client wrote (no "
                                          f"{KEY} column): choose another --out")
                yield row[KEY], row["status"] == grpc.StatusCode.OK.name
        else:
            for line in filter(str.strip, text.split("\n")):
                row = json.loads(line)
                if KEY not in row:
                    raise OptionsMismatch(f"{self.path} holds rows without {KEY}: not written by this version of "
                                          "enrich-client; choose another --out")
                yield row[KEY], not row["status"]["code"]

    def check_options(self, options: dict, mixed: bool) -> None:
        """Refuses to add rows made with other options than the rows already there, unless `mixed`; then
        records this run's options."""
        record = self.path.with_name(self.path.name + ".bulk.json")
        if self.done and not mixed:
            if not record.exists():
                raise OptionsMismatch(f"{self.path} has rows but no {record.name}, so the options that made them "
                                      "are unknown. Choose another --out, or add --mixed-options to resume anyway")
            before = json.loads(record.read_text(encoding="utf-8"))
            changed = {k: (before.get(k), v) for k, v in options.items() if before.get(k) != v}
            if changed:
                words = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
                raise OptionsMismatch(f"{self.path} was made with other options ({words}): its rows would mix "
                                      "them. Choose another --out, or add --mixed-options to resume anyway")
        record.write_text(json.dumps(options, indent=2) + "\n", encoding="utf-8")

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



class BulkRun:
    def __init__(self, client: EnrichClient, sources: list[Source], output: Output, streams: int = 4,
                 top_k: int | None = None, caption_mode: str | None = None, sidecars: bool = False,
                 retry_seconds: float = 120.0, on_answer=None) -> None:
        self.client, self.output, self.streams = client, output, streams
        self.top_k, self.caption_mode, self.sidecars = top_k, caption_mode, sidecars
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
                    request = self.client.request(data, source.key, self.top_k, self.caption_mode)
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


def run_options(args) -> dict:
    """What decides a row's content, recorded beside the output (unset: the server's default)."""
    mode = contract.caption_mode(args.caption_mode)
    return {"top_k": args.top_k or None, "caption_mode": contract.caption_mode_name(mode) if mode else None,
            "format": output_format(Path(args.out), args.format)}


def bulk_main(client: EnrichClient, args) -> int:
    from tqdm import tqdm

    out = Path(args.out)
    try:
        sources = collect(args.inputs)
        output = Output(out, output_format(out, args.format))
    except (OSError, ValueError) as error:
        print(f"enrich-client bulk: {error}", file=sys.stderr)
        return 2
    try:
        output.check_options(run_options(args), args.mixed_options)
    except (OSError, ValueError) as error:
        output.close()
        print(f"enrich-client bulk: {error}", file=sys.stderr)
        return 2
    bar = tqdm(total=len(sources), initial=0, unit="img", desc="enrich", file=sys.stderr, disable=args.quiet,
               dynamic_ncols=True)
    run = None

    def answered(response: enrich_pb2.EnrichResponse) -> None:
        bar.update()
        if response.status.code:
            bar.set_postfix(failed=run.summary.failed, refresh=False)

    run = BulkRun(client, sources, output, args.streams, args.top_k, args.caption_mode, args.sidecars,
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
    return 0 if summary.complete else 1
