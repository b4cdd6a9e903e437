"""Image files opened with Pillow's own format plugins, never through `PIL.Image.open` (for drawing and the HTML
page; a model run decodes with torchvision, `kpbench.data.coco.read_image_rgb`).

Ultralytics replaces `PIL.Image.open` when it is imported (`ultralytics.utils.patches`): a file Pillow cannot
identify then makes it try to pip-install pi-heif before it fails. In a process that imported ultralytics (`--model
yolo`, the demo), that would be a network call and a long wait for a file that is simply not an image. So kpbench
identifies and opens an image file the way `Image.open` does inside (each registered format's `accept` test on
the first 16 bytes, then the format's own image class, the common formats first, then every plugin), with
`PIL.Image.open` not called at all, and says in one line when no format fits.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from kpbench.core.errors import KpbenchError
from kpbench.core.io import read_file_bytes

if TYPE_CHECKING:
    from PIL import Image

PREFIX_BYTES = 16  # what Pillow's `accept` tests read


def _identified(data: bytes, filename: str) -> Image.Image | None:
    """The image of the first format that accepts `data` and opens it (Image.open's search), else None."""
    from PIL import Image

    prefix = data[:PREFIX_BYTES]
    tried: set[str] = set()
    for load_plugins in (Image.preinit, Image.init):  # the common formats first, then every plugin
        load_plugins()
        for name in [f for f in Image.ID if f not in tried]:
            tried.add(name)
            factory, accept = Image.OPEN[name]
            accepted = not accept or accept(prefix)
            if not accepted or isinstance(accepted, str):  # a str is Pillow's "this format, but unsupported"
                continue
            try:
                return factory(io.BytesIO(data), filename)
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue  # not this format after all (Image.open goes on to the next one too)
    return None


def _check_size(image: Image.Image, path: Path) -> None:
    """Pillow's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`), as Image.open applies it."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    pixels = image.size[0] * image.size[1]
    if limit and pixels > 2 * limit:
        raise KpbenchError(f"{path}: {image.size[0]} x {image.size[1]} pixels, more than twice Pillow's limit of "
                           f"{limit:,} (a decompression bomb?)")
    if limit and pixels > limit:
        warnings.warn(f"{path}: {pixels:,} pixels, more than Pillow's limit of {limit:,}",
                      Image.DecompressionBombWarning, stacklevel=3)


def open_image(path: str | Path) -> Image.Image:
    """The image file at `path` identified and opened by Pillow's format plugins (not decoded yet); a one-line
    KpbenchError for an empty file, a file no format identifies, or one too large."""
    path = Path(path)
    data = read_file_bytes(path, "image file")
    if not data:
        raise KpbenchError(f"{path}: cannot decode image (empty file)")
    try:
        image = _identified(data, str(path))
    except OSError as exc:  # a format's header cut short or damaged
        raise KpbenchError(f"{path}: cannot decode image ({exc})") from None
    if image is None:
        raise KpbenchError(f"{path}: cannot decode image (not an image Pillow can identify)")
    _check_size(image, path)
    return image


def read_image_pil(path: str | Path) -> Image.Image:
    """The image file at `path` decoded as RGB (8 bits per channel) by Pillow, without `PIL.Image.open` (module
    docstring). No EXIF rotation: the models and the COCO annotations use the stored pixel orientation."""
    image = open_image(path)
    try:
        return image.convert("RGB")
    except OSError as exc:  # a truncated or damaged file, found while decoding
        raise KpbenchError(f"{path}: cannot decode image ({exc})") from None
    finally:
        image.close()
