"""The COCO sample shipped inside kpbench (package data under kpbench/data/demo/), laid out as a COCO root:

    demo/annotations/person_keypoints_val2017.json   COCO's records of these images, unchanged (CC BY 4.0)
    demo/val2017/<12-digit id>.jpg                    COCO val2017 images, unmodified (CC BY 2.0 / CC BY-SA 2.0)
    demo/ATTRIBUTION.md                               each image's COCO id, Flickr URL, licence and sha256

Eight val2017 images with people, chosen as every image of kpbench's test sample whose licence allows
redistribution with attribution (COCO's licence ids 4, CC BY 2.0, and 5, CC BY-SA 2.0) and that shows a person
with labelled keypoints (`docs/make_demo_data.py` builds the folder). `kpbench demo` runs on it offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kpbench.core.errors import KpbenchError

DEMO_FOLDER = "demo"
DEMO_SPLIT = "val2017"
ATTRIBUTION_FILE = "ATTRIBUTION.md"
FREE_LICENSE_IDS = (4, 5)  # COCO's licence ids of CC BY 2.0 and CC BY-SA 2.0


def demo_root() -> Path:
    """The shipped COCO root (a folder inside the installed package); a KpbenchError when the install lacks it."""
    from importlib.resources import files

    root = Path(str(files("kpbench.data") / DEMO_FOLDER))
    annotations = root / "annotations" / f"person_keypoints_{DEMO_SPLIT}.json"
    if not annotations.is_file() or not (root / DEMO_SPLIT).is_dir():
        raise KpbenchError(f"{root}: kpbench's demo data is missing from this install (expected {annotations}); "
                           "reinstall kpbench from its wheel or source tree")
    return root


def demo_ground_truth() -> dict[str, Any]:
    """The demo's annotation file, parsed."""
    from kpbench.core.io import read_json

    return read_json(demo_root() / "annotations" / f"person_keypoints_{DEMO_SPLIT}.json")


def demo_credits() -> list[dict[str, Any]]:
    """Per demo image (by id): its COCO id, file name, Flickr URL, and licence id, name and URL."""
    gt = demo_ground_truth()
    licenses = {lic["id"]: lic for lic in gt["licenses"]}
    return [{"id": img["id"], "file_name": img["file_name"], "flickr_url": img["flickr_url"],
             "license": img["license"], "license_name": licenses[img["license"]]["name"],
             "license_url": licenses[img["license"]]["url"]} for img in sorted(gt["images"], key=lambda i: i["id"])]
