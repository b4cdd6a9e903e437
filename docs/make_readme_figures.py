"""Draw README's figures from synthetic data: `python docs/make_readme_figures.py [OUT_DIR]`."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from kpbench.core.io import atomic_write_bytes
from kpbench.report.figures import plot_keypoint_breakdown, plot_pr_curves


def make_readme_figures(out_dir: str | Path = "docs/images", seed: int = 0) -> list[Path]:
    """The README's figures, from synthetic data only (never a COCO photo): PR curves, the per-keypoint
    breakdown and a skeleton overlay on a generated canvas. Deterministic for a given seed.

    python docs/make_readme_figures.py docs/images
    """
    from PIL import Image

    from kpbench.analysis.breakdown import keypoint_breakdown
    from kpbench.data.synthetic import make_synthetic_coco
    from kpbench.evaluation.cocoeval import evaluate
    from kpbench.report.draw import draw_ground_truth, draw_skeletons, side_by_side

    out = Path(out_dir)
    gt, results = make_synthetic_coco(num_images=200, seed=seed)
    kp = evaluate(gt, results, iou_type="keypoints")
    written = [plot_pr_curves(kp, out / "synthetic_pr_curves.png")]
    rows = keypoint_breakdown(kp, gt, results)
    written.append(
        plot_keypoint_breakdown(rows, out / "synthetic_keypoints.png", title="Per-keypoint breakdown (synthetic data)")
    )

    # A skeleton overlay on a plain gradient: the image with the most labelled GT persons.
    image_id = max(
        (img["id"] for img in gt["images"]),
        key=lambda i: sum(a["num_keypoints"] > 0 for a in gt["annotations"] if a["image_id"] == i),
    )
    width, height = gt["images"][0]["width"], gt["images"][0]["height"]
    ramp = np.linspace(90, 200, width, dtype=np.float64)
    canvas = np.stack(
        [np.tile(ramp, (height, 1)), np.full((height, width), 150.0), np.tile(ramp[::-1], (height, 1))], axis=2
    ).astype(np.uint8)
    dets = [r for r in results if r["image_id"] == image_id]
    rng = np.random.default_rng(seed)
    kps = np.array([r["keypoints"] for r in dets], dtype=np.float64).reshape(-1, 17, 3)
    logits = rng.normal(5.0, 2.5, kps.shape[:2])  # synthetic results carry no keypoint scores
    scores = np.array([r["score"] for r in dets], dtype=np.float64)
    left = Image.fromarray(draw_skeletons(canvas, kps, logits, scores, score_thresh=0.7))
    right = Image.fromarray(draw_ground_truth(canvas, [a for a in gt["annotations"] if a["image_id"] == image_id]))
    panel = side_by_side(left, right, labels=("detections (score > 0.7)", "ground truth"))
    buf = io.BytesIO()
    panel.save(buf, format="PNG")
    atomic_write_bytes(out / "synthetic_skeletons.png", buf.getvalue())
    written.append(out / "synthetic_skeletons.png")
    return written


if __name__ == "__main__":
    make_readme_figures(sys.argv[1] if len(sys.argv) > 1 else "docs/images")
