"""Plain coercion of command-line values, so that a command costs little more than the library call it makes.

Typer 0.29 (not 0.27) coerces every parameter, given or not, through a pydantic TypeAdapter built on first use:
importing pydantic and building the adapters cost about 0.1 s per command, as much as a whole hotcoco evaluation
of a small file. kpbench's parameters are plain: str, int, float, Path, list[Path] and bool flags. `KpbenchGroup`
gives those a plain coercion when a command is resolved, and leaves anything else (a range, a choice, a file, an
unusual spelling of a number) to typer's own, which then also words the error. The results are the values
typer's adapters give: a number is read here only when it is spelled plainly ("12", "-0.5", "1e-3"), and a path
goes through typer's own path checks.

Only typer's private `_runtime_param` slot is used; with a typer that lacks it (or lacks typer._coercion),
typer's coercion runs unchanged: slower, never different.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from typer.core import TyperGroup

try:  # typer 0.29 coerces through pydantic; older releases (0.27) use click's types, which cost nothing to build
    from typer._coercion import RuntimeParam, build_runtime_param
except ImportError:  # pragma: no cover - depends on the installed typer
    RuntimeParam = None  # type: ignore[assignment,misc]

# Numbers spelled so that int()/float() and pydantic's lax mode agree; anything else goes to typer.
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PLAIN_LEAVES = (str, int, float, bool, Path)


class _PlainRuntimeParam(RuntimeParam or object):  # type: ignore[misc]
    """Coerces plain values itself; hands the rest to typer's adapter, built only then."""

    def __init__(self, descriptor: Any) -> None:
        super().__init__(parameter_info=descriptor.parameter_info, annotation=descriptor.annotation)
        object.__setattr__(self, "_descriptor", descriptor)  # a frozen dataclass
        object.__setattr__(self, "_typer", None)

    def _fallback(self, value: Any, param: Any, ctx: Any) -> Any:
        if self._typer is None:
            object.__setattr__(self, "_typer", build_runtime_param(self._descriptor))
        return self._typer._coerce_value(value, param=param, ctx=ctx)

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        annotation = self.annotation
        if isinstance(value, (list, tuple)):  # list[Path] arguments (nargs=-1)
            (item_type,) = annotation.__args__
            return [self._leaf(item, item_type, param, ctx) for item in value]
        return self._leaf(value, annotation, param, ctx)

    def _leaf(self, value: Any, annotation: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str):
            if annotation is str:
                return value
            if annotation is int and _INT.fullmatch(value):
                return int(value)
            if annotation is float and _FLOAT.fullmatch(value):
                return float(value)
            if annotation is Path:
                from typer._param_types import coerce_cli_path

                # Given a Path, typer's own checks (readable, exists, ...) run without building an adapter.
                return coerce_cli_path(Path(value), self.parameter_info, path_type=Path, param=param, ctx=ctx)
        elif isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
            return value  # a default of the right type
        return self._fallback(value, param, ctx)


def _is_plain(descriptor: Any) -> bool:
    info = descriptor.parameter_info
    if descriptor.is_file or descriptor.is_ranged or descriptor.is_choice or info.parser is not None:
        return False
    if getattr(info, "click_type", None) is not None:
        return False
    annotation = descriptor.annotation
    if getattr(annotation, "__origin__", None) is list:
        (item,) = annotation.__args__
        return item in _PLAIN_LEAVES
    return annotation in _PLAIN_LEAVES


def install_plain_coercion(params: list[Any]) -> None:
    """Give each plain typer parameter the plain coercion (once; idempotent; nothing to do on older typers)."""
    if RuntimeParam is None:
        return
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or getattr(param, "_runtime_param", ...) is not None:
            continue  # not a typer parameter, or already coerced (or a typer without the slot)
        if _is_plain(descriptor):
            param._runtime_param = _PlainRuntimeParam(descriptor)


# `kpbench --help` lists the commands by job, in the order of the work: data, run, score, analyse, report. A command
# may name its group itself (typer's `rich_help_panel`, which kpbench shows without rich); one in no group is listed
# last, under "Other commands", so that a new command is never hidden.
COMMAND_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Data and settings", ("data", "demo", "config")),
    ("Run models", ("run", "speed", "sweep", "export")),
    ("Score results", ("evaluate", "thresholds", "keypoints")),
    ("Analyse", ("analyze", "compare")),
    ("Report", ("report", "html", "plot", "draw")),
)
OTHER_COMMANDS = "Other commands"


def command_group(name: str, command: Any) -> str:
    """The --help group of a command: its own `rich_help_panel`, else COMMAND_GROUPS', else OTHER_COMMANDS."""
    panel = getattr(command, "rich_help_panel", None)
    if isinstance(panel, str) and panel:
        return panel
    return next((group for group, names in COMMAND_GROUPS if name in names), OTHER_COMMANDS)


class KpbenchGroup(TyperGroup):
    """A typer group whose own options, and its commands once resolved (to run or for --help), get the plain
    coercion, and whose --help lists its commands by job (`COMMAND_GROUPS`)."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        commands = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        commands = [(name, cmd) for name, cmd in commands if cmd is not None and not cmd.hidden]
        groups: dict[str, list[tuple[str, Any]]] = {}
        for name, cmd in commands:
            groups.setdefault(command_group(name, cmd), []).append((name, cmd))
        if set(groups) <= {OTHER_COMMANDS}:  # a sub-group (data, config): click's own single list
            return super().format_commands(ctx, formatter)
        order = {group: i for i, (group, _) in enumerate(COMMAND_GROUPS)}
        rank = {name: i for _, names in COMMAND_GROUPS for i, name in enumerate(names)}
        limit = formatter.width - 6 - max(len(name) for name, _ in commands)
        for group in sorted(groups, key=lambda g: (g == OTHER_COMMANDS, order.get(g, len(order)))):
            rows = sorted(groups[group], key=lambda item: rank.get(item[0], len(rank)))
            with formatter.section(group):
                # Names padded to the longest of all, so that every group's column starts at the same place.
                width = max(len(name) for name, _ in commands)
                formatter.write_dl([(name.ljust(width), cmd.get_short_help_str(limit)) for name, cmd in rows])

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        install_plain_coercion(self.get_params(ctx))
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            # --help is a typer option too, made and cached on first use: with this context's names, which a
            # command's own context inherits.
            install_plain_coercion(command.get_params(ctx))
        return name, command, rest
