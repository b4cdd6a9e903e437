"""The run-directory format version: new run directories are format 3 (format 2's manifest: model spec, keypoint
schema, keypoint score kind; the detections in the binary store, detections.bin). Format-2 directories (JSON lines)
and format-1 ones (neither the model fields nor the store) still read, format 1 as coco17 with Keypoint R-CNN and
logits, and resume into format 3 with the same detections."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from kpdata import COCO_SAMPLE, requires_shared

from kpbench.core.errors import KpbenchError
from kpbench.core.schema import COCO17, KeypointSchema
from kpbench.runs import directory as rundir

RunCli = Callable[..., tuple[int, str, str]]
FAST = ["--weights", "none", "--min-size", "96", "--max-size", "160", "--box-score-thresh", "0.3", "--no-progress",
        "--workers", "0", "--device", "cpu", "--no-analysis"]  # fmt: skip
# What format 2 added to the manifest, and to its model record.
V2_KEYS = ("format_version", "model_spec", "schema", "keypoint_score_kind")
V2_MODEL_KEYS = ("name", "published", "protocol", "default_input_size", "keypoint_score_kind", "extra")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def as_format_2(run_dir: Path, run_cli: RunCli) -> dict:
    """Turn a format-3 run directory into the format-2 one kpbench wrote before the store: its detections as JSON
    lines (`kpbench export --to jsonl`), the manifest's versions 2; returns the manifest."""
    code, _, err = run_cli("export", run_dir, "--to", "jsonl")
    assert code == 0, err
    (run_dir / "export" / "detections.jsonl").rename(run_dir / "detections.jsonl")
    (run_dir / "export").rmdir()
    (run_dir / "detections.bin").unlink()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["kpbench_run_version"] = manifest["format_version"] = 2
    rundir.write_manifest(run_dir, manifest)
    return manifest


