"""Shared test helpers: paths to the real fixtures in ../shared/data (and a skip marker for machines without them),
the `kpbench` subprocess helper and the one-line error check of the command-line tests, PNG sizes, and
`make_run_dir`, a small finished run directory built by hand as `kpbench run` would leave it."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kpbench.core.schema import NUM_KEYPOINTS
from kpbench.data.synthetic import PERSON_CATEGORY
from kpbench.runs.detections import ImageDetections, append_detections, to_coco_results
from kpbench.runs.directory import FORMAT_VERSION
from kpbench.runs.store import create_store, encode_image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COCO_SAMPLE = SHARED_DATA / "coco_val2017_sample"
FCE = SHARED_DATA / "fce_keypoints_1img"
XTCOCO = SHARED_DATA / "xtcocoapi_example_coco"
EDGE = SHARED_DATA / "kpbench_synthetic_edgecases"

requires_shared = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real fixtures not found at {SHARED_DATA} (../shared/data beside the repo)"
)


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def pycocotools_eval(
    gt: dict[str, Any], results: list[dict[str, Any]], iou_type: str = "keypoints", sigmas: Any = None,
    max_dets: list[int] | None = None, settings: Any = None,
) -> Any:
    """A bare pycocotools COCOeval run on deep copies (pycocotools mutates its inputs), with the given keypoint
    sigmas, maxDets and `kpbench.evaluation.settings.EvalSettings` when given."""
    import copy

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        if max_dets is not None:
            ev.params.maxDets = max_dets
        if settings is not None:
            settings.apply(ev.params)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def jittered_detections(gt: dict, seed: int = 0) -> list[dict]:
    """Deterministic detections from GT: every labelled person, jittered, plus a false positive per image."""
    rng = np.random.default_rng(seed)
    results = []
    for ann in gt["annotations"]:
        if ann["iscrowd"] or ann["num_keypoints"] == 0:
            continue
        kps = np.array(ann["keypoints"], dtype=float).reshape(17, 3)
        x, y, w, h = ann["bbox"]
        pts = np.where(kps[:, 2:] > 0, kps[:, :2], [x + w / 2, y + h / 2])
        pts = pts + rng.normal(0, 1, pts.shape) * 0.04 * np.sqrt(ann["area"]) * rng.uniform(0.2, 2)
        flat = np.concatenate([pts, np.ones((17, 1))], axis=1).reshape(-1)
        results.append({"image_id": ann["image_id"], "category_id": 1, "keypoints": flat.round(2).tolist(),
                        "score": round(float(rng.uniform(0.3, 1.0)), 2)})
    for img in gt["images"]:
        flat = np.concatenate([rng.uniform(0, 200, (17, 2)), np.ones((17, 1))], axis=1).reshape(-1)
        results.append({"image_id": img["id"], "category_id": 1, "keypoints": flat.round(2).tolist(),
                        "score": round(float(rng.uniform(0, 0.5)), 2)})
    return results


# --- the command line ----------------------------------------------------------------------------------------


def kpbench(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m kpbench ARGS` in a subprocess (for what needs a fresh interpreter; otherwise use the `run_cli`
    fixture of conftest.py, which runs the console script in this process)."""
    return subprocess.run(
        [sys.executable, "-m", "kpbench", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str] | tuple[int, str, str], *fragments: str) -> None:
    """Exit code 2, no traceback, exactly one `error:` line on stderr, containing every fragment. `proc` is a
    CompletedProcess or `run_cli`'s (exit code, stdout, stderr)."""
    if isinstance(proc, tuple):
        code, stdout, stderr = proc
    else:
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    assert code == 2, (stdout, stderr)
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the PNG signature; PIL then decodes all of it."""
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    with Image.open(path) as img:
        img.load()  # a truncated or corrupt file fails here
        assert img.size == (width, height)
    return width, height


# --- make_run_dir: a finished run directory over 3 generated images -------------------------------------------

BACKGROUND = (90, 110, 130)
# A person drawn on a 200 x 160 image lives in x, y within [20, 90] x [20, 140]; x >= 120 stays empty.
TEMPLATE = np.array(
    [[55, 25], [50, 22], [60, 22], [45, 25], [65, 25], [40, 45], [70, 45], [32, 70], [78, 70], [28, 90],
     [82, 90], [45, 95], [65, 95], [45, 115], [65, 115], [45, 135], [65, 135]], dtype=np.float64,
)  # fmt: skip


def person(offset: tuple[float, float] = (0.0, 0.0), low: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (17, 3) of the template person shifted by `offset`, and logits (17,) with `low` below 2."""
    xy = TEMPLATE + np.asarray(offset)
    logits = np.full(NUM_KEYPOINTS, 6.0)
    logits[list(low)] = 0.5
    return np.concatenate([xy, np.ones((NUM_KEYPOINTS, 1))], axis=1), logits


