"""`enrich fetch`: a bundle from a folder, an archive over HTTP, an object store (fsspec) or the hub, into place."""

from __future__ import annotations

import functools
import http.server
import io
import shutil
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from enrich_cli.main import main as enrich
from enrich_data.fetch import STAMP
from enrich_model.bundle_config import BundleConfig


def tar_gz(bundle: Path, top: str = "my-bundle") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(bundle, arcname=top)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def web_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A plain HTTP server on loopback serving a folder, as an object store's pre-signed URLs would."""
    root = tmp_path_factory.mktemp("web")

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_a_folder_then_keep_it_on_a_rerun(bundle_dir: Path, tmp_path: Path, capsys):
    dest = tmp_path / "models" / "bundle"
    assert enrich(["fetch", str(bundle_dir), str(dest)]) == 0
    version = BundleConfig.read(bundle_dir).model_version
    assert BundleConfig.read(dest).model_version == version
    assert f"now holds model {version}" in capsys.readouterr().out
    (dest / "marker").write_text("kept")
    assert enrich(["fetch", str(bundle_dir), str(dest)]) == 0  # a restarted init container
    assert "already holds" in capsys.readouterr().out
    assert (dest / "marker").exists()
    assert enrich(["fetch", "--force", str(bundle_dir), str(dest)]) == 0
    assert not (dest / "marker").exists()
    (dest / "heads.safetensors").write_bytes(b"damaged since")  # a rerun does not keep a damaged bundle
    assert enrich(["fetch", str(bundle_dir), str(dest)]) == 0 and "now holds" in capsys.readouterr().out
    BundleConfig.read(dest).verify_weights(dest)
    assert [p.name for p in dest.parent.iterdir()] == ["bundle"]  # no staging folder left behind


def test_fetch_an_archive_over_http_and_load_it(bundle_dir: Path, web_root, tmp_path: Path, capsys):
    from enrich_model.bundle import load_bundle

    root, base = web_root
    (root / "bundle.tar.gz").write_bytes(tar_gz(bundle_dir))
    url = f"{base}/bundle.tar.gz?X-Amz-Signature=s3cret"  # a pre-signed URL: its query must not be printed
    dest = tmp_path / "bundle"
    assert enrich(["fetch", "--quiet", url, str(dest)]) == 0
    captured = capsys.readouterr()
    assert "s3cret" not in captured.out + captured.err
    assert load_bundle(dest).model_version == BundleConfig.read(bundle_dir).model_version
    assert (dest / STAMP).exists()


def test_fetch_from_an_object_store_folder_or_archive(bundle_dir: Path, tmp_path: Path):
    """fsspec's in-memory filesystem stands in for s3:// or gs:// (the same fsspec calls, another package)."""
    import fsspec

    memory = fsspec.filesystem("memory")
    memory.put(str(bundle_dir), "/store/bundles/v1", recursive=True)
    memory.pipe("/store/bundles/v1.tgz", tar_gz(bundle_dir))
    version = BundleConfig.read(bundle_dir).model_version
    for source in ("memory://store/bundles/v1/", "memory://store/bundles/v1.tgz"):
        dest = tmp_path / source.rsplit("/", 2)[-2 if source.endswith("/") else -1]
        assert enrich(["fetch", "--quiet", source, str(dest)]) == 0
        assert BundleConfig.read(dest).model_version == version
    memory.rm("/store", recursive=True)


def test_a_newer_source_replaces_the_bundle_in_place(bundle_dir: Path, web_root, tmp_path: Path):
    root, base = web_root
    (root / "other.zip").write_bytes(zip_of(bundle_dir))
    dest = tmp_path / "bundle"
    assert enrich(["fetch", str(bundle_dir), str(dest)]) == 0
    assert enrich(["fetch", "--quiet", f"{base}/other.zip", str(dest)]) == 0
    assert f"{base}/other.zip" in (dest / STAMP).read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def zip_of(bundle: Path, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in bundle.rglob("*"):
            if path.is_file():
                archive.write(path, str(path.relative_to(bundle)))
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def evil_tar(bundle: Path) -> bytes:
    buffer = io.BytesIO(tar_gz(bundle))
    out = io.BytesIO()
    with tarfile.open(fileobj=buffer) as source, tarfile.open(fileobj=out, mode="w:gz") as archive:
        for member in source.getmembers():
            archive.addfile(member, source.extractfile(member) if member.isfile() else None)
        escape = tarfile.TarInfo("../escaped.txt")
        escape.size = 4
        archive.addfile(escape, io.BytesIO(b"evil"))
    return out.getvalue()


def test_bad_sources_end_in_one_line_and_exit_2(bundle_dir: Path, web_root, tmp_path: Path, capsys):
    root, base = web_root
    (root / "evil.zip").write_bytes(zip_of(bundle_dir, {"../../escaped.txt": b"evil"}))
    (root / "evil.tgz").write_bytes(evil_tar(bundle_dir))
    (root / "empty.tgz").write_bytes(tar_gz(bundle_dir / "captioner", top="captioner"))
    (root / "garbage.tgz").write_bytes(b"not an archive")
    damaged = tmp_path / "damaged" / "my-bundle"
    shutil.copytree(bundle_dir, damaged, ignore=shutil.ignore_patterns("openvino"))
    (damaged / "heads.safetensors").write_bytes((damaged / "heads.safetensors").read_bytes()[:-8] + bytes(8))
    (root / "damaged.tgz").write_bytes(tar_gz(damaged))
    cases = {
        str(tmp_path / "no-such-bundle"): "no such file or folder",
        "someone/some-bundle": "hub cannot be reached",  # HF_HUB_OFFLINE=1 in tests
        f"{base}/missing.tgz": "answered 404",
        f"{base}/bundle": "must name an archive",
        f"{base}/evil.zip": "outside its folder",
        f"{base}/evil.tgz": "outside its folder",
        f"{base}/empty.tgz": "holds no Enrich bundle",
        f"{base}/garbage.tgz": "not a readable archive",
        f"{base}/damaged.tgz": "the weights do not match the bundle's recorded hash",
        "s3://bucket/bundle.tgz": "s3fs",
        "http://127.0.0.1:9/bundle.tgz": "cannot download",
        "http://exa mple.com/bundle.tgz?sig=s3cret": "cannot download",  # urllib's message would quote it all
    }
    for source, reason in cases.items():
        dest = tmp_path / "out" / "bundle"
        assert enrich(["fetch", "--quiet", source, str(dest)]) == 2, source
        error = capsys.readouterr().err.strip()
        assert error.startswith("enrich fetch: ") and reason in error and "\n" not in error, (source, error)
        assert "s3cret" not in error
        assert not dest.exists()
        assert not list((tmp_path / "out").glob(".bundle.partial-*"))  # staging cleaned up
    assert not (tmp_path / "escaped.txt").exists() and not (root / "escaped.txt").exists()
