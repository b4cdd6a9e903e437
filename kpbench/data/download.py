"""Downloading and extracting the COCO 2017 archives: resumable HTTP, size + md5 checks, atomic extraction.

Layout produced under ROOT (what `kpbench.data.coco` reads):

    ROOT/annotations/person_keypoints_<split>.json
    ROOT/<split>/<12-digit id>.jpg

Only the standard library is used for the network (urllib), so that proxies from the environment work and no
dependency is added. No torch import here.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, NamedTuple

from kpbench.core.errors import KpbenchError
from kpbench.core.io import file_digest
from kpbench.data.coco import annotation_path

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
    """The base URL from the argument, else $KPBENCH_COCO_BASE_URL, else the official COCO server; only http and
    https URLs with a host are accepted (a one-line error names where a bad one came from)."""
    if base_url:
        value, source = base_url, "--base-url"
    elif os.environ.get(BASE_URL_ENV):
        value, source = os.environ[BASE_URL_ENV], f"${BASE_URL_ENV}"
    else:
        return OFFICIAL_BASE_URL
    parts = urllib.parse.urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise KpbenchError(f"{source} {value!r}: not an http:// or https:// URL (e.g. {OFFICIAL_BASE_URL})")
    return value


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


class CannotConnect(KpbenchError):
    """The server could not be reached (no network, a wrong host): `ensure_coco` adds what to do instead."""


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
        raise CannotConnect(f"{url}: cannot connect ({exc.reason})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise CannotConnect(f"{url}: cannot connect ({exc or type(exc).__name__})") from None


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


LOCK_NAME = ".kpbench-download.lock"


@contextlib.contextmanager
def _root_lock(root: Path) -> Iterator[None]:
    """Serialise concurrent downloads into one root (e.g. several ranks started with --download).

    The lock file is deleted on the way out, while still locked. A process that was waiting on it then holds a
    lock on a deleted file, so after locking, each process checks that the file it locked is still the one at
    the path, and tries again otherwise.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no lock, concurrent downloads there are the caller's problem
        yield
        return
    path = root / LOCK_NAME
    while True:
        try:
            fh = open(path, "a")  # noqa: SIM115  (closed below)
        except OSError as exc:
            raise KpbenchError(f"{root}: cannot write into the COCO root ({exc.strerror})") from None
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            same = os.path.samestat(os.fstat(fh.fileno()), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        fh.close()  # the holder before us deleted it: lock the new one
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def first_missing_parent(path: Path) -> Path | None:
    """The outermost folder of `path` (itself included) that does not exist yet: what `mkdir(parents=True)`
    would create first, so that a failed command can remove what it created. None when `path` exists."""
    path = Path(os.path.abspath(path))
    if path.exists():
        return None
    top = path
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    return top


def remove_empty_dirs(path: Path, top: Path | None) -> None:
    """Remove `path` and its parents up to `top` (from `first_missing_parent`) while they are empty folders."""
    if top is None:
        return
    current = Path(os.path.abspath(path))
    top = Path(os.path.abspath(top))
    while True:
        try:
            current.rmdir()  # only succeeds on an empty folder
        except OSError:
            return
        if current == top or top not in current.parents:
            return
        current = current.parent


def missing_images(root: Path, split: str) -> list[str]:
    """The image files listed in ROOT/annotations/person_keypoints_<split>.json that ROOT/<split>/ lacks, sorted
    (none when the annotation file is absent or unreadable: there is nothing to compare with)."""
    ann = annotation_path(root, split)
    if not ann.is_file():
        return []
    try:
        with ann.open("rb") as fh:
            images = json.load(fh).get("images", [])
        names = {str(img.get("file_name") or f"{int(img['id']):012d}.jpg") for img in images}
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return []  # `kpbench run` reports a broken annotation file itself
    folder = root / split
    present = set(os.listdir(folder)) if folder.is_dir() else set()
    return sorted(names - present)


def images_present(root: Path, split: str) -> bool:
    """Whether ROOT/<split> is a non-empty folder (it only appears by a rename once extraction is complete) that
    holds every image the annotation file lists (a deleted image makes it incomplete)."""
    folder = root / split
    return folder.is_dir() and any(folder.iterdir()) and not missing_images(root, split)


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


def extract_missing_images(
    archive: Path, root: Path, split: str, names: list[str], progress: bool = True
) -> list[Path]:
    """Extract the images `names` (file names under <split>/) of `archive` into the existing ROOT/<split>, each
    through a temporary folder and a rename, so that no image ever appears half-written. Returns the files."""
    target = root / split
    with _open_zip(archive) as zf:
        wanted = {f"{split}/{name}" for name in names}
        members = [m for m in zf.infolist() if m.filename in wanted]
        absent = sorted(wanted - {m.filename for m in members})
        if absent:
            more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
            raise KpbenchError(f"{archive}: has no {absent[0]}{more}, which the annotation file lists")
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{split}.extract-"))
        written = []
        try:
            _extract_members(archive, members, zf, tmp, progress)
            for member in members:
                os.replace(tmp / member.filename, root / member.filename)
                written.append(root / member.filename)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    assert all(p.parent == target for p in written)
    return written


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

    Needs ROOT/annotations/person_keypoints_<split>.json and ROOT/<split>/ with every image that file lists:
    images missing from an existing folder are extracted again from `<split>.zip`. `files` maps archive names
    (`annotations_trainval2017.zip`, `<split>.zip`) to their (size, md5); it defaults to the official
    values. `base_url` defaults to $KPBENCH_COCO_BASE_URL, then the official server. Archives are deleted
    after extraction unless `keep_archives`. `log` receives one line per step.
    """
    if split not in SPLITS:
        raise KpbenchError(f"{split}: unknown COCO split (choose from {', '.join(SPLITS)})")
    say = log or (lambda _message: None)
    base = resolve_base_url(base_url)
    root = Path(root).expanduser()
    manifest = dict(OFFICIAL_FILES if files is None else files)
    images_archive = f"{split}.zip"
    ann_json = annotation_path(root, split)
    if ann_json.is_file() and images_present(root, split):
        say(f"COCO {split} already present in {root}")
        return
    for name, needed in ((ANNOTATIONS_ARCHIVE, not ann_json.is_file()), (images_archive, not images_present(root, split))):
        if needed and name not in manifest:
            raise KpbenchError(f"{name}: no expected size/md5 given for this archive")

    created = first_missing_parent(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KpbenchError(f"{root}: cannot create the COCO root ({exc.strerror})") from None
    try:
        with _root_lock(root):
            _clean_stale(root, split)
            # Each step is checked again under the lock: another process may have done it while we waited.
            if not ann_json.is_file():
                archive = _fetch_archive(ANNOTATIONS_ARCHIVE, root, base, manifest, progress, timeout, say)
                extract_annotations(archive, root, progress)
                if not ann_json.is_file():
                    raise KpbenchError(f"{archive}: has no {ann_json.relative_to(root).as_posix()}")
                _done_with(archive, keep_archives)
            folder = root / split
            has_images = folder.is_dir() and any(folder.iterdir())
            missing = missing_images(root, split) if has_images else []
            if not has_images or missing:
                if missing:
                    say(f"{folder}: {len(missing)} image(s) listed in {ann_json.name} are missing, such as "
                        f"{missing[0]}; extracting them from {images_archive}")
                archive = _fetch_archive(images_archive, root, base, manifest, progress, timeout, say)
                if missing:
                    extract_missing_images(archive, root, split, missing, progress)
                else:
                    extract_images(archive, root, split, progress)
                _done_with(archive, keep_archives)
    except BaseException:
        remove_empty_dirs(root, created)  # a root this call created and left empty goes again
        raise
    say(f"COCO {split} ready in {root}")


def _fetch_archive(
    name: str, root: Path, base: str, manifest: Mapping[str, FileSpec | tuple[int | None, str | None]],
    progress: bool, timeout: float, say: Callable[[str], None],
) -> Path:
    """Download archive `name` into ROOT (a verified copy already there is reused), checking size and md5."""
    if name not in manifest:
        raise KpbenchError(f"{name}: no expected size/md5 given for this archive")
    spec = FileSpec(*manifest[name])
    url = archive_url(base, name)
    archive = root / name
    say(f"downloading {url} -> {archive}")
    try:
        download_file(url, archive, spec.size, spec.md5, progress=progress, timeout=timeout)
    except CannotConnect as exc:  # offline: say how to go on without this server
        extracted = ("annotations/person_keypoints_*.json" if name == ANNOTATIONS_ARCHIVE
                     else f"{name.removesuffix('.zip')}/*.jpg")
        raise KpbenchError(
            f"{exc}; pass --base-url URL (or set $KPBENCH_COCO_BASE_URL) for a mirror, or place the files by hand: "
            f"{archive} (its size and md5 are checked, then it is extracted), or the extracted {root}/{extracted}; "
            "meanwhile `kpbench demo` runs offline on the COCO images shipped with kpbench"
        ) from None
    say(f"extracting {archive}")
    return archive


def _done_with(archive: Path, keep: bool) -> None:
    if not keep:
        archive.unlink()
