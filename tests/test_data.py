"""The data layer of `kpbench run`: COCO root, image selection, GT restriction, decoding and the DataLoader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kpdata import COCO_SAMPLE, requires_shared

from kpbench.core.errors import KpbenchError
from kpbench.data.coco import (
    COCO_ROOT_ENV,
    CocoImages,
    image_files,
    load_annotations,
    make_loader,
    read_image_rgb,
    read_image_rgb_uint8,
    resolve_coco_root,
    restrict_ground_truth,
    select_image_ids,
)


@pytest.fixture()
def gt(synthetic_coco_root: Path) -> dict:
    return load_annotations(synthetic_coco_root)


def test_select_all_sorted_and_with_persons(gt: dict) -> None:
    assert select_image_ids(gt) == [139, 785, 2500, 4000]  # every image, person-less 4000 included, by id
    assert select_image_ids(gt, "with-persons") == [139, 785, 2500]
    assert select_image_ids(gt, limit=2) == [139, 785]
    assert select_image_ids(gt, image_ids=[4000, 139]) == [139, 4000]
    assert select_image_ids(gt, "with-persons", limit=1, image_ids=[2500, 785]) == [785]


def test_select_errors(gt: dict) -> None:
    with pytest.raises(KpbenchError, match=r"^--image-ids: 5, 6 not in the annotation file$"):
        select_image_ids(gt, image_ids=[139, 5, 6])
    with pytest.raises(KpbenchError, match=r"^--image-ids: 4000 not in the images with persons$"):
        select_image_ids(gt, "with-persons", image_ids=[4000])
    with pytest.raises(KpbenchError, match="--images: must be one of all, with-persons"):
        select_image_ids(gt, "people")
    with pytest.raises(KpbenchError, match="--limit: must be >= 1"):
        select_image_ids(gt, limit=0)


@requires_shared
def test_select_on_the_real_sample() -> None:
    gt = load_annotations(COCO_SAMPLE)
    assert len(select_image_ids(gt)) == 35
    persons = select_image_ids(gt, "with-persons")
    assert len(persons) == 33 and 802 not in persons and 11813 not in persons
    assert select_image_ids(gt, limit=3) == [139, 785, 802]


def test_restrict_ground_truth(gt: dict) -> None:
    sub = restrict_ground_truth(gt, [4000, 785])
    assert [img["id"] for img in sub["images"]] == [785, 4000]
    assert {a["image_id"] for a in sub["annotations"]} == {785}
    assert len(sub["annotations"]) == 2
    assert sub["categories"] == gt["categories"] and sub["info"] == gt["info"]
    assert len(gt["images"]) == 4  # the input is not changed


def test_resolve_coco_root(monkeypatch: pytest.MonkeyPatch, synthetic_coco_root: Path, tmp_path: Path) -> None:
    monkeypatch.delenv(COCO_ROOT_ENV, raising=False)
    with pytest.raises(KpbenchError, match=f"no COCO root given: pass --coco-root DIR or set {COCO_ROOT_ENV}"):
        resolve_coco_root(None)
    monkeypatch.setenv(COCO_ROOT_ENV, str(synthetic_coco_root))
    assert resolve_coco_root(None) == synthetic_coco_root
    with pytest.raises(KpbenchError, match=r"COCO root not found \(`kpbench data download --coco-root .*--download"):
        resolve_coco_root(tmp_path / "missing")


def test_missing_annotations_and_images(tmp_path: Path, synthetic_coco_root: Path, gt: dict) -> None:
    with pytest.raises(KpbenchError, match=r"person_keypoints_val2017.json: annotation file not found \(`kpbench data download"):
        load_annotations(tmp_path)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "person_keypoints_val2017.json").write_text("{not json")
    with pytest.raises(KpbenchError, match="cannot read the annotation file"):
        load_annotations(tmp_path)
    with pytest.raises(KpbenchError, match=r"val2017: image folder not found"):
        image_files(tmp_path, "val2017", gt, [139])
    (tmp_path / "val2017").mkdir()
    (tmp_path / "val2017" / "000000000139.jpg").write_bytes((synthetic_coco_root / "val2017" / "000000000139.jpg").read_bytes())
    with pytest.raises(KpbenchError, match=r"000000000785.jpg: image file not found and 1 more \(`kpbench data download"):
        image_files(tmp_path, "val2017", gt, [139, 785, 2500])


def test_decoding_is_rgb(tmp_path: Path, synthetic_coco_root: Path) -> None:
    from PIL import Image

    path = synthetic_coco_root / "val2017" / "000000000785.jpg"
    image = read_image_rgb_uint8(path)
    assert tuple(image.shape) == (3, 120, 160) and str(image.dtype) == "torch.uint8"
    pil = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1).astype(np.int16)
    # Two JPEG decoders may round differently, but never by much, and channel order must agree (RGB, not BGR).
    assert np.abs(image.numpy().astype(np.int16) - pil).mean() < 2.0
    as_float = read_image_rgb(path)
    assert float(as_float.max()) <= 1.0 and np.array_equal(as_float.numpy(), image.numpy() / np.float32(255.0))
    grey = tmp_path / "grey.jpg"
    Image.fromarray(np.full((10, 12), 200, np.uint8), "L").save(grey)
    assert tuple(read_image_rgb_uint8(grey).shape) == (3, 10, 12)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(KpbenchError, match=r"bad\.jpg: cannot decode image"):
        read_image_rgb_uint8(bad)


def test_16_bit_png_is_scaled_to_0_1(tmp_path: Path) -> None:
    """torchvision decodes a 16-bit PNG as uint16: scaled to 8 bits (rounded), so the model still sees [0, 1]."""
    from PIL import Image

    values = np.array([[0, 128, 257, 32767], [32768, 65278, 65407, 65535]], dtype=np.uint16)
    path = tmp_path / "grey16.png"
    image16 = Image.new("I;16", (4, 2))
    image16.putdata(values.reshape(-1).tolist())
    image16.save(path)
    image = read_image_rgb_uint8(path)
    expected = np.floor(values.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    assert str(image.dtype) == "torch.uint8" and all(np.array_equal(image[c].numpy(), expected) for c in range(3))
    assert float(read_image_rgb(path).max()) == 1.0


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_yields_fixed_batches_in_order(synthetic_coco_root: Path, gt: dict, workers: int) -> None:
    ids = select_image_ids(gt)
    dataset = CocoImages.from_annotations(synthetic_coco_root, "val2017", gt, ids)
    assert len(dataset) == 4 and dataset[1][0] == 785
    loader = make_loader(dataset, [[0, 1], [3]], workers=workers)
    batches = [(batch_ids, [tuple(im.shape) for im in images]) for batch_ids, images in loader]
    assert batches == [([139, 785], [(3, 96, 128), (3, 120, 160)]), ([4000], [(3, 128, 96)])]


def test_annotation_file_is_plain_json(synthetic_coco_root: Path) -> None:
    # The fixture itself: 4 images, 4 persons, all with 17 labelled keypoints.
    data = json.loads((synthetic_coco_root / "annotations" / "person_keypoints_val2017.json").read_text())
    assert len(data["images"]) == 4 and len(data["annotations"]) == 4
    assert all(a["num_keypoints"] == 17 for a in data["annotations"])


def test_zero_byte_image_is_a_user_error(tmp_path: Path) -> None:
    """torch.frombuffer refuses an empty buffer with a ValueError, which used to escape as a traceback."""
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(KpbenchError) as info:
        read_image_rgb_uint8(empty)
    assert str(info.value) == f"{empty}: cannot decode image (empty file)"


@pytest.mark.parametrize("command", ["run", "draw", "speed"])
def test_zero_byte_image_is_one_line_in_every_command(
    synthetic_coco_root: Path, tmp_path: Path, run_cli, command: str
) -> None:
    import shutil

    from kpdata import assert_one_line_error

    root = tmp_path / "coco"
    shutil.copytree(synthetic_coco_root, root)
    image = root / "val2017" / "000000000785.jpg"
    image.write_bytes(b"")
    small = ("--weights", "none", "--min-size", "96", "--max-size", "160", "--no-progress")
    args = {
        "run": ("run", "--coco-root", root, *small, "--image-ids", "785", "--workers", "0", "--out", tmp_path / "run"),
        "draw": ("draw", image, "--weights", "none", "--min-size", "96", "--out", tmp_path / "draw"),
        "speed": ("speed", "--coco-root", root, *small[:2], "--sizes", "96", "--num-images", "2", "--out",
                  tmp_path / "speed"),
    }[command]
    assert_one_line_error(run_cli(*args), f"error: {image}: cannot decode image (empty file)")
