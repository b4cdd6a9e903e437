"""kpbench's command line: a thin typer layer over the library. Bad input exits 2 with one line on stderr."""

from __future__ import annotations

import copy
import gc
import sys
import warnings

# The cyclic garbage collector paused while the CLI's modules load, and what they made frozen (gc.freeze: kept out
# of every later collection) when a command starts (`main`): typer, click and inspect make tens of thousands of
# long-lived objects, and the collections they would start (about 20 while loading, each walking every object made
# so far, then the same objects again in each older-generation collection of the command) cost ~10-20 ms of every
# command's start-up, more than `kpbench evaluate` spends parsing a small file. This is the start-up pattern
# gc.freeze is documented for. Only the console script freezes: a process that merely imports kpbench.cli (a test
# runner, a notebook) keeps collecting what it had.
_COLLECTING = gc.isenabled()
gc.disable()
try:
    import typer

    from kpbench.cli import (  # noqa: F401  (each module registers its commands on `app`)
        analysis,
        analyze,
        configcmd,
        data,
        demo,
        evaluate,
        export,
        run,
        speed,
        sweep,
        thresholds,
        visual,
    )
    from kpbench.cli.app import TORCH_MODULES, app, missing_torch_message
    from kpbench.core.errors import KpbenchError, KpbenchWarning

    # Into the oldest generation, with the allocation count reset (which freeze does): no collection starts at once
    # on what loading counted, and a process that only imports this keeps collecting all of it (in full passes).
    gc.freeze()
    gc.unfreeze()
finally:  # (a failed import leaves the collector as it was)
    if _COLLECTING:
        gc.enable()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # type: ignore[no-untyped-def]
    prefix = "warning" if issubclass(category, KpbenchWarning) else category.__name__
    print(f"{prefix}: {message}", file=sys.stderr)


def _app_for(args: list[str]) -> typer.Typer:
    """The app, with only the command being run when the first argument names one: typer builds a click command
    for every registered command on each call, reading every signature (~20 ms, a tenth of a small `kpbench
    evaluate`); the others matter only to the top-level help and to a command name that is not one."""
    chosen = [info for info in app.registered_commands if args and info.name == args[0]]
    if len(chosen) != 1:
        return app
    only = copy.copy(app)
    only.registered_commands = chosen
    only.registered_groups = []
    return only


def main() -> None:
    """Entry point of the `kpbench` console script. Bad input, ours or click's (an unknown option, "abc" for a
    number), is one `error:` line on stderr and exit 2."""
    import typer

    gc.freeze()  # the modules loaded so far: out of every collection of this command (see the top of this file)
    warnings.showwarning = _show_warning
    try:
        # Not standalone, so that click's own errors come here to be worded.
        outcome = _app_for(sys.argv[1:])(standalone_mode=False)
    except KpbenchError as exc:
        cause = getattr(exc, "cause", None)  # a user model that raised (ModelCallError): its traceback helps its
        if isinstance(cause, BaseException):  # author; the one error line ends it, whichever command ran the model
            import traceback

            traceback.print_exception(type(cause), cause, cause.__traceback__, file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except ModuleNotFoundError as exc:  # a path that needs the torch extra and got past require_torch
        if (exc.name or "").split(".")[0] not in TORCH_MODULES:
            raise
        command = " ".join(arg for arg in sys.argv[1:3] if not arg.startswith("-")) or "this command"
        print(f"error: {missing_torch_message(f'kpbench {command}')}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:  # end of input at a prompt (Ctrl-C is typer.Exit(130), handled by click)
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    except typer.TyperException as exc:  # click's exceptions, which typer vendors
        if type(exc).__name__ == "NoArgsIsHelpError":  # `kpbench` alone: the help, as click shows it
            exc.show()  # type: ignore[attr-defined]
            sys.exit(getattr(exc, "exit_code", 2))
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print(f"error: {' '.join(message.split())}{hint}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(outcome if isinstance(outcome, int) else 0)  # typer.Exit(code) comes back as its code


__all__ = ["app", "main"]
