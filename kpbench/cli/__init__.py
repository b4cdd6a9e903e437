"""kpbench's command line: a thin typer layer over the library. Bad input exits 2 with one line on stderr."""

from __future__ import annotations

import sys
import warnings

from kpbench.cli import (  # noqa: F401  (each module registers its commands on `app`)
    configcmd,
    data,
    evaluate,
    run,
    speed,
    thresholds,
    visual,
)
from kpbench.cli.app import app
from kpbench.errors import KpbenchError, KpbenchWarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # type: ignore[no-untyped-def]
    prefix = "warning" if issubclass(category, KpbenchWarning) else category.__name__
    print(f"{prefix}: {message}", file=sys.stderr)


def main() -> None:
    """Entry point of the `kpbench` console script."""
    warnings.showwarning = _show_warning
    try:
        app()
    except KpbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


__all__ = ["app", "main"]