def as_format_1(run_dir: Path) -> dict:
    """Rewrite a format-2 run's manifest as kpbench wrote it before format 2; returns it."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for key in V2_KEYS:
        del manifest[key]
    manifest["kpbench_run_version"] = 1
    del manifest["config"]["model"]
    for key in V2_MODEL_KEYS:
        manifest["model"].pop(key, None)  # a re-evaluated format-1 run keeps its old record
    rundir.write_manifest(run_dir, manifest)
    return manifest


def test_keypoint_rcnn_runs_are_format_3_and_formats_1_and_2_still_read(
    tmp_path: Path, synthetic_coco_root: Path, run_cli: RunCli
) -> None:
    from kpbench.runs.arrays import read_run_arrays
    from kpbench.runs.detections import ImageDetections

    out = tmp_path / "run"
    args = ("run", "--coco-root", synthetic_coco_root, "--limit", "3", *FAST, "--out", out)
    code, _, err = run_cli(*args)
    assert code == 0, err
    manifest = rundir.read_manifest(out)
    assert (manifest["format_version"], manifest["kpbench_run_version"]) == (3, 3)
    assert manifest["model_spec"] == {
        "spec": "keypointrcnn", "kind": "builtin", "target": "kpbench.models.keypointrcnn:KeypointRCNNModel"
    }
    assert manifest["schema"] == COCO17.to_json() and manifest["keypoint_score_kind"] == "logit"
    assert manifest["config"]["model"] == "keypointrcnn" and manifest["config"]["weights"] == "none"
    model = manifest["model"]
    assert (model["name"], model["source"], model["published"], model["default_input_size"]) == (
        "keypointrcnn_resnet50_fpn", "random", None, [800, 1333]
    )
    assert rundir.run_format(manifest) == rundir.RunFormat(3, "keypointrcnn", COCO17, "logit")
    assert [p.name for p in rundir.detection_files(out)] == ["detections.bin"]
    names = ("detections.bin", "keypoints_results.json", "bbox_results.json", "metrics.json")
    reference = {name: (out / name).read_bytes() for name in names}
    stored = read_run_arrays(out)

    # Format 2: the JSON lines `kpbench export` writes are the lines a format-2 run wrote for the same outputs.
    as_format_2(out, run_cli)
    lines = (out / "detections.jsonl").read_bytes()
    assert lines == b"".join(json.dumps(det.to_record(), separators=(",", ":")).encode() + b"\n"
                             for det in stored.images())
    assert [ImageDetections.from_record(json.loads(line)).image_id for line in lines.splitlines()] == [139, 785, 2500]
    legacy = read_run_arrays(out)
    assert legacy.image_ids.tolist() == stored.image_ids.tolist() and legacy.counts.tolist() == stored.counts.tolist()
    for name in ("scores", "boxes", "keypoints", "keypoint_scores", "category_ids", "image_ids"):
        assert (getattr(legacy.detections, name) == getattr(stored.detections, name)).all(), name
    assert legacy.input_shapes == stored.input_shapes and stored.input_shapes[0] == (1, 3, 96, 128)

    # Format 1: read as Keypoint R-CNN, coco17, logits; the commands that read a run still work.
    v1 = as_format_1(out)
    assert rundir.read_manifest(out) == v1
    fmt = rundir.run_dir_format(out)
    assert fmt == rundir.RunFormat(1, "keypointrcnn", COCO17, "logit") and fmt.schema is COCO17
    for command in (("evaluate", "--run", out), ("thresholds", out), ("keypoints", out),
                    ("draw", out, "--top", "1", "--out", tmp_path / "drawn")):  # fmt: skip
        code, _, err = run_cli(*command)
        assert code == 0, (command, err)
    assert (out / "keypoints_results.json").read_bytes() == reference["keypoints_results.json"]

    # A finished format-1 run is re-evaluated only (no model built) and upgraded to format 3: the JSON lines become
    # the same store, byte for byte.
    code, _, err = run_cli(*args)
    assert code == 0, err
    upgraded = rundir.read_manifest(out)
    assert {key: upgraded[key] for key in V2_KEYS} == {key: manifest[key] for key in V2_KEYS}
    assert upgraded["timings"]["images"] == 3  # nothing was run again
    assert [p.name for p in rundir.detection_files(out)] == ["detections.bin"]
    for name, data in reference.items():
        assert (out / name).read_bytes() == data, name

    # An unfinished format-2 run, and an unfinished format-1 run, resume into format 3 with the detections of the
    # uninterrupted run.
    for older in (2, 1):
        as_format_2(out, run_cli)
        if older == 1:
            as_format_1(out)
        first = (out / "detections.jsonl").read_bytes().splitlines(keepends=True)[:1]
        (out / "detections.jsonl").write_bytes(b"".join(first) + b'{"image_id": 785, "bo')  # torn by a kill
        code, _, err = run_cli(*args)
        assert code == 0, err
        assert "resumed: 1 images were already cached, 2 run now" in err
        assert {key: rundir.read_manifest(out)[key] for key in V2_KEYS} == {key: manifest[key] for key in V2_KEYS}
        assert not (out / "detections.jsonl").exists()
        for name, data in reference.items():
            assert (out / name).read_bytes() == data, (older, name)


def test_run_format_reads_a_plugin_schema_and_refuses_unknown_versions(tmp_path: Path) -> None:
    schema = KeypointSchema(name="tri", keypoint_names=("a", "b", "c"), skeleton=((1, 2), (2, 3)),
                            sigmas=(0.1, 0.2, 0.3), category_id=7, category_name="thing")  # fmt: skip
    manifest = {"kpbench_run_version": 2, "format_version": 2, "schema": schema.to_json(),
                "model_spec": {"spec": "my.py:Tri", "kind": "file", "target": "my.py:Tri"},
                "keypoint_score_kind": "probability"}  # fmt: skip
    rundir.write_manifest(tmp_path, manifest)
    assert rundir.run_dir_format(tmp_path) == rundir.RunFormat(2, "my.py:Tri", schema, "probability")
    assert dataclasses.asdict(rundir.run_format({"kpbench_run_version": 1}))["model_spec"] == "keypointrcnn"
    for version in (4, 0, "2"):
        rundir.write_manifest(tmp_path, {"kpbench_run_version": 2, "format_version": version})
        with pytest.raises(KpbenchError, match=rf"run format version {version!r}; this kpbench reads versions 1, 2, 3$"):
            rundir.read_manifest(tmp_path)
    with pytest.raises(KpbenchError, match=r"^manifest: unreadable keypoint schema \(KeyError"):
        rundir.run_format({"kpbench_run_version": 2, "schema": {"name": "x"}})


@requires_shared
def test_results_made_elsewhere_become_a_run_directory(tmp_path: Path, run_cli) -> None:
    """`run --results`: the run's AP is the file's own, and the later commands work from the directory."""
    from kpbench.evaluation.cocoeval import evaluate

    gt = COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json"
    # Results of every sample image: each labelled GT person shifted by 3 px, with per-keypoint scores.
    data = json.loads(gt.read_text())
    rows = []
    for i, ann in enumerate(a for a in data["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]):
        kps = [v + 3 if j % 3 != 2 else 1 for j, v in enumerate(ann["keypoints"])]
        rows.append({"image_id": ann["image_id"], "category_id": 1, "keypoints": kps, "score": round(0.3 + (i % 7) / 10, 2),
                     "keypoint_scores": [0.9] * 17})
    res = tmp_path / "res.json"
    res.write_text(json.dumps(rows))
    out = tmp_path / "run"
    code, stdout, err = run_cli("run", "--results", res, "--coco-root", COCO_SAMPLE, "--out", out)
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["keypoints"] == evaluate(gt, res).stats
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["keypoint_score_kind"] == "probability" and manifest["model_spec"]["kind"] == "results"
    assert "results made elsewhere" in stdout
    assert run_cli("thresholds", out, "--format", "json")[0] == 0
    assert run_cli("keypoints", out)[0] == 0
    assert run_cli("draw", out, "--top", "1", "--out", tmp_path / "d")[0] == 0
    code, _, err = run_cli("run", "--results", res, "--coco-root", COCO_SAMPLE, "--out", out)
    assert code == 2 and "already a run directory" in err
    code, _, err = run_cli("run", "--results", res, "--coco-root", COCO_SAMPLE, "--weights", "none")
    assert code == 2 and "--results: --weights do(es) not apply: the results are already made" in err
