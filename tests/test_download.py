"""COCO download: resumable HTTP against a local server on 127.0.0.1, checksums, atomic extraction, the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from kpbench.cli import app
from kpbench.core.errors import KpbenchError
from kpbench.data import download as dl

IMAGE_NAMES = ("000000000139.jpg", "000000000785.jpg")


def _jpeg(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buf, format="JPEG")
    return buf.getvalue()


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _spec(data: bytes) -> dl.FileSpec:
    return dl.FileSpec(len(data), hashlib.md5(data).hexdigest())


@pytest.fixture(scope="module")
def archives() -> dict[str, bytes]:
    """A tiny annotations zip and val2017 zip shaped like the official ones."""
    gt = {
        "images": [{"id": 139, "file_name": IMAGE_NAMES[0], "width": 8, "height": 6},
                   {"id": 785, "file_name": IMAGE_NAMES[1], "width": 8, "height": 6}],
        "annotations": [],
        "categories": [{"id": 1, "name": "person", "keypoints": [], "skeleton": []}],
    }
    annotations = _zip({
        "annotations/person_keypoints_val2017.json": json.dumps(gt).encode(),
        "annotations/instances_val2017.json": b"{}",  # not a keypoint file: must not be extracted
    })
    images = _zip({
        "val2017/": b"",
        f"val2017/{IMAGE_NAMES[0]}": _jpeg((255, 0, 0)),
        f"val2017/{IMAGE_NAMES[1]}": _jpeg((0, 0, 255)) + os.urandom(4096),  # some bulk to resume within
    })
    return {"annotations/annotations_trainval2017.zip": annotations, "zips/val2017.zip": images}


@pytest.fixture(scope="module")
def manifest(archives: dict[str, bytes]) -> dict[str, dl.FileSpec]:
    return {path.split("/")[1]: _spec(data) for path, data in archives.items()}


class _Server:
    """What the handler serves and what it saw; tests flip the switches between requests."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.ranges = True  # answer Range with 206
        self.cut_after: int | None = None  # close the connection after this many body bytes
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.url = ""


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        state: _Server = self.server.state  # type: ignore[attr-defined]
        range_header = self.headers.get("Range")
        state.requests.append((self.path, range_header))
        data = state.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if state.ranges and match:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.cut_after is not None:
            body = body[: state.cut_after]
            self.close_connection = True
        self.wfile.write(body)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours proxy variables; traffic here must go straight to 127.0.0.1."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(dl.BASE_URL_ENV, raising=False)


