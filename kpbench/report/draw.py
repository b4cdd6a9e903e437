"""Skeleton overlays: keypoints and limbs drawn on images, from a run's cached detections or a model run.

Rules (those of the Keypoint R-CNN tutorial this project started from):

- a person is drawn when its box score is above `score_thresh` (a probability, so in [0, 1]); an output panel
  where nobody is above it is labelled "0 persons above 0.9". Its default suits the model's scores
  (`run_person_threshold`, `model_person_threshold`): the run's LRP-optimal threshold where `kpbench analyze` found
  one, else its best-F1 threshold from `kpbench thresholds` (which `kpbench run` writes), else the model's own
  `draw_person_thresh` (Keypoint R-CNN 0.9, YOLO 0.25, MediaPipe 0.5), else 0.9 for a model whose keypoint scores
  are logits and 0.5 for one whose are probabilities;
- a keypoint is drawn when its score, a heatmap *logit* (not a probability), is above `kp_thresh` (default 2);
- a limb (a COCO skeleton link) is drawn only when both its ends pass: its score is the lower of the two.

Each person gets one colour; line width and keypoint radius grow with the image (`line_width`). Ground truth is
drawn with the same rules, a GT keypoint passing when it is labelled (v > 0). Drawing uses PIL only (no OpenCV);
torch is imported only to run a model on image files (`draw_image_files`).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kpbench.core.errors import KpbenchError, KpbenchWarning
from kpbench.core.io import atomic_write_bytes, check_regular_file, ensure_output_dir
from kpbench.core.schema import COCO17, KeypointSchema
from kpbench.runs.detections import ImageDetections

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_SCORE_THRESH = 0.9
# The person threshold of a model that declares no `draw_person_thresh`, by its keypoint score kind: Keypoint R-CNN's
# family (heatmap logits) the tutorial's 0.9; a model of probabilities the middle of the scale.
PERSON_THRESH_BY_KIND = {"logit": DEFAULT_SCORE_THRESH, "probability": 0.5}
DEFAULT_KP_THRESH = 2.0
DEFAULT_TOP_N = 8
DRAW_DIR = "draw"

# Distinct, saturated colours (Trubetskoy's "20 distinct colours", the ones that read well on photos); person i
# gets PALETTE[i % len(PALETTE)] in order of descending score.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
)  # fmt: skip

def line_width(height: int, width: int) -> int:
    """Limb width in pixels for an image: 1 px per 200 px of the shorter side, at least 1."""
    return max(1, round(min(height, width) / 200))


def keypoint_radius(height: int, width: int) -> int:
    """Keypoint dot radius in pixels: twice the limb width, so joints stand out from limbs."""
    return 2 * line_width(height, width)


def _limb_index(schema: KeypointSchema) -> np.ndarray:
    return np.array(schema.limbs, dtype=np.int64).reshape(-1, 2)  # (L, 2)


def limb_scores(keypoint_scores: np.ndarray, schema: KeypointSchema = COCO17) -> np.ndarray:
    """(N, L) score of every limb of `schema` for every person: the lower of its two keypoint scores (N, K)."""
    scores = np.asarray(keypoint_scores, dtype=np.float64).reshape(-1, schema.num_keypoints)
    index = _limb_index(schema)
    return np.minimum(scores[:, index[:, 0]], scores[:, index[:, 1]])


def passing(
    keypoint_scores: np.ndarray,
    scores: np.ndarray | None = None,
    score_thresh: float = DEFAULT_SCORE_THRESH,
    kp_thresh: float = DEFAULT_KP_THRESH,
    schema: KeypointSchema = COCO17,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which persons (N,), keypoints (N, K) and limbs (N, L) are drawn; thresholds are strict ("above").

    With `scores` None every person passes. Keypoints and limbs of a person that fails are all False.
    """
    kp = np.asarray(keypoint_scores, dtype=np.float64).reshape(-1, schema.num_keypoints)
    persons = np.ones(len(kp), dtype=bool) if scores is None else np.asarray(scores, dtype=np.float64) > score_thresh
    keypoints = (kp > kp_thresh) & persons[:, None]
    limbs = (limb_scores(kp, schema) > kp_thresh) & persons[:, None]
    return persons, keypoints, limbs


