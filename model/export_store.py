"""The OpenVINO export as a verified artifact: what it holds, where a server finds it, how it is written.

    FOLDER/                BUNDLE/openvino (written by `enrich export`), or a folder of the export cache
      encoder.xml/.bin     the graphs of `graphs.py`, converted by `export.py`
      heads.xml/.bin
      caption_cross.xml/.bin
      caption_step.xml/.bin
      export.json          ExportManifest: the format, the source it was made from (the bundle's weights hash and
                           the hash of what else in enrich.json the graphs are built from), a SHA-256 per file

An export serves a bundle when its format is this code's and its source is the bundle's; the releases that made
it (Enrich, OpenVINO) are recorded and never decide, since OpenVINO reads IR written by earlier releases. A
server checks every file's hash before it compiles any: a changed file is refused in one line.

A server never writes into its bundle. The export it makes at start (where torch is installed) goes to the
export cache (`--export-cache`, ENRICH_EXPORT_CACHE, by default ~/.cache/enrich/exports), in a folder named by
its source, written whole beside it and renamed into place: servers sharing a cache never read half an export,
and a folder in use is never replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .bundle_config import BundleConfig, hash_file
from .options import BackendError

log = logging.getLogger("enrich.backends")

EXPORT_DIR = "openvino"
MANIFEST_FILE = "export.json"
# Raised whenever the graphs compute something else or take other inputs: an export of another format is not used.
EXPORT_FORMAT = 4
GRAPHS = ("encoder", "heads", "caption_cross", "caption_step")
CACHE_ENV = "ENRICH_EXPORT_CACHE"


@dataclass
class ExportManifest:
    """export.json: what was exported, from what, and the facts the runtime needs that are not in the graphs."""

    format: int  # EXPORT_FORMAT of the code that wrote it
    model_version: str
    weights_sha256: str  # the bundle's (BundleConfig.weights_sha256)
    source_sha256: str  # `graph_source` of the bundle's enrich.json
    files: dict[str, str]  # file name -> SHA-256 of its bytes
    input_size: list[int]
    colour: bool  # whether the heads read colour features (computed in NumPy: colour.py)
    attributes: list[str]  # the heads' outputs, in order
    temperatures: list[float]  # per attribute: calibrated probabilities are softmax(logits / temperature)
    candidates: int  # next-token candidates per row of the caption graphs
    made_by: dict[str, str]  # the releases that wrote it (enrich, openvino, torch, transformers): recorded only

    @classmethod
    def read(cls, folder: Path) -> ExportManifest | int | None:
        """The manifest in `folder`; the format number alone when the export is of another format (its manifest
        then holds other fields); None when there is none. Raises ExportDamaged when it cannot be read."""
        path = folder / MANIFEST_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            if data.get("format") != EXPORT_FORMAT:
                return int(data.get("format", 0))
            return cls(**{f.name: data[f.name] for f in fields(cls)})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ExportDamaged(f"{path} cannot be read ({error}): {remedy(folder)}") from None

    def write(self, folder: Path) -> None:
        (folder / MANIFEST_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    def stale_for(self, config: BundleConfig) -> str | None:
        """Why this export does not serve the bundle `config` describes; None when it does."""
        if self.weights_sha256 != config.weights_sha256:
            return f"the weights of {self.model_version}, not of {config.model_version}"
        if self.source_sha256 != graph_source(config):
            return "another preprocessing, heads configuration or caption vocabulary than the bundle's enrich.json"
        return None


class ExportMissing(BackendError):
    """No export serves the bundle; the message says what was found and how to make one."""


class ExportDamaged(BackendError):
    """An export's file is not what its manifest recorded; the message names it."""


def graph_source(config: BundleConfig) -> str:
    """SHA-256 of what the graphs are built from in enrich.json, beside the weights: the input size, the heads'
    colour features and the caption vocabulary."""
    heads = config.heads
    shaping = {"input_size": config.preprocessing.get("input_size"), "colour_bins": heads.colour_bins,
               "colour_levels": heads.colour_levels, "colour_attributes": heads.colour_attributes,
               "caption_vocabulary": config.caption.vocabulary}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    return hash_file(path).hexdigest()


