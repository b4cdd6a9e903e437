"""`kpbench demo`: the COCO images shipped inside kpbench (free licences, credits, unchanged records), the model it
picks, a run with Keypoint R-CNN's random weights end to end, and the whole demo from a built wheel installed in a
fresh virtual environment, run outside the source tree with the network blocked."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from kpdata import COCO_SAMPLE, assert_one_line_error, load, requires_shared

import kpbench.demo
from kpbench.core.errors import KpbenchError
from kpbench.data.embedded import demo_credits, demo_ground_truth, demo_root
from kpbench.demo import choose_model, demo_report, run_demo
from kpbench.evaluation.cocoeval import evaluate

REPO = Path(__file__).resolve().parents[1]
DEMO_IDS = [785, 165518, 183709, 214753, 229358, 349860, 397133, 434204]


def test_demo_images_are_free_licensed_people_with_credits() -> None:
    gt = demo_ground_truth()
    assert sorted(img["id"] for img in gt["images"]) == DEMO_IDS
    assert {img["license"] for img in gt["images"]} == {4, 5}  # CC BY 2.0 and CC BY-SA 2.0 only
    licenses = {lic["id"]: lic for lic in gt["licenses"]}
    assert licenses[4]["url"] == "http://creativecommons.org/licenses/by/2.0/"
    assert licenses[5]["url"] == "http://creativecommons.org/licenses/by-sa/2.0/"
    for img in gt["images"]:  # each shows a person with labelled keypoints
        assert any(a["image_id"] == img["id"] and a["num_keypoints"] > 0 for a in gt["annotations"])
    attribution = (demo_root() / "ATTRIBUTION.md").read_text()
    root = demo_root()
    for credit in demo_credits():
        data = (root / "val2017" / credit["file_name"]).read_bytes()
        line = next(x for x in attribution.splitlines() if x.startswith(f"| {credit['id']} |"))
        assert line == (f"| {credit['id']} | {credit['file_name']} | {credit['flickr_url']} | {credit['license_name']} "
                        f"| {credit['license_url']} | {line.split(' | ')[5]} | {len(data)} | "
                        f"`{hashlib.sha256(data).hexdigest()}` |")
    assert "CC BY 4.0" in attribution
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size < 2_000_000  # a few MB at most in the wheel


@requires_shared
def test_demo_data_is_the_samples_own_files_and_records(tmp_path: Path) -> None:
    """Byte copies of the sample's images, its records of them unchanged and complete; and
    docs/make_demo_data.py, run again, writes exactly the shipped files."""
    sample = load(COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json")
    gt = demo_ground_truth()
    ids = set(DEMO_IDS)
    assert gt["images"] == [img for img in sample["images"] if img["id"] in ids]
    assert gt["annotations"] == [a for a in sample["annotations"] if a["image_id"] in ids]
    assert (gt["licenses"], gt["categories"], gt["info"]) == (sample["licenses"], sample["categories"], sample["info"])
    for img in gt["images"]:
        assert (demo_root() / "val2017" / img["file_name"]).read_bytes() == (
            COCO_SAMPLE / "val2017" / img["file_name"]).read_bytes()
    sys.path.insert(0, str(REPO / "docs"))
    try:
        import make_demo_data
    finally:
        sys.path.remove(str(REPO / "docs"))
    assert make_demo_data.build(COCO_SAMPLE, tmp_path / "demo") == DEMO_IDS
    rebuilt = {p.relative_to(tmp_path / "demo"): p.read_bytes() for p in (tmp_path / "demo").rglob("*") if p.is_file()}
    shipped = {p.relative_to(demo_root()): p.read_bytes() for p in demo_root().rglob("*") if p.is_file()}
    assert rebuilt == shipped


def test_the_model_it_picks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = kpbench.demo.find_spec

    def hide(*names: str) -> None:
        monkeypatch.setattr(kpbench.demo, "find_spec", lambda name: None if name in names else real(name))

    if kpbench.demo.yolo_installed():  # the test install has the yolo extra
        chosen = choose_model("auto")
        assert (chosen.model, chosen.weights, chosen.real_weights) == ("yolo", None, True)
    hide("ultralytics")
    chosen = choose_model("auto")
    assert (chosen.model, chosen.weights, chosen.real_weights) == ("keypointrcnn", "none", False)
    assert "RANDOM weights" in chosen.reason and "yolo extra is not installed" in chosen.reason
    with pytest.raises(KpbenchError, match=r"--model yolo: the yolo extra is not installed"):
        choose_model("yolo")
    hide("torch")
    from kpbench.core.install import install_hint

    with pytest.raises(KpbenchError, match=f"needs torch: {re.escape(install_hint('yolo'))} "):
        choose_model("auto")
    monkeypatch.setattr(kpbench.demo, "find_spec", real)
    with pytest.raises(KpbenchError, match="--model: the demo runs auto, yolo, keypointrcnn, got 'mediapipe'"):
        choose_model("mediapipe")
    if kpbench.demo.yolo_installed():
        with pytest.raises(KpbenchError, match="min_size: only for Keypoint R-CNN"):
            run_demo(tmp_path, model="yolo", min_size=320)  # refused before anything runs


def test_without_torch_the_command_says_what_to_install(monkeypatch: pytest.MonkeyPatch, run_cli,
                                                        tmp_path: Path) -> None:
    real = kpbench.demo.find_spec
    monkeypatch.setattr(kpbench.demo, "find_spec", lambda name: None if name == "torch" else real(name))
    assert_one_line_error(run_cli("demo", "--out", tmp_path / "d"), "kpbench demo runs a pose model, which needs "
                          f"torch: {kpbench.demo.no_torch_message().split('torch: ', 1)[1]}")
    assert not (tmp_path / "d").exists()


def test_an_unusable_out_is_the_only_line(run_cli, tmp_path: Path) -> None:
    """A --out that cannot be a folder is refused before the demo says what it will run: one line on stderr."""
    taken = tmp_path / "taken"
    taken.write_text("a file")
    code, stdout, stderr = run_cli("demo", "--out", taken)
    assert (code, stdout, stderr) == (2, "", f"error: --out {taken}: exists and is not a directory\n")


@pytest.mark.slow
def test_random_weights_demo_end_to_end(tmp_path: Path, run_cli) -> None:
    """Keypoint R-CNN with random weights (what a user without the yolo extra gets), on 2 of the images at short
    side 320 to keep it short: every file, the page, and what is said about the weights."""
    out = tmp_path / "demo"
    outcome = run_demo(out, model="keypointrcnn", min_size=320, limit=2, progress=False)
    run = out / "keypointrcnn-random-weights"
    assert outcome.run_dir == run and outcome.page == out / "report.html"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["weights"] == "none" and manifest["image_ids"] == DEMO_IDS[:2]
    for name in ("metrics.json", "keypoint_ap.csv", "thresholds_keypoint.csv", "keypoints.png", "analyze.json",
                 "errors_pr_curves.png", "threshold_curves.png", "pr_curves.png"):
        assert (run / name).is_file(), name
    # The stats are kpbench.evaluate's on the run's own files.
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["keypoints"] == evaluate(run / "ground_truth.json", run / "keypoints_results.json").stats
    assert outcome.keypoint_ap["all"].stats == metrics["keypoints"]
    page = outcome.page.read_text()
    assert '<p class="warn"><strong>Random weights.</strong>' in page
    assert "<h2>AP per keypoint and per keypoint group</h2>" in page
    credits = re.findall(r"<li>(COCO \d+ .*?)</li>", page)
    assert [c.split()[1] for c in credits] == ["785", "165518"]
    assert "http://farm8.staticflickr.com/7015/6795644157_f019453ae7_z.jpg &mdash; Attribution License" in credits[0]
    assert (out / "ATTRIBUTION.md").read_bytes() == (demo_root() / "ATTRIBUTION.md").read_bytes()
    report = demo_report(outcome)
    assert report.startswith("model: Keypoint R-CNN with RANDOM weights, since you asked for it")
    assert f"HTML page: {outcome.page.resolve()}" in report and "keypoint AP per group (percent): head " in report
    # Run again: the run directory is continued (complete: nothing runs), the page rewritten.
    again = run_demo(out, model="keypointrcnn", min_size=320, limit=2, progress=False)
    assert again.results["keypoints"].stats == outcome.results["keypoints"].stats


def _wheel(tmp_path: Path) -> Path:
    """A wheel built from a copy of the source tree by pip, in its isolated build environment (setuptools and
    wheel from the configured package index, as `pip install .` gets them)."""
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "results", "build", "dist",
                                                                "*.egg-info", "__pycache__", ".pytest_cache",
                                                                ".ruff_cache", "tests"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"),
                           str(source)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return next((tmp_path / "dist").glob("kpbench-*.whl"))


def test_demo_from_a_wheel_in_a_fresh_venv(tmp_path: Path) -> None:
    """Build the wheel; it holds the demo's images, annotations and credits. Install it (nothing else) into a fresh
    venv whose other packages come from this environment's site-packages through a .pth line (torch and the rest
    are too large for a local index); run `kpbench demo` from a folder outside the source tree, without
    PYTHONPATH, with every HTTP(S) request sent to a closed port: it writes the page."""
    import numpy

    wheel = _wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n for n in names if n.startswith("kpbench/data/demo/"))
    assert shipped == sorted(["kpbench/data/demo/ATTRIBUTION.md",
                              "kpbench/data/demo/annotations/person_keypoints_val2017.json",
                              *(f"kpbench/data/demo/val2017/{i:012d}.jpg" for i in DEMO_IDS)])
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("kpbench/data/demo/val2017/000000000785.jpg") == (
            demo_root() / "val2017" / "000000000785.jpg").read_bytes()

    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies: this environment's site-packages, added as a path (its own .pth files, such as an editable
    # kpbench's, are not run for a path added this way).
    Path(purelib, "zz_dependencies.pth").write_text(str(Path(numpy.__file__).parents[1]) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
               https_proxy="http://127.0.0.1:9", NO_PROXY="", PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    where = tmp_path / "elsewhere"
    where.mkdir()
    found = subprocess.run([str(python), "-c", "import kpbench; print(kpbench.__file__)"], capture_output=True,
                           text=True, cwd=where, env=env, check=True).stdout.strip()
    assert found.startswith(purelib), found  # the wheel's kpbench, not the source tree's
    proc = subprocess.run([str(venv / "bin" / "kpbench"), "demo", "--no-progress"], capture_output=True, text=True,
                          cwd=where, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = where / "results" / "demo"  # the default folder, under the working directory
    page = out / "report.html"
    assert f"HTML page: {page.resolve()} (open it in a browser)" in proc.stdout
    text = page.read_text()
    credited = [int(c.split()[1]) for c in re.findall(r"<li>(COCO \d+ .*?)</li>", text)]
    assert credited == DEMO_IDS
    run = next(p for p in out.iterdir() if p.is_dir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["keypoints"] == evaluate(run / "ground_truth.json", run / "keypoints_results.json").stats
    manifest = json.loads((run / "manifest.json").read_text())
    if run.name == "yolo11n-pose":  # the yolo extra is in this environment: YOLO11n-pose's real weights
        from kpbench.models.yolo import bundled_weights

        assert manifest["model"]["checkpoint_sha256"] == hashlib.sha256(bundled_weights().read_bytes()).hexdigest()
        assert "Random weights" not in text
        assert metrics["keypoints"]["AP"] > 0.3  # trained weights (random ones score about 0)
    else:
        assert run.name == "keypointrcnn-random-weights" and "Random weights" in text
