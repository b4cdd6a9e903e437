"""`kpbench evaluate`: score a COCO results file (or a run directory's cache) with COCOeval.

This is the command whose own cost matters (item 10 of issue 11): it imports the evaluation modules only when it
runs, and nothing here imports torch, pandas or matplotlib."""

# No `from __future__ import annotations`: typer reads the command's signature on every call, and string
# annotations cost it ~50 typing.ForwardRef compilations (~1 ms); these are evaluated once, at import.

import contextlib
import gc
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from kpbench.cli import options
from kpbench.cli.app import app, echo_err
from kpbench.core.errors import KpbenchError


def _one_blas_thread() -> None:
    """OpenBLAS starts with one spinning worker thread per core when numpy loads (about 40 ms of CPU, half a
    small evaluation's, on a 2-core machine) though evaluation makes no BLAS call: with numpy not yet imported and
    the user's own setting absent, numpy's OpenBLAS is asked for one thread."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


# glibc's mallopt parameters (malloc.h) and the values `_keep_freed_memory` sets.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MALLOC_SETTINGS = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, (1 << 31) - 1), (_M_TOP_PAD, 64 << 20))


def _keep_freed_memory() -> None:
    """glibc hands every freed block of a few MB back to the kernel, so each large temporary of the parse and the
    evaluation starts on fresh pages: at val2017 scale 50,000+ page faults, a third of the process's CPU time
    (system time). Asked to serve blocks up to 32 MB from its heap and to keep what is freed (for this short-lived
    process), it reuses them. Other C libraries (no mallopt) are left as they are."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    for parameter, value in _MALLOC_SETTINGS:
        mallopt(parameter, value)


@contextlib.contextmanager
def _loading_evaluation_modules() -> Iterator[None]:
    """The cyclic garbage collector paused while the evaluation modules (numpy and msgspec among them) load, and,
    the first time in a process, what they made frozen (gc.freeze: left out of every later collection). Loading
    them otherwise starts ~30 collections that walk the same long-lived objects again and again (~10 ms, a tenth of
    what a `kpbench evaluate` of 5000 images costs beyond a bare hotcoco script); none of those objects is garbage."""
    first = "kpbench.evaluation.cocoeval" not in sys.modules
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if first:
            gc.freeze()
        if collecting:
            gc.enable()


