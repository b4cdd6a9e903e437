"""kpbench's image decoding for drawing and the HTML page (`kpbench.data.images`) never calls `PIL.Image.open`,
which ultralytics replaces once imported: a file Pillow cannot identify then made it try to pip-install pi-heif."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kpbench.core.errors import KpbenchError
from kpbench.data.images import open_image, read_image_pil

ROOT = Path(__file__).resolve().parents[1]


def _images(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    made = {}
    for name, image, kind in (
        ("rgb.jpg", Image.fromarray(rgb), "JPEG"),
        ("rgb.png", Image.fromarray(rgb), "PNG"),
        ("rgba.png", Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA"), "PNG"),
        ("grey.png", Image.fromarray(rgb[..., 0], "L"), "PNG"),
        ("palette.gif", Image.fromarray(rgb).convert("P"), "GIF"),
        ("cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        ("rgb.bmp", Image.fromarray(rgb), "BMP"),
        ("rgb.webp", Image.fromarray(rgb), "WEBP"),
        ("rgb.tiff", Image.fromarray(rgb), "TIFF"),
    ):
        made[name] = folder / name
        image.save(made[name], kind)
    return made


def test_every_format_decodes_as_pillow_decodes_it(tmp_path: Path) -> None:
    for name, path in _images(tmp_path).items():
        with Image.open(path) as reference:
            expected = np.asarray(reference.convert("RGB"))
        decoded = read_image_pil(path)
        assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), expected), name
        with open_image(path) as opened:
            assert opened.format == Image.open(path).format


def test_what_is_not_an_image_is_one_line(tmp_path: Path) -> None:
    jpeg = _images(tmp_path)["rgb.jpg"].read_bytes()
    cases = {
        "empty.jpg": (b"", "cannot decode image (empty file)"),
        "text.jpg": (b"just some text, not an image\n" * 4, "cannot decode image (not an image Pillow can identify)"),
        "cut.jpg": (jpeg[: len(jpeg) // 2], "cannot decode image ("),  # in the decoder's words
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(KpbenchError) as info:
            read_image_pil(path)
        assert str(info.value).startswith(f"{path}: {message}"), str(info.value)
    with pytest.raises(KpbenchError, match="is a directory, expected a image file"):
        read_image_pil(tmp_path)


@pytest.mark.skipif(find_spec("ultralytics") is None, reason="ultralytics not installed (the yolo extra)")
def test_drawing_is_immune_to_ultralytics_patch_of_image_open(tmp_path: Path) -> None:
    """In a process that imported ultralytics, an image Pillow cannot identify made its patched Image.open call
    check_requirements('pi-heif') (a pip install). Now kpbench's decoding never reaches Image.open: an unreadable
    file is kpbench's one-line error, and the images decode to the same pixels. Run in a subprocess, since the
    patch stays for the life of the process."""
    images = _images(tmp_path)
    bad = tmp_path / "not_an_image.jpg"
    bad.write_bytes(b"\x00\x01 not an image " * 8)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from pathlib import Path
        import ultralytics.utils.patches  # noqa: F401  (what importing ultralytics' predictors does)
        import ultralytics.utils.checks as checks
        from PIL import Image
        assert Image.open.__module__ == "ultralytics.utils.patches", Image.open.__module__

        def no_pip(*args, **kwargs):
            raise SystemExit("ultralytics' patched Image.open tried to install " + repr(args))

        checks.check_requirements = no_pip
        from kpbench.core.errors import KpbenchError
        from kpbench.report.draw import _check_image_header, _open_rgb
        for path, expected in {{{", ".join(f"{str(p)!r}: {str(p)!r}" for p in images.values())}}}.items():
            assert np.array_equal(np.asarray(_open_rgb(Path(path))), np.load(expected + ".npy")), path
        for check in (_open_rgb, _check_image_header):
            try:
                check(Path({str(bad)!r}))
            except KpbenchError as exc:
                print(exc)
            else:
                sys.exit("no error")
    """)
    for path in images.values():
        with Image.open(path) as reference:
            np.save(str(path) + ".npy", np.asarray(reference.convert("RGB")))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "YOLO_CONFIG_DIR": str(tmp_path)}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    errors = [line for line in proc.stdout.splitlines() if "cannot decode" in line]
    assert errors == [f"{bad}: cannot decode image (not an image Pillow can identify)"] * 2
