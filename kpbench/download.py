"""Downloading and extracting the COCO 2017 archives: resumable HTTP, size + md5 checks, atomic extraction.

Layout produced under ROOT (what `kpbench.data` reads):

    ROOT/annotations/person_keypoints_<split>.json
    ROOT/<split>/<12-digit id>.jpg

Only the standard library is used for the network (urllib), so that proxies from the environment work and no
dependency is added. No torch import here.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, NamedTuple

from kpbench.data import annotation_path
from kpbench.errors import KpbenchError
from kpbench.io import file_digest

OFFICIAL_BASE_URL = "http://images.cocodataset.org"
BASE_URL_ENV = "KPBENCH_COCO_BASE_URL"
SPLITS = ("val2017", "train2017")
ANNOTATIONS_ARCHIVE = "annotations_trainval2017.zip"

CHUNK_BYTES = 1 << 20
DEFAULT_TIMEOUT_S = 60.0


class FileSpec(NamedTuple):
    """What an archive must be: its byte size and md5 (hex); None skips that check."""

    size: int | None
    md5: str | None


# The official COCO 2017 archives, as published on cocodataset.org and repeated by many download scripts.
OFFICIAL_FILES: dict[str, FileSpec] = {
    "annotations_trainval2017.zip": FileSpec(252_907_541, "f4bbac642086de4f52a3fdda2de5fa2c"),
    "val2017.zip": FileSpec(815_585_330, "442b8da7639aecaf257c1dceb8ba8c80"),
    "train2017.zip": FileSpec(19_336_861_798, "cced6f7f71b7629ddf16f17bbcfab6b2"),
}

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_CONTENT_RANGE_UNSATISFIED = re.compile(r"bytes\s+\*/(\d+)")


def archive_url(base_url: str, name: str) -> str:
    """The URL of one archive: annotation zips live under annotations/, image zips under zips/."""
    folder = "annotations" if name.startswith("annotations_") else "zips"
    return f"{base_url.rstrip('/')}/{folder}/{name}"


def resolve_base_url(base_url: str | None) -> str:
    """The base URL from the argument, else $KPBENCH_COCO_BASE_URL, else the official COCO server."""
    return base_url or os.environ.get(BASE_URL_ENV) or OFFICIAL_BASE_URL


def file_md5(path: Path) -> str:
    """The md5 (hex) of a file."""
    return file_digest(path, "md5")


def _progress(total: int | None, initial: int, desc: str, enabled: bool):  # type: ignore[no-untyped-def]
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
        disable=not enabled,
    )


def _check_free_space(directory: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise KpbenchError(
            f"{directory}: not enough free disk space for {what} "
            f"(needs {needed / 2**20:.0f} MiB, {free / 2**20:.0f} MiB free)"
        )


def _verify(path: Path, expected_size: int | None, expected_md5: str | None, actual_md5: str | None) -> None:
    """Raise if the file differs from what is expected; the bad file is moved aside, never kept as `dest`."""
    size = path.stat().st_size
    problem = None
    if expected_size is not None and size != expected_size:
        problem = f"size mismatch: expected {expected_size} bytes, got {size}"
    elif expected_md5 is not None:
        actual = actual_md5 if actual_md5 is not None else file_md5(path)
        if actual.lower() != expected_md5.lower():
            problem = f"md5 mismatch: expected {expected_md5.lower()}, got {actual}"
    if problem is None:
        return
    bad = path.with_name(path.name.removesuffix(".part") + ".bad")
    os.replace(path, bad)
    raise KpbenchError(f"{bad}: {problem} (moved aside; delete it and run again to download afresh)")


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    """Open the URL, asking for bytes from `offset` on; network failures become one-line KpbenchErrors."""
    headers = {"User-Agent": "kpbench"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            raise  # the caller decides: already complete, or a stale .part
        raise KpbenchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise KpbenchError(f"{url}: cannot connect ({exc.reason})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise KpbenchError(f"{url}: cannot connect ({exc or type(exc).__name__})") from None


def download_file(
    url: str,
    dest: str | Path,
    expected_size: int | None = None,
    expected_md5: str | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Download `url` to `dest`, resuming `<dest>.part` with an HTTP Range request, then check size and md5.

    `dest` only ever appears complete and verified (the `.part` file is renamed at the end). An existing `dest`
    is checked and kept when it matches. A mismatch moves the file to `<dest>.bad` and raises KpbenchError.
    An interrupted download keeps `.part`, so running again resumes it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        _verify(dest, expected_size, expected_md5, None)
        return dest
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()  # longer than the real file: cannot be a prefix of it
        offset = 0
    if expected_size is not None and offset == expected_size:
        _verify(part, expected_size, expected_md5, None)
        os.replace(part, dest)
        return dest
    if expected_size is not None:
        _check_free_space(dest.parent, expected_size - offset, dest.name)

    digest = _fetch(url, part, offset, expected_size, progress, timeout)
    _verify(part, expected_size, expected_md5, digest)
    os.replace(part, dest)
    return dest


def _fetch(
    url: str, part: Path, offset: int, expected_size: int | None, progress: bool, timeout: float
) -> str | None:
    """Bring `part` to the full file; returns its md5 when it could be computed on the way, else None."""
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:  # 416: nothing left after `offset`
        exc.close()
        match = _CONTENT_RANGE_UNSATISFIED.match(exc.headers.get("Content-Range", ""))
        total = int(match.group(1)) if match else expected_size
        if total is None or total == offset:
            return None  # the .part is (probably) complete; the checks after this decide
        # A stale .part that does not fit the server's file: start again rather than ask the user to.
        part.unlink()
        offset = 0
        response = _open(url, 0, timeout)

    with response:
        status = response.status or 200  # file:// URLs have no status
        if status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                raise KpbenchError(
                    f"{url}: server answered range {offset}- with "
                    f"'{response.headers.get('Content-Range')}'; delete {part} and run again"
                )
            total = None if match.group(3) == "*" else int(match.group(3))
        else:
            # 200: the server ignored Range (or there was none), so the body is the whole file.
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if total is not None and expected_size is not None and total != expected_size:
            raise KpbenchError(f"{url}: server has {total} bytes, expected {expected_size}; wrong file or URL?")

        digest = hashlib.md5(usedforsecurity=False)
        if offset:
            # Hash the kept prefix now so that no second pass over the file is needed at the end.
            with open(part, "rb") as fh:
                while chunk := fh.read(CHUNK_BYTES):
                    digest.update(chunk)
        received = offset
        bar = _progress(total, offset, part.name.removesuffix(".part"), progress)
        with open(part, "ab" if offset else "wb") as out, bar:
            try:
                for chunk in _chunks(response):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                # socket.timeout is an OSError; IncompleteRead an HTTPException. Keep what arrived.
                reason = "timed out" if isinstance(exc, socket.timeout) else (str(exc) or type(exc).__name__)
                raise KpbenchError(
                    f"{url}: download interrupted after {received} bytes ({reason}); run again to resume"
                ) from None
            finally:
                out.flush()
                os.fsync(out.fileno())
    if total is not None and received < total:
        raise KpbenchError(f"{url}: connection closed after {received} of {total} bytes; run again to resume")
    return digest.hexdigest()


def _chunks(response: IO[bytes]) -> Iterator[bytes]:
    while chunk := response.read(CHUNK_BYTES):
        yield chunk


@contextlib.contextmanager
def _root_lock(root: Path) -> Iterator[None]:
    """Serialise concurrent downloads into one root (e.g. several ranks started with --download)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, concurrent downloads there are the caller's problem
        yield
        return
    try:
        fh = open(root / ".kpbench-download.lock", "a")  # noqa: SIM115  (closed below)
    except OSError as exc:
        raise KpbenchError(f"{root}: cannot write into the COCO root ({exc.strerror})") from None
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def images_present(root: Path, split: str) -> bool:
    """Whether ROOT/<split> is a non-empty folder (it only appears by a rename once extraction is complete)."""
    folder = root / split
    return folder.is_dir() and any(folder.iterdir())