@app.command("evaluate")
def evaluate_command(
    source: options.Source = None,
    results_json: options.Results = None,
    iou_type: Annotated[str | None, options.iou_type_option(" (a run directory shows both by default)")] = None,
    backend: options.Backend = "vectorized",
    fmt: Annotated[
        str, options.format_option("table or markdown (percent), json or csv (fractions at full precision).")
    ] = "table",
    out: Annotated[Path | None, options.out_option("Also write metrics.csv, metrics.md and metrics.json here.")] = None,
    validate: Annotated[
        bool,
        typer.Option(help="Check the inputs first (--no-validate hands the files to the backend unchecked; "
                          "not for a run directory, whose inputs are always checked)."),
    ] = True,
    schema_name: options.SchemaName = None,
    sigmas: options.Sigmas = None,
    max_dets: options.MaxDets = None,
    area_ranges: options.AreaRanges = None,
    iou_thresholds: options.IouThresholds = None,
    use_cats: options.UseCats = True,
    drop_zero_keypoints: options.DropZeroKeypoints = False,
    wholebody: Annotated[
        bool, typer.Option("--wholebody", help="Score a COCO-WholeBody file by part (body, foot, face, hands, whole body).")
    ] = False,
    bootstrap: options.Bootstrap = None,
    bootstrap_seed: options.BootstrapSeed = 0,
    per_keypoint: Annotated[
        bool,
        typer.Option("--per-keypoint", help="Also AP per keypoint and per keypoint group: COCOeval on each group's "
                     "keypoints and sigmas, num_keypoints recounted (see the README). Printed after the stats "
                     "(--format csv prints this table alone; its 'all' row holds the stats), written as "
                     "keypoint_ap.csv/.md/.json with --out or into RUN_DIR."),
    ] = False,
    groups: options.Groups = None,
    run_alias: options.RunAlias = None,
    gt_alias: options.GtAlias = None,
    results_alias: options.ResultsAlias = None,
) -> None:
    """Evaluate COCO keypoint or box results against ground truth: pycocotools' numbers, bit for bit.

    Prints the summary stats. table and markdown (meant for people) show them in percent with one decimal, n/a
    where COCO gives -1 (no GT in that area range); --format markdown prints what metrics.md holds. json and csv
    keep COCO's fractions at full precision, -1 included.

    --per-keypoint adds AP per keypoint and per keypoint group (the schema's groups, or --groups, which implies
    it); --format json then prints {"stats": {...}, "keypoint_ap": [rows]}.

    --format json prints one flat object whose keys are the stat names ({"AP": ..., "AP50": ...}) for one iou
    type. For a run directory and no --iou-type it prints both, nested by iou type ({"keypoints": {...}, "bbox": {...}}),
    which is the layout of metrics.json (always nested, also for one iou type).

    RUN_DIR (a run directory) rebuilds the run's results from its detections cache, checks them, and rewrites the run's
    keypoints_results.json, bbox_results.json, metrics.csv/.md/.json and the evaluation record in manifest.json
    (each file is listed on stderr as "wrote PATH"). It evaluates both iou types; --iou-type picks the one shown.
    """
    _one_blas_thread()
    _keep_freed_memory()
    with _loading_evaluation_modules():
        if (backend == "vectorized" and validate and not wholebody and results_json is not None
                and source is not None and os.path.isfile(source)):
            from kpbench.core.io import read_ahead

            read_ahead(source, results_json)  # the two files, read while the modules below load
        from kpbench.core.io import check_format, discard_read_ahead, ensure_output_dir, to_csv
        from kpbench.evaluation import fastparse  # noqa: F401  (the default backend's parser, loaded here with the rest)
        from kpbench.evaluation.cocoeval import (
            check_backend,
            evaluate,
            format_stats_markdown,
            format_stats_table,
            metrics_json,
            metrics_rows,
            write_metrics,
        )
        from kpbench.evaluation.cocofiles import check_iou_type

    check_format(fmt)
    if iou_type is not None:
        check_iou_type(iou_type)
    check_backend(backend)
    given = options.sources("evaluate", source, results_json, run_alias, gt_alias, results_alias)
    run = given.run_dir
    if run is not None and not validate:
        raise KpbenchError(
            "--no-validate: not for a run directory (a run's results are rebuilt from its cache and always checked)"
        )
    if out is not None:
        ensure_output_dir(out)  # before the evaluation: a bad --out fails at once

    settings = options.eval_settings(max_dets, area_ranges, iou_thresholds, use_cats)
    schema, sigma_values = options.schema_and_sigmas(schema_name, sigmas)
    customised = schema is not None or sigma_values is not None or not settings.is_default() or drop_zero_keypoints
    keypoint_only = schema is not None or sigma_values is not None or drop_zero_keypoints or wholebody
    if keypoint_only and iou_type == "bbox":
        raise KpbenchError("--schema, --sigmas, --drop-zero-keypoints and --wholebody are for keypoints, not --iou-type bbox")
    if bootstrap is not None or bootstrap_seed != 0:  # (the default seed needs no check, nor its module loaded)
        from kpbench.analysis.bootstrap import check_bootstrap

        check_bootstrap(bootstrap, bootstrap_seed)  # bounds, before the evaluation; memory once the images are known
    group_spec = options.groups_spec(groups)
    per_keypoint = per_keypoint or group_spec is not None  # --groups asks for AP per group
    if per_keypoint and (iou_type == "bbox" or wholebody):
        raise KpbenchError("--per-keypoint and --groups are for keypoints, not --iou-type bbox or --wholebody "
                           "(which already scores each part)")
    # --groups against the keypoint set before any evaluation where it is known (a run's, --schema's), else
    # against the GT's once it is read, before anything is printed.
    options.checked_groups(group_spec, options.run_schema(run) if run is not None else schema)
    if run is not None:
        from kpbench.evaluation.runeval import evaluate_run, summarize_run

        if customised or wholebody:
            raise KpbenchError("--schema, --sigmas, --wholebody, --drop-zero-keypoints and the COCOeval options are "
                               "for GT_JSON RESULTS_JSON; a run directory is scored with its own schema")
        results = evaluate_run(run, backend=backend, on_write=lambda path: echo_err(f"wrote {path}"),
                               on_keep=lambda path: echo_err(f"kept {path} (up to date with the run's detections)"))
        shown = results if iou_type is None else {iou_type: results[iou_type]}
    elif wholebody:
        from kpbench.evaluation.wholebody import evaluate_wholebody

        assert given.gt is not None and given.results is not None
        # --drop-zero-keypoints is what --wholebody does anyway (xtcocotools' rule, per part): accepted.
        if schema is not None or sigma_values is not None or not settings.is_default() \
                or iou_type not in (None, "keypoints"):
            raise KpbenchError("--wholebody: scores every part with COCO-WholeBody's own sigmas and COCO's parameters")
        results = evaluate_wholebody(given.gt, given.results, backend=backend)
        shown = results
    else:
        assert given.gt is not None and given.results is not None
        kind = iou_type or "keypoints"
        results = {kind: evaluate(given.gt, given.results, iou_type=kind, backend=backend, validate=validate,
                                  schema=schema, sigmas=sigma_values, settings=settings,
                                  drop_zero_keypoint_results=drop_zero_keypoints)}
        discard_read_ahead()  # (what the evaluation did not take: its files are read)
        shown = results
        if per_keypoint:
            options.checked_groups(group_spec, results[kind].schema)
    for result in shown.values():
        for note in result.notes:
            echo_err(f"note: {note}")
    part_ap = None
    if per_keypoint:
        from kpbench.analysis.keypoint_ap import keypoint_ap, keypoint_ap_for_run, write_keypoint_ap_files

        if run is not None:
            part_ap = keypoint_ap_for_run(run, groups=group_spec, result=results.get("keypoints"))
            for path in write_keypoint_ap_files(run, part_ap):
                echo_err(f"wrote {path}")
        else:
            part_ap = keypoint_ap(given.gt, given.results, schema=schema, sigmas=sigma_values, groups=group_spec,  # type: ignore[arg-type]
                                  settings=settings, drop_zero_keypoint_results=drop_zero_keypoints)
    intervals = None
    if bootstrap is not None:
        from kpbench.analysis.bootstrap import bootstrap_intervals

        intervals = {t: bootstrap_intervals(r, bootstrap, bootstrap_seed) for t, r in shown.items()}
    if fmt == "json":
        payload = metrics_json(shown)
        params = payload.pop("params", None)  # recorded in metrics.json; the flat object holds stats only
        body = next(iter(payload.values())) if len(payload) == 1 else {**payload, **({"params": params} if params else {})}
        extra: dict[str, object] = {}
        if intervals is not None:
            extra["intervals"] = intervals
        if part_ap is not None:
            extra["keypoint_ap"] = part_ap.rows()
        typer.echo(json.dumps({"stats": body, **extra} if extra else body, indent=2))
    elif fmt == "csv" and part_ap is not None:
        from kpbench.analysis.keypoint_ap import table_text

        typer.echo(table_text(part_ap, "csv"), nl=False)
    elif fmt == "csv":
        typer.echo(to_csv(metrics_rows(shown)), nl=False)
    elif fmt == "markdown":
        typer.echo(format_stats_markdown(shown), nl=False)
    elif run is not None:
        typer.echo(summarize_run(run, shown), nl=False)
    else:
        typer.echo(format_stats_table(shown), nl=False)
    if part_ap is not None and fmt in ("table", "markdown"):
        from kpbench.analysis.keypoint_ap import table_text

        for note in part_ap.notes:
            if not any(note == n for r in shown.values() for n in r.notes):
                echo_err(f"note: {note}")
        typer.echo("\n" + table_text(part_ap, fmt), nl=False)
    if intervals is not None and fmt != "json":
        from kpbench.analysis.bootstrap import interval_rows_percent
        from kpbench.core.io import to_markdown, to_text_table

        rows = [{"iou_type": t, **r} for t, rs in intervals.items() for r in rs]
        rows = rows if fmt == "csv" else interval_rows_percent(rows)  # percent beside the percent stats
        render = to_csv if fmt == "csv" else to_markdown if fmt == "markdown" else to_text_table
        echo_err(f"bootstrap: {bootstrap} replicates over images, seed {bootstrap_seed}, 95% percentile intervals"
                 f"{'' if fmt == 'csv' else ' (percent)'}")
        typer.echo(render(rows, ["iou_type", "stat", "value", "low", "high"]), nl=False)
    if out is not None:
        for path in write_metrics(out, results):
            echo_err(f"wrote {path}")
        if part_ap is not None:
            from kpbench.analysis.keypoint_ap import write_keypoint_ap_files

            for path in write_keypoint_ap_files(out, part_ap):
                echo_err(f"wrote {path}")