def _to_pil(image: Any) -> tuple[Image.Image, str]:
    """A PIL RGB image and the input's kind: "pil", "torch" (uint8 CHW tensor) or "numpy" (uint8 HWC array)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB"), "pil"
    if type(image).__module__.startswith("torch"):  # no torch import just to check a type
        array = image.detach().cpu().permute(1, 2, 0).numpy()
        kind = "torch"
    else:
        array = np.asarray(image)
        kind = "numpy"
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise KpbenchError(
            f"image: expected uint8 RGB, a (3, H, W) tensor or an (H, W, 3) array, got {array.dtype} {array.shape}"
        )
    return Image.fromarray(np.ascontiguousarray(array), "RGB"), kind


def _from_pil(image: Image.Image, kind: str) -> Any:
    if kind == "pil":
        return image
    array = np.asarray(image, dtype=np.uint8).copy()
    if kind == "torch":
        import torch

        return torch.from_numpy(array).permute(2, 0, 1).contiguous()
    return array


def _draw_on(
    canvas: Image.Image,
    keypoints: np.ndarray,
    kp_mask: np.ndarray,
    limb_mask: np.ndarray,
    order: Sequence[int],
    colors: Sequence[tuple[int, int, int]],
    schema: KeypointSchema,
) -> None:
    from PIL import ImageDraw

    draw = ImageDraw.Draw(canvas)
    width = line_width(canvas.height, canvas.width)
    radius = keypoint_radius(canvas.height, canvas.width)
    outline = max(1, width // 2)
    for rank, person in enumerate(order):
        color = tuple(colors[rank % len(colors)])
        xy = keypoints[person, :, :2]
        for limb, (a, b) in enumerate(schema.limbs):
            if limb_mask[person, limb]:
                draw.line([tuple(xy[a]), tuple(xy[b])], fill=color, width=width)
        for k in range(schema.num_keypoints):
            if kp_mask[person, k]:
                x, y = xy[k]
                # A dark rim keeps a dot visible where its colour is close to the background.
                draw.ellipse(
                    [x - radius, y - radius, x + radius, y + radius], fill=color, outline=(0, 0, 0), width=outline
                )


def draw_skeletons(
    image: Any,
    keypoints: np.ndarray,
    keypoint_scores: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    score_thresh: float = DEFAULT_SCORE_THRESH,
    kp_thresh: float = DEFAULT_KP_THRESH,
    colors: Sequence[tuple[int, int, int]] = PALETTE,
    schema: KeypointSchema = COCO17,
) -> Any:
    """Draw persons' keypoints and `schema`'s limbs on a copy of `image`; returns the same kind as given.

    `image`: a uint8 RGB torch tensor (3, H, W) (torchvision's layout), a uint8 numpy array (H, W, 3) or a PIL
    image. `keypoints` (N, K, 2 or 3) in image pixels; `keypoint_scores` (N, K) (None: all pass);
    `scores` (N,) person scores (None: all persons drawn). Persons are coloured by descending score.
    """
    canvas, kind = _to_pil(image)
    canvas = canvas.copy()
    k = schema.num_keypoints
    kps = np.asarray(keypoints, dtype=np.float64)
    if kps.size and kps.size % (k * kps.shape[-1]):
        raise KpbenchError(f"draw: keypoints of shape {kps.shape} do not fit schema {schema.name} ({k} keypoints)")
    kps = kps.reshape(-1, k, kps.shape[-1]) if kps.size else np.zeros((0, k, 3))
    kp_scores = np.full(kps.shape[:2], np.inf) if keypoint_scores is None else np.asarray(keypoint_scores)
    persons, kp_mask, limb_mask = passing(kp_scores, scores, score_thresh, kp_thresh, schema)
    by_score = (
        np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable") if scores is not None else range(len(kps))
    )
    _draw_on(canvas, kps, kp_mask, limb_mask, [int(i) for i in by_score if persons[i]], colors, schema)
    return _from_pil(canvas, kind)


def draw_detections(
    image: Any,
    dets: ImageDetections,
    score_thresh: float = DEFAULT_SCORE_THRESH,
    kp_thresh: float = DEFAULT_KP_THRESH,
    schema: KeypointSchema = COCO17,
) -> Any:
    """`draw_skeletons` for one image's cached detections."""
    return draw_skeletons(image, dets.keypoints, dets.keypoint_scores, dets.scores, score_thresh, kp_thresh,
                          schema=schema)


def draw_ground_truth(image: Any, annotations: Sequence[dict[str, Any]], schema: KeypointSchema = COCO17) -> Any:
    """Draw GT instances (their labelled keypoints, v > 0, and the limbs whose two ends are labelled)."""
    anns = [a for a in annotations if a.get("keypoints") and not a.get("iscrowd")]
    kps = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(-1, schema.num_keypoints, 3)
    labelled = np.where(kps[..., 2] > 0, np.inf, -np.inf)
    return draw_skeletons(image, kps, labelled, None, kp_thresh=0.0, schema=schema)


def _draw_label(canvas: Image.Image, x0: int, text: str, reference: tuple[int, int]) -> None:
    """White text on a black box in the top-left corner of the panel starting at x0 (sized by `reference`, the
    panel's height and width)."""
    from PIL import ImageDraw, ImageFont

    size = max(10, min(reference) // 25)
    try:
        font: Any = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(canvas)
    box = draw.textbbox((x0 + size // 2, size // 2), text, font=font)
    pad = max(2, size // 5)
    draw.rectangle([box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad], fill=(0, 0, 0))
    draw.text((x0 + size // 2, size // 2), text, fill=(255, 255, 255), font=font)


def label_image(image: Image.Image, text: str) -> Image.Image:
    """A copy of a PIL image with `text` in its top-left corner (white on black), as side_by_side labels panels."""
    out = image.copy()
    _draw_label(out, 0, text, (image.height, image.width))
    return out


def side_by_side(left: Image.Image, right: Image.Image, labels: tuple[str, str] | None = None) -> Image.Image:
    """Two equal-sized images beside each other with a white gap, each optionally labelled in its corner."""
    from PIL import Image

    gap = 2 * line_width(left.height, left.width)
    out = Image.new("RGB", (left.width + gap + right.width, max(left.height, right.height)), (255, 255, 255))
    out.paste(left, (0, 0))
    out.paste(right, (left.width + gap, 0))
    if labels:
        for x0, text in ((0, labels[0]), (left.width + gap, labels[1])):
            _draw_label(out, x0, text, (left.height, left.width))
    return out


def _save_png(image: Image.Image, path: Path) -> Path:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _open_rgb(path: Path) -> Image.Image:
    """An image file decoded as RGB by Pillow's plugins, never through `PIL.Image.open`, which ultralytics patches
    (`kpbench.data.images`); no EXIF rotation: the model and the COCO annotations use the stored orientation."""
    from kpbench.data.images import read_image_pil

    return read_image_pil(path)


def _check_image_header(path: Path) -> None:
    """A one-line KpbenchError for an empty file, a JSON file, or one Pillow cannot identify as an image (its
    header only: nothing is decoded), in the decoder's words; `PIL.Image.open` is never called (see `_open_rgb`)."""
    from kpbench.data.images import open_image

    with path.open("rb") as fh:
        head = fh.read(64)
    if not head:
        raise KpbenchError(f"{path}: cannot decode image (empty file)")
    if head.lstrip()[:1] in (b"{", b"["):
        raise KpbenchError(f"{path}: a JSON file, not an image; draw takes a run directory, or image files")
    open_image(path).close()


def nobody_label(score_thresh: float) -> str:
    """The label of a panel where no person's score is above the threshold (so nothing is drawn on it)."""
    return f"0 persons above {score_thresh:g}"


def _render(
    image: Image.Image,
    dets: ImageDetections,
    gt_annotations: Sequence[dict[str, Any]] | None,
    score_thresh: float,
    kp_thresh: float,
    schema: KeypointSchema = COCO17,
) -> Image.Image:
    """One output file: the detections drawn (labelled when nobody passes the threshold, so that an unchanged
    photo is not mistaken for a failure), and the ground truth beside them when given."""
    drawn = draw_detections(image, dets, score_thresh, kp_thresh, schema)
    nobody = not (np.asarray(dets.scores) > score_thresh).any()
    if gt_annotations is None:
        return label_image(drawn, nobody_label(score_thresh)) if nobody else drawn
    left = f"detections: {nobody_label(score_thresh)}" if nobody else "detections"
    return side_by_side(drawn, draw_ground_truth(image, gt_annotations, schema), labels=(left, "ground truth"))


# The default keypoint threshold for models whose keypoint scores are probabilities (YOLO-pose).
DEFAULT_KP_PROBABILITY_THRESH = 0.5


def keypoint_threshold(kp_thresh: float | None, kind: str) -> float:
    """The keypoint-score threshold on the scale of the scores: the given one (a probability must lie in [0, 1]),
    else 2 for logits (Keypoint R-CNN) and 0.5 for probabilities."""
    if kp_thresh is None:
        return DEFAULT_KP_PROBABILITY_THRESH if kind == "probability" else DEFAULT_KP_THRESH
    if kind == "probability" and not 0.0 <= kp_thresh <= 1.0:
        raise KpbenchError(f"--kp-thresh: {kp_thresh} is outside [0, 1]; this model's keypoint scores are probabilities")
    return kp_thresh


def _check_thresholds(score_thresh: float, kp_thresh: float) -> None:
    """A person-score threshold is a probability in [0, 1] (as in `kpbench thresholds`); a keypoint threshold is a
    logit, any finite value."""
    if not np.isfinite(score_thresh) or not 0.0 <= score_thresh <= 1.0:
        raise KpbenchError(
            f"--score-thresh: {score_thresh} is outside [0, 1] (person scores are probabilities)"
        )
    if not np.isfinite(kp_thresh):
        raise KpbenchError(f"--kp-thresh: must be a finite number (a logit), got {kp_thresh}")


@dataclass(frozen=True)
class PersonThreshold:
    """The person-score threshold a drawing uses, and where it came from (said on stderr by `kpbench draw`)."""

    value: float
    source: str  # "given", "lrp", "best_f1", "model" or "kind"
    origin: str  # for people: "the run's LRP-optimal threshold (RUN/score_threshold.csv)"

    def line(self) -> str:
        """The line `kpbench draw` prints."""
        hint = "" if self.source == "given" else "; --person-thresh to choose another"
        return f"person threshold {self.value:g}: {self.origin}{hint}"


def _given(score_thresh: float) -> PersonThreshold:
    return PersonThreshold(float(score_thresh), "given", "given")


def _by_model(info: Any, kind: str, who: str) -> PersonThreshold:
    """The model's own drawing threshold (its info's `draw_person_thresh`), else the default of its score kind."""
    declared = info.get("draw_person_thresh") if isinstance(info, dict) else getattr(info, "draw_person_thresh", None)
    if isinstance(declared, (int, float)) and not isinstance(declared, bool) and 0.0 <= declared <= 1.0:
        return PersonThreshold(float(declared), "model", f"{who}'s own default for drawing")
    value = PERSON_THRESH_BY_KIND.get(kind, DEFAULT_SCORE_THRESH)
    scores = "logits" if kind == "logit" else "probabilities"
    return PersonThreshold(value, "kind", f"the default for a model whose keypoint scores are {scores}")


def run_person_threshold(run_dir: str | Path, score_thresh: float | None = None) -> PersonThreshold:
    """The person threshold for drawing a run: `score_thresh` when given; else the run's LRP-optimal threshold
    (score_threshold.csv, written by `kpbench analyze`), else its best-F1 threshold (thresholds_person.csv, written
    by `kpbench thresholds` and `kpbench run`), else the model's own (`_by_model`). The run's thresholds keep
    detections scoring at or above them and drawing those above them, which differ only on a score exactly equal."""
    from kpbench.core.io import read_csv_rows
    from kpbench.runs.directory import read_manifest, run_format

    if score_thresh is not None:
        return _given(score_thresh)
    run_dir = Path(run_dir)
    lrp_file, f1_file = run_dir / "score_threshold.csv", run_dir / "thresholds_person.csv"
    if lrp_file.is_file():
        for row in read_csv_rows(lrp_file):
            if row.get("criterion") == "LRP-optimal" and _is_probability(row.get("threshold")):
                return PersonThreshold(float(row["threshold"]), "lrp", f"the run's LRP-optimal threshold ({lrp_file})")
    if f1_file.is_file():
        for row in read_csv_rows(f1_file):
            if row.get("best_f1") is True and _is_probability(row.get("threshold")):
                return PersonThreshold(float(row["threshold"]), "best_f1", f"the run's best-F1 threshold ({f1_file})")
    manifest = read_manifest(run_dir)
    model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
    spec = manifest.get("model_spec") if isinstance(manifest.get("model_spec"), dict) else {}
    who = str(model.get("name") or spec.get("spec") or "the model")
    return _by_model(model, run_format(manifest).keypoint_score_kind, who)


def model_person_threshold(model: Any, score_thresh: float | None = None) -> PersonThreshold:
    """The person threshold for drawing what a built model finds on image files: `score_thresh` when given, else
    the model's own (`draw_person_thresh` in its info), else the default of its keypoint score kind."""
    from kpbench.models.base import model_info, model_name

    if score_thresh is not None:
        return _given(score_thresh)
    info = model_info(model)
    return _by_model(info, info.keypoint_score_kind, info.name or model_name(model))


def _is_probability(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def top_images(detections: dict[int, ImageDetections], n: int, score_thresh: float = DEFAULT_SCORE_THRESH) -> list[int]:
    """The `n` image ids whose best person score is highest (more persons above `score_thresh`, then the
    lower id, break ties)."""

    def key(image_id: int) -> tuple[float, int, int]:
        scores = detections[image_id].scores
        best = float(scores.max()) if len(scores) else -np.inf
        return (-best, -int((scores > score_thresh).sum()), image_id)

    return sorted(detections, key=key)[:n]


def draw_run_images(
    run_dir: str | Path,
    image_ids: Sequence[int] | None = None,
    top_n: int = DEFAULT_TOP_N,
    score_thresh: float | None = None,
    kp_thresh: float | None = None,
    gt: bool = False,
    out: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Draw a run's cached detections on its images; writes `<image_id>.png` files and returns their paths.

    `image_ids` picks the images (each must be in the run), else the `top_n` highest-scoring ones. With `gt`,
    each file shows the detections and, beside them, the ground truth from the run's ground_truth.json. `out`
    defaults to RUN_DIR/draw. `score_thresh` None: the run's own (`run_person_threshold`), whose line goes to
    `log`. `kp_thresh` is on the scale of the run's keypoint scores (`keypoint_threshold`). Reads only the run
    directory and its images; no model, no torch.
    """
    from kpbench.evaluation.runeval import read_run_detections, run_schema
    from kpbench.runs.directory import image_paths, read_manifest, run_format

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KpbenchError(f"{run_dir}: run directory not found")
    manifest = read_manifest(run_dir)
    kp_thresh = keypoint_threshold(kp_thresh, run_format(manifest).keypoint_score_kind)
    if score_thresh is not None:
        _check_thresholds(score_thresh, kp_thresh)  # a bad value before anything is read
    chosen = run_person_threshold(run_dir, score_thresh)
    score_thresh = chosen.value
    _check_thresholds(score_thresh, kp_thresh)
    if log is not None and chosen.source != "given":
        log(chosen.line())
    run_ids = [int(i) for i in manifest.get("image_ids", [])]
    cached = _finite_only(run_dir, read_run_detections(run_dir))
    schema = run_schema(run_dir) or COCO17  # a version-1 run is COCO persons
    if run_ids and not set(run_ids) <= set(cached):
        # The other commands refuse an incomplete run; a drawing of what is there is still useful, but say so.
        warnings.warn(
            f"{run_dir}: run incomplete, {len(set(run_ids) & set(cached))} of {len(set(run_ids))} images have "
            "detections; drawing from those (re-run the same `kpbench run` command to finish it)",
            KpbenchWarning,
            stacklevel=2,
        )
    if image_ids is not None:
        known = set(run_ids) or set(cached)
        for image_id in image_ids:
            if int(image_id) not in known:
                raise KpbenchError(f"{run_dir}: image id {image_id} is not in this run (it has {len(known)} images)")
            if int(image_id) not in cached:
                raise KpbenchError(
                    f"{run_dir}: image id {image_id} has no cached detections yet (the run is incomplete; "
                    "re-run the same `kpbench run` command to finish it)"
                )
        chosen = [int(i) for i in image_ids]
    else:
        if top_n < 1:
            raise KpbenchError(f"--top: must be >= 1, got {top_n}")
        if not cached:
            raise KpbenchError(f"{run_dir}: no cached detections to draw (has `kpbench run` processed any image?)")
        chosen = top_images(cached, top_n, score_thresh)
    gt_by_image: dict[int, list[dict[str, Any]]] = {}
    if gt:
        from kpbench.evaluation.runeval import load_run_ground_truth

        for ann in load_run_ground_truth(run_dir, ("keypoints",))["keypoints"].dataset["annotations"]:
            gt_by_image.setdefault(int(ann["image_id"]), []).append(ann)
    paths = image_paths(run_dir)
    out_dir = ensure_output_dir(out, "--out") if out is not None else ensure_output_dir(run_dir / DRAW_DIR, "output folder")
    written = []
    for image_id in chosen:
        if image_id not in paths:
            raise KpbenchError(f"{run_dir}: image id {image_id} has no entry in ground_truth.json (no file name)")
        image = _open_rgb(paths[image_id])
        drawn = _render(image, cached[image_id], gt_by_image.get(image_id, []) if gt else None, score_thresh, kp_thresh,
                        schema)
        written.append(_save_png(drawn, out_dir / f"{image_id}.png"))
    return written


def _finite_only(run_dir: Path, cached: dict[int, ImageDetections]) -> dict[int, ImageDetections]:
    """The cached detections without those holding NaN or infinity (which cannot be drawn), with one warning that
    names the cache and the first of them. The scoring commands refuse such a cache instead."""
    from kpbench.runs.directory import detections_path

    out: dict[int, ImageDetections] = {}
    bad: list[tuple[int, int]] = []  # (image id, detection)
    for image_id in sorted(cached):
        det = cached[image_id]
        # (N, K, 3) keypoints reduced over their last two axes: reshape(0, -1) fails on an image without detections.
        finite = (np.isfinite(det.boxes).all(axis=1) & np.isfinite(det.scores)
                  & np.isfinite(det.keypoints).all(axis=(1, 2)) & np.isfinite(det.keypoint_scores).all(axis=1))
        if finite.all():
            out[image_id] = det
            continue
        bad += [(image_id, int(j)) for j in np.flatnonzero(~finite)]
        out[image_id] = ImageDetections(
            image_id=image_id, boxes=det.boxes[finite], scores=det.scores[finite], labels=det.labels[finite],
            keypoints=det.keypoints[finite], keypoint_scores=det.keypoint_scores[finite], input_shape=det.input_shape,
        )
    if bad:
        images = len({image_id for image_id, _ in bad})
        warnings.warn(
            f"{detections_path(run_dir)}: {len(bad)} detection(s) in {images} image(s) hold NaN or infinity (first: "
            f"image {bad[0][0]}, detection {bad[0][1]}); they are not drawn (the cache is damaged or the model gave "
            "non-finite outputs)",
            KpbenchWarning,
            stacklevel=3,
        )
    return out


def _annotations_by_file(annotations_json: str | Path) -> dict[str, list[dict[str, Any]]]:
    """GT annotations keyed by image file name (basename), from a COCO annotation file."""
    from kpbench.evaluation.cocofiles import load_ground_truth

    data = load_ground_truth(annotations_json).dataset
    names = {int(img["id"]): Path(str(img.get("file_name", ""))).name for img in data["images"]}
    by_file: dict[str, list[dict[str, Any]]] = {name: [] for name in names.values()}
    for ann in data["annotations"]:
        name = names.get(int(ann["image_id"]))
        if name is not None:
            by_file[name].append(ann)
    return by_file


def _unique_png_names(paths: Sequence[Path]) -> list[str]:
    """`<stem>.png` per input, with `-2`, `-3` ... added where stems repeat (a.jpg and a.png, or two folders); a
    suffix never takes another input's own name (a.jpg, a.png, a-2.jpg give a.png, a-3.png, a-2.png)."""
    taken = {path.stem for path in paths}  # every natural name, so that a suffixed one never takes it
    names: list[str] = []
    used: set[str] = set()
    for path in paths:
        name, n = path.stem, 1
        while name in used or (n > 1 and name in taken):
            n += 1
            name = f"{path.stem}-{n}"
        used.add(name)
        names.append(f"{name}.png")
    return names


def draw_image_files(
    paths: Sequence[str | Path],
    weights: str | None = None,
    score_thresh: float | None = None,
    kp_thresh: float | None = None,
    out: str | Path = DRAW_DIR,
    annotations: str | Path | None = None,
    min_size: int | None = None,
    max_size: int | None = None,
    device: str = "auto",
    seed: int = 0,
    model: str | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Run a pose model (`model`: a --model spec, Keypoint R-CNN by default) on image files through the inference
    loop and draw its persons; writes `<stem>.png` files into `out`.

    `weights`: the model's weights (Keypoint R-CNN: COCO_V1 when not given, COCO_LEGACY, none (random, seeded)
    or a checkpoint path). `score_thresh` None: the model's own (`model_person_threshold`), whose line goes to
    `log`. With `annotations` (a COCO annotation JSON), each file also gets a ground-truth panel, matched to its
    image record by file name.
    """
    from kpbench.data.coco import read_image_rgb_uint8
    from kpbench.data.download import first_missing_parent, remove_empty_dirs
    from kpbench.engine.device import resolve_device
    from kpbench.engine.inference import BatchResult, ModelCallError, inference_on_dataset
    from kpbench.models.registry import check_model_options, load_model

    if score_thresh is not None:
        _check_thresholds(score_thresh, DEFAULT_KP_THRESH if kp_thresh is None else kp_thresh)
    files = [Path(p) for p in paths]
    if not files:
        raise KpbenchError("draw: no image files given")
    for path in files:
        check_regular_file(path, "image file")
    by_file = _annotations_by_file(annotations) if annotations is not None else None
    if by_file is not None:
        for path in files:
            if path.name not in by_file:
                raise KpbenchError(f"{path}: no image named {path.name!r} in {annotations} (needed by --gt)")
    # The input size is the user's to give, and refused for a model that does not honour it.
    spec, weights = check_model_options(model, weights, {"min_size": min_size, "max_size": max_size})
    for path in files:  # a GT or results JSON given by mistake fails here, not after the model is built
        _check_image_header(path)
    honoured = spec.honoured()
    options: dict[str, Any] = {"min_size": min_size, "max_size": max_size}
    from kpbench.models.base import declared_draw_person_thresh

    # The threshold is known before the model is built when given or declared by the model's class.
    known = score_thresh if score_thresh is not None else declared_draw_person_thresh(spec.factory)
    if "box_score_thresh" in honoured and known is not None:
        # Persons at or below the drawing threshold are never drawn: letting the model drop them (Keypoint R-CNN keeps
        # scores > box_score_thresh, Ultralytics conf > conf: the same strict rule) skips their keypoint-head work.
        options["box_score_thresh"] = known
    if "seed" in honoured:
        options["seed"] = seed
    created = first_missing_parent(Path(out))
    out_dir = ensure_output_dir(out, "--out")  # before building the model: a bad folder fails at once
    try:
        dev = resolve_device(device)
        pose_model = load_model(spec, weights=weights, **options)
        move = getattr(pose_model, "to", None)
        if move is not None:
            move(dev)
        from kpbench.models.base import model_info

        kp_thresh = keypoint_threshold(kp_thresh, model_info(pose_model).keypoint_score_kind)
        chosen = model_person_threshold(pose_model, score_thresh)
        score_thresh = chosen.value
        _check_thresholds(score_thresh, kp_thresh)
        if log is not None and chosen.source != "given":
            log(chosen.line())
    except BaseException:
        remove_empty_dirs(out_dir, created)  # a folder made for nothing (no model, a bad --device) goes again
        raise
    names = _unique_png_names(files)
    decoded: dict[int, Any] = {}
    written: list[Path] = []

    def batches() -> Any:
        for index, path in enumerate(files):  # one image per call, decoded as it is needed
            decoded[index] = read_image_rgb_uint8(path)
            yield [index], [decoded[index]]

    def render(batch: BatchResult) -> None:
        (index,) = batch.image_ids
        path = files[index]
        pil, _ = _to_pil(decoded.pop(index))
        gt_anns = by_file[path.name] if by_file is not None else None
        drawn = _render(pil, batch.detections[0], gt_anns, score_thresh, kp_thresh, pose_model.schema)
        written.append(_save_png(drawn, out_dir / names[index]))

    try:
        inference_on_dataset(pose_model, batches(), dev, render)
    except ModelCallError as exc:  # its ids are indices into `files`: name the file, and the model as given
        path = files[exc.image_ids[0]]
        what = str(exc).removesuffix(f" on image {exc.image_ids[0]}")
        raise ModelCallError(f"model {spec.spec}: {what} on {path} ({len(written)} of {len(files)} image(s) drawn "
                             f"into {out_dir} before it)", exc.cause, exc.model, exc.image_ids) from exc.cause
    return written
