"""The run directory without the model: layout, manifest, protocol deviations, and evaluation from a cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from kpdata import COCO_SAMPLE, load, pycocotools_eval, requires_shared

from kpbench.core.config import RunSettings, settings_dict
from kpbench.core.errors import KpbenchError
from kpbench.core.schema import BBOX_STAT_NAMES, KEYPOINT_STAT_NAMES
from kpbench.data.coco import load_annotations, restrict_ground_truth, select_image_ids
from kpbench.evaluation.runeval import describe_protocol, evaluate_run, summary_text
from kpbench.runs import directory as rundir
from kpbench.runs.detections import ImageDetections, append_detections


def _manifest(root: Path, image_ids: list[int], **extra: object) -> dict:
    return {"kpbench_run_version": 1, "coco_root": str(root), "split": "val2017", "image_ids": image_ids,
            "status": "complete", **extra}


def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(KpbenchError, match=rf"^{tmp_path}: not a run directory \(no manifest.json\)$"):
        rundir.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(KpbenchError, match=r"manifest\.json: unreadable manifest"):
        rundir.read_manifest(tmp_path)
    rundir.write_manifest(tmp_path, {"kpbench_run_version": 99})
    with pytest.raises(KpbenchError, match="run format version 99; this kpbench reads versions 1, 2, 3"):
        rundir.read_manifest(tmp_path)
    rundir.write_manifest(tmp_path, {"kpbench_run_version": 1, "x": [1.5]})
    assert rundir.read_manifest(tmp_path) == {"kpbench_run_version": 1, "x": [1.5]}


def test_layout_paths_and_clearing(tmp_path: Path, synthetic_coco_root: Path) -> None:
    gt = load_annotations(synthetic_coco_root)
    rundir.write_manifest(tmp_path, _manifest(synthetic_coco_root, [139, 4000]))
    (tmp_path / rundir.GROUND_TRUTH).write_text(json.dumps(restrict_ground_truth(gt, [139, 4000])))
    assert rundir.image_path_for(tmp_path, 4000) == synthetic_coco_root / "val2017" / "000000004000.jpg"
    assert set(rundir.image_paths(tmp_path)) == {139, 4000}
    with pytest.raises(KpbenchError, match="image id 785: not among the images of run"):
        rundir.image_path_for(tmp_path, 785)
    for rank in (10, 2, 0):
        rundir.shard_path(tmp_path, rank).write_text("")
    (tmp_path / "detections.rank2.jsonl").write_text("")  # a format-2 run's shard: read before the store's
    (tmp_path / "detections.rankX.jsonl").write_text("")
    assert [p.name for p in rundir.shard_paths(tmp_path)] == [
        "detections.rank0.bin", "detections.rank2.jsonl", "detections.rank2.bin", "detections.rank10.bin"]
    # The merged detections file: the store, or the JSON lines of format 1 and 2 where only they exist.
    assert rundir.detections_path(tmp_path) == tmp_path / "detections.bin"
    (tmp_path / "detections.jsonl").write_text("")
    assert rundir.detections_path(tmp_path) == tmp_path / "detections.jsonl"
    (tmp_path / "detections.bin").write_bytes(b"")
    assert rundir.detections_path(tmp_path) == tmp_path / "detections.bin"
    assert [p.name for p in rundir.detection_files(tmp_path)] == [
        "detections.jsonl", "detections.bin", "detections.rank0.bin", "detections.rank2.jsonl", "detections.rank2.bin",
        "detections.rank10.bin"]
    (tmp_path / "notes.txt").write_text("mine")
    removed = {p.name for p in rundir.clear_run_files(tmp_path)}
    assert removed == {"manifest.json", "ground_truth.json", "detections.bin", "detections.jsonl",
                       "detections.rank2.jsonl", *(f"detections.rank{r}.bin" for r in (0, 2, 10))}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detections.rankX.jsonl", "notes.txt"]
    assert rundir.default_run_dir("results", now=0).name.startswith("run-19")


def test_git_commit_only_of_a_checkout_that_tracks_the_file(tmp_path: Path) -> None:
    """A kpbench installed into a venv inside another repository must not record that repository's commit."""
    from kpbench.core.environment import git_commit

    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "tracked.py").write_text("x = 1\n")
    (tmp_path / "venv_file.py").write_text("y = 2\n")  # like site-packages/kpbench/core/environment.py
    subprocess.run([*git, "add", "tracked.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path / "tracked.py") == head
    assert git_commit(tmp_path / "venv_file.py") is None
    (tmp_path / "tracked.py").write_text("x = 3\n")
    assert git_commit(tmp_path / "tracked.py") == f"{head}-dirty"


def test_library_modules_do_not_import_torch() -> None:
    code = ("import sys, kpbench.runs.directory, kpbench.evaluation.runeval, kpbench.engine.runner, kpbench.data.coco, kpbench.cli.run; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# --- protocol and deviations ----------------------------------------------------------------------------------

V1 = {"weights": "COCO_V1", "source": "torchvision", "checkpoint_sha256": None, "seed": None}


def _config(**changes: object) -> dict:
    return settings_dict(RunSettings(**changes))  # type: ignore[arg-type]


def test_published_protocol_has_no_deviations() -> None:
    protocol, deviations, published = describe_protocol(_config(), V1, 5000, 5000)
    assert deviations == []
    assert published == {"box_AP": 54.6, "kp_AP": 65.0}
    assert protocol["min_size"] == 800 and protocol["published_weights"] == "COCO_V1"
    # the same file given as a checkpoint path is recognised by its hash
    ckpt = {"weights": "/w/kp.pth", "source": "checkpoint", "checkpoint_sha256": "9f466800" + "0" * 56}
    assert describe_protocol(_config(weights="/w/kp.pth"), ckpt, 5000, 5000)[1:] == ([], {"box_AP": 50.6, "kp_AP": 61.1})


def test_each_deviation_is_listed() -> None:
    config = _config(limit=3, min_size=320, max_size=533, box_score_thresh=0.3, batch_size=2, dtype="fp16", weights="none")
    random = {"weights": "none", "source": "random", "seed": 0}
    _, deviations, published = describe_protocol(config, random, 3, 35)
    assert deviations == [
        "image subset: 3 of 35 images (--limit 3)",
        "the annotation file lists 35 images, not the 5000 of val2017",
        "min_size 320 (published: 800)",
        "max_size 533 (published: 1333)",
        "box_score_thresh 0.3 (published: 0.05)",
        "batch_size 2 (published: 1)",
        "dtype fp16 through autocast (published: fp32)",
        "no weights: random initialisation (--weights none, seed 0)",
    ]
    assert published is None
    _, deviations, _ = describe_protocol(_config(images="with-persons", image_ids=[1, 2]), V1, 2, 5000)
    assert deviations == ["image subset: 2 of 5000 images (--images with-persons, --image-ids)"]
    ckpt = {"weights": "/w/mine.pth", "source": "checkpoint", "checkpoint_sha256": "ab" * 32}
    _, deviations, published = describe_protocol(_config(weights="/w/mine.pth"), ckpt, 5000, 5000)
    assert deviations == ["weights /w/mine.pth: not a published torchvision file, no published AP"] and published is None


def _fake_results(kp_ap: float, box_ap: float) -> dict:
    kp = {name: 0.5 for name in KEYPOINT_STAT_NAMES} | {"AP": kp_ap}
    box = {name: 0.5 for name in BBOX_STAT_NAMES} | {"AP": box_ap}
    return {"keypoints": SimpleNamespace(stats=kp), "bbox": SimpleNamespace(stats=box)}


def test_summary_compares_only_when_the_protocol_matches() -> None:
    manifest = {"image_ids": list(range(5000)), "deviations": [], "published": {"box_AP": 54.6, "kp_AP": 65.0},
                "protocol": {"published_weights": "COCO_V1"}, "environment": {"device": "cuda:0"}}
    text = summary_text(manifest, _fake_results(0.6493, 0.5461), "results/r")  # type: ignore[arg-type]
    assert text.splitlines()[0] == "run results/r: 5000 images, weights COCO_V1, device cuda:0"
    assert "  keypoint AP   64.9  published  65.0  difference -0.1" in text
    assert "  box AP        54.6  published  54.6  difference +0.0" in text
    manifest["deviations"] = ["min_size 640 (published: 800)"]
    text = summary_text(manifest, _fake_results(0.6, 0.5))  # type: ignore[arg-type]
    assert "Not comparable with the published AP of COCO_V1 (kp 65.0, box 54.6)" in text
    assert "  - min_size 640 (published: 800)" in text and "difference" not in text


# --- evaluation from a cache, without the model ----------------------------------------------------------------


def _gt_detections(gt: dict, image_id: int, keep: callable) -> ImageDetections:  # type: ignore[valid-type]
    anns = [a for a in gt["annotations"] if a["image_id"] == image_id and not a["iscrowd"] and keep(a)]
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float64).reshape(-1, 4)
    kps = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(-1, 17, 3)
    return ImageDetections(image_id=image_id, boxes=boxes, scores=np.ones(len(anns)), labels=np.ones(len(anns), np.int64),
                           keypoints=kps, keypoint_scores=np.zeros((len(anns), 17)))


@requires_shared
def test_evaluate_run_from_a_cache_of_the_ground_truth(tmp_path: Path) -> None:
    gt = load_annotations(COCO_SAMPLE)
    ids = select_image_ids(gt)
    rundir.write_manifest(tmp_path, _manifest(COCO_SAMPLE, ids))
    (tmp_path / rundir.GROUND_TRUTH).write_text(json.dumps(restrict_ground_truth(gt, ids)))
    # Detections = the GT persons with labelled keypoints: keypoint AP is exactly 1 (see the sample's PROVENANCE).
    cache = tmp_path / rundir.DETECTIONS
    with cache.open("w") as fh:
        for image_id in reversed(ids[5:]):  # cache order does not matter, results come out by image id
            append_detections(fh, _gt_detections(gt, image_id, lambda a: a["num_keypoints"] > 0))
    with pytest.raises(KpbenchError, match=r"run incomplete, 30 of 35 images have detections \(re-run the same"):
        evaluate_run(tmp_path)
    # A format-2 distributed run's leftover shard (JSON lines) counts too. (A *.bin shard is a store: JSON lines
    # under that name are refused as not a store.)
    with (tmp_path / "detections.rank1.jsonl").open("w") as fh:
        for image_id in ids[:5]:
            append_detections(fh, _gt_detections(gt, image_id, lambda a: a["num_keypoints"] > 0))
    results = evaluate_run(tmp_path)
    assert results["keypoints"].stats["AP"] == 1.0 and results["keypoints"].stats["AR"] == 1.0
    kp_results = load(tmp_path / "keypoints_results.json")
    box_results = load(tmp_path / "bbox_results.json")
    assert len(kp_results) == len(box_results) == 70
    assert [r["image_id"] for r in kp_results] == sorted(r["image_id"] for r in kp_results)
    assert all("bbox" not in r and len(r["keypoints"]) == 51 and r["score"] == 1.0 for r in kp_results)
    # Box AP misses the 51 unlabelled persons; it equals a bare pycocotools run on the written files.
    direct = pycocotools_eval(load(tmp_path / "ground_truth.json"), box_results, "bbox")
    assert list(results["bbox"].stats.values()) == [float(s) for s in direct.stats]
    assert 0.0 < results["bbox"].stats["AP"] < 1.0
    metrics = load(tmp_path / "metrics.json")
    assert metrics["keypoints"]["AP"] == 1.0 and metrics["bbox"] == results["bbox"].stats
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 1 + 10 + 12
    assert "### keypoints" in (tmp_path / "metrics.md").read_text()
    assert rundir.read_manifest(tmp_path)["evaluation"]["stats"]["keypoints"]["AP"] == 1.0


# --- planning a run: fixed batches and resume checks (no model) -------------------------------------------------


def test_batches_are_fixed_over_the_whole_image_list() -> None:
    from kpbench.engine.runner import fixed_batches, pending_batches

    ids = [3, 5, 8, 13, 21]
    assert fixed_batches(ids, 2) == [[0, 1], [2, 3], [4]]
    # A partly cached batch is run whole (same padding as uninterrupted); finished batches are skipped.
    assert pending_batches(ids, 2, {3, 5, 8}) == [[2, 3], [4]]
    assert pending_batches(ids, 1, {3, 5, 8}) == [[3], [4]]
    assert pending_batches(ids, 2, set(ids)) == []


def test_plan_resumes_only_the_same_config(tmp_path: Path, synthetic_coco_root: Path) -> None:
    from kpbench.core.config import RunSettings, merge_settings
    from kpbench.engine.runner import plan_run

    out = tmp_path / "run"
    base = {"coco_root": str(synthetic_coco_root), "weights": "none", "min_size": 160, "out": str(out)}
    settings = merge_settings(RunSettings, None, base)
    plan = plan_run(settings, "cpu")
    assert plan.state == "new" and plan.image_ids == [139, 785, 2500, 4000] and plan.done == [] and plan.file_images == 4
    # Planning makes the --out folder (so that an unusable one fails before the model is built) and says so, so
    # that a run failing before it writes anything can remove it again.
    assert out.is_dir() and not any(out.iterdir()) and plan.created_out == str(out)
    rundir.write_manifest(out, {
        "kpbench_run_version": 1, "config": settings_dict(settings), "coco_root": plan.coco_root,
        "environment": {"device": "cpu"}, "image_ids": plan.image_ids, "model": {},
    })
    with (out / "detections.jsonl").open("w") as fh:
        append_detections(fh, _gt_detections({"annotations": []}, 785, lambda a: True))
        fh.write('{"image_id": 139, "boxes"')  # torn by a crash: redone
    # workers, download and out never change a detection; "auto" is the cpu here
    same = merge_settings(RunSettings, None, {**base, "workers": 0, "device": "cpu"})
    plan = plan_run(same, "cpu")
    assert plan.state == "resume" and plan.done == [785]
    other = merge_settings(RunSettings, None, {**base, "box_score_thresh": 0.5, "seed": 3})
    with pytest.raises(KpbenchError, match=r"made with a different config \(box_score_thresh: 0\.05 there, 0\.5 now; "
                                           r"seed: 0 there, 3 now\); use another --out, or pass --overwrite"):
        plan_run(other, "cpu")
    with pytest.raises(KpbenchError, match=r"device: 'cpu' there, 'cuda' now"):
        plan_run(same, "cuda")
    assert plan_run(other, "cpu", overwrite=True).state == "overwrite"


def test_canonical_store_merges_shards_in_id_order_and_drops_torn_tails(tmp_path: Path) -> None:
    """What a resumed or distributed run does before and after its loop: one record per selected image, by id,
    copied byte for byte; the JSON lines of a format-2 directory are folded in; a canonical store is left as it
    is."""
    from kpbench.runs.merge import write_canonical_store
    from kpbench.runs.store import FILE_HEADER, encode_image, scan_store

    def dets(image_id: int, score: float) -> ImageDetections:
        return ImageDetections(image_id=image_id, boxes=np.zeros((1, 4)), scores=np.array([score]),
                               labels=np.ones(1, np.int64), keypoints=np.zeros((1, 17, 3)),
                               keypoint_scores=np.zeros((1, 17)))

    store, shard = rundir.store_path(tmp_path), rundir.shard_path(tmp_path, 1)
    store.write_bytes(FILE_HEADER + encode_image(dets(30, 0.5)) + encode_image(dets(10, 0.5))
                      + encode_image(dets(20, 0.25))[:-9])  # killed mid-write
    shard.write_bytes(FILE_HEADER + encode_image(dets(40, 0.75))
                      + encode_image(dets(10, 0.5))  # written twice (a batch redone after a kill): the same bytes
                      + encode_image(dets(50, 0.125))[:30])
    with rundir.legacy_detections_path(tmp_path).open("w") as fh:  # a format-2 run's cache, resumed
        append_detections(fh, dets(60, 0.5))
        append_detections(fh, dets(30, 0.0))  # the store's record of 30 comes later and wins
    arrays = write_canonical_store(tmp_path, [60, 50, 40, 30, 20, 10])
    assert arrays.image_ids.tolist() == [10, 30, 40, 60] and arrays.detections.scores.tolist() == [0.5, 0.5, 0.75, 0.5]
    assert rundir.detection_files(tmp_path) == [store]  # shards and JSON lines folded in and gone
    expected = FILE_HEADER + b"".join(encode_image(dets(i, s)) for i, s in ((10, 0.5), (30, 0.5), (40, 0.75), (60, 0.5)))
    assert store.read_bytes() == expected
    before = store.stat()
    again = write_canonical_store(tmp_path, [10, 30, 40, 60])  # already canonical: not rewritten
    assert (store.stat().st_ino, store.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert again.image_ids.tolist() == [10, 30, 40, 60] and store.read_bytes() == expected
    assert write_canonical_store(tmp_path, [10, 40]).image_ids.tolist() == [10, 40]  # unselected images dropped
    assert scan_store(store).image_ids.tolist() == [10, 40]
    canonical = store.read_bytes()
    with store.open("ab") as fh:  # only a torn tail: cut off in place
        fh.write(encode_image(dets(50, 0.5))[:20])
    inode = store.stat().st_ino
    assert write_canonical_store(tmp_path, [10, 40]).image_ids.tolist() == [10, 40]
    assert store.stat().st_ino == inode and store.read_bytes() == canonical
