"""The end of a run on arrays: `evaluate_run` reads the run's store once, checks and evaluates arrays, writes the
results files as before, and hands the analysis everything it needs; the published AP comes from the manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from kpdata import make_run_dir

from kpbench.core.io import json_text
from kpbench.evaluation import runeval
from kpbench.runs.detections import to_coco_results


def test_results_files_are_the_bytes_kpbench_wrote_before(tmp_path: Path) -> None:
    """The results files come from arrays now, with no per-detection dicts until they are written: the same bytes
    as writing `to_coco_results` of the per-image cache records."""
    run = make_run_dir(tmp_path)
    runeval.evaluate_run(run.path)
    keypoint_results, bbox_results = to_coco_results(run.dets[i] for i in sorted(run.dets))
    assert (run.path / "keypoints_results.json").read_text() == json_text(keypoint_results, indent=None)
    assert (run.path / "bbox_results.json").read_text() == json_text(bbox_results, indent=None)


def test_the_store_is_read_once_and_the_analysis_reads_nothing_again(tmp_path: Path, monkeypatch) -> None:
    from kpbench.analysis.breakdown import keypoints_for_run
    from kpbench.analysis.thresholds import thresholds_for_run

    run = make_run_dir(tmp_path)
    reads: list[str] = []
    real = runeval.read_run_arrays
    monkeypatch.setattr(runeval, "read_run_arrays", lambda run_dir: reads.append(str(run_dir)) or real(run_dir))
    results = runeval.evaluate_run(run.path, write=False)
    assert len(reads) == 1
    kp = results["keypoints"]
    assert kp.backend == "vectorized" and kp.matches is not None
    assert np.array_equal(kp.detection_arrays().keypoint_scores,
                          np.concatenate([run.dets[i].keypoint_scores for i in sorted(run.dets)]))
    report = thresholds_for_run(run.path, results=results)
    rows = keypoints_for_run(run.path, kp, write=False)
    assert len(reads) == 1  # neither read the store (nor evaluated) again
    # Each equals what it computes on its own, from the run directory.
    assert thresholds_for_run(run.path).person == report.person
    assert keypoints_for_run(run.path, write=False) == rows
    assert len(reads) == 3


def test_run_scores_equal_pycocotools(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path)
    ours = runeval.evaluate_run(run.path, write=False)
    reference = runeval.evaluate_run(run.path, backend="pycocotools", write=False)
    for iou_type in ("keypoints", "bbox"):
        assert ours[iou_type].stats == reference[iou_type].stats
        assert np.array_equal(ours[iou_type].precision, reference[iou_type].precision)
        assert ours[iou_type].notes == reference[iou_type].notes


def test_evaluate_run_takes_the_arrays_a_run_holds(tmp_path: Path, monkeypatch) -> None:
    run = make_run_dir(tmp_path)
    arrays = runeval.read_run_arrays(run.path)
    monkeypatch.setattr(runeval, "read_run_arrays", lambda run_dir: pytest.fail("read again"))
    results = runeval.evaluate_run(run.path, arrays=arrays, write=False)
    assert results["keypoints"].num_results == len(arrays.detections) == 4


def test_published_ap_comes_from_the_manifest_not_the_adapter() -> None:
    """Format 2 records the model's published numbers (its ModelInfo); format-1 manifests, which predate that, look
    torchvision's weights up in kpbench.core.published. Importing runeval imports no model adapter."""
    from kpbench.core.config import RunSettings, settings_dict

    config = settings_dict(RunSettings())
    format1 = {"weights": "COCO_LEGACY", "source": "torchvision", "checkpoint_sha256": None, "seed": None}
    assert runeval.describe_protocol(config, format1, 5000, 5000)[2] == {"box_AP": 50.6, "kp_AP": 61.1}
    checkpoint = {"weights": "/x.pth", "source": "checkpoint", "checkpoint_sha256": "fc266e95" + "0" * 56}
    assert runeval.describe_protocol(config, checkpoint, 5000, 5000)[2] == {"box_AP": 54.6, "kp_AP": 65.0}
    format2 = {**format1, "name": "keypointrcnn_resnet50_fpn", "published": {"box_AP": 1.5, "kp_AP": 2.5}}
    assert runeval.describe_protocol(config, format2, 5000, 5000)[2] == {"box_AP": 1.5, "kp_AP": 2.5}
    random = {"weights": "none", "source": "random", "seed": 0, "published": None}
    _, deviations, published = runeval.describe_protocol(config, random, 5000, 5000)
    assert published is None and any("random initialisation" in d for d in deviations)
    code = ("import sys, kpbench.evaluation.runeval, kpbench.report.run_outputs; "
            "print(sorted(m for m in sys.modules if m.startswith(('kpbench.models', 'torch'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout.replace("'", '"')) == []


def test_results_files_written_in_chunks_are_the_same_bytes(tmp_path: Path) -> None:
    from kpbench.core.arrays import DetectionArrays
    from kpbench.evaluation.arrays import records_from_detections
    from kpbench.runs.results import write_coco_results

    rng = np.random.default_rng(0)
    n = 53
    detections = DetectionArrays(image_ids=rng.integers(0, 5, n), category_ids=np.ones(n, np.int64),
                                 scores=rng.random(n), boxes=rng.random((n, 4)) * 100, keypoints=rng.random((n, 17, 3)))
    path = tmp_path / "results.json"
    for iou_type in ("keypoints", "bbox"):
        write_coco_results(path, detections, iou_type, chunk_rows=10)
        assert path.read_text() == json_text(records_from_detections(detections, iou_type), indent=None)
        write_coco_results(path, detections.take(np.zeros(n, dtype=bool)), iou_type, chunk_rows=10)
        assert path.read_text() == "[]\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left


def test_up_to_date_results_files_are_kept_and_any_change_rewrites_them(tmp_path: Path, monkeypatch) -> None:
    """`evaluate_run` writes the COCO results files only when they are not the ones written from the store as it is
    now; kept or rewritten, their bytes are the store's, and the stats are the same."""
    import os

    import kpbench.evaluation.runeval as module

    run = make_run_dir(tmp_path, store=True).path
    kp_file, box_file = run / "keypoints_results.json", run / "bbox_results.json"
    first = runeval.evaluate_run(run)
    expected = {p: p.read_bytes() for p in (kp_file, box_file)}
    record = json.loads((run / "manifest.json").read_text())["results_files"]
    assert [r[0] for r in record["results"]] == ["keypoints_results.json", "bbox_results.json"]
    assert [r[0] for r in record["detections"]] == ["detections.bin"] and record["images"][0] == 3

    calls: list[str] = []
    real = module.write_coco_results
    monkeypatch.setattr(module, "write_coco_results", lambda path, *a, **k: (calls.append(path.name), real(path, *a,
                                                                                                        **k))[1])
    kept: list[Path] = []
    again = runeval.evaluate_run(run, on_keep=kept.append)
    assert calls == [] and kept == [kp_file, box_file]
    assert again["keypoints"].stats == first["keypoints"].stats and again["bbox"].stats == first["bbox"].stats

    def rewritten_after(change) -> list[str]:
        calls.clear()
        change()
        runeval.evaluate_run(run)
        assert {p: p.read_bytes() for p in (kp_file, box_file)} == expected
        return calls

    assert rewritten_after(lambda: kp_file.write_bytes(b"[]\n")) == ["keypoints_results.json", "bbox_results.json"]
    assert rewritten_after(lambda: box_file.unlink()) == ["keypoints_results.json", "bbox_results.json"]
    store = run / "detections.bin"
    assert rewritten_after(lambda: os.utime(store, ns=(store.stat().st_atime_ns, store.stat().st_mtime_ns + 1))) \
        == ["keypoints_results.json", "bbox_results.json"]
    assert rewritten_after(lambda: None) == []

    def replaced_keeping_size_and_mtime() -> None:  # as `cp -p` or `rsync -t` of another file would leave it
        st = kp_file.stat()
        other = run / "other.json"
        other.write_bytes(b" " * st.st_size)
        os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(other, kp_file)

    assert rewritten_after(replaced_keeping_size_and_mtime) == ["keypoints_results.json", "bbox_results.json"]
