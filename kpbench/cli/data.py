"""`kpbench data download`: fetch and extract the COCO 2017 keypoint annotations and images."""

from __future__ import annotations

from typing import Annotated

import typer

from kpbench.cli import options
from kpbench.cli.app import data_app, echo_err


@data_app.command("download")
def download(
    coco_root: Annotated[
        str | None,
        typer.Option(
            "--coco-root",
            help="COCO root to fill: ROOT/annotations/person_keypoints_SPLIT.json and ROOT/SPLIT/*.jpg "
            "[default: $KPBENCH_COCO_ROOT].",
            show_default=False,
        ),
    ] = None,
    split: str = typer.Option("val2017", "--split", help="Image split: val2017 (778 MiB) or train2017 (18 GiB)."),
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        help="Mirror serving annotations/annotations_trainval2017.zip and zips/SPLIT.zip "
        "[default: $KPBENCH_COCO_BASE_URL, else http://images.cocodataset.org]. "
        "Size and md5 are always checked against the official archives.",
        show_default=False,
    ),
    keep_archives: bool = typer.Option(False, "--keep-archives", help="Keep the .zip files after extraction."),
    progress: options.Progress = True,
    timeout: float = typer.Option(60.0, "--timeout", min=1.0, max=86400.0, help="Network timeout in seconds per socket read."),
    root_alias: options.RootAlias = None,
) -> None:
    """Download what is missing of COCO SPLIT into the COCO root (resumable; checks size and md5; idempotent)."""
    import os
    from pathlib import Path

    from kpbench.core.errors import KpbenchError
    from kpbench.data.coco import COCO_ROOT_ENV
    from kpbench.data.download import ensure_coco

    root, _ = options.alias(coco_root, root_alias, "--coco-root", "--root")
    root = root if root is not None else os.environ.get(COCO_ROOT_ENV)
    if root is None:
        raise KpbenchError(f"no COCO root given: pass --coco-root DIR or set {COCO_ROOT_ENV}")
    ensure_coco(
        Path(str(root)).expanduser(), split, base_url=base_url, progress=progress, keep_archives=keep_archives,
        timeout=timeout, log=echo_err,
    )