def file_hashes(folder: Path, names: list[str]) -> dict[str, str]:
    """SHA-256 per file, side by side (hashlib releases the GIL)."""
    with ThreadPoolExecutor(min(4, len(names))) as pool:
        return dict(zip(names, pool.map(lambda name: file_sha256(folder / name), names), strict=True))


def graph_files() -> list[str]:
    return [f"{graph}.{ext}" for graph in GRAPHS for ext in ("xml", "bin")]


def remedy(folder: Path) -> str:
    return f"delete {folder} and run `enrich export` again (or let a server with torch make it)"


_verified: dict[tuple, bool] = {}  # what this process hashed already: the files' identity, as `stat` gives it


def verify(folder: Path, manifest: ExportManifest) -> None:
    """Every graph file present and as the manifest recorded it. Raises ExportDamaged naming the first that is not.
    Files this process verified already, unchanged since (same inode, size and modification time), are not read
    again: a server checks its export before it opens a port, then loads it."""
    for name in graph_files():
        if name not in manifest.files:
            raise ExportDamaged(f"the export in {folder} records no hash for {name}: {remedy(folder)}")
        if not (folder / name).is_file():
            raise ExportDamaged(f"the export in {folder} lacks {name}: {remedy(folder)}")
    identity = tuple((str((folder / name).resolve()), manifest.files[name], *file_identity(folder / name))
                     for name in graph_files())
    if identity in _verified:
        return
    for name, digest in file_hashes(folder, graph_files()).items():
        if digest != manifest.files[name]:
            raise ExportDamaged(f"{folder / name} changed since it was exported (its SHA-256 is not the one "
                                f"export.json recorded): {remedy(folder)}")
    _verified[identity] = True


def file_identity(path: Path) -> tuple[int, int, int, int]:
    status = path.stat()
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def default_cache() -> Path:
    """ENRICH_EXPORT_CACHE (as for `--export-cache`), else the user's cache: $XDG_CACHE_HOME or ~/.cache."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "enrich" / "exports"


def cache_folder(cache: Path | None, config: BundleConfig) -> Path:
    """Where a server's own export of this bundle lives in the cache: named by everything that makes it."""
    root = Path(cache) if cache else default_cache()
    return root / f"{config.model_version}-{graph_source(config)[:12]}-format{EXPORT_FORMAT}"


def find_export(bundle: Path, config: BundleConfig, cache: Path | None,
                checked: bool = True) -> tuple[Path, ExportManifest]:
    """The export that serves the bundle: the bundle's own (BUNDLE/openvino), else the cache's; with `checked`,
    every file's hash too. Raises ExportDamaged for a changed file, ExportMissing (saying what was found) when
    none serves."""
    found = []
    for folder in (bundle / EXPORT_DIR, cache_folder(cache, config)):
        manifest = ExportManifest.read(folder)
        if manifest is None:
            continue
        if isinstance(manifest, int):
            found.append(f"{folder} holds export format {manifest} (this server reads format {EXPORT_FORMAT})")
            continue
        stale = manifest.stale_for(config)
        if stale is None:
            if checked:
                verify(folder, manifest)
            return folder, manifest
        found.append(f"{folder} was made for {stale}")
    seen = "; ".join(found) or f"{bundle / EXPORT_DIR} does not exist"
    raise ExportMissing(f"{bundle} has no OpenVINO export this server can use ({seen}): run `enrich export {bundle}` "
                        "where torch is installed (the serve or train extra)")


def write_whole(folder: Path, write: Callable[[Path], None], replace: bool) -> None:
    """Runs `write(staging)` on a new folder beside `folder` and renames it into place. An existing `folder` is
    replaced when `replace` (renamed away first, then removed: a reader keeps its open files), else kept as it is
    (another process made it)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide it from a server running as another user
    try:
        write(staging)
        if replace and folder.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{folder.name}-retired-", dir=folder.parent))
            os.replace(folder, retired / folder.name)
            shutil.rmtree(retired, ignore_errors=True)
        try:
            os.replace(staging, folder)
        except OSError:  # another process put its own there meanwhile (a folder is not replaced by rename)
            if not folder.is_dir():
                raise
            log.info("%s was written by another process meanwhile; using that one", folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
