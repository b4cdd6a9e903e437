"""Checkpoints and --weights values: what torchvision's training script saves loads, and every bad file or name
is one short line (no model is built here)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from kpbench.core.errors import KpbenchError
from kpbench.models.keypointrcnn import canonical_weights, check_weights, load_checkpoint_state

CHOICES = "(--weights takes COCO_V1, COCO_LEGACY, none or a path)"


def _reference_script_checkpoint(path: Path, *, zip_format: bool = True) -> dict[str, torch.Tensor]:
    """What references/detection/train.py saves: model, optimizer, lr_scheduler, scaler, args and epoch."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[36, 43], gamma=0.1)
    args = argparse.Namespace(data_path="/data/coco", dataset="coco_kp", model="keypointrcnn_resnet50_fpn",
                              device="cuda", batch_size=2, epochs=46, lr=0.02, lr_steps=[36, 43], weights=None,
                              amp=True, world_size=8, dist_url="env://")  # fmt: skip
    checkpoint = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(),
        "args": args, "epoch": 45, "scaler": torch.amp.GradScaler("cpu").state_dict(),
    }  # fmt: skip
    torch.save(checkpoint, path, _use_new_zipfile_serialization=zip_format)
    return model.state_dict()


@pytest.mark.parametrize("zip_format", [True, False])
def test_reference_training_script_checkpoint_loads(tmp_path: Path, zip_format: bool) -> None:
    path = tmp_path / "model_45.pth"
    expected = _reference_script_checkpoint(path, zip_format=zip_format)
    state = load_checkpoint_state(path)
    assert list(state) == list(expected) and all(torch.equal(state[k], expected[k]) for k in expected)


def test_checkpoint_with_code_is_refused_in_one_line(tmp_path: Path) -> None:
    """weights_only stays on: a pickled class is refused, with torch's reason in one line (no ANSI colours,
    no paragraphs of advice)."""
    path = tmp_path / "with_class.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "cls": torch.nn.Linear}, path)
    with pytest.raises(KpbenchError) as info:
        load_checkpoint_state(path)
    message = str(info.value)
    assert message == (f"{path}: unreadable checkpoint (UnpicklingError: Unsupported global: GLOBAL "
                       "torch.nn.modules.linear.Linear was not an allowed global by default; kpbench loads "
                       "checkpoints with weights_only=True: tensors and plain data only)")  # fmt: skip


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty file, not a checkpoint"),
        (b"garbage", "not a PyTorch checkpoint (torch.save writes a zip or pickle file)"),
        (b"PK\x03\x04garbage", "unreadable checkpoint (RuntimeError: PytorchStreamReader failed reading zip archive: "
                               "not a ZIP archive)"),
        (b"\x80\x02garbage", "unreadable checkpoint (UnpicklingError: "),
    ],
)
def test_bad_checkpoint_files_are_one_short_line(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(KpbenchError) as info:
        load_checkpoint_state(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {expected}") and "\n" not in message and "\x1b" not in message
    assert len(message) < len(str(path)) + 200


def test_weights_names_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert [canonical_weights(w) for w in ("coco_v1", "Coco_Legacy", "NONE", "COCO_V1", "x.pth")] == [
        "COCO_V1", "COCO_LEGACY", "none", "COCO_V1", "x.pth",
    ]  # fmt: skip
    assert check_weights("coco_legacy") == "COCO_LEGACY"  # no file needed, no torch import
    with pytest.raises(KpbenchError) as info:
        check_weights(str(tmp_path))
    assert str(info.value) == f"{tmp_path}: is a directory, expected a checkpoint file {CHOICES}"
    with pytest.raises(KpbenchError) as info:
        check_weights("coco-v1")
    assert str(info.value) == f"coco-v1: checkpoint file not found; did you mean COCO_V1? {CHOICES}"
    with pytest.raises(KpbenchError) as info:
        check_weights(str(tmp_path / "w.pth"))
    assert str(info.value) == f"{tmp_path / 'w.pth'}: checkpoint file not found {CHOICES}"
    # A file that happens to be called like a named weight is that file.
    monkeypatch.chdir(tmp_path)
    _reference_script_checkpoint(tmp_path / "coco_v1")
    assert canonical_weights("coco_v1") == "coco_v1" and check_weights("coco_v1") == "coco_v1"
