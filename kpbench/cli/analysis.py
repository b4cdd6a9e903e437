"""`kpbench compare` (is a difference between two runs real?) and `kpbench html` (one page per run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kpbench.cli import options
from kpbench.cli.app import app, echo_err


@app.command("compare")
def compare_command(
    run_a: Annotated[Path, typer.Argument(help="The first run directory (the baseline).", show_default=False)],
    run_b: Annotated[Path, typer.Argument(help="The second run directory, on the same ground truth.", show_default=False)],
    replicates: Annotated[int, typer.Option("--bootstrap", help="Paired image-bootstrap replicates.")] = 1000,
    seed: options.BootstrapSeed = 0,
    iou_type: Annotated[str, options.iou_type_option("")] = "keypoints",
    fmt: Annotated[str, options.format_option("table, markdown, csv or json.")] = "table",
    out: Annotated[Path | None, options.out_option("Also write compare.json here.")] = None,
) -> None:
    """Compare two runs on the same ground truth: each stat's difference (B - A) with a paired bootstrap interval
    (the same resampled images for both runs), and the images where they differ most at OKS 0.5."""
    from kpbench.analysis.bootstrap import check_bootstrap, compare_runs, comparison_rows_percent
    from kpbench.core.io import check_format, ensure_output_dir, render, write_json
    from kpbench.evaluation.cocofiles import check_iou_type

    check_bootstrap(replicates, seed)  # bounds, before the runs are scored; memory once the images are known
    check_format(fmt)
    check_iou_type(iou_type)
    if out is not None:
        ensure_output_dir(out)
    comparison = compare_runs(run_a, run_b, replicates, seed, iou_types=(iou_type,))[iou_type]
    payload = {"run_a": str(run_a), "run_b": str(run_b), "iou_type": iou_type, "stats": comparison.rows,
               "images": comparison.images}
    if fmt == "json":
        typer.echo(json.dumps(payload, indent=2))
    else:
        columns = ["stat", "a", "b", "delta", "low", "high", "significant"]
        people = fmt in ("table", "markdown")  # percent for people; csv keeps the fractions, as json does
        if people:
            echo_err(f"compare: B - A in percent points (a and b in percent, n/a: no GT in that range); paired "
                     f"bootstrap of {replicates} replicates over images, seed {seed}, 95% percentile intervals")
        typer.echo(render(comparison_rows_percent(comparison.rows) if people else comparison.rows, fmt, columns),
                   nl=False)
        if comparison.images and fmt != "csv":
            typer.echo("\nImages that differ most (true and false positives above 0.5 at OKS 0.5):")
            typer.echo(render(comparison.images, fmt), nl=False)
    if out is not None:
        path = Path(out) / "compare.json"
        write_json(path, payload)
        echo_err(f"wrote {path}")


@app.command("html")
def html_command(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR...", help="One or more run directories or `kpbench sweep` folders (a sweep folder: its runs, speed tables, merged table and cells).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path("report.html"),
    speed: Annotated[
        list[Path] | None,
        typer.Option("--speed", help="`kpbench speed` CSV files to show: --speed results/speed/*.csv (a .csv given "
                     "as an argument is a speed CSV too, so the shell's glob works), or repeat the option."),
    ] = None,
    images: Annotated[bool, typer.Option("--images/--no-images", help="Draw the worst images (needs the run's image files).")] = True,
) -> None:
    """Write one self-contained HTML page (inline CSS, embedded figures, no network) for the runs: model, protocol
    and deviations, metrics beside the published numbers, threshold tables and curves, the per-keypoint breakdown,
    the worst images, and speed rows; with several runs, a comparison table first."""
    from kpbench.report.html import write_html

    path = write_html(runs, out, speed or (), images=images)
    echo_err(f"wrote {path}")
