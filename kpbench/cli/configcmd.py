"""`kpbench config show`: the fully merged settings of a TOML run config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kpbench.cli import options
from kpbench.cli.app import config_app
from kpbench.core.errors import KpbenchError


@config_app.command("show")
def config_show(
    file: Annotated[Path | None, typer.Argument(help="A TOML config (configs/*.toml); none shows the defaults.")] = None,
    fmt: Annotated[str, options.format_option("toml or json.")] = "toml",
) -> None:
    """Print every setting of [run], [speed] and [thresholds]: the file's values over the defaults."""
    from kpbench.core.config import SECTIONS, load_config, merge_settings, settings_dict, to_toml

    if fmt not in ("toml", "json"):
        raise KpbenchError(f"--format: must be toml or json, got {fmt!r}")
    config = load_config(file)
    tables = {name: settings_dict(merge_settings(cls, config)) for name, cls in SECTIONS.items()}
    if fmt == "json":
        typer.echo(json.dumps({"config_file": config.path, "sha256": config.sha256, **tables}, indent=2))
        return
    header = f"# merged settings of {config.path} (sha256 {config.sha256})" if config.path else "# defaults"
    typer.echo(header + "\n" + to_toml(tables))