def _extract_members(
    archive: Path, members: list[zipfile.ZipInfo], zf: zipfile.ZipFile, tmp: Path, progress: bool
) -> None:
    from tqdm.auto import tqdm

    _check_free_space(tmp, sum(m.file_size for m in members), f"extracting {archive.name}")
    try:
        for member in tqdm(members, desc=f"extract {archive.name}", unit="file", disable=not progress,
                           leave=False):
            zf.extract(member, tmp)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise KpbenchError(f"{archive}: cannot extract ({exc})") from None


@contextlib.contextmanager
def _open_zip(archive: Path) -> Iterator[zipfile.ZipFile]:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise KpbenchError(f"{archive}: not a readable zip archive ({exc})") from None
    with zf:
        yield zf


def extract_annotations(archive: Path, root: Path, progress: bool = True) -> list[Path]:
    """Extract the missing `annotations/person_keypoints_*.json` files of `archive` into ROOT/annotations.

    Each file is extracted to a temporary folder in ROOT and then renamed into place, so a crash never leaves
    a truncated JSON file under its real name. Returns the files written.
    """
    written: list[Path] = []
    with _open_zip(archive) as zf:
        members = [
            m for m in zf.infolist()
            if re.fullmatch(r"annotations/person_keypoints_\w+\.json", m.filename)
            and not (root / m.filename).exists()
        ]
        if not members:
            return written
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".annotations.extract-"))
        try:
            _extract_members(archive, members, zf, tmp, progress)
            (root / "annotations").mkdir(exist_ok=True)
            for member in members:
                os.replace(tmp / member.filename, root / member.filename)
                written.append(root / member.filename)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return written


