"""`kpbench data download`: fetch and extract the COCO 2017 keypoint annotations and images."""

from __future__ import annotations

from pathlib import Path

import typer

from kpbench.cli.app import data_app, echo_err


@data_app.command("download")
def download(
    root: Path = typer.Option(
        ..., "--root", help="COCO root to fill: ROOT/annotations/person_keypoints_SPLIT.json and ROOT/SPLIT/*.jpg."
    ),
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
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars on stderr."),
    timeout: float = typer.Option(60.0, "--timeout", min=1.0, max=86400.0, help="Network timeout in seconds per socket read."),
) -> None:
    """Download what is missing of COCO SPLIT into ROOT (resumable; checks size and md5; idempotent)."""
    from kpbench.data.download import ensure_coco

    ensure_coco(
        root, split, base_url=base_url, progress=progress, keep_archives=keep_archives, timeout=timeout, log=echo_err
    )
