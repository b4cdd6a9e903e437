"""The HTML report: one self-contained page, rendered by a real browser (headless Chromium, when installed; .ci/run
installs Debian's chromium), whose every metric shown equals the run's metrics.json."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from kpdata import make_run_dir

from kpbench.analysis.diagnose import diagnose_run
from kpbench.analysis.errors import write_error_files
from kpbench.core.errors import KpbenchError
from kpbench.evaluation.runeval import evaluate_run
from kpbench.report.html import build_html, percent_text, write_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
requires_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")


class _Metrics(HTMLParser):
    """The metric cells of a page: (iou type, stat, data-value, shown text)."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, str, str, str]] = []
        self._open: dict[str, str] | None = None
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "td" and a.get("class") == "metric":
            self._open = a
        for key in ("src", "href"):
            if key in a and not a[key].startswith("data:"):
                self.external.append(a[key])

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.cells.append((self._open["data-iou-type"], self._open["data-stat"], self._open["data-value"], data))
            self._open = None


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_run_dir(tmp_path_factory.mktemp("html")).path
    # Move image 7's GT person 60 px: its detection (0.95) becomes a false positive and the person a miss.
    gt_file = run / "ground_truth.json"
    gt = json.loads(gt_file.read_text())
    for ann in gt["annotations"]:
        if ann["image_id"] == 7:
            ann["keypoints"] = [v + 60 if i % 3 == 0 else v for i, v in enumerate(ann["keypoints"])]
            ann["bbox"][0] += 60
    gt_file.write_text(json.dumps(gt))
    evaluate_run(run)  # writes metrics.json
    return run


def _check_numbers(page: str, run: Path) -> int:
    metrics = json.loads((run / "metrics.json").read_text())
    parser = _Metrics()
    parser.feed(page)
    assert parser.external == []  # nothing fetched: no script, stylesheet, font or image from anywhere
    for iou_type, stat, value, shown in parser.cells:
        assert float(value) == metrics[iou_type][stat]
        assert shown == percent_text(metrics[iou_type][stat])
    assert {(t, s) for t, s, _, _ in parser.cells} == {(t, s) for t, stats in metrics.items() for s in stats}
    return len(parser.cells)


def test_page_is_self_contained_and_shows_the_metrics(run_dir: Path, tmp_path: Path) -> None:
    out = write_html([run_dir], tmp_path / "report.html")
    page = out.read_text()
    assert _check_numbers(page, run_dir) == 22  # 10 keypoint and 12 box stats
    assert "<script>" in page and "http://" not in page and "https://" not in page
    assert page.count("data:image/png;base64,") == 1  # the worst image, drawn from the run's own image file
    assert "image 7: 1 missed, 1 false positive(s) above 0.5" in page
    # Sections whose data are missing say how to make them.
    assert f"No threshold sweep: run `kpbench thresholds {run_dir}`." in page


def test_several_runs_get_a_comparison_table(run_dir: Path) -> None:
    page = build_html([run_dir, run_dir], images=False)
    assert "<h2>Comparison</h2>" in page and "ΔAP confidence intervals" in page


def test_bad_input_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(KpbenchError, match="run directory not found"):
        build_html([tmp_path / "nope"])
    with pytest.raises(KpbenchError, match="give at least one run directory"):
        build_html([])


@requires_chromium
def test_chromium_renders_it_and_its_dom_holds_the_run_numbers(run_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    out = write_html([run_dir], tmp_path / "report.html")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,1600", out.as_uri()],
                   check=True, capture_output=True, timeout=120)
    with Image.open(shot) as im:
        colours = im.convert("L").getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 20  # text, tables and figures, not a blank page
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", out.as_uri()], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    assert _check_numbers(dom, run_dir) == 22
    assert re.search(r"<h2>Metrics</h2>", dom)


def test_comparison_shows_the_compare_intervals_when_compare_has_run(run_dir: Path, tmp_path: Path, run_cli) -> None:
    import shutil

    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    page = build_html([run_dir, other], images=False)
    assert f"run `kpbench compare {run_dir} {other} --out {run_dir}` to add them" in page
    code, _, err = run_cli("compare", run_dir, other, "--bootstrap", "10", "--out", run_dir)
    assert code == 0, err
    page = build_html([run_dir, other], images=False)
    assert "ΔAP: other − run (keypoints, paired bootstrap, 95% interval)" in page
    (run_dir / "compare.json").unlink()


def test_error_analysis_section_shows_what_analyze_wrote(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path).path
    assert f"No error analysis: run `kpbench analyze {run}`." in build_html([run], images=False)
    analysis = diagnose_run(run)
    write_error_files(run, analysis)
    page = build_html([run], images=False)
    assert "No error analysis" not in page
    for title in ("AP gained by correcting each error", "Keypoint localisation errors",
                  "AP by visible keypoints and by overlap", "LRP-optimal and best-F1 person-score thresholds"):
        assert f"<h3>{title}</h3>" in page
    # The PR curves after each correction, and the AP-per-keypoint bars (analyze writes keypoint_ap.*).
    assert page.count("data:image/png;base64,") == 2
    assert 'alt="PR curves after each cumulative correction"' in page
    # A run directory copied without its figure still shows the tables.
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "errors_pr_curves.png").unlink()
    assert build_html([copy], images=False).count("data:image/png;base64,") == 1