def extract_images(archive: Path, root: Path, split: str, progress: bool = True) -> Path:
    """Extract `<split>/*` of `archive` into a temporary folder in ROOT, then rename it to ROOT/<split>.

    The rename is atomic, so ROOT/<split> either does not exist or holds every image.
    """
    target = root / split
    with _open_zip(archive) as zf:
        members = [m for m in zf.infolist() if m.filename.startswith(f"{split}/")]
        if not any(not m.is_dir() for m in members):
            raise KpbenchError(f"{archive}: no files under {split}/ in the archive")
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{split}.extract-"))
        try:
            _extract_members(archive, members, zf, tmp, progress)
            if target.is_dir() and not any(target.iterdir()):
                target.rmdir()  # an empty placeholder folder: replace it
            if target.exists():
                raise KpbenchError(f"{target}: already exists and is not empty; not overwriting it")
            os.replace(tmp / split, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _clean_stale(root: Path, split: str) -> None:
    """Remove temporary extraction folders left by a crashed run (safe: we hold the root lock)."""
    for prefix in (".annotations.extract-", f".{split}.extract-"):
        for stale in root.glob(f"{prefix}*"):
            shutil.rmtree(stale, ignore_errors=True)


def ensure_coco(
    root: Path,
    split: str = "val2017",
    base_url: str | None = None,
    files: Mapping[str, FileSpec | tuple[int | None, str | None]] | None = None,
    progress: bool = True,
    keep_archives: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
    log: Callable[[str], None] | None = None,
) -> None:
    """Download and extract what is missing of COCO `split` under `root`; a no-op when all is there.

    Needs ROOT/annotations/person_keypoints_<split>.json and ROOT/<split>/. `files` maps archive names
    (`annotations_trainval2017.zip`, `<split>.zip`) to their (size, md5); it defaults to the official
    values. `base_url` defaults to $KPBENCH_COCO_BASE_URL, then the official server. Archives are deleted
    after extraction unless `keep_archives`. `log` receives one line per step.
    """
    if split not in SPLITS:
        raise KpbenchError(f"{split}: unknown COCO split (choose from {', '.join(SPLITS)})")
    say = log or (lambda _message: None)
    root = Path(root).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KpbenchError(f"{root}: cannot create the COCO root ({exc.strerror})") from None
    manifest = dict(OFFICIAL_FILES if files is None else files)
    base = resolve_base_url(base_url)

    ann_json = annotation_path(root, split)
    steps = [name for name, done in ((ANNOTATIONS_ARCHIVE, ann_json.is_file()),
                                     (f"{split}.zip", images_present(root, split))) if not done]
    if not steps:
        say(f"COCO {split} already present in {root}")
        return
    for name in steps:
        if name not in manifest:
            raise KpbenchError(f"{name}: no expected size/md5 given for this archive")

    with _root_lock(root):
        _clean_stale(root, split)
        for name in steps:
            is_annotations = name == ANNOTATIONS_ARCHIVE
            # Another process may have finished this step while we waited for the lock.
            if ann_json.is_file() if is_annotations else images_present(root, split):
                continue
            spec = FileSpec(*manifest[name])
            url = archive_url(base, name)
            archive = root / name
            say(f"downloading {url} -> {archive}")
            download_file(url, archive, spec.size, spec.md5, progress=progress, timeout=timeout)
            say(f"extracting {archive}")
            if is_annotations:
                extract_annotations(archive, root, progress)
                if not ann_json.is_file():
                    raise KpbenchError(f"{archive}: has no {ann_json.relative_to(root).as_posix()}")
            else:
                extract_images(archive, root, split, progress)
            if not keep_archives:
                archive.unlink()
    say(f"COCO {split} ready in {root}")
