"""`enrich-client bulk` as a user runs it: a real process against a live server, interrupted and rerun."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import LoopbackServer


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
    """The test bundle, slowed to ~40 img/s, so a run can be interrupted midway."""

    def __init__(self, bundle: Path, port: int = 0, **settings: object) -> None:
        super().__init__(bundle, max_batch_size=2, max_delay_ms=1, **({"port": port} if port else {}), **settings)
        self.load()
        stage = self.server.slot.pipeline.encoder_stage
        process = stage.process

        def slowly(items):
            time.sleep(0.05)
            return process(items)

        stage.process = slowly


def rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_bulk_writes_one_row_per_image_in_jsonl_and_csv(server: LoopbackServer, photos: Path, tmp_path: Path):
    for out in (tmp_path / "results.jsonl", tmp_path / "results.csv"):
        result = subprocess.run(bulk_command(server.target, str(photos), "--out", str(out), "--caption", "skip"),
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 1, result.stderr  # one image failed
        assert "120 enriched, 1 failed" in result.stderr and "IMAGE_UNDECODABLE 1" in result.stderr
        written = rows(out)
        assert len(written) == 121 and len({r["request_id"] for r in written}) == 121
        broken = next(r for r in written if r["request_id"].endswith("broken.jpg"))
        good = next(r for r in written if r["request_id"].endswith("000.jpg"))
        if out.suffix == ".csv":
            assert broken["status"] == "INVALID_ARGUMENT" and broken["reason"] == "IMAGE_UNDECODABLE"
            assert good["status"] == "OK" and good["article_type"] and float(good["article_type_confidence"]) > 0
        else:
            assert broken["status"]["reason"] == "IMAGE_UNDECODABLE"
            assert good["status"]["code"] == 0 and good["metadata"]["article_type"]["label"]
        again = subprocess.run(bulk_command(server.target, str(photos), "--out", str(out)),
                               capture_output=True, text=True, timeout=300)
        assert "0 enriched, 0 failed, 121 already in the output" in again.stderr
        assert len(rows(out)) == 121


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_an_interrupted_run_continues_and_writes_each_image_once(bundle_dir: Path, photos: Path, tmp_path: Path,
                                                                 sig: signal.Signals):
    server = SlowServer(bundle_dir)
    out = tmp_path / "results.jsonl"
    try:
        run = subprocess.Popen(bulk_command(server.target, str(photos), "--out", str(out), "--caption", "skip"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while (not out.exists() or out.read_text().count("\n") < 20) and time.monotonic() < deadline:
            time.sleep(0.05)
        run.send_signal(sig)
        _, stderr = run.communicate(timeout=60)
        if sig == signal.SIGINT:
            assert run.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
            assert "run the same command again" in stderr
        partial = len(rows(out))  # a valid file, whatever the moment of the interruption
        assert 20 <= partial < 121
        rerun = subprocess.run(bulk_command(server.target, str(photos), "--out", str(out), "--caption", "skip"),
                               capture_output=True, text=True, timeout=300)
        assert f"{partial} already in the output" in rerun.stderr, rerun.stderr
    finally:
        server.close()
    written = rows(out)
    assert sorted(r["request_id"] for r in written) == sorted({r["request_id"] for r in written})
    assert len(written) == 121


def test_bulk_waits_for_a_restarted_server_and_does_not_retry_bad_images(bundle_dir: Path, photos: Path,
                                                                         tmp_path: Path):
    first = SlowServer(bundle_dir)
    port = first.port
    out = tmp_path / "results.csv"
    run = subprocess.Popen(bulk_command(first.target, str(photos), "--out", str(out), "--caption", "skip",
                                        "--streams", "2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while (not out.exists() or out.read_text().count("\n") < 30) and time.monotonic() < deadline:
        time.sleep(0.05)
    first.close()  # drains: accepted images are answered, the streams end UNAVAILABLE
    second = SlowServer(bundle_dir, port=port)
    try:
        _, stderr = run.communicate(timeout=180)
    finally:
        second.close()
    assert run.returncode == 1, stderr  # the broken image, recorded once
    assert "120 enriched, 1 failed" in stderr and "stream retries" in stderr
    written = rows(out)
    assert len(written) == 121 and len({r["request_id"] for r in written}) == 121
    assert sum(r["reason"] == "IMAGE_UNDECODABLE" for r in written) == 1


def test_sidecars_and_a_closed_pipe(server: LoopbackServer, photos: Path, tmp_path: Path):
    shoot = photos / "shoot1"
    result = subprocess.run(bulk_command(server.target, str(shoot), "--out", str(tmp_path / "r.jsonl"),
                                         "--sidecars", "--caption", "template"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    sidecar = json.loads((shoot / "001.jpg.json").read_text())
    assert sidecar["article_type"]["label"] and sidecar["product_display_name"]["method"] == "CAPTION_MODE_TEMPLATE"
    # `enrich-client enrich FOLDER | head -1`: ~250 KB of JSON lines, more than a pipe holds, so the writer
    # meets the closed pipe; the client ends without a traceback
    piped = subprocess.run(f"{sys.executable} -m enrich_client.cli --target {server.target} enrich --quiet "
                           f"{photos} | head -1", shell=True, capture_output=True, text=True, timeout=120)
    assert json.loads(piped.stdout)["request_id"]
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
                                             "--out", str(out), "--caption", "skip"),
                                capture_output=True, text=True, timeout=300)
    finally:
        web.shutdown()
    assert result.returncode == 1 and "4 enriched, 1 failed" in result.stderr, result.stderr
    written = {r["request_id"]: r for r in rows(out)}
    assert written[f"{base}/002.jpg"]["status"] == "OK"
    missing = written[f"{base}/missing.jpg"]
    assert missing["status"] == "NOT_FOUND" and "cannot read" in missing["message"] and "404" in missing["message"]


def test_a_half_written_last_line_is_cut_on_resume(server: LoopbackServer, photos: Path, tmp_path: Path):
    out = tmp_path / "results.jsonl"
    command = bulk_command(server.target, str(photos / "shoot2"), "--out", str(out), "--caption", "skip")
    assert subprocess.run(command, capture_output=True, text=True, timeout=300).returncode == 0
    complete = rows(out)
    first = complete[0]["request_id"]
    out.write_text("".join(line + "\n" for line in out.read_text().split("\n")
                           if line and first not in line))  # one row lost: it must be redone
    with out.open("a", encoding="utf-8") as handle:  # what a kill in the middle of a write leaves
        handle.write('{"request_id": "photos/shoot2/0')
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "1 enriched" in rerun.stderr, rerun.stderr
    assert sorted(r["request_id"] for r in rows(out)) == sorted(r["request_id"] for r in complete)


def test_bulk_loses_nothing_when_the_server_recycles_connections(bundle_dir: Path, photos: Path, tmp_path: Path):
    """--max-connection-age-seconds ends old connections (so clients find new pods); a bulk run rides it out."""
    server = SlowServer(bundle_dir, max_connection_age_seconds=0.5, grace_seconds=0.5)
    out = tmp_path / "results.jsonl"
    try:
        done = subprocess.run(bulk_command(server.target, str(photos), "--out", str(out), "--caption", "skip",
                                           "--streams", "2"), capture_output=True, text=True, timeout=300)
    finally:
        server.close()
    assert done.returncode == 1, done.stderr  # the broken image, recorded once
    assert "120 enriched, 1 failed" in done.stderr and "stream retries" in done.stderr, done.stderr
    written = rows(out)
    assert len(written) == 121 and len({r["request_id"] for r in written}) == 121
