"""What every vidrd CLI does around its Typer app: user errors become one line and exit status 2."""

from __future__ import annotations

import logging
import sys

import typer


class UsageProblem(Exception):
    """Bad input from the user: reported as one line with exit status 2."""


def typer_app(help: str, no_args_is_help: bool = True) -> typer.Typer:
    """Return a Typer app set up as every vidrd CLI is: no shell completion, no pretty tracebacks (`run_app` prints
    user errors as one line), help when run without arguments unless told otherwise."""
    return typer.Typer(add_completion=False, no_args_is_help=no_args_is_help, pretty_exceptions_enable=False, help=help)


def run_app(
    app: typer.Typer, prog: str, argv: list[str] | None, user_errors: tuple[type[BaseException], ...]
) -> int:
    """Run `app`; a usage error or one of `user_errors` prints `prog: problem` and returns 2, anything else one
    line and 1. `--debug` anywhere on the command line shows the traceback instead."""
    argv, debug = _take_debug(list(sys.argv[1:] if argv is None else argv))
    if debug and _declares_debug(app):
        argv.insert(0, "--debug")  # where the app's own option is read (its callback's or its one command's)
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")

    def error(message: str) -> None:
        print(f"{prog}: {message}", file=sys.stderr, flush=True)

    try:
        code = typer.main.get_command(app).main(args=argv, prog_name=prog, standalone_mode=False)
        return code if isinstance(code, int) else 0  # without standalone mode, Exit(n) comes back as n
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        error("aborted")
        return 130
    except typer.TyperException as exc:  # typer's (vendored click) usage errors: bad option, missing argument
        error(exc.format_message())
        return 2
    except user_errors as exc:
        if debug:
            raise
        error(exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc))  # KeyError's str() adds quotes
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if debug:
            raise
        error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return 1


def _take_debug(argv: list[str]) -> tuple[list[str], bool]:
    """Return argv without `--debug` (anywhere before a `--`) and whether it was there."""
    end = argv.index("--") if "--" in argv else len(argv)
    kept = [a for a in argv[:end] if a != "--debug"] + argv[end:]
    return kept, len(kept) != len(argv)


def _declares_debug(app: typer.Typer) -> bool:
    """Whether the app's root (its callback, or its one command) has a `--debug` option of its own."""
    return any("--debug" in getattr(p, "opts", ()) for p in typer.main.get_command(app).params)
