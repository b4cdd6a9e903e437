"""Shared pytest fixtures. Each fixture is self-contained; add new ones below with their own helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# --- synthetic_coco_root: a tiny COCO root with real JPEG files (for `kpbench run` and the data layer) ----------

# (image id, width, height, persons): ids are not consecutive and not in file order, sizes differ, and one image
# has no person (the protocol evaluates it too).
SYNTHETIC_COCO_IMAGES: tuple[tuple[int, int, int, int], ...] = (
    (785, 160, 120, 2),
    (139, 128, 96, 1),
    (4000, 96, 128, 0),
    (2500, 112, 112, 1),
)


def _synthetic_person(rng: np.random.Generator, ann_id: int, image_id: int, width: int, height: int) -> dict[str, Any]:
    w, h = float(rng.uniform(0.3, 0.5) * width), float(rng.uniform(0.5, 0.8) * height)
    x, y = float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h))
    kps: list[float] = []
    for _ in range(17):
        kps += [round(x + float(rng.uniform(0, w)), 2), round(y + float(rng.uniform(0, h)), 2), 2]
    return {
        "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "num_keypoints": 17,
        "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)], "area": round(w * h * 0.6, 2),
        "keypoints": kps, "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
    }


def build_synthetic_coco_root(
    root: Path, images: tuple[tuple[int, int, int, int], ...] = SYNTHETIC_COCO_IMAGES, split: str = "val2017", seed: int = 0
) -> Path:
    """Write ROOT/annotations/person_keypoints_<split>.json and ROOT/<split>/<12-digit id>.jpg (random RGB noise
    with a few blocks). Returns ROOT."""
    from PIL import Image

    from kpbench.core.schema import COCO_SKELETON, KEYPOINT_NAMES

    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(parents=True, exist_ok=True)
    records, annotations = [], []
    for image_id, width, height, persons in images:
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        pixels[height // 4 : height // 2, width // 4 : width // 2] = rng.integers(0, 256, size=3, dtype=np.uint8)
        name = f"{image_id:012d}.jpg"
        Image.fromarray(pixels, "RGB").save(root / split / name, quality=90)
        records.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for _ in range(persons):
            annotations.append(_synthetic_person(rng, len(annotations) + 1, image_id, width, height))
    gt = {
        "info": {"description": "kpbench synthetic COCO root"},
        "licenses": [],
        "images": records,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(KEYPOINT_NAMES),
                        "skeleton": [list(p) for p in COCO_SKELETON]}],
    }
    (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(gt))
    return root


@pytest.fixture(scope="session")
def synthetic_coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny COCO val2017 root (4 JPEGs, ids 139, 785, 2500, 4000; 4000 has no person). Treat it as read-only."""
    return build_synthetic_coco_root(tmp_path_factory.mktemp("synthetic_coco"))


# --- run_cli: the kpbench console script, in this process --------------------------------------------------------


@pytest.fixture()
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """`run_cli(*args)` runs `kpbench ARGS` as the console script does (KpbenchError -> exit 2) and returns
    (exit code, stdout, stderr)."""
    from kpbench.cli import main

    def invoke(*args: object) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["kpbench", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke
