"""Golden outputs: the commands in tests/golden/record.py give the files recorded before kpbench was split into
stages, byte for byte (see that script for what is recorded and what is left out)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from kpdata import requires_shared

GOLDEN = Path(__file__).parent / "golden"


def _load_recorder():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("golden_record", GOLDEN / "record.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@requires_shared
@pytest.mark.slow
def test_commands_give_the_recorded_files_byte_for_byte(tmp_path: Path) -> None:
    recorded = {}
    for line in (GOLDEN / "golden.sha256").read_text().splitlines():
        digest, relative = line.split("  ", 1)
        recorded[relative] = digest
    produced = _load_recorder().run_all(tmp_path)
    assert sorted(produced) == sorted(recorded)
    changed = [relative for relative, digest in produced.items() if recorded[relative] != digest]
    assert changed == []
