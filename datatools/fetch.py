"""`enrich fetch SOURCE DEST`: put a model bundle into a folder, from the hub, an object store, a URL or a path.

What a Kubernetes init container runs before the server starts, and a Docker build with a build argument.

    hf://OWNER/NAME[@REVISION] or OWNER/NAME   a Hugging Face hub repository (HF_TOKEN for a private one)
    https://HOST/.../bundle.tar.gz              an archive (.tar.gz, .tgz, .tar, .zip), e.g. a pre-signed URL
    s3://BUCKET/PREFIX/ or s3://.../bundle.tgz  a folder or an archive in an object store, through fsspec and
                                                its filesystem package (s3fs, gcsfs, adlfs, ...)
    /path/to/bundle or /path/to/bundle.tgz      a local folder or archive

The bundle is assembled in a staging folder beside DEST, checked (its enrich.json must read and its weights
match the hash it recorded), and only then
renamed into place, so a fetch cut short never looks like a bundle. DEST that already holds the bundle of the
same SOURCE is kept: a restarted init container costs nothing. Torch-free.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from enrich_model.bundle_config import CONFIG_FILE, BundleConfig, BundleError, open_bundle

STAMP = ".enrich-fetch.json"  # in DEST: where the bundle came from
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
HUB_REPO = re.compile(r"^(?:hf://)?([\w.-]+/[\w.-]+)(?:@([\w./-]+))?$")


class FetchError(RuntimeError):
    """The bundle could not be fetched; the message says why and what to do."""


def fetch_bundle(source: str, dest: Path, *, force: bool = False,
                 progress: bool = True) -> tuple[BundleConfig, bool]:
    """Fetch SOURCE into DEST (a folder that DEST's parent holds); returns the bundle's config and whether it
    was fetched now (False: DEST already held SOURCE's bundle)."""
    dest = Path(dest)
    if not force and (kept := _already_fetched(source, dest)) is not None:
        return kept, False
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        _download(source, staging / "download", progress)
        shown = without_query(source)
        root = _bundle_root(staging / "download", shown)
        config = open_bundle(root)  # its weights as written: a damaged download never takes DEST's place
        (root / STAMP).write_text(json.dumps({"source": shown, "model_version": config.model_version}) + "\n")
        _replace(root, dest, staging)
        return config, True
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def without_query(source: str) -> str:
    """A pre-signed URL's query is a credential: never print or store it. The object is the same without it."""
    return source.split("?", 1)[0]


def _already_fetched(source: str, dest: Path) -> BundleConfig | None:
    try:
        stamp = json.loads((dest / STAMP).read_text())
        config = open_bundle(dest)  # damaged since it was fetched: fetched again
    except (OSError, ValueError, BundleError):
        return None
    same = stamp.get("source") == without_query(source) and stamp.get("model_version") == config.model_version
    return config if same else None


def _download(source: str, into: Path, progress: bool) -> None:
    local = Path(source)
    if local.exists():
        if local.is_dir():
            shutil.copytree(local, into)
        else:
            _unpack(local, into, source)
        return
    scheme = source.split("://", 1)[0] if "://" in source else ""
    if scheme in ("http", "https"):
        _download_url(source, into, progress)
    elif scheme and scheme != "hf":
        _download_fsspec(source, into)
    elif match := HUB_REPO.match(source):
        _download_hub(match.group(1), match.group(2), into)
    else:
        raise FetchError(f"{source}: no such file or folder, and not a hub id (OWNER/NAME) or a URL")


def _download_url(url: str, into: Path, progress: bool) -> None:
    from tqdm import tqdm

    into.mkdir()
    shown = without_query(url)
    archive = into.parent / ("archive" + _archive_suffix(shown, shown))
    try:
        with urllib.request.urlopen(url, timeout=60) as response, archive.open("wb") as out, tqdm(
                total=int(response.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                desc=f"fetching {Path(shown).name}", disable=not progress, mininterval=2, file=sys.stderr) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
    except urllib.error.HTTPError as error:
        raise FetchError(f"{shown}: the server answered {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or error.strerror or error
        raise FetchError(f"{shown}: cannot download ({reason})") from error
    except http.client.IncompleteRead as error:
        raise FetchError(f"{shown}: the download broke off after {len(error.partial)} bytes") from error
    except (http.client.HTTPException, ValueError) as error:  # their messages may quote the whole URL
        raise FetchError(f"{shown}: cannot download ({type(error).__name__})") from error
    _unpack(archive, into, shown)


def _download_fsspec(url: str, into: Path) -> None:
    import fsspec  # huggingface_hub depends on it

    try:
        filesystem, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as error:
        raise FetchError(f"{url}: this kind of URL needs its fsspec filesystem package (s3fs for s3://, gcsfs "
                         f"for gs://, adlfs for az://), or give a pre-signed https:// URL ({error})") from error
    try:
        if path.endswith(ARCHIVE_SUFFIXES):
            archive = into.parent / ("archive" + _archive_suffix(path, url))
            filesystem.get(path, str(archive))
            _unpack(archive, into, url)
        else:
            filesystem.get(path.rstrip("/") + "/", str(into), recursive=True)
    except FileNotFoundError as error:
        raise FetchError(f"{url}: not found") from error
    except OSError as error:
        raise FetchError(f"{url}: cannot download ({error})") from error


def _download_hub(repo_id: str, revision: str | None, into: Path) -> None:
    from .hub import hub_reachable

    if not hub_reachable():
        raise FetchError(f"{repo_id}: the Hugging Face hub cannot be reached from here (HF_ENDPOINT, HF_HUB_OFFLINE); "
                         "fetch the bundle from a URL, an object store or a path instead")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        snapshot_download(repo_id, revision=revision, local_dir=into)
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise FetchError(f"{repo_id}: no such repository or revision on the hub (or it is private: set HF_TOKEN)") \
            from error
    except HfHubHTTPError as error:
        raise FetchError(f"{repo_id}: the hub refused the download ({error})") from error
    shutil.rmtree(into / ".cache", ignore_errors=True)  # the hub client's own bookkeeping


def _archive_suffix(path: str, source: str) -> str:
    for suffix in ARCHIVE_SUFFIXES:
        if path.endswith(suffix):
            return suffix
    raise FetchError(f"{source}: a URL must name an archive ({', '.join(ARCHIVE_SUFFIXES)}) of the bundle folder")


def _unpack(archive: Path, into: Path, source: str) -> None:
    """Unpack refusing members that would land outside `into` (absolute paths, `..`, links out)."""
    if not hasattr(tarfile, "data_filter"):  # Python before 3.10.12 / 3.11.4
        raise FetchError("unpacking archives safely needs Python 3.10.12, 3.11.4 or later")
    into.mkdir(exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as unzipped:
                for name in unzipped.namelist():
                    if name.startswith("/") or ".." in Path(name).parts:
                        raise FetchError(f"{source}: the archive holds a path outside its folder ({name})")
                unzipped.extractall(into)
        else:
            with tarfile.open(archive) as untarred:
                untarred.extractall(into, filter="data")
    except tarfile.FilterError as error:
        raise FetchError(f"{source}: the archive holds a path outside its folder ({error})") from error
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as error:
        raise FetchError(f"{source}: not a readable archive (tar, tar.gz or zip expected)") from error


def _bundle_root(folder: Path, source: str) -> Path:
    """The folder holding enrich.json: the archive's top, or its one top-level folder."""
    candidates = sorted((p.parent for p in folder.rglob(CONFIG_FILE)), key=lambda p: len(p.parts))
    if not candidates:
        raise FetchError(f"{source} holds no Enrich bundle ({CONFIG_FILE} not found)")
    return candidates[0]


def _replace(new: Path, dest: Path, staging: Path) -> None:
    """Rename the checked bundle into place; an older DEST is moved aside first and removed after."""
    if dest.exists() and not dest.is_dir():
        raise FetchError(f"{dest} exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()):
        dest.rename(staging / "previous")
    elif dest.is_dir():
        dest.rmdir()
    new.rename(dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="enrich fetch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="hub id, URL, object-store URL, folder or archive")
    parser.add_argument("dest", type=Path, help="the bundle folder to write (its parent must be writable)")
    parser.add_argument("--force", action="store_true", help="fetch again even when DEST holds SOURCE's bundle")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        config, fetched = fetch_bundle(args.source, args.dest, force=args.force, progress=not args.quiet)
    except (FetchError, BundleError) as error:
        print(f"enrich fetch: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"enrich fetch: cannot write {args.dest} ({error.strerror or error})", file=sys.stderr)
        return 2
    verb = "now holds" if fetched else "already holds"
    print(f"{args.dest} {verb} model {config.model_version} from {without_query(args.source)}")
    return 0