def test_speed_glob_with_several_csvs_is_read_as_speed_files(run_dir: Path, tmp_path: Path, run_cli) -> None:
    """README's `kpbench html RUN --speed results/speed/*.csv`: the shell gives `--speed a.csv b.csv`, and b.csv
    arrived as a run directory ("run directory not found")."""
    from test_report import speed_row, write_device

    a = write_device(tmp_path / "speed", "NVIDIA H100 80GB HBM3", [speed_row("NVIDIA H100 80GB HBM3", 640, "fp32-bs1", 40.0)])
    b = write_device(tmp_path / "speed", "NVIDIA A10G", [speed_row("NVIDIA A10G", 640, "fp32-bs1", 16.0)])
    page = tmp_path / "page.html"
    code, _, err = run_cli("html", run_dir, "--speed", a, b, "--out", page, "--no-images")
    assert code == 0, err
    speed = page.read_text().split("<h2>Speed</h2>", 1)[1]
    assert "NVIDIA H100 80GB HBM3" in speed and "NVIDIA A10G" in speed
    assert '<td data-value="40.0">40.000</td>' in speed and '<td data-value="16.0">16.000</td>' in speed
    # Any other file is still an error that says what html takes.
    from kpdata import assert_one_line_error

    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert_one_line_error(run_cli("html", run_dir, other, "--out", page),
                          f"error: {other}: a file, not a run directory (html takes run directories, sweep folders, "
                          "and speed CSVs after --speed)")


class _Tables(HTMLParser):
    """Every table of a page after an <h3>: (heading, header names, rows of (data-value or None, text) cells)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[str], list[list[tuple[str | None, str]]]]] = []
        self._heading, self._in, self._cell = "", "", None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "h3":
            self._in, self._heading = "h3", ""
        elif tag == "table":
            self.tables.append((self._heading, [], []))
        elif tag == "tr" and self.tables:
            self.tables[-1][2].append([])
        elif tag in ("th", "td"):
            self._in, self._cell = tag, (a.get("data-value"), "")

    def handle_data(self, data: str) -> None:
        if self._in == "h3":
            self._heading += data
        elif self._in in ("th", "td") and self._cell is not None:
            self._cell = (self._cell[0], self._cell[1] + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "h3":
            self._in = ""
        elif tag in ("th", "td") and self._cell is not None:
            _, header, rows = self.tables[-1]
            if tag == "th":
                header.append(self._cell[1])
            else:
                rows[-1].append(self._cell)
            self._in, self._cell = "", None


def _columns(page: str, heading: str) -> dict[str, list[tuple[str | None, str]]]:
    parser = _Tables()
    parser.feed(page)
    _, header, rows = next(t for t in parser.tables if t[0].startswith(heading))  # the first run's
    return {name: [row[i] for row in rows if row] for i, name in enumerate(header)}


def test_one_scale_per_table_ap_gains_and_fractions_in_percent(tmp_path: Path, run_cli) -> None:
    """Issue 23, item 10: the "AP gained" table mixed percent AP with fractional gains, the error table showed
    frac_* as fractions, and the ΔAP table showed fractions beside percent metrics."""
    run = make_run_dir(tmp_path).path
    write_error_files(run, diagnose_run(run))
    other = tmp_path / "other"
    shutil.copytree(run, other)
    assert run_cli("compare", run, other, "--bootstrap", "10", "--out", run)[0] == 0
    page = build_html([run, other], images=False)
    gain = _columns(page, "AP gained by correcting each error")
    for column in ("AP", "AP50", "AP75"):
        assert all(text == percent_text(float(value)) for value, text in gain[column])
        gains = [(value, text) for value, text in gain[f"gain_{column}"] if value is not None]
        assert gains and all(text == f"{100 * float(value):+.1f}" for value, text in gains)
    errors = _columns(page, "Keypoint localisation errors")
    assert all(text == f"{100 * float(value):.1f}" for value, text in errors["frac_good"]) and errors["frac_good"]
    assert "frac_* in percent of them" in page
    delta = _columns(page, "ΔAP: other − run")
    assert [text for _, text in delta["delta"]][:3] == ["+0.0", "+0.0", "+0.0"]
    stats = json.loads((run / "compare.json").read_text())["stats"]
    assert [(float(value), text) for value, text in delta["a"]] == [(r["a"], percent_text(r["a"])) for r in stats]


def test_precision_recall_f1_and_lrp_in_percent_on_the_page(tmp_path: Path, run_cli) -> None:
    """Rates are shown as AP and AR are: the person-score threshold table showed precision, recall and F1 as
    fractions beside AP in percent, and the score-threshold table LRP, its components and F1; now percent, each
    cell's fraction in its data-value."""
    run = make_run_dir(tmp_path).path
    assert run_cli("thresholds", run)[0] == 0
    write_error_files(run, diagnose_run(run))
    parser = _Tables()
    parser.feed(build_html([run], images=False))
    checked = 0
    for _, header, rows in parser.tables:
        for column in ("precision_50", "recall_50", "f1_50", "f1_75", "lrp", "loc", "f1"):
            if column not in header:
                continue
            cells = [row[header.index(column)] for row in rows if row]
            numbers = [(value, text) for value, text in cells if value not in (None, "None")]
            assert numbers, column
            assert all(text == percent_text(float(value)) for value, text in numbers), (column, numbers)
            assert all(text == "n/a" for value, text in cells if value is None)
            checked += 1
    assert checked == 7
    assert "AP, AR, precision, recall and F1 in percent" in build_html([run], images=False)


