"""`kpbench export RUN_DIR --to coco|jsonl`: a run directory's detections (any format) for other tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kpbench.cli import options
from kpbench.cli.app import app


@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (any format: detections.bin or detections.jsonl).",
                                            metavar="RUN_DIR", show_default=False)],
    to: Annotated[str, typer.Option("--to", help="coco: keypoints_results.json and bbox_results.json (COCO results "
                                    "files); jsonl: one JSON line per image with every detection, as format-1 and "
                                    "format-2 run directories cached them.")] = "coco",
    out: Annotated[
        Path | None,
        options.out_option("coco: a folder [default: RUN_DIR]; jsonl: a file [default: "
                           "RUN_DIR/export/detections.jsonl]."),
    ] = None,
) -> None:
    """Write a run's cached detections as COCO results files or JSON lines, for tools that do not read kpbench's
    store. From Python: `kpbench.runs.arrays.read_run_arrays(RUN_DIR)` gives them as arrays (`.to_pandas()` as a
    DataFrame)."""
    from kpbench.runs.results import export_run

    for path in export_run(run_dir, to, out):
        typer.echo(f"wrote {path}")
