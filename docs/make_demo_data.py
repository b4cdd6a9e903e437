"""Build kpbench's embedded demo data (kpbench/data/demo/) from the real COCO val2017 sample:
`python docs/make_demo_data.py [SAMPLE_DIR]` (default ../shared/data/coco_val2017_sample beside the repository).

Only images whose COCO licence id is 4 (Attribution, CC BY 2.0) or 5 (Attribution-ShareAlike, CC BY-SA 2.0) and
that show a person with labelled keypoints are kept; their files are copied byte for byte, and their annotation
records, with the file's info, licenses and categories, unchanged (the file keeps the images sorted by id). Each
image's credit goes into ATTRIBUTION.md beside them. Run it again to check that the shipped files are its output.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "kpbench" / "data" / "demo"
FREE_LICENSES = (4, 5)  # CC BY 2.0, CC BY-SA 2.0: redistributable with attribution, also commercially


def build(sample: Path, out: Path = OUT) -> list[int]:
    """Write OUT/annotations/person_keypoints_val2017.json, OUT/val2017/*.jpg and OUT/ATTRIBUTION.md; returns
    the image ids kept."""
    gt = json.loads((sample / "annotations" / "person_keypoints_val2017.json").read_text())
    with_keypoints = {a["image_id"] for a in gt["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]}
    images = sorted((img for img in gt["images"] if img["license"] in FREE_LICENSES and img["id"] in with_keypoints),
                    key=lambda img: img["id"])
    kept = {img["id"] for img in images}
    subset = {
        "info": gt["info"], "licenses": gt["licenses"], "images": images,
        "annotations": [a for a in gt["annotations"] if a["image_id"] in kept], "categories": gt["categories"],
    }  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    (out / "annotations").mkdir(parents=True)
    (out / "val2017").mkdir()
    (out / "annotations" / "person_keypoints_val2017.json").write_text(json.dumps(subset, indent=1) + "\n")
    licenses = {lic["id"]: lic for lic in gt["licenses"]}
    lines = [
        "# kpbench's demo images: credits and licences",
        "",
        "These images and their annotations come from COCO val2017 (Lin et al., \"Microsoft COCO: Common Objects in "
        "Context\", ECCV 2014), through the sample in kpbench's test data (`coco_val2017_sample`, whose PROVENANCE.md "
        "gives each file's source and sha256). `docs/make_demo_data.py` chose them: every image of that sample whose "
        "COCO licence is CC BY 2.0 or CC BY-SA 2.0 (licence ids 4 and 5) and that shows a person with labelled "
        "keypoints.",
        "",
        "- **Images.** COCO does not own its images: each stays under the Flickr licence its photographer chose, "
        "named below with its Flickr URL. COCO does not record the photographers' names; each photo's Flickr page "
        "names its author. The files are unmodified copies. Drawings over them (the skeleton overlays kpbench "
        "writes) are adaptations, shared under the same licence as the image.",
        "- **Annotations.** `annotations/person_keypoints_val2017.json` holds COCO's records of these images, "
        "unchanged, under COCO's Creative Commons Attribution 4.0 licence (CC BY 4.0), (c) COCO Consortium.",
        "",
        "| COCO id | file | Flickr URL | licence | licence URL | persons with keypoints | bytes | sha256 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for img in images:
        source = sample / "val2017" / img["file_name"]
        target = out / "val2017" / img["file_name"]
        shutil.copyfile(source, target)
        data = target.read_bytes()
        lic = licenses[img["license"]]
        persons = sum(1 for a in gt["annotations"] if a["image_id"] == img["id"] and a["num_keypoints"] > 0)
        lines.append(f"| {img['id']} | {img['file_name']} | {img['flickr_url']} | {lic['name']} | {lic['url']} | "
                     f"{persons} | {len(data)} | `{hashlib.sha256(data).hexdigest()}` |")
    (out / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n")
    return sorted(kept)


if __name__ == "__main__":
    sample_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "data" / "coco_val2017_sample"
    ids = build(sample_dir)
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT}: {len(ids)} images ({', '.join(map(str, ids))}), {size / 1e6:.2f} MB")