def test_worst_images_read_the_match_arrays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the page built an ImageEval for every image and area range to find the worst images; now it reads
    the evaluator's match arrays. On the real sample with YOLO11n-pose: the GT persons missed and the confident
    (score > 0.5) unmatched detections at OKS 0.5, per image."""
    from kpdata import COCO_SAMPLE, requires_shared

    from kpbench.engine.from_results import run_from_results
    from kpbench.evaluation.vectorized import MatchTable
    from kpbench.report.html import worst_images

    if not COCO_SAMPLE.is_dir():
        pytest.skip(requires_shared.kwargs["reason"])
    results = Path(__file__).parent / "fixtures" / "yolo11n_pose_coco_sample_results.json"
    gt = COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json"
    run = run_from_results(results, gt, tmp_path / "run").run_dir

    def no_image_evals(self: object) -> None:
        raise AssertionError("ImageEval entries were built")

    monkeypatch.setattr(MatchTable, "iter_image_evals", no_image_evals)
    assert worst_images(run) == [(217285, 6, 0), (183709, 2, 2), (350679, 2, 1), (151938, 1, 1), (536038, 1, 1),
                                 (229358, 1, 0)]


def _speed_sweep(root: Path, name: str, cells: list[tuple[str, str, float | None]]) -> Path:
    """A sweep folder by hand: per cell (name, kind, fps) a speed table (speed) or an empty run directory (run)."""
    from test_report import speed_row, write_device

    from kpbench.sweep.layout import cell_output, write_sweep_manifest

    sweep = root / name
    for cell, kind, fps in cells:
        out = cell_output(sweep, cell, kind)
        if kind == "speed":
            table = write_device(out, "NVIDIA H100 80GB HBM3", [speed_row("NVIDIA H100 80GB HBM3", 640, "fp32-bs1", fps)])
            manifest = json.loads(table.with_suffix(".json").read_text())  # a finished table says so
            table.with_suffix(".json").write_text(json.dumps({**manifest, "complete": True, "rows_planned": 1}))
        else:
            out.mkdir(parents=True)
            (out / "manifest.json").write_text("{}")
    write_sweep_manifest(sweep, {"kind": "kpbench-sweep", "format_version": 1, "name": name,
                                 "cells": [{"name": c, "kind": k, "resource": "h100", "attempts": []}
                                           for c, k, _ in cells]})
    return sweep


def test_a_sweep_folder_stands_for_its_runs_and_speed_tables(tmp_path: Path, run_dir: Path) -> None:
    """`kpbench html SWEEP_DIR`: a sweep of speed cells only makes a page (the merged table, the cells, the speed
    rows); run cells are named by their cell, with the sweep's name first where two sweeps share a cell name."""
    from kpbench.report.html import split_inputs

    speed_only = _speed_sweep(tmp_path, "zoo", [("speed-a", "speed", 40.0), ("speed-b", "speed", 16.0)])
    page = build_html([speed_only], images=False)
    assert "<title>kpbench: sweep zoo</title>" in page
    merged = _columns(page, "Every run and speed row")
    # What was measured first, the cell names last; columns empty in every row (no AP, no error) left out.
    assert list(merged) == ["weights", "device", "size", "dtype", "variant", "fps", "median_ms", "p90_ms", "status",
                            "kind", "cell"]
    assert list(_columns(page, "Cells")) == ["cell", "kind", "resource", "state", "elapsed", "node", "gpu", "job",
                                             "error"]  # one sweep: no sweep column
    assert merged["cell"] == [(None, "speed-a"), (None, "speed-b")]
    assert [value for value, _ in merged["fps"]] == ["40.0", "16.0"]
    assert [text for _, text in _columns(page, "Cells")["state"]] == ["COMPLETED", "COMPLETED"]
    speed = page.split("<h2>Speed</h2>", 1)[1]
    assert '<td data-value="40.0">40.000</td>' in speed and '<td data-value="16.0">16.000</td>' in speed
    one = _speed_sweep(tmp_path, "one", [("run-x", "run", None), ("run-y", "run", None)])
    two = _speed_sweep(tmp_path, "two", [("run-x", "run", None)])
    inputs = split_inputs([run_dir, one, two, speed_only])
    assert inputs.runs == [(run_dir, "run"), (one / "cells/run-x/run", "one/run-x"), (one / "cells/run-y/run", "run-y"),
                           (two / "cells/run-x/run", "two/run-x")]
    assert inputs.sweeps == [one, two, speed_only] and len(inputs.speed_csvs) == 2
