"""The files and tables of the error analysis: errors_keypoints.{csv,md,json}, errors_ap_gain.{csv,md,json},
errors_pr_curves.png, analyze.json, and NAME.{csv,md,json} for each section of `ErrorAnalysis.extra` that is a
table; and the tables for people (percent with one decimal; CSV and JSON keep the fractions).

A section with a "rows" list (and optional "title", "note", "columns" and "percent") is a table: it is written as
NAME.csv/.md/.json and printed by `kpbench analyze` (`kpbench.analysis.diagnose` adds the sensitivity,
score-threshold and keypoint-AP tables this way).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kpbench.analysis.errors.definitions import AP_COLUMNS, GAIN_STEM, KEYPOINTS_STEM, PR_FILE, REPORT_FILE
from kpbench.analysis.errors.result import ErrorAnalysis

KEYPOINTS_NOTE = """\
Detections matched to a GT person by COCOeval at OKS 0.1 (area "all", top 20 per image); per keypoint labelled
in the matched GT, the class of its best reference (the matched person's keypoint, its left/right flip, or
another person's keypoint or flip), by the keypoint similarity ks:
good (matched, ks >= 0.85), jitter (matched, 0.5 <= ks < 0.85), inversion (flip, ks >= 0.5),
swap (another person, ks >= 0.5), miss (best ks < 0.5). The `all` row pools every keypoint.
"""

GAIN_NOTE = """\
AP, AP50 and AP75 per area range after each correction, alone and cumulatively (miss, + swap, + inversion,
+ jitter, + score, + background FP, + background FN), and the gain over the uncorrected detections (the
baseline row). Corrections: a jitter moved to ks 0.85, a miss to ks 0.5, an inversion or a swap onto the GT
keypoint; each score replaced by the detection's best OKS; background false positives removed and false
negatives ignored.
"""

COCO_ANALYZE_KEYPOINTS_NOTE = """\
coco-analyze's classification: detections matched to a GT person by COCOeval at OKS 0.1 in its area "all"
([32², 1e10], top 20 per image; a match to a person the range ignores counts), per keypoint labelled in the
matched GT the class of its best reference (ties: the matched person, the others, the matched person flipped,
the others flipped): good (matched, ks > 0.85), jitter (matched, 0.5 <= ks < 0.85), inversion, swap, miss (best
ks < 0.5); ks exactly 0.85 is in no class (unclassified). The `all` row pools every keypoint.
"""

COCO_ANALYZE_GAIN_NOTE = """\
coco-analyze's AP gains, each area range analysed on its own: each correction alone (errorsAPImpact) and
cumulatively (COCOanalyze.summarize: miss, + swap, + inversion, + jitter, + score, + background FP, + background
FN), and the gain over the baseline row; the alone background_fn row removes false positives too and its gain is
over the background_fp row. Corrections move a keypoint to (g_x + r, g_y), r = sqrt(-ln(k) · 2 · area · σ²):
k = 0.85 (jitter), 0.5 (miss), its ks with the wrong reference (swap, inversion); scores become the best OKS with
the range's persons, then soft-NMS; background errors are taken at each OKS threshold.
"""


def count_columns(analysis: ErrorAnalysis) -> list[str]:
    """The columns of the per-keypoint table."""
    types = [*analysis.error_types, *(("unclassified",) if analysis.mode.coco_analyze else ())]
    return ["keypoint", "n", *types, *(f"frac_{t}" for t in types)]


GAIN_COLUMNS: tuple[str, ...] = ("how", "correction", "area", "AP", "gain_AP", "AP50", "gain_AP50", "AP75",
                                 "gain_AP75")


def gain_rows_percent(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The gain table for people: AP in percent with one decimal, n/a for COCO's -1 (no GT in the area range)."""
    from kpbench.evaluation.cocoeval import percent

    out = []
    for row in rows:
        shown = dict(row)
        for column, _ in AP_COLUMNS:
            shown[column] = percent(row[column])
            g = row[f"gain_{column}"]
            shown[f"gain_{column}"] = "n/a" if g is None else f"{100 * g:+.1f}"
        out.append(shown)
    return out


def count_rows_percent(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-keypoint counts for people: fractions in percent with one decimal."""
    return [{k: (v if not k.startswith("frac_") else "n/a" if v is None else f"{100 * v:.1f}") for k, v in row.items()}
            for row in rows]


def table_sections(analysis: ErrorAnalysis) -> dict[str, dict[str, Any]]:
    """The sections of `analysis.extra` that are tables: {"rows": [...]} with optional "title", "note" and
    "columns" (what other analyses add; see `kpbench.analysis.diagnose`)."""
    return {name: section for name, section in analysis.extra.items()
            if isinstance(section, dict) and isinstance(section.get("rows"), list)}


def section_rows_percent(section: dict[str, Any]) -> list[dict[str, Any]]:
    """A table section's rows for people: its "percent" columns in percent with one decimal, n/a for COCO's -1."""
    from kpbench.evaluation.cocoeval import percent

    columns = section.get("percent") or []
    return [{k: (percent(v) if k in columns and v is not None else v) for k, v in row.items()} for row in section["rows"]]


def section_files(out: Path, analysis: ErrorAnalysis) -> dict[Path, str]:
    """NAME.csv, NAME.md and NAME.json for each table section of `analysis.extra`."""
    from kpbench.core.io import json_text, to_csv, to_markdown

    files: dict[Path, str] = {}
    for name, section in table_sections(analysis).items():
        rows, columns = section["rows"], section.get("columns")
        note = f"{section['note']}\n\n" if section.get("note") else ""
        files[out / f"{name}.csv"] = to_csv(rows, columns)
        shown = section_rows_percent(section)
        unit = (f"\n{section.get('unit') or 'AP in percent; n/a where the bin has no GT.'}\n" if section.get("percent")
                else "")
        files[out / f"{name}.md"] = f"## {section.get('title', name)}\n\n{note}{to_markdown(shown, columns)}{unit}"
        files[out / f"{name}.json"] = json_text(section)
    return files


def write_error_files(out_dir: str | Path, analysis: ErrorAnalysis, plot: bool = True) -> list[Path]:
    """Write errors_keypoints.{csv,md,json}, errors_ap_gain.{csv,md,json}, NAME.{csv,md,json} for each table
    section of `analysis.extra`, errors_pr_curves.png and analyze.json into out_dir (the tables atomically, as one
    set); returns the paths."""
    from kpbench.core.io import atomic_write_files, json_text, to_csv, to_markdown

    out = Path(out_dir)
    coco = analysis.mode.coco_analyze
    columns = count_columns(analysis)
    notes = "".join(f"- {n}\n" for n in analysis.notes)
    payload = analysis.to_json()
    paths = atomic_write_files({
        out / f"{KEYPOINTS_STEM}.csv": to_csv(analysis.counts, columns),
        out / f"{KEYPOINTS_STEM}.md": (f"## Keypoint localisation errors ({analysis.mode.name} mode)\n\n"
                                       + (COCO_ANALYZE_KEYPOINTS_NOTE if coco else KEYPOINTS_NOTE) + "\n"
                                       + to_markdown(count_rows_percent(analysis.counts), columns)
                                       + "\nFractions in percent.\n"),
        out / f"{KEYPOINTS_STEM}.json": json_text({"mode": analysis.mode.name, "rows": analysis.counts}),
        out / f"{GAIN_STEM}.csv": to_csv(analysis.ap_gain, GAIN_COLUMNS),
        out / f"{GAIN_STEM}.md": (f"## AP gained by correcting each error ({analysis.mode.name} mode)\n\n"
                                  + (COCO_ANALYZE_GAIN_NOTE if coco else GAIN_NOTE)
                                  + "\n" + to_markdown(gain_rows_percent(analysis.ap_gain), GAIN_COLUMNS)
                                  + "\nAP in percent; n/a where the area range has no GT.\n"
                                  + (f"\nNotes:\n\n{notes}" if notes else "")),
        out / f"{GAIN_STEM}.json": json_text({"mode": analysis.mode.name, "rows": analysis.ap_gain}),
        **section_files(out, analysis),
        out / REPORT_FILE: json_text(payload),
    })
    if plot:
        from kpbench.report.figures import plot_error_pr_curves

        paths.append(plot_error_pr_curves(analysis.pr_curves, out / PR_FILE, analysis.mode.name))
    return paths
