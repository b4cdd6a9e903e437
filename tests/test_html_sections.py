"""The HTML page's sections about AP per keypoint and group, keypoint-score thresholds as a heatmap (the ~150-row
table folded away), the images' credits and licences, random weights, and AP gains in the AP's own unit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from kpdata import make_run_dir

from kpbench.analysis.keypoint_ap import keypoint_ap_for_run, write_keypoint_ap_files
from kpbench.analysis.thresholds import thresholds_for_run, write_threshold_files
from kpbench.evaluation.runeval import evaluate_run
from kpbench.report.html import build_html

LICENSES = [{"id": 4, "name": "Attribution License", "url": "http://creativecommons.org/licenses/by/2.0/"},
            {"id": 5, "name": "Attribution-ShareAlike License", "url": "http://creativecommons.org/licenses/by-sa/2.0/"}]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_run_dir(tmp_path_factory.mktemp("sections")).path
    evaluate_run(run)
    return run


def section(page: str, title: str) -> str:
    """The HTML of one <section> by its <h2> title."""
    match = re.search(rf"<section><h2>{re.escape(title)}</h2>(.*?)</section>", page, re.S)
    assert match, title
    return match.group(1)


def test_keypoint_ap_section_shows_the_files_numbers(run_dir: Path) -> None:
    page = build_html([run_dir], images=False)
    assert "kpbench evaluate" in section(page, "AP per keypoint and per keypoint group")  # how to make it
    result = keypoint_ap_for_run(run_dir)
    write_keypoint_ap_files(run_dir, result)
    body = section(build_html([run_dir], images=False), "AP per keypoint and per keypoint group")
    assert body.count("<img ") == 1 and 'src="data:image/png;base64,' in body
    values = [float(v) for v in re.findall(r'data-value="([^"]+)"', body)]
    expected = [row[s] for row in result.rows() for s in ("AP", "AP50", "AP75", "APm", "APl", "AR")]
    assert values[:len(expected)] == expected
    legs = result["legs"]
    ap = legs.stats["AP"]
    assert (f'<tr><td>group</td><td>legs</td><td>{legs.num_gt}</td><td data-value="{ap!r}">{100 * ap:.1f}</td>'
            in body)
    assert "<td>left_knee,right_knee,left_ankle,right_ankle</td></tr>" in body


def test_keypoint_thresholds_are_a_heatmap_and_the_table_is_folded(run_dir: Path) -> None:
    report = thresholds_for_run(run_dir)
    write_threshold_files(run_dir, report.person, report.keypoint, plot=False)
    body = section(build_html([run_dir], images=False), "Keypoint-score thresholds")
    visible, _, folded = body.partition("<details>")
    assert visible.count("<img ") == 1 and "<table" not in visible
    assert f"<summary>The table ({len(report.keypoint)} rows)</summary>" in folded
    assert folded.count("<tr>") == len(report.keypoint) + 1  # header and every row, inside <details>


def test_credits_come_from_the_ground_truth(run_dir: Path, tmp_path: Path) -> None:
    assert "Images: credits and licences" not in build_html([run_dir], images=False)  # no licences: no section
    gt_path = run_dir / "ground_truth.json"
    original = gt_path.read_text()
    gt = json.loads(original)
    gt["licenses"] = LICENSES
    for image, licence in zip(gt["images"], (4, 5, 4)):
        image.update(license=licence, flickr_url=f"http://farm.example/{image['id']}.jpg")
    gt_path.write_text(json.dumps(gt))
    try:
        body = section(build_html([run_dir], images=False), "Images: credits and licences")
    finally:
        gt_path.write_text(original)
    items = re.findall(r"<li>(.*?)</li>", body)
    assert [int(i.split()[1]) for i in items] == [7, 42, 1000]
    assert items[1] == ("COCO 42 (000000000042.png): http://farm.example/42.jpg &mdash; Attribution-ShareAlike "
                        "License http://creativecommons.org/licenses/by-sa/2.0/")
    assert "CC BY 4.0" in body


def test_random_weights_are_said_on_the_page(run_dir: Path) -> None:
    page = build_html([run_dir], images=False)
    assert '<p class="warn"><strong>Random weights.</strong>' in section(page, "Model, data and protocol")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["config"]["weights"] = "COCO_V1"
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    try:
        assert "Random weights" not in build_html([run_dir], images=False)
    finally:
        manifest["config"]["weights"] = "none"
        (run_dir / "manifest.json").write_text(json.dumps(manifest))


def test_ap_gains_read_in_percentage_points(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path).path
    evaluate_run(run)
    (run / "errors_ap_gain.csv").write_text("how,correction,area,AP,gain_AP\nalone,miss,all,0.531,0.059\n")
    body = section(build_html([run], images=False), "Error analysis")
    assert '<td data-value="0.531">53.1</td><td data-value="0.059">+5.9</td>' in body
