"""The typer app and its sub-groups. Command modules register themselves on these objects."""

from __future__ import annotations

import typer

from kpbench.cli.parsing import KpbenchGroup

app = typer.Typer(
    name="kpbench",
    cls=KpbenchGroup,
    help="Evaluate and benchmark COCO keypoint (human pose) models: COCO AP, score thresholds, speed tables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(cls=KpbenchGroup, help="COCO data: download what is missing.", no_args_is_help=True)
config_app = typer.Typer(cls=KpbenchGroup, help="Run configs (TOML): show merged settings.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")


def echo_err(message: str) -> None:
    """Print one line on stderr."""
    typer.echo(message, err=True)


TORCH_MODULES = ("torch", "torchvision")


def missing_torch_message(what: str) -> str:
    """The one line for a command that runs a model on an install without the torch extra, with an install command
    that works for this install (`kpbench.core.install`: 'kpbench[torch]' is on no index a source checkout has)."""
    from kpbench.core.install import install_hint

    return f"{what} runs a model, which needs torch and torchvision (not installed): {install_hint('torch')}"


def require_torch(what: str) -> None:
    """Fail before any work when torch or torchvision is missing (found without importing them)."""
    from importlib.util import find_spec

    from kpbench.core.errors import KpbenchError

    if any(find_spec(name) is None for name in TORCH_MODULES):
        raise KpbenchError(missing_torch_message(what))


def _print_version(value: bool) -> None:
    if value:
        from kpbench import __version__

        typer.echo(f"kpbench {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print kpbench's version and exit."
    ),
) -> None:
    """Evaluate and benchmark COCO keypoint (human pose) models: COCO AP, score thresholds, speed tables."""
