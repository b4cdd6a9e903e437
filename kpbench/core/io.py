"""Atomic file writes and table rendering (table, JSON, CSV, Markdown) shared by every stage."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kpbench.core.errors import KpbenchError

TABLE_FORMATS = ("table", "json", "csv", "markdown")


def check_format(fmt: str, formats: Sequence[str] = TABLE_FORMATS) -> str:
    """`fmt` if it is one of `formats`, else the KpbenchError that names --format and the choices."""
    if fmt not in formats:
        raise KpbenchError(f"--format: must be one of {', '.join(formats)}, got {fmt!r}")
    return fmt


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, which is not thread-safe to do per write.
_UMASK = _umask()


def sync_directory(path: str | Path) -> None:
    """fsync a folder, so that the renames and unlinks in it survive a power cut (an os.replace is atomic, but only
    durable once its directory entry is on disk). A file system that cannot sync folders is left as it is."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a half-written one. A file that cannot
    be written (a folder in its place, no permission, a full disk) is a KpbenchError naming it."""
    atomic_write_files({path: data})


def atomic_write_files(files: Mapping[str | Path, bytes | str]) -> list[Path]:
    """Write several files (str as UTF-8) as one: each goes to a temporary file beside its target first, and the
    targets are replaced only when every temporary file is written. A failure before that leaves every old file
    as it was (only a failing os.replace, which is all but impossible then, could leave some replaced). A file
    that cannot be written (a folder in its place, no permission, a full disk) is a KpbenchError naming it."""
    targets = {Path(target): data for target, data in files.items()}
    staged: list[tuple[str, Path]] = []
    current = next(iter(targets), Path())
    try:
        for current, data in targets.items():
            if current.is_dir():
                raise IsADirectoryError(21, "Is a directory")
            current.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=current.parent, prefix=f".{current.name}.", suffix=".tmp")
            staged.append((tmp, current))
            with os.fdopen(fd, "wb") as fh:
                # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
                os.fchmod(fh.fileno(), 0o666 & ~_UMASK)
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
                fh.flush()
                os.fsync(fh.fileno())
        for tmp, current in staged:
            os.replace(tmp, current)
        for folder in dict.fromkeys(target.parent for target in targets):
            sync_directory(folder)
    except OSError as exc:
        raise KpbenchError(f"{current}: cannot write ({exc.strerror or exc})") from None
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
    return list(targets)


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_regular_file(path: str | Path, what: str = "file") -> int:
    """The size of `path` if it is a regular file (after symlinks); otherwise a one-line KpbenchError, before
    anything is read: a FIFO would block forever, /dev/zero never end, and a directory cannot be read."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KpbenchError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise KpbenchError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise KpbenchError(f"{path}: is a directory, expected a {what}")
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "not a regular file")
        raise KpbenchError(f"{path}: is {kind}, not a regular file; expected a {what}")
    return info.st_size


def out_of_memory(path: str | Path, size: int) -> KpbenchError:
    """The one line for a file that does not fit in memory (read or parsed), naming it and its size."""
    return KpbenchError(f"{path}: not enough memory to read this {size:,}-byte file")


def read_file_bytes(path: str | Path, what: str = "file") -> bytes:
    """The bytes of a regular file (`check_regular_file`); unreadable or too large for memory is one line."""
    size = check_regular_file(path, what)
    try:
        return Path(path).read_bytes()
    except MemoryError:
        raise out_of_memory(path, size) from None
    except OSError as exc:
        raise KpbenchError(f"{path}: cannot read ({exc.strerror or exc})") from None


# --- read-ahead: files read by a thread while the caller does other work ------------------------------------------

_READ_AHEAD: dict[str, Any] = {}  # path -> the thread reading it, then its (bytes, file identity)


def _identity(info: os.stat_result) -> tuple[int, int, int, int]:
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def read_ahead(*paths: str | Path) -> None:
    """Start reading regular files on a thread, so that the caller's next `take_read_ahead` of each gets its bytes
    without waiting for them: `kpbench evaluate` reads its two files while its evaluation modules load (the reads
    release the GIL; ~15 ms of a 0.35 s command). Anything unusual (not a regular file, an error) is left for the
    normal read to report. Files a command read ahead and never took (it stopped first) are dropped by the next
    `read_ahead`."""
    import threading

    _READ_AHEAD.clear()  # what an earlier command read and never took (it failed first) is dropped

    def read(path: str) -> None:
        try:
            before = os.stat(path)
            if not stat.S_ISREG(before.st_mode):
                return
            data = Path(path).read_bytes()
            after = os.stat(path)
        except (OSError, MemoryError):
            return
        if _identity(before) == _identity(after):
            _READ_AHEAD[path] = (data, _identity(after))

    for path in map(_read_ahead_key, paths):
        thread = threading.Thread(target=read, args=(path,), name="kpbench-read-ahead", daemon=True)
        _READ_AHEAD[path] = thread
        thread.start()


def _read_ahead_key(path: str | Path) -> str:
    """One spelling per file: "./gt.json", "gt.json" and Path("gt.json") are the same entry."""
    return os.path.abspath(path)


def discard_read_ahead() -> None:
    """Drop whatever was read ahead and not taken (the command is done with its files)."""
    _READ_AHEAD.clear()