def detections(image_id: int, persons: list[tuple[np.ndarray, np.ndarray, float]]) -> ImageDetections:
    kps = np.array([p[0] for p in persons]).reshape(-1, NUM_KEYPOINTS, 3)
    boxes = np.array([[*p[0][:, :2].min(0) - 5, *p[0][:, :2].max(0) + 5] for p in persons]).reshape(-1, 4)
    return ImageDetections(
        image_id=image_id,
        boxes=boxes,
        scores=np.array([p[2] for p in persons], dtype=np.float64),
        labels=np.ones(len(persons), dtype=np.int64),
        keypoints=kps,
        keypoint_scores=np.array([p[1] for p in persons]).reshape(-1, NUM_KEYPOINTS),
    )


@dataclass
class RunDir:
    path: Path
    images: dict[int, Path]  # image id -> source file
    dets: dict[int, ImageDetections]
    gt: dict


def make_run_dir(root: Path, store: bool = False) -> RunDir:
    """A finished run over 3 generated images (ids 7, 42, 1000), with GT, cache, results and manifest: a format-2
    run directory (detections.jsonl, which tests edit to inject damage), or with `store` a format-3 one
    (detections.bin, as `kpbench run` writes now).

    Image 42 (200 x 160 PNG): a person at 0.98 (left and right wrist logits below 2) and one at 0.5 (not drawn).
    Image 7 (240 x 180 JPEG): one person at 0.95, shifted by (100, 20). Image 1000 (180 x 120 PNG): one at 0.3.
    """
    from PIL import Image

    coco_root, split = root / "coco", "val2017"
    (coco_root / split).mkdir(parents=True)
    run = root / "run"
    run.mkdir()
    specs = {
        42: ((200, 160), "png", [(*person(low=(9, 10)), 0.98), (*person(offset=(100, 0)), 0.5)]),
        7: ((240, 180), "jpg", [(*person(offset=(100, 20)), 0.95)]),
        1000: ((180, 120), "png", [(*person(offset=(60, -20)), 0.3)]),
    }
    images, dets, records, annotations = {}, {}, [], []
    for image_id, ((width, height), ext, persons) in specs.items():
        name = f"{image_id:012d}.{ext}"
        pixels = np.empty((height, width, 3), dtype=np.uint8)
        pixels[:] = BACKGROUND
        pixels[:, : width // 2, 0] = 60  # two tones, so that a drawn pixel is compared with a real background
        Image.fromarray(pixels, "RGB").save(coco_root / split / name)
        images[image_id] = coco_root / split / name
        records.append({"id": image_id, "file_name": name, "width": width, "height": height})
        dets[image_id] = detections(image_id, persons)
        for kps, _, score in persons:
            if score < 0.9:
                continue
            gt_kps = kps.copy()
            gt_kps[:, :2] += 3.0  # GT a few pixels off the detection
            gt_kps[:, 2] = 2
            x0, y0 = gt_kps[:, :2].min(0) - 5
            x1, y1 = gt_kps[:, :2].max(0) + 5
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "num_keypoints": NUM_KEYPOINTS,
                    "keypoints": gt_kps.reshape(-1).tolist(),
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "area": float((x1 - x0) * (y1 - y0) * 0.6),
                }
            )
    gt = {"images": sorted(records, key=lambda r: r["id"]), "annotations": annotations, "categories": [PERSON_CATEGORY]}
    (run / "ground_truth.json").write_text(json.dumps(gt))
    ids = sorted(specs)
    if store:
        create_store(run / "detections.bin", (encode_image(dets[image_id]) for image_id in ids))
    else:
        with (run / "detections.jsonl").open("w") as fh:
            for image_id in ids:
                append_detections(fh, dets[image_id])
    keypoint_results, bbox_results = to_coco_results(dets[i] for i in ids)
    (run / "keypoints_results.json").write_text(json.dumps(keypoint_results))
    (run / "bbox_results.json").write_text(json.dumps(bbox_results))
    manifest = {
        "kpbench_run_version": FORMAT_VERSION if store else 2,
        "coco_root": str(coco_root),
        "split": split,
        "image_ids": ids,
        "config": {"weights": "none", "min_size": 800, "max_size": 1333},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return RunDir(run, images, dets, gt)


def cache_lines(run_dir: Path) -> list[dict[str, Any]]:
    """A run directory's cached detections (any format) as the JSON lines of format 2, parsed: one dict per image,
    in id order (`kpbench export --to jsonl`)."""
    from kpbench.runs.arrays import read_run_arrays
    from kpbench.runs.results import encode_jsonl

    return [json.loads(line) for line in b"".join(encode_jsonl(read_run_arrays(run_dir))).splitlines()]


def stored_images(run_dir: Path) -> int:
    """Images with a complete record in a run directory's detections files (safe to call while a run writes)."""
    from kpbench.runs.merge import count_cached_images

    return count_cached_images(run_dir)


def interrupt_on_call(monkeypatch: pytest.MonkeyPatch, call: int = 2) -> None:
    """Ctrl-C in the run loop at its `call`-th model call (after the earlier calls' images are handed to the
    store): kpbench.engine.inference.predictions_to_host raises KeyboardInterrupt then. Undo with
    monkeypatch.undo()."""
    import kpbench.engine.inference

    real = kpbench.engine.inference.predictions_to_host
    calls = 0

    def interrupting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(kpbench.engine.inference, "predictions_to_host", interrupting)
