"""The ``memollm`` command: look into a cache dir, prune it, clear it, report on it, and run the demo.

One module per command (``stats``, ``ls``, ``show``, ``prune``, ``clear``, ``report``, ``demo``, ``textconv``, ``why``), each with
its ``HELP``, ``add_arguments(parser)`` and ``run(args)``; this module builds the parser and runs
one. Tables for people (``rich``), ``--json`` for scripts. Exit codes: 0 success, 1 error, 2
usage. Errors are one line on stderr (set ``MEMOLLM_DEBUG=1`` for a traceback). Read-only
commands never create a cache dir.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from types import ModuleType
from typing import Any, Optional, Sequence

from .. import __version__
from . import clear, demo, ls, prune, report, show, stats, textconv, why
from .common import EXIT_ERROR, EXIT_OK, EXIT_USAGE, CacheDir, CliError, FunctionStats, Listed, match_functions
from .ui import Progress

__all__ = ["CacheDir", "CliError", "FunctionStats", "Listed", "Progress", "build_parser", "main", "match_functions"]

DEBUG_ENV = "MEMOLLM_DEBUG"

# name -> (module, which shared options it takes)
COMMANDS: dict[str, tuple[ModuleType, tuple[str, ...]]] = {
    "stats": (stats, ("cache_dir", "json", "function")),
    "ls": (ls, ("cache_dir", "json", "function")),
    "show": (show, ("cache_dir", "json")),
    "prune": (prune, ("cache_dir", "json")),
    "clear": (clear, ("cache_dir", "json", "function")),
    "report": (report, ("cache_dir",)),
    "demo": (demo, ()),
    "textconv": (textconv, ()),
    "why": (why, ("cache_dir", "json", "function")),
}


def _shared_options() -> dict[str, argparse.ArgumentParser]:
    cache_dir = argparse.ArgumentParser(add_help=False)
    cache_dir.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the cache dir (default: $MEMOLLM_CACHE_DIR, else $XDG_CACHE_HOME/memollm, else ~/.cache/memollm)",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    by_function = argparse.ArgumentParser(add_help=False)
    by_function.add_argument("--function", metavar="NAME", help="only this function (module.qualname, or just its name)")
    return {"cache_dir": cache_dir, "json": as_json, "function": by_function}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memollm",
        description="Look into, prune, clear and report on a memollm cache dir; run the demo.",
        epilog="Exit codes: 0 success, 1 error, 2 usage. Docs: the docs/ folder of the project.",
    )
    parser.add_argument("--version", action="version", version=f"memollm {__version__}")
    parser.add_argument("--cache-dir", metavar="DIR", default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    shared = _shared_options()
    for name, (module, options) in COMMANDS.items():
        command = sub.add_parser(name, help=module.HELP, description=module.HELP, parents=[shared[o] for o in options])
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``memollm`` command; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    with _plain_warnings():
        try:
            return int(args.handler(args))
        except CliError as exc:
            _error(str(exc))
        except KeyboardInterrupt:
            sys.stderr.write("\nmemollm: interrupted\n")
            return 130
        except BrokenPipeError:  # e.g. `memollm ls | head`
            _silence_stdout()
            return EXIT_OK
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            _error(f"{exc} ({type(exc).__name__}; set {DEBUG_ENV}=1 for a traceback)")
    return EXIT_ERROR


def _error(message: str) -> None:
    sys.stderr.write(f"memollm: error: {message}\n")


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


class _plain_warnings:
    """Show cache warnings as one ``memollm: warning: ...`` line, not twice (warnings + logger)."""

    def __enter__(self) -> None:
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.showwarning = _show_warning
        logger = logging.getLogger("memollm")
        self._handler = logging.NullHandler()
        self._propagate = logger.propagate
        logger.addHandler(self._handler)
        logger.propagate = False

    def __exit__(self, *_: Any) -> None:
        logger = logging.getLogger("memollm")
        logger.removeHandler(self._handler)
        logger.propagate = self._propagate
        self._catch.__exit__(None, None, None)


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    text = str(message)
    if text.startswith("memollm: "):
        text = text[len("memollm: ") :]
    sys.stderr.write(f"memollm: warning: {text}\n")