def take_read_ahead(path: str | Path) -> bytes | None:
    """The bytes `read_ahead` read for `path` (waiting for them), once, if the file is still the one read (same
    device, inode, size and modification time); None otherwise (read it as usual)."""
    key = _read_ahead_key(path)
    entry = _READ_AHEAD.get(key)
    if entry is None:
        return None
    if not isinstance(entry, tuple):
        entry.join()
        entry = _READ_AHEAD.get(key)
    _READ_AHEAD.pop(key, None)
    if not isinstance(entry, tuple):
        return None
    data, identity = entry
    try:
        return data if _identity(os.stat(path)) == identity else None
    except OSError:
        return None


def read_json(path: str | Path, invalid: str = "not valid JSON", hint: str = "", what: str = "JSON file") -> Any:
    """Parse a JSON file, the one JSON reader of kpbench: a missing or irregular file, bad JSON or too little memory
    is a one-line KpbenchError naming the file (`invalid` words bad JSON, `hint` says what to do about it)."""
    path = Path(path)
    data = read_file_bytes(path, what)
    try:
        return _parse_json(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KpbenchError(f"{path}: {invalid} ({exc}){hint}") from None
    except RecursionError:
        raise KpbenchError(f"{path}: nested too deeply for Python's JSON parser") from None
    except MemoryError:
        raise out_of_memory(path, len(data)) from None


def _parse_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except ValueError:
        # Python refuses integers of over 4300 digits (sys.set_int_max_str_digits, a guard against slow int
        # parsing). They are valid JSON, and msgspec and hotcoco read them: parse once more without the guard.
        limit = sys.get_int_max_str_digits()
        sys.set_int_max_str_digits(0)
        try:
            return json.loads(data)
        finally:
            sys.set_int_max_str_digits(limit)


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file (sha256, md5, ...), read in 1 MiB chunks."""
    import hashlib  # here: it loads OpenSSL (~3 ms of every `kpbench evaluate`, which hashes nothing)

    digest = hashlib.new(algorithm, usedforsecurity=False)
    with Path(path).open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_output_dir(path: str | Path, option: str = "--out") -> Path:
    """Create an output folder (and its parents) or fail with one line naming the option and the problem."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise KpbenchError(f"{option} {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KpbenchError(f"{option} {path}: cannot create the folder ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK):
        raise KpbenchError(f"{option} {path}: the folder is not writable")
    # os.access cannot see a full disk (nor a folder root may not write into): write a little for real, so that
    # a long job fails now rather than when it writes its results.
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".kpbench-probe-", suffix=".tmp")
        try:
            os.write(fd, b"kpbench\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise KpbenchError(f"{option} {path}: cannot write into the folder ({exc.strerror or exc})") from None
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def json_text(obj: Any, indent: int | None = 2) -> str:
    """JSON as kpbench writes it: floats at full precision, NaN refused, a final newline."""
    return json.dumps(obj, indent=indent, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Atomically write JSON (see `json_text`)."""
    atomic_write_text(path, json_text(obj, indent))


def _cell(value: Any, precision: int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):  # an undefined statistic: "n/a" for people, "nan" where programs read it back
            return "nan" if precision is None else "n/a"
        return f"{value:.{precision}f}" if precision is not None else repr(value)
    return str(value)


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV with full-precision floats (repr), so that numbers survive a round trip."""
    columns = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c), None) for c in columns])
    return buf.getvalue()


def to_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, precision: int = 3) -> str:
    """A GitHub-flavoured Markdown table with rounded floats."""
    columns = list(columns or (rows[0].keys() if rows else []))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c), precision) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def to_text_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, precision: int = 3) -> str:
    """An aligned plain-text table for the terminal."""
    columns = list(columns or (rows[0].keys() if rows else []))
    cells = [[_cell(row.get(c), precision) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    out = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    out += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(out) + "\n"


def render(rows: Sequence[dict[str, Any]], fmt: str, columns: Sequence[str] | None = None) -> str:
    """Render rows in one of TABLE_FORMATS ("json" gives a list of objects)."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        return to_csv(rows, columns)
    if fmt == "markdown":
        return to_markdown(rows, columns)
    return to_text_table(rows, columns)


def _parse_cell(value: str) -> Any:
    """CSV text to int, float, bool or None (empty), else the string unchanged."""
    if value == "":
        return None
    if value in ("True", "False"):
        return value == "True"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def read_csv_rows(path: str | Path) -> list[dict[str, Any]]:
    """A CSV file as a list of dicts, numbers parsed (empty cells become None)."""
    path = Path(path)
    if not path.is_file():
        raise KpbenchError(f"{path}: file not found")
    rows = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for number, row in enumerate(csv.DictReader(fh), start=2):
                if None in row:  # DictReader puts the cells beyond the header under the key None
                    raise KpbenchError(f"{path}: line {number} has more cells than the header")
                rows.append({k: _parse_cell(v or "") for k, v in row.items()})
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise KpbenchError(f"{path}: not a readable CSV file ({exc})") from None
    return rows


def atomic_write_chunks(path: str | Path, chunks: Iterable[bytes]) -> None:
    """`atomic_write_bytes` for content made piece by piece (a large results file): each chunk is written to the
    temporary file as it comes, so the whole never has to be in memory at once."""
    target = Path(path)
    tmp: str | None = None
    try:
        if target.is_dir():
            raise IsADirectoryError(21, "Is a directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_UMASK)
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        tmp = None
        sync_directory(target.parent)  # the rename durable before a caller deletes what it replaces (a merge)
    except OSError as exc:
        raise KpbenchError(f"{target}: cannot write ({exc.strerror or exc})") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
