"""`kpbench analyze`: why AP is lost (keypoint errors, scoring and background errors, and what each costs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from kpbench.cli import options
from kpbench.cli.app import app, echo_err
from kpbench.core.errors import KpbenchError

TABLES = ("keypoints", "gain", "sensitivity", "score_threshold", "keypoint_ap")



@app.command("analyze")
def analyze_command(
    source: options.Source = None,
    results_json: options.Results = None,
    gt_alias: options.GtAlias = None,
    results_alias: options.ResultsAlias = None,
    coco_analyze: Annotated[
        bool,
        typer.Option("--coco-analyze", help="Reproduce coco-analyze's numbers with its own procedure: its area "
                     "ranges (all = [32², 1e10]) each analysed on its own, good as ks > 0.85, its σ² corrections "
                     "(jitter to ks 0.96, miss to 0.84), soft-NMS rescoring, background errors per OKS threshold."),
    ] = False,
    schema_name: options.SchemaName = None,
    sigmas: options.Sigmas = None,
    bootstrap: options.Bootstrap = None,
    bootstrap_seed: options.BootstrapSeed = 0,
    groups: options.Groups = None,
    fmt: Annotated[
        str, options.format_option("table or markdown (AP in percent), csv (one table, see --table) or json "
                                   "(everything, as analyze.json).")
    ] = "table",
    table: Annotated[
        str | None,
        typer.Option("--table", help="keypoints, gain, sensitivity, score_threshold or keypoint_ap: the table to print "
                     "[default: gain for csv; all for table and markdown].", show_default=False),
    ] = None,
    out: Annotated[
        Path | None,
        options.out_option("Write errors_keypoints.*, errors_ap_gain.*, sensitivity.*, score_threshold.*, keypoint_ap.*, "
                           "errors_pr_curves.png and analyze.json here [default: RUN_DIR; nothing for GT_JSON "
                           "RESULTS_JSON].")
    ] = None,
) -> None:
    """Error diagnosis of keypoint results (Ronchi & Perona, ICCV 2017; coco-analyze): why AP is lost.

    Usage: kpbench analyze RUN_DIR, or kpbench analyze GT_JSON RESULTS_JSON. Files go into RUN_DIR (or --out).

    Detections are matched to GT persons by COCOeval at OKS 0.1 (top 20 per image). Each keypoint labelled in the
    matched GT is good (ks >= 0.85 to its own GT keypoint), jitter (0.5 <= ks < 0.85), inversion (closest to the
    left/right flip of its person), swap (closest to another person) or miss (no reference at ks >= 0.5).

    Then each error is corrected (jitter moved to ks 0.85, miss to 0.5, inversion and swap onto the GT keypoint;
    scores replaced by the best OKS; background false positives removed and false negatives ignored), alone and
    cumulatively, and the AP, AP50 and AP75 gained are reported per area range (all, medium, large).

    Also: keypoint AP by visible keypoints and by overlap with other persons (sensitivity), and the LRP-optimal
    person-score threshold on OKS 0.5 beside the best-F1 one (score_threshold), and AP per keypoint and per
    keypoint group (keypoint_ap; the schema's groups, or --groups).

    --coco-analyze reproduces coco-analyze's own numbers, whose definitions differ (see the README).
    --bootstrap N adds percentile intervals on every stat of the plain evaluation.
    """
    from kpbench.analysis.diagnose import diagnose, diagnose_run, section_rows_percent
    from kpbench.analysis.errors import (
        GAIN_COLUMNS,
        count_columns,
        count_rows_percent,
        gain_rows_percent,
        table_sections,
        write_error_files,
    )
    from kpbench.core.io import check_format, ensure_output_dir, render

    check_format(fmt)
    options.check_table(table, TABLES, fmt, "everything")
    from kpbench.analysis.bootstrap import check_bootstrap

    check_bootstrap(bootstrap, bootstrap_seed)  # bounds, before the analysis; memory once the images are known
    given = options.sources("analyze", source, results_json, None, gt_alias, results_alias)
    schema, sigma_values = options.schema_and_sigmas(schema_name, sigmas)
    group_spec = options.groups_spec(groups)
    if out is not None:
        ensure_output_dir(out)  # before the analysis: a bad --out fails at once
    if given.run_dir is not None:
        if schema is not None or sigma_values is not None:
            raise KpbenchError("--schema and --sigmas are for GT_JSON RESULTS_JSON; a run directory is analysed with "
                               "its own schema")
        options.checked_groups(group_spec, options.run_schema(given.run_dir))  # before the analysis
        analysis = diagnose_run(given.run_dir, coco_analyze=coco_analyze, bootstrap=bootstrap,
                                seed=bootstrap_seed, groups=group_spec)
        out_dir: Path | None = out or given.run_dir
    else:
        assert given.gt is not None and given.results is not None
        gt: Any = given.gt
        if group_spec is not None:  # checked against the GT's keypoint set before the analysis (read once)
            from kpbench.evaluation.cocofiles import load_ground_truth

            gt = load_ground_truth(gt, "keypoints", schema, sigma_values)
            options.checked_groups(group_spec, gt.schema)
        analysis = diagnose(gt, given.results, schema=schema, sigmas=sigma_values,
                             coco_analyze=coco_analyze, bootstrap=bootstrap, seed=bootstrap_seed, groups=group_spec)
        out_dir = out
    for note in analysis.notes:
        echo_err(f"note: {note}")

    if fmt == "json":
        typer.echo(json.dumps(analysis.to_json(), indent=2, allow_nan=False))
    else:
        shown = table or ("gain" if fmt == "csv" else None)
        people = fmt in ("table", "markdown")
        parts = []
        if shown in (None, "keypoints"):
            rows = count_rows_percent(analysis.counts) if people else analysis.counts
            title = f"Keypoint errors ({analysis.mode.name} mode; fractions in percent):\n" if people else ""
            parts.append(title + render(rows, fmt, count_columns(analysis)))
        if shown in (None, "gain"):
            rows = gain_rows_percent(analysis.ap_gain) if people else analysis.ap_gain
            title = "AP gained by each correction, alone and cumulative (percent; n/a: no GT in the area):\n" if people else ""
            parts.append(title + render(rows, fmt, list(GAIN_COLUMNS)))
        if people and analysis.intervals is not None:
            from kpbench.analysis.bootstrap import interval_rows_percent

            echo_err(f"bootstrap: {bootstrap} replicates over images, seed {bootstrap_seed}, 95% percentile "
                     "intervals on the plain evaluation (COCO's parameters)")
            parts.append("Bootstrap intervals (percent):\n" + render(interval_rows_percent(analysis.intervals), fmt,
                                                                      ["stat", "value", "low", "high"]))
        for name, section in table_sections(analysis).items():  # sections other analyses add (ErrorAnalysis.extra)
            if shown == name or (shown is None and people):
                title = f"{section.get('title', name)}:\n" if people else ""
                rows = section_rows_percent(section) if people else section["rows"]
                unit = f"{section['unit']}\n" if people and section.get("unit") else ""
                parts.append(title + render(rows, fmt, section.get("columns")) + unit)
        typer.echo("\n".join(parts), nl=False)
    if out_dir is not None:
        for path in write_error_files(out_dir, analysis):
            echo_err(f"wrote {path}")
