"""Sections of the HTML page (`kpbench.report.html`) about AP per keypoint and group, keypoint-score thresholds as a
heatmap, the images' credits and licences, and random weights: each built from a run directory's files alone.

`kpbench.report.html` places them; the page's helpers (tables, embedded images, escaping) are its own and are
imported from it inside the functions, since it imports this module.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

# Above this many images the page does not list every image's credit (ground_truth.json holds them all); the
# images the page shows still carry theirs.
MAX_CREDITS_LISTED = 60
RANDOM_WEIGHTS = ("none", "random")


def _png(fig: Any, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _figure_html(png: bytes, caption: str) -> str:
    from kpbench.report.html import _e

    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def random_weights_note(manifest: dict[str, Any]) -> str:
    """A warning paragraph when the run's model had random weights (`--weights none`), else ""."""
    from kpbench.report.html import _e

    model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    weights = str(model.get("weights") or config.get("weights") or "").lower()
    source = str(model.get("source") or "").lower()
    if weights not in RANDOM_WEIGHTS and source != "random":
        return ""
    from kpbench.core.install import install_hint

    name = model.get("name") or model.get("spec") or "the model"
    return (f'<p class="warn"><strong>Random weights.</strong> {_e(name)} ran with random weights (--weights none): '
            "the page shows that the pipeline works end to end, and its AP measures nothing (near 0 is expected). "
            f"Install the yolo extra ({_e(install_hint('yolo'))}) or pass trained weights for real numbers.</p>")


def keypoint_ap_section(run_dir: Path) -> str:
    """AP per keypoint group and per keypoint (DIR/keypoint_ap.json): a bar figure and the table, AP in percent
    (each cell's fraction in data-value); a line saying how to make it when the run has none."""
    from kpbench.analysis.keypoint_ap import NOTE, SHOWN_STATS, read_keypoint_ap_rows
    from kpbench.report.figures import DPI, keypoint_ap_figure
    from kpbench.report.html import _e, _missing, _table

    rows = read_keypoint_ap_rows(run_dir)
    if not rows:
        return _missing(f"No AP per keypoint: run `kpbench evaluate {run_dir} --per-keypoint` (or `kpbench analyze "
                        f"{run_dir}`).")
    stats = [s for s in SHOWN_STATS if s in rows[0]]
    shown = [{"kind": r["kind"], "name": r["name"], "num_gt": r["num_gt"], **{s: r[s] for s in stats},
              "keypoints": r["keypoints"] if r["kind"] == "group" else ""} for r in rows]
    return (_figure_html(_png(keypoint_ap_figure(rows), DPI), "AP per keypoint group and per keypoint")
            + _table(shown) + f"<p>{_e(NOTE)} AP in percent; n/a where a part has no GT.</p>")


def keypoint_threshold_section(run_dir: Path, keypoint_score_kind: str, person_thresh: float | None = None) -> str:
    """Keypoint-score thresholds as a keypoint × threshold heatmap (recall and precision) from
    DIR/thresholds_keypoint.csv, the table itself folded away below it."""
    from kpbench.core.io import read_csv_rows
    from kpbench.report.figures import CURVES_DPI, keypoint_threshold_heatmap_figure
    from kpbench.report.html import _missing, _table

    path = run_dir / "thresholds_keypoint.csv"
    if not path.is_file():
        return _missing(f"No keypoint-score sweep: run `kpbench thresholds {run_dir}`.")
    rows = read_csv_rows(path)
    if not rows:
        return _missing(f"{path} holds no rows.")
    fig = keypoint_threshold_heatmap_figure(rows, keypoint_score_kind, person_thresh)
    return (_figure_html(_png(fig, CURVES_DPI), "keypoint-score thresholds: recall and precision per keypoint")
            + f'<details><summary>The table ({len(rows)} rows)</summary>{_table(rows)}'
            "<p>Precision and recall in percent; n/a where a ratio is 0/0.</p></details>")


def _credits(gt: dict[str, Any]) -> tuple[dict[int, dict[str, Any]], dict[Any, dict[str, Any]]]:
    images = {img["id"]: img for img in gt.get("images") or [] if isinstance(img, dict) and "id" in img}
    licenses = {lic.get("id"): lic for lic in gt.get("licenses") or [] if isinstance(lic, dict)}
    return images, licenses


def _read_ground_truth(run_dir: Path) -> dict[str, Any] | None:
    from kpbench.core.errors import KpbenchError
    from kpbench.core.io import read_json

    path = run_dir / "ground_truth.json"
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except KpbenchError:
        return None
    return data if isinstance(data, dict) else None


def image_credit(run_dir: Path, image_id: int) -> str:
    """One image's credit as plain text ("COCO 785, http://farm8...: Attribution License
    (http://creativecommons.org/licenses/by/2.0/)"), or "" when the GT records none."""
    gt = _read_ground_truth(run_dir)
    if gt is None:
        return ""
    images, licenses = _credits(gt)
    image = images.get(image_id)
    if image is None or ("license" not in image and "flickr_url" not in image):
        return ""
    lic = licenses.get(image.get("license"), {})
    where = image.get("flickr_url") or image.get("coco_url") or ""
    name = lic.get("name") or f"licence {image.get('license')}"
    return f"COCO {image_id}, {where}: {name}" + (f" ({lic['url']})" if lic.get("url") else "")


def image_credits_section(run_dir: Path) -> str:
    """The images' credits from the run's ground_truth.json: a list item per image (its COCO id, file, Flickr URL
    and licence name and URL) when the run has at most MAX_CREDITS_LISTED images; else a table of the licences
    and their image counts. "" when the GT records no licences (images that are not COCO's)."""
    from kpbench.report.html import _e, _table

    gt = _read_ground_truth(run_dir)
    if gt is None:
        return ""
    images, licenses = _credits(gt)
    credited = [img for img in images.values() if "license" in img or "flickr_url" in img]
    if not credited:
        return ""
    intro = ("<p>COCO does not own its images: each stays under the Flickr licence its photographer chose (the "
             "Flickr page names them). Drawings over an image are adaptations of it, under the same licence. The "
             "annotations are the COCO Consortium's, under CC BY 4.0 (Lin et al., ECCV 2014).</p>")
    if len(credited) <= MAX_CREDITS_LISTED:
        # A list, not a table: two URLs per image are too wide for table cells, and a list item wraps at spaces.
        items = []
        for img in sorted(credited, key=lambda i: i["id"]):
            lic = licenses.get(img.get("license"), {})
            name = lic.get("name", f"licence {img.get('license', '?')}")
            items.append(f"<li>COCO {_e(img['id'])} ({_e(img.get('file_name', ''))}): {_e(img.get('flickr_url', ''))} "
                         f"&mdash; {_e(name)}{(' ' + _e(lic['url'])) if lic.get('url') else ''}</li>")
        return intro + f'<ul class="dev credits">{"".join(items)}</ul>'
    counts: dict[Any, int] = {}
    for img in credited:
        counts[img.get("license")] = counts.get(img.get("license"), 0) + 1
    rows = [{"licence": licenses.get(k, {}).get("name", k), "licence_url": licenses.get(k, {}).get("url", ""),
             "images": n} for k, n in sorted(counts.items(), key=lambda kv: str(kv[0]))]
    return (intro + _table(rows) + f"<p>Each image's Flickr URL and licence id: {_e(run_dir / 'ground_truth.json')} "
            "(images[].flickr_url, images[].license, licenses).</p>")
