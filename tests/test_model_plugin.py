"""A model from outside kpbench: an adapter in a temporary file (`--model FILE.py:Class`), in a package on
sys.path (`--model package.module:Class`) and behind an installed entry point (group `kpbench.models`), run
end to end on the real sample with no kpbench file changed; and the errors of bad specs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from kpdata import COCO_SAMPLE, pycocotools_eval, requires_shared

from kpbench.core.errors import KpbenchError
from kpbench.core.schema import COCO17, KEYPOINT_STAT_NAMES
from kpbench.models.registry import check_model_options, load_model, resolve_model

RunCli = Callable[..., tuple[int, str, str]]
KPBENCH = Path(__file__).resolve().parents[1] / "kpbench"
ANNOTATIONS = COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json"
DX, DY, PERSON_SCORE, KEYPOINT_PROBABILITY = 3.0, -2.0, 0.875, 0.75

# The adapter a user would write: every labelled GT person of the image, keypoints and box shifted by (DX, DY)
# pixels, person score 0.875, keypoint probability 0.75. It finds an image's GT by the sha256 of its pixels
# (decoded once, as kpbench decodes them, from the folder and annotation file named by two variables).
ADAPTER = textwrap.dedent(f'''
    import hashlib, json, os
    from pathlib import Path

    import numpy as np

    from kpbench.core.schema import COCO17
    from kpbench.data.coco import read_image_rgb_uint8
    from kpbench.models.base import ModelInfo, Predictions

    DX, DY = {DX!r}, {DY!r}


    def pixels_key(image):
        return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


    class ShiftedGT:
        schema = COCO17  # input_format is the default, "numpy": RGB uint8 (H, W, 3) arrays

        def __init__(self):
            gt = json.loads(Path(os.environ["SHIFTED_GT_ANNOTATIONS"]).read_text())
            folder = Path(os.environ["SHIFTED_GT_IMAGES"])
            self.people = {{}}
            for record in gt["images"]:
                path = folder / record["file_name"]
                if path.is_file():
                    key = pixels_key(read_image_rgb_uint8(path).permute(1, 2, 0).numpy())
                    self.people[key] = [a for a in gt["annotations"]
                                        if a["image_id"] == record["id"] and not a["iscrowd"] and a["num_keypoints"]]
            self.sizes = []

        def info(self):
            return ModelInfo(weights=None, source="test", name="shifted-gt", keypoint_score_kind="probability")

        def set_input_size(self, min_size, max_size):
            self.sizes.append((min_size, max_size))

        def predict(self, images):
            out = []
            for image in images:
                people = self.people.get(pixels_key(image), [])
                n = len(people)
                kps = np.array([a["keypoints"] for a in people], dtype=np.float64).reshape(n, 17, 3)
                kps[:, :, 0] += DX
                kps[:, :, 1] += DY
                kps[:, :, 2] = 1.0
                boxes = np.array([[x + DX, y + DY, x + w + DX, y + h + DY] for x, y, w, h in
                                  (a["bbox"] for a in people)], dtype=np.float64).reshape(n, 4)
                out.append(Predictions(boxes=boxes, scores=np.full(n, {PERSON_SCORE!r}), keypoints=kps,
                                       keypoint_scores=np.full((n, 17), {KEYPOINT_PROBABILITY!r}),
                                       keypoint_score_kind="probability"))
            return out
''')


def _kpbench_digest() -> str:
    """One sha256 over every file of the kpbench package (names and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(KPBENCH.rglob("*.py")):
        digest.update(str(path.relative_to(KPBENCH)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture()
def adapter_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The adapter written to tmp_path/shifted_gt.py, pointed at the real sample; returns the file."""
    monkeypatch.setenv("SHIFTED_GT_ANNOTATIONS", str(ANNOTATIONS))
    monkeypatch.setenv("SHIFTED_GT_IMAGES", str(COCO_SAMPLE / "val2017"))
    path = tmp_path / "plugins" / "shifted_gt.py"
    path.parent.mkdir()
    path.write_text(ADAPTER)
    return path


def _expected_results(image_ids: list[int]) -> list[dict]:
    """The keypoint results the adapter must give, computed here from the GT: image-id order, GT order."""
    gt = json.loads(ANNOTATIONS.read_text())
    results = []
    for image_id in sorted(image_ids):
        for a in gt["annotations"]:
            if a["image_id"] == image_id and not a["iscrowd"] and a["num_keypoints"]:
                kps = []
                for k in range(17):
                    x, y, _ = a["keypoints"][3 * k : 3 * k + 3]
                    kps += [float(x) + DX, float(y) + DY, 1.0]
                results.append({"image_id": image_id, "category_id": 1, "keypoints": kps, "score": PERSON_SCORE})
    return results


@requires_shared
def test_a_model_from_a_file_runs_end_to_end(adapter_env: Path, tmp_path: Path, run_cli: RunCli) -> None:
    """`kpbench run --model FILE:Class` on 5 real images, then thresholds, keypoints, draw and speed on the
    result, with no kpbench file changed; the keypoint AP is bare pycocotools' on the same predictions."""
    before = _kpbench_digest()
    spec = f"{adapter_env}:ShiftedGT"
    out = tmp_path / "run"
    code, stdout, err = run_cli("run", "--model", spec, "--coco-root", COCO_SAMPLE, "--limit", "5", "--workers", "0",
                                "--device", "cpu", "--out", out, "--no-progress", "--no-analysis")  # fmt: skip
    assert code == 0, err
    assert f"run directory: {out}" in stdout

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == manifest["kpbench_run_version"] == 2
    assert manifest["model_spec"] == {"spec": spec, "kind": "file", "target": spec}
    assert manifest["schema"] == COCO17.to_json() and manifest["keypoint_score_kind"] == "probability"
    assert manifest["config"]["model"] == spec and manifest["config"]["weights"] is None
    assert manifest["model"]["name"] == "shifted-gt" and manifest["model"]["source"] == "test"
    # A numpy model records no padded shapes: nothing reached a network kpbench could see.
    assert manifest["backbone_shapes"] == {"calls": 0, "distinct": []}
    image_ids = manifest["image_ids"]
    assert len(image_ids) == 5

    results = json.loads((out / "keypoints_results.json").read_text())
    assert results == _expected_results(image_ids)
    cache = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert [line["image_id"] for line in cache] == sorted(image_ids)
    assert all("input_shape" not in line for line in cache)
    assert {s for line in cache for row in line["keypoint_scores"] for s in row} <= {KEYPOINT_PROBABILITY}

    gt = json.loads((out / "ground_truth.json").read_text())
    bare = pycocotools_eval(gt, results, "keypoints")
    metrics = json.loads((out / "metrics.json").read_text())
    assert [metrics["keypoints"][name] for name in KEYPOINT_STAT_NAMES] == [float(v) for v in bare.stats]
    assert 0.5 < bare.stats[0] < 1.0  # shifted by a few pixels: good, not perfect

    code, _, err = run_cli("thresholds", out, "--format", "json")
    assert code == 0, err
    code, _, err = run_cli("keypoints", out, "--format", "json")
    assert code == 0, err
    assert (out / "keypoints.csv").is_file()
    code, _, err = run_cli("draw", out, "--top", "2", "--score-thresh", "0.5", "--out", tmp_path / "drawn")
    assert code == 0, err
    assert len(list((tmp_path / "drawn").glob("*.png"))) == 2
    # Image files through the model itself.
    code, _, err = run_cli("draw", COCO_SAMPLE / "val2017" / "000000000785.jpg", "--model", spec, "--device", "cpu",
                           "--score-thresh", "0.5", "--out", tmp_path / "files")  # fmt: skip
    assert code == 0, err
    assert [p.name for p in (tmp_path / "files").glob("*.png")] == ["000000000785.png"]

    code, _, err = run_cli("speed", "--model", spec, "--coco-root", COCO_SAMPLE, "--num-images", "2", "--sizes", "320",
                           "--warmup", "0", "--iters", "2", "--accuracy", "3", "--device", "cpu",
                           "--out", tmp_path / "speed", "--no-progress")  # fmt: skip
    assert code == 0, err
    (csv_path,) = (tmp_path / "speed").glob("*.csv")
    speed_manifest = json.loads(csv_path.with_suffix(".json").read_text())
    assert speed_manifest["model_spec"]["kind"] == "file" and speed_manifest["schema"]["name"] == "coco17"
    import csv

    (row,) = list(csv.DictReader(csv_path.open()))
    assert row["status"] == "ok" and row["padded_shapes"] == "" and row["accuracy_images"] == "3"
    acc_ids = speed_manifest["images"]["accuracy_image_ids"]
    acc_gt = {**gt, "images": [], "annotations": []}
    full = json.loads(ANNOTATIONS.read_text())
    acc_gt["images"] = [im for im in full["images"] if im["id"] in acc_ids]
    acc_gt["annotations"] = [a for a in full["annotations"] if a["image_id"] in acc_ids]
    assert float(row["kp_AP"]) == float(pycocotools_eval(acc_gt, _expected_results(acc_ids), "keypoints").stats[0])
    assert _kpbench_digest() == before


@requires_shared
def test_package_module_and_entry_point_specs(adapter_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             run_cli: RunCli) -> None:  # fmt: skip
    """The same adapter as `package.module:Class` (a folder on sys.path) and as an installed entry point (a
    dist-info folder on sys.path): both resolve to it, and a run through either gives the file run's cache."""
    site = tmp_path / "site"
    (site / "shiftpkg").mkdir(parents=True)
    (site / "shiftpkg" / "__init__.py").write_text("")
    (site / "shiftpkg" / "pose.py").write_text(ADAPTER)
    dist = site / "shiftpkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shiftpkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[kpbench.models]\nshifted-gt = shiftpkg.pose:ShiftedGT\n")
    monkeypatch.syspath_prepend(str(site))

    module_spec = resolve_model("shiftpkg.pose:ShiftedGT")
    assert (module_spec.kind, module_spec.factory.__name__) == ("module", "ShiftedGT")
    entry_spec = resolve_model("shifted-gt")
    assert (entry_spec.kind, entry_spec.target, entry_spec.factory) == (
        "entry_point", "shiftpkg.pose:ShiftedGT", module_spec.factory
    )
    common = ("--coco-root", COCO_SAMPLE, "--image-ids", "785,139", "--workers", "0", "--device", "cpu",
              "--no-progress", "--no-analysis")  # fmt: skip
    caches = []
    for spec in (f"{adapter_env}:ShiftedGT", "shiftpkg.pose:ShiftedGT", "shifted-gt"):
        out = tmp_path / f"run-{len(caches)}"
        code, _, err = run_cli("run", "--model", spec, *common, "--out", out)
        assert code == 0, err
        assert json.loads((out / "manifest.json").read_text())["model_spec"]["spec"] == spec
        caches.append((out / "detections.jsonl").read_bytes())
    assert caches[0] == caches[1] == caches[2] and caches[0].count(b"\n") == 2


def test_bad_specs_are_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli) -> None:
    (tmp_path / "models.py").write_text(textwrap.dedent('''
        from kpbench.core.schema import COCO17

        class NoPredict:
            schema = COCO17
            def info(self):
                return {}

        class NoSchema:
            def predict(self, images):
                return []
            def info(self):
                return {}

        class Fine:
            schema = COCO17
            def predict(self, images):
                return []
            def info(self):
                return {"weights": None}
    '''))
    (tmp_path / "broken.py").write_text("def oops(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    file = tmp_path / "models.py"
    cases = [
        (f"{tmp_path}/nope.py:Model", f"--model {tmp_path}/nope.py:Model: {tmp_path}/nope.py: file not found"),
        (f"{file}:Missing", f"--model {file}:Missing: no 'Missing' in {file}; it defines Fine, NoPredict, NoSchema"),
        (f"{file}:NoPredict",
         f"--model {file}:NoPredict: NoPredict is not a kpbench PoseModel (it has no predict(); see kpbench.models.base)"),
        (f"{tmp_path}/broken.py:X", f"--model {tmp_path}/broken.py:X: {tmp_path}/broken.py failed to import (SyntaxError: "),
        ("nosuchpkg.models:Model",
         "--model nosuchpkg.models:Model: no module named 'nosuchpkg' (is it on PYTHONPATH or installed?)"),
        ("models:Missing", f"--model models:Missing: no 'Missing' in {file}; it defines Fine, NoPredict, NoSchema"),
        ("nosuch", "--model nosuch: unknown model; known: keypointrcnn"),
        ("model.py", "--model model.py: unknown model (a file needs :Class, e.g. model.py:MyModel); known: keypointrcnn"),
        (":Model", "--model :Model: expected FILE.py:Class or package.module:Class"),
    ]
    for spec, message in cases:
        with pytest.raises(KpbenchError) as info:
            resolve_model(spec)
        assert str(info.value).startswith(message), (spec, str(info.value))
    with pytest.raises(KpbenchError, match=r"NoSchema is not a kpbench PoseModel \(it has no schema; "):
        load_model(f"{file}:NoSchema")
    with pytest.raises(KpbenchError, match=rf"^--weights: model {file}:Fine takes no weights"):
        check_model_options(f"{file}:Fine", "w.pth")
    # An option it does not declare is refused, never dropped in silence (issue 23, item 5); None is "not given".
    with pytest.raises(KpbenchError, match=rf"^--min-size 320: model {file}:Fine does not honour it \(it honours "
                                           r"none of them\); leave it out$"):
        load_model(f"{file}:Fine", min_size=320)
    fine = load_model(f"{file}:Fine", min_size=None, weights=None)
    assert type(fine).__name__ == "Fine"
    assert check_model_options("KeypointRCNN", None)[0].spec == "keypointrcnn"
    assert check_model_options("keypointrcnn", "coco_v1")[1] == "COCO_V1"

    # On the command line: one line, exit 2, before anything is read or written.
    for command in (("run", "--coco-root", tmp_path), ("speed", "--coco-root", tmp_path), ("draw", file)):
        code, stdout, err = run_cli(*command, "--model", f"{file}:NoPredict", "--out", tmp_path / "out")
        assert code == 2 and stdout == "", command
        assert err.startswith(f"error: --model {file}:NoPredict: NoPredict is not a kpbench PoseModel") and err.count("\n") == 1
        assert not (tmp_path / "out").exists()


def test_resolving_a_spec_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "from kpbench.models.registry import check_model_options, resolve_model\n"
        "resolve_model('keypointrcnn'); check_model_options('keypointrcnn', 'none')\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


class _Fixed:
    """A numpy model answering every image with what `answer(n_images)` gives."""

    schema = COCO17

    def __init__(self, answer: Callable[[int], object], kind: str = "logit") -> None:
        self.answer, self.kind, self.seen = answer, kind, []

    def info(self) -> dict:
        return {"weights": None, "keypoint_score_kind": self.kind}

    def predict(self, images: list) -> object:
        self.seen.extend(images)
        return self.answer(len(images))


def _one_person(k: int = 17, kind: str = "logit"):  # type: ignore[no-untyped-def]
    import numpy as np

    from kpbench.models.base import Predictions

    return Predictions(np.array([[1.0, 2.0, 5.0, 9.0]]), np.array([0.5]), np.ones((1, k, 3)), np.zeros((1, k)), kind)


def test_the_inference_loop_checks_what_a_model_returns() -> None:
    import numpy as np
    import torch

    from kpbench.engine.inference import inference_on_dataset

    image = torch.arange(2 * 3 * 3, dtype=torch.uint8).reshape(3, 2, 3)  # (3, H=2, W=3)
    cpu = torch.device("cpu")
    got = []
    model = _Fixed(lambda n: [_one_person() for _ in range(n)])
    stats = inference_on_dataset(model, [([7], [image])], cpu, got.append)
    (batch,) = got
    assert (stats.images, stats.calls, stats.shapes, batch.image_ids, batch.input_shape) == (1, 1, [], [7], None)
    (det,) = batch.detections
    assert det.image_id == 7 and det.labels.tolist() == [1] and det.keypoints.shape == (1, 17, 3)
    assert det.boxes.tolist() == [[1.0, 2.0, 5.0, 9.0]] and det.boxes.dtype == np.float64
    # A numpy model gets the decoded pixels as (H, W, 3) uint8.
    (seen,) = model.seen
    assert seen.dtype == np.uint8 and seen.shape == (2, 3, 3) and np.array_equal(seen, image.permute(1, 2, 0).numpy())

    cases = [
        (lambda n: [], r"^_Fixed\.predict: returned 0 items for 1 images \(one Predictions per image\)$"),
        (lambda n: {"boxes": []}, r"^_Fixed\.predict: returned dict for 1 images"),
        (lambda n: [{"boxes": []}], r"^_Fixed\.predict: returned a dict, expected kpbench\.models\.base\.Predictions$"),
        (lambda n: [_one_person(16)],
         r"^image 7: predictions keypoints has shape \(1, 16, 3\), expected \(1, 17, 3\) \(1 detections, 17 keypoints\)$"),
        (lambda n: [_one_person(kind="probability")],
         r"^_Fixed\.predict: keypoint_score_kind 'probability', but info\(\) declares 'logit'$"),
    ]
    for answer, message in cases:
        with pytest.raises(KpbenchError, match=message):
            inference_on_dataset(_Fixed(answer), [([7], [image])], cpu, got.append)
    with pytest.raises(KpbenchError, match=r"keypoint_score_kind 'odds'; expected logit or probability"):
        inference_on_dataset(_Fixed(lambda n: [], kind="odds"), [([7], [image])], cpu, got.append)


def test_keypoint_rcnn_is_an_adapter_with_every_hook() -> None:
    from kpbench.models.base import PoseModel
    from kpbench.models.keypointrcnn import KeypointRCNNModel, ModelInfo

    model = KeypointRCNNModel.from_module(object(), ModelInfo(weights="COCO_V1", source="torchvision"))
    assert isinstance(model, PoseModel) and model.schema is COCO17 and model.input_format == "tensor"
    for hook in ("to", "set_input_size", "record_input_shapes", "speed_variant"):
        assert callable(getattr(model, hook)), hook
    info = model.info()
    assert (info.name, info.published, info.default_input_size, info.keypoint_score_kind) == (
        "keypointrcnn_resnet50_fpn", {"box_AP": 54.6, "kp_AP": 65.0}, [800, 1333], "logit"
    )
    assert info.extra == {"weights_sha256_prefix": "fc266e95"}
    assert model.speed_variant("fp8") is None
    assert KeypointRCNNModel.check_weights(None) == "COCO_V1" and KeypointRCNNModel.check_weights("none") == "none"


FIVE_ADAPTER = textwrap.dedent('''
    import numpy as np

    from kpbench.core.schema import KeypointSchema
    from kpbench.models.base import ModelInfo, Predictions

    FIVE = KeypointSchema(name="robot5", keypoint_names=("head", "left_hand", "right_hand", "left_foot", "right_foot"),
                          skeleton=((1, 2), (1, 3), (1, 4), (1, 5)), sigmas=(0.05, 0.08, 0.08, 0.1, 0.1),
                          category_id=3, category_name="robot")


    class Robots:
        """One robot per image with a fixed pose relative to the image size; keypoint scores are logits."""

        schema = FIVE

        def info(self):
            return {"weights": None, "name": "robots"}

        def set_input_size(self, min_size, max_size):
            pass  # it works at any size

        def predict(self, images):
            out = []
            for image in images:
                h, w = image.shape[:2]
                kps = np.array([[0.5 * w, 0.2 * h, 1], [0.25 * w, 0.5 * h, 1], [0.75 * w, 0.5 * h, 1],
                                [0.375 * w, 0.875 * h, 1], [0.625 * w, 0.875 * h, 1]])
                out.append(Predictions(np.array([[0.2 * w, 0.1 * h, 0.8 * w, 0.95 * h]]), np.array([0.75]),
                                       kps[None], np.full((1, 5), 3.0), labels=np.array([3])))
            return out
''')


def test_a_model_of_another_keypoint_set_runs_end_to_end(
    synthetic_coco_root: Path, tmp_path: Path, run_cli: RunCli
) -> None:
    """A 5-keypoint model on a 5-keypoint GT: the GT is checked against the model's schema before the run, the
    cache holds 5 keypoints per detection, AP is bare pycocotools' with the schema's sigmas, and thresholds,
    keypoints and draw read the run."""
    import shutil

    import numpy as np

    root = tmp_path / "coco"
    shutil.copytree(synthetic_coco_root, root)
    gt_path = root / "annotations" / "person_keypoints_val2017.json"
    gt = json.loads(gt_path.read_text())
    rng = np.random.default_rng(5)
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        kps = np.stack([x + rng.uniform(0, w, 5), y + rng.uniform(0, h, 5), np.full(5, 2.0)], axis=1)
        a.update(category_id=3, keypoints=kps.round(2).reshape(-1).tolist(), num_keypoints=5)
    gt["categories"] = [{"id": 3, "name": "robot", "supercategory": "robot",
                         "keypoints": ["head", "left_hand", "right_hand", "left_foot", "right_foot"],
                         "skeleton": [[1, 2], [1, 3], [1, 4], [1, 5]]}]  # fmt: skip
    gt_path.write_text(json.dumps(gt))
    adapter = tmp_path / "robots.py"
    adapter.write_text(FIVE_ADAPTER)

    out = tmp_path / "run"
    code, _, err = run_cli("run", "--model", f"{adapter}:Robots", "--coco-root", root, "--workers", "0",
                           "--device", "cpu", "--out", out, "--no-progress", "--no-analysis")  # fmt: skip
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema"]["name"] == "robot5" and manifest["schema"]["num_keypoints"] == 5
    cache = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert [len(line["keypoints"][0]) for line in cache] == [5] * 4 and {line["labels"][0] for line in cache} == {3}
    results = json.loads((out / "keypoints_results.json").read_text())
    assert len(results) == 4 and all(len(r["keypoints"]) == 15 and r["category_id"] == 3 for r in results)

    def bare_ap(gt: dict, results: list) -> list[float]:
        import contextlib
        import io

        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO()
            coco_gt.dataset = json.loads(json.dumps(gt))
            coco_gt.createIndex()
            ev = COCOeval(coco_gt, coco_gt.loadRes(json.loads(json.dumps(results))), "keypoints")
            ev.params.kpt_oks_sigmas = np.array([0.05, 0.08, 0.08, 0.1, 0.1])
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return [float(v) for v in ev.stats]

    metrics = json.loads((out / "metrics.json").read_text())
    run_gt = json.loads((out / "ground_truth.json").read_text())
    assert [metrics["keypoints"][name] for name in KEYPOINT_STAT_NAMES] == bare_ap(run_gt, results)

    for command in (("thresholds", out), ("keypoints", out, "--format", "csv"),
                    ("draw", out, "--top", "2", "--score-thresh", "0.5", "--out", tmp_path / "drawn")):  # fmt: skip
        code, _, err = run_cli(*command)
        assert code == 0, (command, err)
    assert len(list((tmp_path / "drawn").glob("*.png"))) == 2

    # speed --accuracy picks images with a robot and scores them with the robots' sigmas.
    code, _, err = run_cli("speed", "--model", f"{adapter}:Robots", "--coco-root", root, "--num-images", "1",
                           "--sizes", "64", "--warmup", "0", "--iters", "1", "--accuracy", "2", "--device", "cpu",
                           "--out", tmp_path / "speed", "--no-progress")  # fmt: skip
    assert code == 0, err
    (csv_path,) = (tmp_path / "speed").glob("*.csv")
    import csv

    (row,) = list(csv.DictReader(csv_path.open()))
    acc_ids = json.loads(csv_path.with_suffix(".json").read_text())["images"]["accuracy_image_ids"]
    assert acc_ids == [139, 785]  # the lowest ids with a robot
    acc_gt = {**run_gt, "images": [i for i in run_gt["images"] if i["id"] in acc_ids],
              "annotations": [a for a in run_gt["annotations"] if a["image_id"] in acc_ids]}  # fmt: skip
    assert float(row["kp_AP"]) == bare_ap(acc_gt, [r for r in results if r["image_id"] in acc_ids])[0]

    # The GT is checked against the model's keypoint set before anything runs: COCO persons are not robots.
    code, _, err = run_cli("run", "--model", f"{adapter}:Robots", "--coco-root", synthetic_coco_root, "--workers",
                           "0", "--device", "cpu", "--out", tmp_path / "wrong", "--no-progress")  # fmt: skip
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "wrong").exists()
