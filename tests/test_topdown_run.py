"""Top-down runs end to end: `kpbench run --person-boxes gt|FILE.json|MODEL` with crop models written as plugins, the
person boxes' own box AP against bare pycocotools, post-processing of a whole-image model recorded and applied
before the store, one-line errors for what cannot be honoured, `kpbench speed --person-boxes`, and MediaPipe's crop
adapter with a stand-in for mediapipe's Pose."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from kpdata import (
    COCO_SAMPLE,
    assert_one_line_error,
    cache_lines,
    interrupt_on_call,
    pycocotools_eval,
    requires_shared,
)

pytest.importorskip("torch")

ORACLE = '''
import json
import numpy as np
from kpbench.core.schema import COCO17
from kpbench.models.crops import apply_affines, flip_permutation
from kpbench.models.topdown import CropOutput

FLIP = flip_permutation(17, COCO17.flip_pairs)
GT = %r


class Oracle:
    """Answers each crop with its GT person's keypoints (found by box), in crop pixels."""
    schema = COCO17
    crop_size = (48, 64)

    def __init__(self):
        self.by_box = {}
        for a in json.load(open(GT))["annotations"]:
            x, y, w, h = a["bbox"]
            self.by_box[(a["image_id"], x, y, x + w, y + h)] = np.array(a["keypoints"], float).reshape(17, 3)

    def info(self):
        return {"weights": None, "name": "oracle", "keypoint_score_kind": "probability"}

    def predict_crops(self, batch):
        kps = np.stack([self.by_box[(int(i), *map(float, b))] for i, b in zip(batch.image_ids, batch.boxes)])
        crop, scores = apply_affines(batch.affines, kps[..., :2]), (kps[..., 2] > 0) * 0.9
        if batch.flipped:
            crop, scores = crop[:, FLIP], scores[:, FLIP]
            crop[..., 0] = self.crop_size[0] - 1 - crop[..., 0]  # the default "index" pixel convention
        return CropOutput(keypoints=crop, keypoint_scores=scores)


class Template:
    """A fixed pose in the middle of every crop (for boxes that are not the GT's)."""
    schema = COCO17
    crop_size = (48, 64)

    def info(self):
        return {"weights": None, "name": "template", "keypoint_score_kind": "probability"}

    def predict_crops(self, batch):
        m = len(batch)
        grid = np.stack([np.linspace(14, 34, 17), np.linspace(8, 56, 17)], axis=1)
        return CropOutput(keypoints=np.broadcast_to(grid, (m, 17, 2)).copy(),
                          keypoint_scores=np.tile(np.linspace(0.1, 0.9, 17), (m, 1)))


class Detector:
    """A whole-image model used for its boxes: a centred box (person) and a corner box of another category."""
    schema = COCO17

    def info(self):
        return {"weights": None, "name": "centre-detector", "keypoint_score_kind": "probability"}

    def predict(self, images):
        from kpbench.models.base import Predictions
        out = []
        for im in images:
            h, w = im.shape[:2]
            out.append(Predictions(boxes=np.array([[w * 0.25, h * 0.2, w * 0.75, h * 0.9], [0, 0, 8, 8]]),
                                   scores=np.array([0.7, 0.95]), keypoints=np.zeros((2, 17, 3)),
                                   keypoint_scores=np.zeros((2, 17)), keypoint_score_kind="probability",
                                   labels=np.array([1, 5])))
        return out


class Duplicates:
    """A bottom-up model giving each image two near-identical persons and one far away (for NMS)."""
    schema = COCO17

    def info(self):
        return {"weights": None, "name": "duplicates", "keypoint_score_kind": "probability"}

    def predict(self, images):
        from kpbench.models.base import Predictions
        out = []
        for im in images:
            h, w = im.shape[:2]
            base = np.stack([np.linspace(0.3 * w, 0.6 * w, 17), np.linspace(0.2 * h, 0.8 * h, 17)], axis=1)
            kps = np.stack([base, base + 0.5, base * 0.2])
            kps = np.concatenate([kps, np.ones((3, 17, 1))], axis=2)
            out.append(Predictions(boxes=np.array([[0.3 * w, 0.2 * h, 0.6 * w, 0.8 * h]] * 3),
                                   scores=np.array([0.6, 0.8, 0.7]), keypoints=kps,
                                   keypoint_scores=np.tile([[0.1], [0.5], [0.9]], (1, 17)),
                                   keypoint_score_kind="probability"))
        return out
