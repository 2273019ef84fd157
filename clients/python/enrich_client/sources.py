"""Where a bulk run's images come from: folders, globs, files, and CSV/JSONL manifests of paths or URLs."""

from __future__ import annotations

import glob
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from enrich.v1 import enrich_pb2
from enrich_contract.tables import csv_rows

from .client import IMAGE_SUFFIXES, image_files

# A catalogue's product name, as the JSON names it: where unquoted commas spill over.
NAME_COLUMN = enrich_pb2.Metadata.DESCRIPTOR.fields_by_name["product_display_name"].json_name


@dataclass(frozen=True)
class Source:
    key: str  # the request id and the output row's key: the path or URL as given (audit: the catalogue's id)
    location: str  # a local path or an http(s) URL
    catalogue: tuple[tuple[str, str], ...] = ()  # audit: the catalogue's values for this image, by column

    @classmethod
    def of(cls, location: str, key: str | None = None, catalogue: tuple[tuple[str, str], ...] = ()) -> Source:
        # A file name that is not UTF-8 (undecodable bytes kept as surrogates) gets a key that is.
        key = key or location.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return cls(key, location, catalogue)

    @property
    def is_url(self) -> bool:
        return self.location.startswith(("http://", "https://"))

    def read(self) -> bytes:
        if self.is_url:
            with urllib.request.urlopen(self.location, timeout=60) as reply:  # only http(s), checked above
                return reply.read()
        if is_remote(self.location):
            import fsspec  # the ray extra; s3fs, gcsfs, adlfs for their stores

            with fsspec.open(self.location, "rb") as handle:
                return handle.read()
        return Path(self.location).read_bytes()


def is_remote(location: str) -> bool:
    """An fsspec URL (s3://, gs://, abfs://, file://, ...), not http(s)."""
    return "://" in location and not location.startswith(("http://", "https://"))


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
    if is_remote(given):
        yield from remote_images(given)
    elif path.is_dir():
        yield from map(Source.of, map(str, image_files(path)))
    elif path.suffix.lower() in (".csv", ".jsonl") and path.is_file():
        yield from read_manifest(path)
    elif path.is_file():
        yield Source.of(given)
    elif any(char in given for char in "*?["):
        yield from map(Source.of, sorted(p for p in glob.glob(given, recursive=True) if Path(p).is_file()))
    else:
        raise FileNotFoundError(f"{given}: no such file, folder or matching glob")


def remote_images(given: str) -> Iterator[Source]:
    """Images in an object store (fsspec): a folder (recursively, by extension), a glob, or one file."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(given)
    if any(char in root for char in "*?["):
        found = fs.glob(root)
    else:
        found = fs.find(root) if fs.isdir(root) else [root] if fs.exists(root) else []
    found = [p for p in sorted(found) if Path(p).suffix.lower() in IMAGE_SUFFIXES or p == root]
    if not found and not fs.exists(root):
        raise FileNotFoundError(f"{given}: no such object, folder or matching glob")
    yield from (Source.of(fs.unstrip_protocol(p)) for p in found)


def read_manifest(path: Path) -> Iterator[Source]:
    """Rows with a `path` or `url` column (CSV) or key (JSON lines); relative paths are relative to the manifest."""
    for number, row in manifest_rows(path):
        yield Source.of(manifest_location(path, number, row))


def manifest_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) of a CSV (see csv_rows) or JSON-lines manifest."""
    if path.suffix.lower() == ".csv":
        header, rows = csv_rows(path, spill_column=NAME_COLUMN)
        for number, fields in rows:
            yield number, dict(zip(header, fields + [""] * (len(header) - len(fields)), strict=False))
        return
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            yield number, json.loads(line)


def manifest_location(path: Path, number: int, row: dict) -> str:
    location = str(row.get("url") or row.get("path") or "").strip()
    if not location:
        raise ValueError(f"{path}:{number}: no `path` or `url`")
    if "://" not in location and not Path(location).is_absolute():
        location = str(path.parent / location)
    return location


