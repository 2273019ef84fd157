"""`enrich-client bulk` as a user runs it: a real process against a live server, interrupted and rerun."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .conftest import LoopbackServer, wait_for


def bulk_command(target: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "enrich_client.cli", "--target", target, "bulk", "--quiet", *args]


@pytest.fixture()
def photos(catalogue_dir: Path, tmp_path: Path) -> Path:
    """120 distinct files (the catalogue's images under several names) and one that is not an image."""
    folder = tmp_path / "photos"
    images = sorted((catalogue_dir / "images").glob("*.jpg"))
    for n in range(120):
        target = folder / f"shoot{n % 3}" / f"{n:03d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(images[n % len(images)].read_bytes())
    (folder / "shoot0" / "broken.jpg").write_bytes(b"GIF89a but not really")
    (folder / "notes.txt").write_text("not an image suffix: ignored")
    return folder


class SlowServer(LoopbackServer):
    """The test bundle, slowed to ~40 img/s; with `answer_first`, it answers that many images and then holds
    every batch until `release()`: the test, not the clock, decides when a run is interrupted."""

    def __init__(self, bundle: Path, port: int = 0, answer_first: int | None = None, **settings: object) -> None:
        super().__init__(bundle, max_batch_size=2, max_delay_ms=1, **({"port": port} if port else {}), **settings)
        self.load()
        stage = self.server.service.model.batched.encoder_stage
        process = stage.process
        self.answered, self.held, self.gate = 0, threading.Event(), threading.Event()

        def slowly(items):
            if answer_first is not None and self.answered >= answer_first:
                self.held.set()
                self.gate.wait(120)
            time.sleep(0.05)
            self.answered += len(items)
            return process(items)

        stage.process = slowly

    def release(self) -> None:
        self.gate.set()


def summary(stderr: str) -> dict[str, int]:
    """The counts of bulk's summary line, read whole (so "1 enriched" never matches "11 enriched")."""
    found = re.search(r"^(\d+) enriched, (\d+) failed, (\d+) already in the output", stderr, re.MULTILINE)
    assert found, stderr
    return dict(zip(("enriched", "failed", "already"), map(int, found.groups()), strict=True))


def wait_for_rows(out: Path, count: int, timeout: float = 60) -> None:
    wait_for(lambda: out.exists() and out.read_text().count("\n") >= count, timeout,
             f"fewer than {count} rows in {out}")


def rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_bulk_writes_one_row_per_image_in_jsonl_and_csv(server: LoopbackServer, photos: Path, tmp_path: Path):
    for out in (tmp_path / "results.jsonl", tmp_path / "results.csv"):
        result = subprocess.run(bulk_command(server.target, str(photos), "--out", str(out), "--caption-mode", "skip"),
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 1, result.stderr  # one image failed
        assert summary(result.stderr) == {"enriched": 120, "failed": 1, "already": 0}
        assert "IMAGE_UNDECODABLE 1" in result.stderr
        written = rows(out)
        assert len(written) == 121 and len({r["requestId"] for r in written}) == 121
        broken = next(r for r in written if r["requestId"].endswith("broken.jpg"))
        good = next(r for r in written if r["requestId"].endswith("000.jpg"))
        if out.suffix == ".csv":
            assert broken["status"] == "INVALID_ARGUMENT" and broken["reason"] == "IMAGE_UNDECODABLE"
            assert good["status"] == "OK" and good["articleType"] and float(good["articleTypeConfidence"]) > 0
        else:
            assert broken["status"]["reason"] == "IMAGE_UNDECODABLE"
            assert good["status"]["code"] == 0 and good["metadata"]["articleType"]["label"]
        again = subprocess.run(bulk_command(server.target, str(photos), "--out", str(out), "--caption-mode", "skip"),
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 1, again.stderr  # the failed row is still there: not a complete catalogue
        assert summary(again.stderr) == {"enriched": 0, "failed": 0, "already": 121}
        assert "(1 of them failed)" in again.stderr
        assert len(rows(out)) == 121


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_an_interrupted_run_continues_and_writes_each_image_once(bundle_dir: Path, photos: Path, tmp_path: Path,
                                                                 sig: signal.Signals):
    server = SlowServer(bundle_dir, answer_first=20)  # then it holds: the run cannot finish before the signal
    out = tmp_path / "results.jsonl"
    try:
        # A suite started in the background by a non-interactive shell inherits SIGINT ignored, and Python then
        # installs no KeyboardInterrupt handler: the child gets the default back, as a terminal's Ctrl-C finds it.
        run = subprocess.Popen(bulk_command(server.target, str(photos), "--out", str(out), "--caption-mode", "skip"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        assert server.held.wait(60), "the run never reached the held server"
        wait_for_rows(out, 20)
        run.send_signal(sig)
        _, stderr = run.communicate(timeout=60)
        server.release()
        if sig == signal.SIGINT:
            assert run.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
            assert "run the same command again" in stderr
        partial = len(rows(out))  # a valid file, whatever the moment of the interruption
        assert 20 <= partial < 121
        rerun = subprocess.run(bulk_command(server.target, str(photos), "--out", str(out), "--caption-mode", "skip"),
                               capture_output=True, text=True, timeout=300)
        assert summary(rerun.stderr) == {"enriched": 121 - partial - 1, "failed": 1, "already": partial} or \
            summary(rerun.stderr) == {"enriched": 121 - partial, "failed": 0, "already": partial}, rerun.stderr
    finally:
        server.release()
        server.close()
    written = rows(out)
    assert sorted(r["requestId"] for r in written) == sorted({r["requestId"] for r in written})
    assert len(written) == 121


def test_bulk_waits_for_a_restarted_server_and_does_not_retry_bad_images(bundle_dir: Path, photos: Path,
                                                                         tmp_path: Path):
    first = SlowServer(bundle_dir, answer_first=30)
    port = first.port
    out = tmp_path / "results.csv"
    run = subprocess.Popen(bulk_command(first.target, str(photos), "--out", str(out), "--caption-mode", "skip",
                                        "--streams", "2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert first.held.wait(60), "the run never reached the held server"
    first.release()
    first.close()  # drains: accepted images are answered, the streams end UNAVAILABLE
    second = SlowServer(bundle_dir, port=port)
    try:
        _, stderr = run.communicate(timeout=180)
    finally:
        second.close()
    assert run.returncode == 1, stderr  # the broken image, recorded once
    assert summary(stderr) == {"enriched": 120, "failed": 1, "already": 0} and "stream retries" in stderr
    written = rows(out)
    assert len(written) == 121 and len({r["requestId"] for r in written}) == 121
    assert sum(r["reason"] == "IMAGE_UNDECODABLE" for r in written) == 1


def test_sidecars_and_a_closed_pipe(server: LoopbackServer, photos: Path, tmp_path: Path):
    shoot = photos / "shoot1"
    result = subprocess.run(bulk_command(server.target, str(shoot), "--out", str(tmp_path / "r.jsonl"),
                                         "--sidecars", "--caption-mode", "template"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    sidecar = json.loads((shoot / "001.jpg.json").read_text())
    assert sidecar["articleType"]["label"] and sidecar["productDisplayName"]["method"] == "CAPTION_MODE_TEMPLATE"
    # `enrich-client enrich FOLDER | head -1`: ~250 KB of JSON lines, more than a pipe holds, so the writer
    # meets the closed pipe; the client ends without a traceback
    piped = subprocess.run(f"{sys.executable} -m enrich_client.cli --target {server.target} enrich --quiet "
                           f"{photos} | head -1", shell=True, capture_output=True, text=True, timeout=120)
    assert json.loads(piped.stdout)["requestId"]
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr


def test_manifests_of_paths_and_urls(server: LoopbackServer, photos: Path, tmp_path: Path):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(photos / "shoot2"))
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{web.server_address[1]}"
        (tmp_path / "images.csv").write_text("path,note\nphotos/shoot0/000.jpg,a\nphotos/shoot1/001.jpg,b\n"
                                             f"{base}/002.jpg,c\n{base}/missing.jpg,d\n")
        (tmp_path / "more.jsonl").write_text(json.dumps({"path": str(photos / "shoot0" / "003.jpg")}) + "\n")
        out = tmp_path / "manifest.csv"
        result = subprocess.run(bulk_command(server.target, str(tmp_path / "images.csv"), str(tmp_path / "more.jsonl"),
                                             "--out", str(out), "--caption-mode", "skip"),
                                capture_output=True, text=True, timeout=300)
    finally:
        web.shutdown()
    assert result.returncode == 1 and summary(result.stderr) == {"enriched": 4, "failed": 1, "already": 0}
    written = {r["requestId"]: r for r in rows(out)}
    assert written[f"{base}/002.jpg"]["status"] == "OK"
    missing = written[f"{base}/missing.jpg"]
    assert missing["status"] == "NOT_FOUND" and "cannot read" in missing["message"] and "404" in missing["message"]


def test_a_half_written_last_line_is_cut_on_resume(server: LoopbackServer, photos: Path, tmp_path: Path):
    out = tmp_path / "results.jsonl"
    command = bulk_command(server.target, str(photos / "shoot2"), "--out", str(out), "--caption-mode", "skip")
    assert subprocess.run(command, capture_output=True, text=True, timeout=300).returncode == 0
    complete = rows(out)
    first = complete[0]["requestId"]
    out.write_text("".join(line + "\n" for line in out.read_text().split("\n")
                           if line and first not in line))  # one row lost: it must be redone
    with out.open("a", encoding="utf-8") as handle:  # what a kill in the middle of a write leaves
        handle.write('{"requestId": "photos/shoot2/0')
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and summary(rerun.stderr)["enriched"] == 1, rerun.stderr
    assert sorted(r["requestId"] for r in rows(out)) == sorted(r["requestId"] for r in complete)


def test_bulk_loses_nothing_when_the_server_recycles_connections(bundle_dir: Path, photos: Path, tmp_path: Path):
    """--max-connection-age-seconds ends old connections (so clients find new pods); a bulk run rides it out."""
    server = SlowServer(bundle_dir, max_connection_age_seconds=0.5, grace_seconds=0.5)
    out = tmp_path / "results.jsonl"
    try:
        done = subprocess.run(bulk_command(server.target, str(photos), "--out", str(out), "--caption-mode", "skip",
                                           "--streams", "2"), capture_output=True, text=True, timeout=300)
    finally:
        server.close()
    assert done.returncode == 1, done.stderr  # the broken image, recorded once
    assert summary(done.stderr) == {"enriched": 120, "failed": 1, "already": 0} and "stream retries" in done.stderr
    written = rows(out)
    assert len(written) == 121 and len({r["requestId"] for r in written}) == 121


def test_inputs_that_match_nothing_are_an_error_not_an_empty_success(server: LoopbackServer, photos: Path,
                                                                     tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for given in (str(tmp_path / "nope" / "*.jpg"), str(empty), str(photos / "*.png")):
        done = subprocess.run(bulk_command(server.target, str(photos / "shoot1"), given, "--out",
                                           str(tmp_path / "r.jsonl")), capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and given in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert not (tmp_path / "r.jsonl").exists()


def test_a_rerun_with_other_options_is_refused_unless_told(server: LoopbackServer, photos: Path, tmp_path: Path):
    out = tmp_path / "results.jsonl"
    first = subprocess.run(bulk_command(server.target, str(photos / "shoot1"), "--out", str(out),
                                        "--caption-mode", "template", "--top-k", "2"),
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    before = out.read_text()
    other = subprocess.run(bulk_command(server.target, str(photos / "shoot1"), str(photos / "shoot2"), "--out",
                                        str(out), "--caption-mode", "skip", "--top-k", "2"),
                           capture_output=True, text=True, timeout=300)
    assert other.returncode == 2 and "caption_mode template -> skip" in other.stderr and "--mixed-options" in \
        other.stderr, other.stderr
    assert out.read_text() == before  # nothing added
    def again(*inputs: Path, options: tuple[str, ...]) -> subprocess.CompletedProcess:
        return subprocess.run(bulk_command(server.target, *map(str, inputs), "--out", str(out), "--top-k", "2",
                                           *options), capture_output=True, text=True, timeout=300)

    resumed = again(photos / "shoot1", photos / "shoot2", options=("--caption-mode", "TEMPLATE"))
    assert resumed.returncode == 0, resumed.stderr  # the same options, spelt otherwise
    mixed = again(photos / "shoot1", photos / "shoot2", photos / "shoot0" / "000.jpg",
                  options=("--caption-mode", "skip", "--mixed-options"))
    assert mixed.returncode == 0 and summary(mixed.stderr)["enriched"] == 1, mixed.stderr


def test_an_attribute_named_like_a_status_or_image_column_gets_a_value_column_of_its_own():
    from enrich.v1 import enrich_pb2
    from enrich_client.outputs import CsvLayout, csv_row

    info = enrich_pb2.ModelInfo(attributes=[enrich_pb2.AttributeInfo(name="format", kind="single"),
                                            enrich_pb2.AttributeInfo(name="tags", kind="multi")])
    layout = CsvLayout.of(info)
    assert len(layout.columns) == len(set(layout.columns)) and "formatValue" in layout.columns
    response = enrich_pb2.EnrichResponse(request_id="b1")
    response.metadata.image.format = "jpeg"
    response.metadata.attributes["format"].label = "Hardcover"
    response.metadata.attributes["format"].confidence = 0.9
    response.metadata.attributes["tags"].values.add(label="gift", confidence=0.8)
    row = csv_row(response, layout)
    assert (row["format"], row["formatValue"], row["formatValueConfidence"]) == ("jpeg", "Hardcover", 0.9)
    assert row["tags"] == "gift" and set(row) <= set(layout.columns)