'''


@pytest.fixture()
def plugin(tmp_path: Path) -> Path:
    """The adapters above, in a file, reading the sample's GT."""
    path = tmp_path / "adapters.py"
    path.write_text(ORACLE % str(COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json"))
    return path


def _read(path: Path):
    return json.loads(path.read_text())


def _box_records(run: Path) -> list[tuple[int, list, list]]:
    """person_boxes.bin's records (image id, boxes xyxy, scores), by hand from the documented layout."""
    from test_person_boxes_store import parse_by_hand

    return [(i, b.tolist(), s.tolist()) for i, b, s in parse_by_hand(run / "person_boxes.bin")]


def _box_results(run: Path) -> list[dict]:
    """person_boxes.bin as COCO bbox results, by hand."""
    out = []
    for image_id, boxes, scores in _box_records(run):
        for (x1, y1, x2, y2), s in zip(boxes, scores):
            out.append({"image_id": image_id, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    return out


@requires_shared
def test_gt_boxes_and_an_oracle_crop_model_give_ap_1(tmp_path: Path, plugin: Path, run_cli) -> None:
    out = tmp_path / "run"
    code, stdout, err = run_cli("run", "--model", f"{plugin}:Oracle", "--person-boxes", "gt", "--flip-test",
                                "--rescore", "keypoint-mean", "--nms", "oks", "--coco-root", COCO_SAMPLE, "--out", out,
                                "--no-progress", "--device", "cpu", "--no-analysis")
    assert code == 0, err
    metrics = _read(out / "metrics.json")
    assert metrics["keypoints"]["AP"] == 1.0 and metrics["keypoints"]["AR"] == 1.0
    manifest = _read(out / "manifest.json")
    top_down = manifest["model"]["extra"]["protocol"]["top_down"]
    assert top_down["person_boxes"]["kind"] == "gt" and top_down["flip_test"] is True
    assert top_down["crop_size"] == [48, 64] and top_down["padding"] == 1.25
    assert manifest["model"]["extra"]["postprocess"] == {"rescore": "keypoint-mean", "rescore_thresh": 0.2, "nms": "oks",
                                                         "nms_thresh": 0.9, "nms_area": "crop region"}
    assert top_down["pixel_convention"] == "index" and top_down["heatmap_refinement"] == "hrnet"
    assert manifest["config"]["person_boxes"] == "gt" and manifest["config"]["nms"] == "oks"
    assert any("GT-box protocol" in d for d in manifest["deviations"])
    assert not any("OKS-NMS" in d or "rescoring" in d for d in manifest["deviations"])  # the standard post-processing
    # 70 labelled persons, each scored box score 1 x mean keypoint score 0.9, and the boxes' own AP equals pycocotools'.
    results = _read(out / "keypoints_results.json")
    assert len(results) == 70 and all(r["score"] == pytest.approx(0.9, rel=1e-15) for r in results)
    gt = _read(out / "ground_truth.json")
    ev = pycocotools_eval(gt, _box_results(out), iou_type="bbox")
    assert list(manifest["person_boxes"]["stats"].values()) == [float(s) for s in ev.stats]
    assert manifest["person_boxes"]["num_boxes"] == 70
    assert "index pixel convention, hrnet heatmap decoding" in stdout
    assert "top-down on GT boxes: person boxes gt" in stdout and f"box AP {100 * ev.stats[0]:.1f}" in stdout
    # By hand: the 70 GT boxes (score 1) are 70 true positives among the sample's 121 non-crowd persons, so precision
    # is 1 up to recall 70/121 = 0.579 at every IoU threshold: 58 of COCOeval's 101 recall points (0.00 to 0.57).
    assert sum(1 for a in gt["annotations"] if not a["iscrowd"]) == 121
    assert manifest["person_boxes"]["stats"]["AP"] == 58 / 101
    assert "  person boxes' own box AP 57.4 (AP50 57.4)\n" in stdout
    # The run table and the HTML page say which protocol and boxes the numbers come from.
    from kpbench.report.html import _protocol_text
    from kpbench.report.tables import run_row

    row = run_row(out)
    assert row["protocol"] == "top-down, GT boxes" and row["person_box_AP"] == float(ev.stats[0])
    assert _protocol_text(manifest).startswith("top-down on GT boxes: person boxes gt (score >= 0, all per image)")


@requires_shared
def test_a_detections_file_with_its_threshold_and_maximum(tmp_path: Path, plugin: Path, run_cli) -> None:
    ids = [34417, 126107, 785]
    rng = np.random.default_rng(0)
    dets = []
    for ann in _read(COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json")["annotations"]:
        if ann["image_id"] in ids:
            box = (np.array(ann["bbox"]) + rng.normal(0, 2, 4)).clip(1).round(2).tolist()
            dets.append({"image_id": ann["image_id"], "category_id": 1, "bbox": box, "score": round(float(rng.uniform()), 3)})
    dets.append({"image_id": 785, "category_id": 2, "bbox": [1, 1, 50, 50], "score": 1.0})  # not a person
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    out = tmp_path / "run"
    code, _, err = run_cli("run", "--model", f"{plugin}:Template", "--person-boxes", path, "--person-box-thresh", "0.3",
                           "--person-box-max", "2", "--coco-root", COCO_SAMPLE, "--image-ids", ",".join(map(str, ids)),
                           "--out", out, "--no-progress", "--device", "cpu", "--no-analysis")
    assert code == 0, err
    # By hand: per image, the person records scoring >= 0.3, the two highest.
    kept = []
    for image_id in sorted(ids):  # the run goes in image-id order
        mine = sorted((d for d in dets if d["image_id"] == image_id and d["category_id"] == 1 and d["score"] >= 0.3),
                      key=lambda d: -d["score"])[:2]
        kept += mine
    recorded = _box_results(out)
    assert [(r["image_id"], r["score"]) for r in recorded] == [(d["image_id"], d["score"]) for d in kept]
    assert np.allclose([r["bbox"] for r in recorded], [d["bbox"] for d in kept], atol=1e-9)
    assert len(_read(out / "keypoints_results.json")) == len(kept)
    manifest = _read(out / "manifest.json")
    ev = pycocotools_eval(_read(out / "ground_truth.json"), kept, iou_type="bbox")
    assert list(manifest["person_boxes"]["stats"].values()) == [float(s) for s in ev.stats]
    source = manifest["model"]["extra"]["protocol"]["top_down"]["person_boxes"]
    assert source["kind"] == "file" and source["records"] == len(dets) and len(source["sha256"]) == 64
    assert manifest["model"]["extra"]["protocol"]["top_down"]["selection"] == {"score_threshold": 0.3, "max_per_image": 2}


def test_a_models_boxes_as_the_source(tmp_path: Path, plugin: Path, synthetic_coco_root: Path, run_cli) -> None:
    out = tmp_path / "run"
    code, stdout, err = run_cli("run", "--model", f"{plugin}:Template", "--person-boxes", f"{plugin}:Detector",
                                "--coco-root", synthetic_coco_root, "--out", out, "--no-progress", "--device", "cpu",
                                "--no-analysis", "--batch-size", "2")
    assert code == 0, err
    gt = _read(out / "ground_truth.json")
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    records = _box_records(out)
    assert sorted(r[0] for r in records) == sorted(sizes)
    for image_id, boxes, scores in records:  # the person box only (the other category is left out), its score
        w, h = sizes[image_id]
        assert boxes == [[w * 0.25, h * 0.2, w * 0.75, h * 0.9]] and scores == [0.7]
    manifest = _read(out / "manifest.json")
    source = manifest["model"]["extra"]["protocol"]["top_down"]["person_boxes"]
    assert source["kind"] == "model" and source["model"]["name"] == "centre-detector"
    assert "top-down on detector boxes" in stdout
    from kpbench.report.tables import run_row

    assert run_row(out)["protocol"] == f"top-down, detector boxes ({plugin}:Detector)"
    # The template's keypoints come back through each crop's inverse affine, in its box's region.
    for det in cache_lines(out):
        kps = np.array(det["keypoints"])[0]
        (x1, _, x2, _), = det["boxes"]
        assert (kps[:, 0] > x1 - (x2 - x1)).all() and (kps[:, 0] < x2 + (x2 - x1)).all()


def test_overwrite_forgets_the_old_runs_person_boxes(tmp_path: Path, plugin: Path, synthetic_coco_root: Path,
                                                    run_cli) -> None:
    out = tmp_path / "run"
    common = ("--model", f"{plugin}:Template", "--person-boxes", f"{plugin}:Detector", "--coco-root",
              synthetic_coco_root, "--out", out, "--no-progress", "--device", "cpu", "--no-analysis")
    assert run_cli("run", *common)[0] == 0
    ids = sorted(r[0] for r in _box_records(out))
    assert len(ids) == 4 and all(len(r[2]) == 1 for r in _box_records(out))
    # Again with a threshold above the detector's 0.7: the record holds this run's (empty) selections only.
    code, _, err = run_cli("run", *common, "--person-box-thresh", "0.8", "--overwrite")
    assert code == 0, err
    assert _box_records(out) == [(i, [], []) for i in ids]
    assert _read(out / "manifest.json")["person_boxes"]["num_boxes"] == 0
    # A whole-image run written over it leaves no person-box file behind.
    code, _, err = run_cli("run", "--model", f"{plugin}:Duplicates", "--coco-root", synthetic_coco_root, "--out", out,
                           "--no-progress", "--device", "cpu", "--no-analysis", "--overwrite")
    assert code == 0, err
    assert not list(out.glob("person_boxes*"))


def test_person_boxes_are_durable_before_their_detections_are_written(tmp_path: Path, plugin: Path,
                                                                     synthetic_coco_root: Path,
                                                                     monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    """The store writer syncs the person-box record (once per group of images) before it writes detections: at every
    write to the store, each image written already has its boxes in the synced part of person_boxes.bin."""
    import os
    import shutil

    import kpbench.runs.store
    from kpbench.runs.person_boxes import read_person_boxes
    from kpbench.runs.store import scan_store

    out = tmp_path / "run"
    boxes_file = out / "person_boxes.bin"
    synced_size = [0]
    real_fsync, real_write = os.fsync, kpbench.runs.store._write_all

    def fsync(fd: int) -> None:
        real_fsync(fd)
        if boxes_file.exists() and os.path.samestat(os.fstat(fd), os.stat(boxes_file)):
            synced_size[0] = os.fstat(fd).st_size

    checked: list[list[int]] = []

    def write(fd: int, data: bytes) -> None:
        if data[:4] == b"KPRD":  # records (not the file header): their images' boxes must be synced already
            copy = tmp_path / "check" / "detections.bin"
            copy.parent.mkdir(exist_ok=True)
            copy.write_bytes(kpbench.runs.store.FILE_HEADER + bytes(data))
            written = scan_store(copy).image_ids.tolist()
            synced = tmp_path / "synced"
            synced.mkdir(exist_ok=True)
            (synced / "person_boxes.bin").write_bytes(boxes_file.read_bytes()[:synced_size[0]])
            assert set(written) <= set(read_person_boxes(synced).image_ids.tolist())
            checked.append(written)
            shutil.rmtree(synced)
        real_write(fd, data)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fsync, raising=False)
    monkeypatch.setattr(kpbench.runs.store, "_write_all", write)
    code, _, err = run_cli("run", "--model", f"{plugin}:Template", "--person-boxes", f"{plugin}:Detector",
                           "--coco-root", synthetic_coco_root, "--out", out, "--no-progress", "--device", "cpu",
                           "--no-analysis")
    assert code == 0, err
    assert sorted(i for group in checked for i in group) == sorted(read_person_boxes(out).image_ids.tolist())


def test_a_resume_with_another_top_down_decoding_is_refused(tmp_path: Path, plugin: Path, synthetic_coco_root: Path,
                                                            monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    """The crop model's pixel convention and heatmap refinement, and OKS-NMS's area, are no options (the config
    does not see them) yet change every keypoint: a run interrupted under one decoding is not resumed under another,
    nor one made before kpbench recorded them; with the same decoding it resumes."""
    from kpbench.runs import directory as rundir

    out = tmp_path / "run"
    args = ("run", "--model", f"{plugin}:Template", "--person-boxes", f"{plugin}:Detector", "--coco-root",
            synthetic_coco_root, "--out", out, "--no-progress", "--device", "cpu", "--no-analysis")
    interrupt_on_call(monkeypatch, 2)
    assert run_cli(*args)[0] == 130
    monkeypatch.undo()
    manifest = rundir.read_manifest(out)
    top_down = manifest["model"]["extra"]["protocol"]["top_down"]
    assert (top_down["pixel_convention"], top_down["heatmap_refinement"]) == ("index", "hrnet")
    for key, value in (("pixel_convention", None), ("heatmap_refinement", "mmpose")):
        changed = json.loads(json.dumps(manifest))
        if value is None:
            del changed["model"]["extra"]["protocol"]["top_down"][key]  # a run made before it was recorded
        else:
            changed["model"]["extra"]["protocol"]["top_down"][key] = value
        rundir.write_manifest(out, changed)
        code, stdout, err = run_cli(*args)
        was = "'not recorded'" if value is None else repr(value)
        assert code == 2 and stdout == ""
        assert err == (f"error: {out}: the top-down decoding changed since this run started ({key}: {was} there, "
                       f"{top_down[key]!r} now): its images would be read two ways; use another --out, or pass "
                       "--overwrite\n")
    rundir.write_manifest(out, manifest)
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert "resumed: 1 images were already cached" in err


def test_post_processing_of_a_whole_image_model_before_the_store(tmp_path: Path, plugin: Path,
                                                                 synthetic_coco_root: Path, run_cli) -> None:
    from kpbench.core.schema import COCO17
    from kpbench.engine.postprocess import PostProcessSettings, postprocess_predictions
    from kpbench.models.base import Predictions

    raw_dir, nms_dir = tmp_path / "raw", tmp_path / "nms"
    common = ("--model", f"{plugin}:Duplicates", "--coco-root", synthetic_coco_root, "--no-progress", "--device", "cpu",
              "--no-analysis")
    assert run_cli("run", *common, "--out", raw_dir)[0] == 0
    code, _, err = run_cli("run", *common, "--out", nms_dir, "--rescore", "keypoint-mean", "--nms", "oks")
    assert code == 0, err
    settings = PostProcessSettings(rescore="keypoint-mean", nms="oks")
    raw, done = cache_lines(raw_dir), cache_lines(nms_dir)
    for before, after in zip(raw, done):
        expected = postprocess_predictions(
            Predictions(np.array(before["boxes"]), np.array(before["scores"]), np.array(before["keypoints"]),
                        np.array(before["keypoint_scores"]), "probability"), COCO17.sigma_array, settings)
        assert after["scores"] == expected.scores.tolist() and after["keypoints"] == expected.keypoints.tolist()
        # The near-duplicate pair is one person: the better-scored survives (0.5 x 0.5 = 0.25 vs 0.6 x 0 = 0).
        assert len(after["scores"]) == 2 and after["scores"] == [0.7 * 0.9, 0.8 * 0.5]
    manifest = _read(nms_dir / "manifest.json")
    assert manifest["model"]["extra"]["postprocess"]["nms"] == "oks"
    assert any("post-processing: rescore keypoint-mean (0.2), OKS-NMS 0.9" in d for d in manifest["deviations"])
    assert not any("post-processing" in d for d in _read(raw_dir / "manifest.json")["deviations"])


@pytest.mark.parametrize(("args", "fragments"), [
    (("--flip-test",), ("--flip-test: only with --person-boxes",)),
    (("--person-box-max", "3"), ("--person-box-max: only with --person-boxes",)),
    (("--person-boxes", "missing.json"), ("--person-boxes missing.json: file not found",)),
    (("--nms", "oks", "--nms-sigma", "0.3"), ("--nms-sigma: only with --nms soft-oks-gaussian",)),
    (("--nms", "iou"), ("--nms: must be one of none, oks, soft-oks-gaussian, soft-oks-linear",)),
    (("--rescore-thresh", "0.5"), ("--rescore-thresh: only with --rescore keypoint-mean",)),
    (("--person-boxes", "gt", "--flip-space", "heatmaps"), ("--flip-space: only with --flip-test",)),
    (("--person-boxes", "gt", "--person-box-weights", "x.pt"), ("--person-box-weights: only with a detector model",)),
])
def test_option_errors_are_one_line(args: tuple, fragments: tuple, synthetic_coco_root: Path, tmp_path: Path,
                                    run_cli) -> None:
    result = run_cli("run", "--coco-root", synthetic_coco_root, "--out", tmp_path / "run", "--device", "cpu", *args)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "run").exists()


def test_models_that_cannot_do_it_are_one_line_errors(synthetic_coco_root: Path, tmp_path: Path, plugin: Path,
                                                      run_cli) -> None:
    base = ("run", "--coco-root", synthetic_coco_root, "--device", "cpu", "--no-progress")
    assert_one_line_error(run_cli(*base, "--out", tmp_path / "a", "--model", f"{plugin}:Duplicates", "--person-boxes",
                                  "gt"), "is a whole-image model", "a top-down run needs a crop model")
    assert_one_line_error(run_cli(*base, "--out", tmp_path / "b", "--weights", "none", "--rescore", "keypoint-mean"),
                          "--rescore keypoint-mean: keypointrcnn gives logit keypoint scores")
    assert_one_line_error(run_cli("run", "--coco-root", synthetic_coco_root, "--out", tmp_path / "c", "--results",
                                  tmp_path / "r.json", "--person-boxes", "gt", "--nms", "oks"),
                          "--results: --person-boxes, --nms do(es) not apply")
    assert not any((tmp_path / name).exists() for name in "ab")


def test_old_run_directories_resume_without_the_new_settings() -> None:
    from kpbench.core.config import RunSettings, settings_dict
    from kpbench.engine.runner import resume_fingerprint

    now = settings_dict(RunSettings())
    before = {k: v for k, v in now.items() if k not in ("person_boxes", "flip_test", "nms", "rescore", "crop_batch_size")}
    assert resume_fingerprint(before, "/c", "cpu") == resume_fingerprint(now, "/c", "cpu")
    assert resume_fingerprint({**now, "nms": "oks"}, "/c", "cpu") != resume_fingerprint(now, "/c", "cpu")


def test_speed_per_crop_per_person_and_growth(tmp_path: Path, synthetic_coco_root: Path, run_cli) -> None:
    adapter = tmp_path / "small.py"
    adapter.write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('ha', {str(Path(__file__).parents[1] / 'examples' / 'heatmap_adapter.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "class Small(m.HeatmapCropModel):\n    crop_size = (32, 48)\n")
    out = tmp_path / "speed"
    code, stdout, err = run_cli("speed", "--model", f"{adapter}:Small", "--person-boxes", "gt", "--coco-root",
                                synthetic_coco_root, "--num-images", "3", "--warmup", "0", "--iters", "2",
                                "--crop-batch-size", "1,4", "--persons", "1,3", "--out", out, "--device", "cpu",
                                "--no-progress")
    assert code == 0, err
    (path,) = out.glob("*-topdown.csv")
    rows = list(csv.DictReader(path.open()))
    assert [(r["kind"], r["crop_batch_size"], r["persons_per_image"]) for r in rows] == [
        ("crop", "1", ""), ("crop", "4", ""), ("image", "", str(4 / 3)), ("growth", "4", "1"), ("growth", "4", "3")]
    assert all(r["status"] == "ok" for r in rows)
    for r in rows:
        mean = float(r["mean_ms"])
        if r["kind"] == "crop":
            assert float(r["ms_per_crop"]) == mean / int(r["crop_batch_size"])
        else:
            assert float(r["ms_per_person"]) == mean / float(r["persons_per_image"])
    manifest = _read(path.with_suffix(".json"))
    assert manifest["top_down"]["person_boxes"]["kind"] == "gt" and manifest["images"]["persons"] == [1, 2, 1]
    assert "growth" in stdout and path.with_suffix(".md").read_text().startswith("# Top-down speed: tiny-hrnet on gt")
    # `kpbench report` of the folder shows the top-down rows (with their box source), as JSON and on the page.
    code, report, err = run_cli("report", "--kind", "speed", out, "--format", "json")
    assert code == 0, err
    shown = json.loads(report)["topdown"]
    assert [(r["kind"], r["person_boxes"], r["ms_per_crop"], r["ms_per_person"]) for r in shown] == [
        (r["kind"], r["person_boxes"], float(r["ms_per_crop"]) if r["ms_per_crop"] else None,
         float(r["ms_per_person"]) if r["ms_per_person"] else None) for r in rows]
    from kpbench.report.html import _speed_section

    assert _speed_section([path]).count("<tr>") == len(rows) + 1


def test_speed_times_the_post_processing_and_records_every_setting(tmp_path: Path, synthetic_coco_root: Path,
                                                                    run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import kpbench.engine.postprocess as postprocess

    calls = []
    real = postprocess.postprocess_predictions
    monkeypatch.setattr(postprocess, "postprocess_predictions", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = tmp_path / "speed"
    code, stdout, err = run_cli("speed", "--model", f"{Path(__file__).parents[1] / 'examples' / 'heatmap_adapter.py'}:"
                           "HeatmapCropModel", "--person-boxes", "gt", "--coco-root", synthetic_coco_root,
                           "--num-images", "3", "--warmup", "0", "--iters", "2", "--crop-batch-size", "2",
                           "--persons", "1,3", "--flip-test", "--flip-space", "keypoints", "--box-padding", "1.5",
                           "--rescore", "keypoint-mean", "--nms", "oks", "--nms-thresh", "0.8", "--out", out,
                           "--device", "cpu", "--no-progress")
    assert code == 0, err
    # image and growth rows (3 rows) x (1 cold + 0 warm-up + 2 timed calls) x one image per call; crop rows: none.
    assert len(calls) == 9
    (path,) = out.glob("*-topdown.csv")
    rows = list(csv.DictReader(path.open()))
    assert [r["kind"] for r in rows] == ["crop", "image", "growth", "growth"] and all(r["status"] == "ok" for r in rows)
    assert {(r["flip_space"], r["box_padding"], r["postprocess"]) for r in rows} == {
        ("keypoints", "1.5", "rescore keypoint-mean (0.2), OKS-NMS 0.8")}
    manifest = _read(path.with_suffix(".json"))
    assert manifest["postprocess"] == {"rescore": "keypoint-mean", "rescore_thresh": 0.2, "nms": "oks", "nms_thresh": 0.8}
    assert manifest["top_down"]["padding"] == 1.5 and manifest["top_down"]["flip_space"] == "keypoints"
    line = ("top-down on GT boxes (gt), crops 192x256, padding 1.5, flip test on (keypoints), post-processing rescore "
            "keypoint-mean (0.2), OKS-NMS 0.8 (in the image and growth rows)")
    assert f"; {line}.\n" in path.with_suffix(".md").read_text() and stdout.startswith(line + "\n")


def test_speed_on_a_detectors_boxes_times_the_detector_alone(tmp_path: Path, plugin: Path, synthetic_coco_root: Path,
                                                              run_cli) -> None:
    out = tmp_path / "speed"
    code, _, err = run_cli("speed", "--model", f"{plugin}:Template", "--person-boxes", f"{plugin}:Detector",
                           "--coco-root", synthetic_coco_root, "--num-images", "3", "--warmup", "0", "--iters", "1",
                           "--crop-batch-size", "2", "--persons", "2", "--out", out, "--device", "cpu", "--no-progress")
    assert code == 0, err
    (path,) = out.glob("*-topdown.csv")
    rows = list(csv.DictReader(path.open()))
    assert [(r["kind"], r["persons_per_image"]) for r in rows] == [("crop", ""), ("detector", ""), ("image", "1.0"),
                                                                   ("growth", "2")]
    detector = rows[1]
    assert detector["status"] == "ok" and float(detector["ms_per_image"]) == float(detector["mean_ms"])
    # The detector's one person box per image (its other category left out) is what the image row crops.
    manifest = _read(path.with_suffix(".json"))
    assert manifest["images"]["persons"] == [1, 1, 1]
    assert manifest["top_down"]["person_boxes"]["kind"] == "model"
    assert manifest["top_down"]["person_boxes"]["model"]["name"] == "centre-detector"


@pytest.mark.parametrize(("args", "fragment"), [
    (("--nms", "oks"), "--nms: kpbench speed uses these only in its top-down rows, with --person-boxes"),
    (("--flip-test", "--box-padding", "1.5"), "--flip-test, --box-padding: kpbench speed uses these only in its"),
    (("--person-boxes", "gt", "--nms-sigma", "0.3"), "--nms-sigma: only with --nms soft-oks-gaussian"),
])
def test_speed_refuses_top_down_options_it_would_ignore(args: tuple, fragment: str, synthetic_coco_root: Path,
                                                        tmp_path: Path, run_cli) -> None:
    result = run_cli("speed", "--coco-root", synthetic_coco_root, "--out", tmp_path / "speed", "--device", "cpu",
                     "--num-images", "1", *args)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "speed").exists()


RECORDED = json.loads((Path(__file__).parent / "fixtures" / "blazepose_landmarks.json").read_text())


class _FakePose:
    """Stands in for mediapipe's Pose: the recorded landmarks for every crop but those it is told to miss."""

    def __init__(self, landmarks: list, miss: set[int]) -> None:
        self.landmarks, self.miss, self.calls = landmarks, miss, 0

    def process(self, rgb: np.ndarray):
        from types import SimpleNamespace

        self.calls += 1
        assert rgb.dtype == np.uint8 and rgb.shape == (256, 256, 3)
        if self.calls in self.miss:
            return SimpleNamespace(pose_landmarks=None)
        points = [SimpleNamespace(x=x, y=y, z=z, visibility=v) for x, y, z, v in self.landmarks]
        return SimpleNamespace(pose_landmarks=SimpleNamespace(landmark=points))


def test_mediapipe_on_crops_with_a_stand_in() -> None:
    import torch

    from kpbench.models.mediapipe import BLAZEPOSE_TO_COCO
    from kpbench.models.mediapipe_crops import MediaPipeCropModel
    from kpbench.models.person_boxes import PersonBoxes
    from kpbench.models.topdown import TopDownModel

    record = next(r for r in RECORDED["images"] if r["landmarks"] is not None)
    marks = np.asarray(record["landmarks"])
    model = MediaPipeCropModel.__new__(MediaPipeCropModel)  # without mediapipe: its Pose replaced
    model._pose = _FakePose(record["landmarks"], miss={2})

    class Boxes:
        needs_images = False

        def boxes(self, ids, images):
            return [PersonBoxes(np.array([[10.0, 20, 60, 120], [100, 10, 150, 90]]), np.array([0.9, 0.8]))]

        def describe(self):
            return {"kind": "test", "spec": "test", "protocol": "test boxes"}

    composite = TopDownModel(model, Boxes())
    (pred,) = composite.predict([torch.rand(3, 200, 300)], image_ids=[1])
    assert len(pred) == 1 and pred.scores.tolist() == [0.9]  # BlazePose found nobody in the second crop
    # The landmarks, normalised to the 256 x 256 crop, land in the box's crop region of the image.
    (cx, cy, w, h), = __import__("kpbench.models.crops", fromlist=["crop_regions"]).crop_regions(
        np.array([[10.0, 20, 60, 120]]), (256, 256))
    expected = np.stack([cx - w / 2 + marks[list(BLAZEPOSE_TO_COCO), 0] * w,
                         cy - h / 2 + marks[list(BLAZEPOSE_TO_COCO), 1] * h], axis=1)
    assert np.abs(pred.keypoints[0, :, :2] - expected).max() < 1e-9
    assert np.array_equal(pred.keypoint_scores[0], marks[list(BLAZEPOSE_TO_COCO), 3])
    assert composite.info().keypoint_score_kind == "probability" and MediaPipeCropModel.crop_size == (256, 256)
