"""kpbench.cli.parsing: the plain coercion gives the values (and errors) typer's pydantic adapters give."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

coercion = pytest.importorskip("typer._coercion", reason="this typer coerces with click's types (nothing to replace)")

from kpbench.cli.parsing import _is_plain, _PlainRuntimeParam  # noqa: E402

SPELLINGS: dict[Any, list[Any]] = {
    int: ["12", "-3", "+4", " 5", "1_000", "1.0", "0x10", "1e3", "abc", "", 7],
    float: ["1.5", "-2", "nan", "inf", "1e3", "1E-3", ".5", "5.", "1_0.5", " 2", "x", "", 0.9],
    str: ["abc", "", "0.5,0.7"],
    Path: ["a/b", "~/x", ".", Path("p")],
}


def _both(annotation: Any, value: Any) -> tuple[Any, Any]:
    from typer.models import OptionInfo

    descriptor = coercion.resolve_type_descriptor(annotation, OptionInfo())
    assert _is_plain(descriptor)
    outcomes = []
    for runtime in (_PlainRuntimeParam(descriptor), coercion.build_runtime_param(descriptor)):
        try:
            result: Any = runtime._coerce_value(value, param=None, ctx=None)
            outcomes.append((type(result), result if result == result else "nan"))
        except Exception as exc:  # the error is the outcome compared
            outcomes.append((type(exc), str(exc)))
    return outcomes[0], outcomes[1]


@pytest.mark.parametrize(("annotation", "value"), [(a, v) for a, values in SPELLINGS.items() for v in values])
def test_plain_coercion_matches_typer(annotation: Any, value: Any) -> None:
    plain, typer_own = _both(annotation, value)
    assert plain == typer_own


def test_a_list_of_paths() -> None:
    from typer.models import ArgumentInfo

    descriptor = coercion.resolve_type_descriptor(list[Path], ArgumentInfo())
    assert _PlainRuntimeParam(descriptor)._coerce_value(("a", "b/c"), param=None, ctx=None) == [Path("a"), Path("b/c")]


def test_ranges_and_choices_stay_typer_s() -> None:
    from typer.models import OptionInfo

    assert not _is_plain(coercion.resolve_type_descriptor(float, OptionInfo(min=1.0)))
    assert not _is_plain(coercion.resolve_type_descriptor(int, OptionInfo(parser=int)))
