"""Every install hint kpbench prints names a command that works for this install (`kpbench.core.install`):
'kpbench[EXTRA]' is on no index a source checkout has, so `pip install 'kpbench[fast]'` and the like failed for
the usual install, as the missing-torch hint used to."""

from __future__ import annotations

import ast
import importlib.util
import shlex
from pathlib import Path

import pytest
from kpdata import COCO_SAMPLE, assert_one_line_error, requires_shared

import kpbench
from kpbench.core import install
from kpbench.core.errors import KpbenchError

PACKAGE = Path(kpbench.__file__).parent
ROOT = PACKAGE.parent


def _hint(extra: str) -> str:
    return f"pip install -e {shlex.quote(f'{ROOT}[{extra}]')}"


def _strings(path: Path) -> list[str]:
    """The string constants of a module that are not docstrings (what it can print)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_message_names_an_extra_by_the_index_form() -> None:
    """Before: hotcoco's (backends.py, evaluate --backend hotcoco), the demo's, the sweep's, the HTML page's random
    weights warning, the ONNX runtimes' (onnx, onnxruntime), mediapipe's (`pip install -e '.[mediapipe]'`, which
    works only inside the checkout) and two --help texts."""
    found = [(path.relative_to(ROOT), text) for path in sorted(PACKAGE.rglob("*.py")) for text in _strings(path)
             if "pip install" in text and ("kpbench[" in text or ".[" in text)
             and path.name != "install.py"]
    assert found == []


def test_each_missing_extra_names_this_install() -> None:
    from kpbench.demo import no_torch_message, no_yolo_message
    from kpbench.evaluation.backends import hotcoco_missing
    from kpbench.models.mediapipe import mediapipe_missing
    from kpbench.report.html_sections import random_weights_note

    assert install.source_checkout() == ROOT  # the tests run from the checkout (an editable install, as CI's)
    assert hotcoco_missing() == f"--backend hotcoco: hotcoco is not installed ({_hint('fast')})"
    assert no_torch_message() == (f"kpbench demo runs a pose model, which needs torch: {_hint('yolo')} (YOLO11n-pose "
                                  "with its real weights; ultralytics is AGPL-3.0), or "
                                  f"{_hint('torch')} (Keypoint R-CNN with random weights)")
    assert no_yolo_message().startswith(f"--model yolo: the yolo extra is not installed ({_hint('yolo')}: ")
    assert mediapipe_missing().endswith(f"with kpbench and its mediapipe extra: {_hint('mediapipe')}")
    from kpbench.runtimes.onnxruntime import onnx_missing

    assert onnx_missing("onnxruntime") == f"onnxruntime is not installed ({_hint('onnx')})"  # --runtime onnxruntime
    note = random_weights_note({"model": {"name": "keypointrcnn", "weights": "none"}})
    assert "Install the yolo extra (pip install -e &#x27;" in note and f"{ROOT}[yolo]&#x27;)" in note


@requires_shared
def test_evaluate_with_hotcoco_missing_is_one_line_with_the_hint(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "hotcoco" else real(name, *a))
    gt = COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json"
    results = Path(__file__).parent / "fixtures" / "yolo11n_pose_coco_sample_results.json"
    assert_one_line_error(run_cli("evaluate", gt, results, "--backend", "hotcoco"),
                          f"error: --backend hotcoco: hotcoco is not installed ({_hint('fast')})")


def test_sweep_without_submitit_names_this_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from kpbench.sweep import launch

    real_import = builtins.__import__

    def without_submitit(name: str, *args: object, **kwargs: object) -> object:
        if name == "submitit" or name.startswith("submitit."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_submitit)
    with pytest.raises(KpbenchError) as info:
        launch.import_submitit()
    assert str(info.value) == f"kpbench sweep launches jobs through submitit (not installed): {_hint('sweep')}"