@pytest.fixture
def server(archives: dict[str, bytes]) -> Iterator[_Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    state = _Server({"/" + path: data for path, data in archives.items()})
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _assert_layout(root: Path) -> None:
    assert (root / "annotations" / "person_keypoints_val2017.json").is_file()
    assert json.loads((root / "annotations" / "person_keypoints_val2017.json").read_text())["images"]
    assert sorted(p.name for p in (root / "val2017").iterdir()) == sorted(IMAGE_NAMES)
    with Image.open(root / "val2017" / IMAGE_NAMES[0]) as im:
        assert im.size == (8, 6)


def test_ensure_coco_full_download(tmp_path: Path, server: _Server, manifest: dict[str, dl.FileSpec]) -> None:
    root = tmp_path / "coco"
    lines: list[str] = []
    dl.ensure_coco(root, "val2017", base_url=server.url, files=manifest, progress=False, log=lines.append)
    _assert_layout(root)
    assert not (root / "annotations" / "instances_val2017.json").exists()
    # No archives, partial files, temporary folders or lock file are left behind.
    assert sorted(p.name for p in root.iterdir()) == ["annotations", "val2017"]
    assert lines[-1].startswith("COCO val2017 ready")

    # Idempotent: a second call makes no request.
    count = len(server.requests)
    dl.ensure_coco(root, "val2017", base_url=server.url, files=manifest, progress=False, log=lines.append)
    assert len(server.requests) == count
    assert lines[-1].startswith("COCO val2017 already present")

    # Only what is missing is fetched.
    (root / "annotations" / "person_keypoints_val2017.json").unlink()
    dl.ensure_coco(root, "val2017", base_url=server.url, files=manifest, progress=False)
    assert [path for path, _ in server.requests[count:]] == ["/annotations/annotations_trainval2017.zip"]
    _assert_layout(root)


def test_base_url_from_environment(
    tmp_path: Path, server: _Server, manifest: dict[str, dl.FileSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(dl.BASE_URL_ENV, server.url + "/")
    dl.ensure_coco(tmp_path, files=manifest, progress=False)
    _assert_layout(tmp_path)


def test_resume_partial_download(tmp_path: Path, server: _Server, archives: dict[str, bytes]) -> None:
    data = archives["zips/val2017.zip"]
    dest = tmp_path / "val2017.zip"
    (tmp_path / "val2017.zip.part").write_bytes(data[:1000])
    spec = _spec(data)
    dl.download_file(f"{server.url}/zips/val2017.zip", dest, spec.size, spec.md5, progress=False)
    assert server.requests == [("/zips/val2017.zip", "bytes=1000-")]
    assert dest.read_bytes() == data
    assert not (tmp_path / "val2017.zip.part").exists()


def test_interrupted_download_keeps_part_and_resumes(
    tmp_path: Path, server: _Server, archives: dict[str, bytes]
) -> None:
    data = archives["zips/val2017.zip"]
    dest = tmp_path / "val2017.zip"
    spec = _spec(data)
    url = f"{server.url}/zips/val2017.zip"
    server.cut_after = 1500
    with pytest.raises(KpbenchError, match=r"run again to resume") as info:
        dl.download_file(url, dest, spec.size, spec.md5, progress=False)
    assert url in str(info.value) and "\n" not in str(info.value)
    assert (tmp_path / "val2017.zip.part").read_bytes() == data[:1500]
    assert not dest.exists()

    server.cut_after = None
    dl.download_file(url, dest, spec.size, spec.md5, progress=False)
    assert server.requests[-1] == ("/zips/val2017.zip", "bytes=1500-")
    assert dest.read_bytes() == data


def test_server_without_range_support_restarts(
    tmp_path: Path, server: _Server, archives: dict[str, bytes]
) -> None:
    data = archives["zips/val2017.zip"]
    dest = tmp_path / "val2017.zip"
    (tmp_path / "val2017.zip.part").write_bytes(b"x" * 1000)  # garbage: must be overwritten, not appended to
    server.ranges = False
    spec = _spec(data)
    dl.download_file(f"{server.url}/zips/val2017.zip", dest, spec.size, spec.md5, progress=False)
    assert server.requests == [("/zips/val2017.zip", "bytes=1000-")]
    assert dest.read_bytes() == data


def test_complete_part_without_known_size(tmp_path: Path, server: _Server, archives: dict[str, bytes]) -> None:
    # Without an expected size the client asks for more; the server's 416 says the .part is already whole.
    data = archives["zips/val2017.zip"]
    (tmp_path / "val2017.zip.part").write_bytes(data)
    dest = dl.download_file(f"{server.url}/zips/val2017.zip", tmp_path / "val2017.zip", None,
                            hashlib.md5(data).hexdigest(), progress=False)
    assert server.requests == [("/zips/val2017.zip", f"bytes={len(data)}-")]
    assert dest.read_bytes() == data


def test_checksum_mismatch(tmp_path: Path, server: _Server, archives: dict[str, bytes]) -> None:
    data = archives["zips/val2017.zip"]
    dest = tmp_path / "val2017.zip"
    actual = hashlib.md5(data).hexdigest()
    with pytest.raises(KpbenchError) as info:
        dl.download_file(f"{server.url}/zips/val2017.zip", dest, len(data), "0" * 32, progress=False)
    message = str(info.value)
    assert "val2017.zip.bad" in message and "0" * 32 in message and actual in message
    assert not dest.exists() and not (tmp_path / "val2017.zip.part").exists()
    assert (tmp_path / "val2017.zip.bad").read_bytes() == data


def test_size_announced_by_server_is_checked_first(tmp_path: Path, server: _Server) -> None:
    with pytest.raises(KpbenchError, match=r"server has \d+ bytes, expected 123"):
        dl.download_file(f"{server.url}/zips/val2017.zip", tmp_path / "v.zip", 123, None, progress=False)


def test_unreachable_url_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/zips/val2017.zip"
    with pytest.raises(KpbenchError) as info:
        dl.download_file(url, tmp_path / "val2017.zip", progress=False, timeout=5)
    message = str(info.value)
    assert message.startswith(f"{url}: cannot connect") and "\n" not in message


def test_http_error(tmp_path: Path, server: _Server) -> None:
    with pytest.raises(KpbenchError, match=r"/zips/nope.zip: HTTP 404"):
        dl.download_file(f"{server.url}/zips/nope.zip", tmp_path / "nope.zip", progress=False)


def test_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(KpbenchError, match="unknown COCO split"):
        dl.ensure_coco(tmp_path, "test2017")


def test_crashed_extraction_leaves_no_complete_looking_tree(
    tmp_path: Path, server: _Server, manifest: dict[str, dl.FileSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real_extract = zipfile.ZipFile.extract

    def crash_on_third(self: zipfile.ZipFile, member: zipfile.ZipInfo, path: str) -> str:
        nonlocal calls
        calls += 1
        if calls == 3:  # dir entry, first image, then boom
            raise KeyboardInterrupt
        return real_extract(self, member, path)

    dl.ensure_coco(tmp_path, base_url=server.url, files=manifest, progress=False)
    (tmp_path / "val2017" / IMAGE_NAMES[0]).unlink()
    (tmp_path / "val2017" / IMAGE_NAMES[1]).unlink()
    (tmp_path / "val2017").rmdir()
    monkeypatch.setattr(zipfile.ZipFile, "extract", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        dl.ensure_coco(tmp_path, base_url=server.url, files=manifest, progress=False)
    assert not (tmp_path / "val2017").exists()
    assert (tmp_path / "val2017.zip").is_file()  # verified archive kept for the next run
    monkeypatch.setattr(zipfile.ZipFile, "extract", real_extract)

    count = len(server.requests)
    dl.ensure_coco(tmp_path, base_url=server.url, files=manifest, progress=False)
    assert len(server.requests) == count  # re-extracted from the kept archive, not downloaded again
    _assert_layout(tmp_path)
    assert not list(tmp_path.glob(".val2017.extract-*"))


def test_cli_download(
    tmp_path: Path, server: _Server, manifest: dict[str, dl.FileSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI always checks against the official manifest; swap in the test archives' values.
    monkeypatch.setattr(dl, "OFFICIAL_FILES", manifest)
    root = tmp_path / "coco"
    result = CliRunner().invoke(
        app, ["data", "download", "--root", str(root), "--base-url", server.url, "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    _assert_layout(root)


def test_cli_checksum_error_exits_2(tmp_path: Path, server: _Server) -> None:
    # Real process, official manifest: the test archive's size is wrong, reported in one line with exit 2.
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = subprocess.run(
        [sys.executable, "-m", "kpbench", "data", "download", "--root", str(tmp_path / "coco"),
         "--base-url", server.url, "--no-progress"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {server.url}/annotations/annotations_trainval2017.zip: server has "
        f"{len(server.files['/annotations/annotations_trainval2017.zip'])} bytes, expected 252907541; "
        "wrong file or URL?"
    ]
    assert "Traceback" not in proc.stderr


def test_cli_md5_mismatch_exits_2(
    tmp_path: Path,
    server: _Server,
    manifest: dict[str, dl.FileSpec],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kpbench.cli import main

    name = "annotations_trainval2017.zip"
    monkeypatch.setattr(dl, "OFFICIAL_FILES", {**manifest, name: dl.FileSpec(manifest[name].size, "f" * 32)})
    root = tmp_path / "coco"
    monkeypatch.setattr(sys, "argv", ["kpbench", "data", "download", "--root", str(root),
                                      "--base-url", server.url, "--no-progress"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"error: {root / (name + '.bad')}: md5 mismatch: expected {'f' * 32}, "
                   f"got {manifest[name].md5} (moved aside; delete it and run again to download afresh)")


def test_stale_part_longer_than_server_file_restarts(
    tmp_path: Path, server: _Server, archives: dict[str, bytes]
) -> None:
    data = archives["zips/val2017.zip"]
    (tmp_path / "val2017.zip.part").write_bytes(b"x" * (len(data) + 10))
    dest = dl.download_file(f"{server.url}/zips/val2017.zip", tmp_path / "val2017.zip", progress=False)
    assert [r for _, r in server.requests] == [f"bytes={len(data) + 10}-", None]  # 416, then from the start
    assert dest.read_bytes() == data


def test_socket_timeout(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/zips/val2017.zip"
        with pytest.raises(KpbenchError, match=r"cannot connect \(timed out\)"):
            dl.download_file(url, tmp_path / "val2017.zip", progress=False, timeout=0.3)


# --- fixes: bad base URLs, the lock file, an empty root, images deleted after extraction --------------------------


@pytest.mark.parametrize("url", ["notaurl", "ftp://example.org/coco", "file:///data/coco", "http://"])
def test_base_url_must_be_http(tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from kpbench.cli import main

    root = tmp_path / "coco"
    monkeypatch.setattr(sys, "argv", ["kpbench", "data", "download", "--root", str(root), "--base-url", url,
                                      "--no-progress"])  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and err == (
        f"error: --base-url {url!r}: not an http:// or https:// URL (e.g. http://images.cocodataset.org)\n"
    )
    assert not root.exists()  # nothing was created for a download that could not start
    monkeypatch.setenv(dl.BASE_URL_ENV, url)
    with pytest.raises(KpbenchError, match=rf"^\${dl.BASE_URL_ENV} "):
        dl.ensure_coco(root, progress=False)


def test_failed_download_leaves_no_lock_and_no_empty_root(
    tmp_path: Path, server: _Server, manifest: dict[str, dl.FileSpec]
) -> None:
    root = tmp_path / "new" / "coco"
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(KpbenchError, match="cannot connect"):
        dl.ensure_coco(root, base_url=url, progress=False, timeout=5)
    assert not (tmp_path / "new").exists()  # the root and the parent this call made are gone again

    existing = tmp_path / "mine"
    existing.mkdir()
    with pytest.raises(KpbenchError, match="HTTP 404"):
        dl.ensure_coco(existing, base_url=server.url + "/nothing-here", progress=False)
    assert existing.is_dir() and not any(existing.iterdir())  # a root the user made stays, without a lock file

    server.cut_after = 100  # an interrupted download keeps its .part (to resume), and with it the root
    with pytest.raises(KpbenchError, match="run again to resume"):
        dl.ensure_coco(root, base_url=server.url, files=manifest, progress=False)
    assert [p.name for p in root.iterdir()] == [f"{dl.ANNOTATIONS_ARCHIVE}.part"]


def test_lock_is_exclusive_across_deletion(tmp_path: Path) -> None:
    """The lock file is deleted on release; a process that waited on the deleted file locks the new one."""
    import multiprocessing
    import os
    import time

    log = tmp_path / "order.log"
    ctx = multiprocessing.get_context("fork")

    def note(event: str) -> None:
        # Written before the next step, while the lock is held (a multiprocessing.Queue would deliver each
        # process's events from its own feeder thread, in an order that need not be the order they happened).
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{event}\n".encode())
        os.close(fd)

    def hold(name: str) -> None:
        with dl._root_lock(tmp_path):
            note(f"{name}+")
            time.sleep(0.2)
            note(f"{name}-")

    procs = [ctx.Process(target=hold, args=(str(i),)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(20)
    assert all(p.exitcode == 0 for p in procs)
    events = log.read_text().split()
    assert len(events) == 6, events
    for i in range(0, 6, 2):  # never two holders at once: each + is followed by its own -
        assert events[i].endswith("+") and events[i + 1] == events[i][:-1] + "-", events
    assert not (tmp_path / dl.LOCK_NAME).exists()


def test_deleted_images_are_extracted_again(
    tmp_path: Path, server: _Server, manifest: dict[str, dl.FileSpec], capsys: pytest.CaptureFixture[str]
) -> None:
    """An image deleted from a complete ROOT/val2017 makes it incomplete: the archive is fetched again and only
    the missing image is extracted (the others are left as they are), as the `kpbench run` hint promises."""
    root = tmp_path / "coco"
    dl.ensure_coco(root, base_url=server.url, files=manifest, progress=False)
    kept = root / "val2017" / IMAGE_NAMES[1]
    kept_inode = kept.stat().st_ino
    (root / "val2017" / IMAGE_NAMES[0]).unlink()
    assert dl.missing_images(root, "val2017") == [IMAGE_NAMES[0]] and not dl.images_present(root, "val2017")

    count = len(server.requests)
    lines: list[str] = []
    dl.ensure_coco(root, base_url=server.url, files=manifest, progress=False, log=lines.append)
    assert [path for path, _ in server.requests[count:]] == ["/zips/val2017.zip"]
    _assert_layout(root)
    assert kept.stat().st_ino == kept_inode
    assert any("1 image(s) listed in person_keypoints_val2017.json are missing" in line for line in lines)
    assert sorted(p.name for p in root.iterdir()) == ["annotations", "val2017"]

    # The same through `kpbench run`'s hint: the error says to download, and the download fixes it.
    from kpbench.data.coco import image_files, load_annotations

    (root / "val2017" / IMAGE_NAMES[1]).unlink()
    gt = load_annotations(root)
    with pytest.raises(KpbenchError, match=r"extracts the missing images again from val2017\.zip"):
        image_files(root, "val2017", gt, [139, 785])
    dl.ensure_coco(root, base_url=server.url, files=manifest, progress=False)
    assert len(image_files(root, "val2017", gt, [139, 785])) == 2


def test_image_listed_but_absent_from_the_archive(
    tmp_path: Path, server: _Server, manifest: dict[str, dl.FileSpec]
) -> None:
    root = tmp_path / "coco"
    dl.ensure_coco(root, base_url=server.url, files=manifest, progress=False)
    ann = root / "annotations" / "person_keypoints_val2017.json"
    gt = json.loads(ann.read_text())
    gt["images"].append({"id": 5, "file_name": "000000000005.jpg", "width": 8, "height": 6})
    ann.write_text(json.dumps(gt))
    with pytest.raises(KpbenchError, match=r"val2017\.zip: has no val2017/000000000005\.jpg, which the annotation"):
        dl.ensure_coco(root, base_url=server.url, files=manifest, progress=False)
    assert not list(root.glob(".val2017.extract-*")) and not (root / dl.LOCK_NAME).exists()


def test_offline_error_says_how_to_go_on(tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without network, `run --download` and `data download` name --base-url and where to put the files by hand."""
    base = f"http://127.0.0.1:{_closed_port()}"
    root = tmp_path / "coco"
    url = f"{base}/annotations/annotations_trainval2017.zip"
    hint = ("; pass --base-url URL (or set $KPBENCH_COCO_BASE_URL) for a mirror, or place the files by hand: "
            f"{root / 'annotations_trainval2017.zip'} (its size and md5 are checked, then it is extracted), or the "
            f"extracted {root}/annotations/person_keypoints_*.json; meanwhile `kpbench demo` runs offline on the COCO "
            "images shipped with kpbench\n")
    code, _, err = run_cli("data", "download", "--root", root, "--base-url", base, "--no-progress")
    assert code == 2 and err.endswith(hint) and "Traceback" not in err, err
    assert err.splitlines()[-1].startswith(f"error: {url}: cannot connect (") and err.count("error:") == 1
    monkeypatch.setenv("KPBENCH_COCO_BASE_URL", base)
    code, _, err = run_cli("run", "--download", "--coco-root", root, "--weights", "none", "--out", tmp_path / "run")
    assert code == 2 and err.startswith(f"error: {url}: cannot connect (") and err.endswith(hint), err
    assert err.count("\n") == 1
