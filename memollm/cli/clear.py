"""``memollm clear``: delete every entry, or those of one function, after asking."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from .common import EXIT_ERROR, EXIT_OK, CacheDir, CliError, match_functions
from .ui import Progress, confirm, console, human_size, plural, print_json, wants_progress

HELP = "delete every entry, or those of one function"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


def run(args: argparse.Namespace) -> int:
    with CacheDir.open(args.cache_dir) as cache:
        rows = cache.rows()
        function = args.function
        if function is not None:
            names = match_functions(function, (r.function for r in rows))
            if len(names) > 1:
                raise CliError(f"--function {function} matches {len(names)} functions ({', '.join(names)}); give the full name")
            function = names[0] if names else function
            rows = [r for r in rows if r.function == function]
        what = f"of {function} " if function else ""
        size = sum(r.meta.size for r in rows)
        if not rows and cache.store is None:
            return report(args, cache.path, function, 0, 0)
        question = f"Delete {plural(len(rows), 'entry', 'entries')} ({human_size(size)}) {what}from {cache.path}? [y/N] "
        if not args.yes and rows and not confirm(question):
            sys.stderr.write("memollm: nothing deleted (pass --yes to clear without being asked)\n")
            return EXIT_ERROR
        assert cache.store is not None
        removed = freed = 0
        if wants_progress(len(rows)):  # one by one behind a bar; else the store's batched clear
            with Progress("clearing", len(rows)) as progress:
                for row in rows:
                    if cache.store.delete(row.function, row.key):
                        removed += 1
                        freed += row.meta.size
                    progress.advance()
        removed += cache.store.clear(function)
    return report(args, cache.path, function, removed, max(size, freed))


def report(args: argparse.Namespace, path: str, function: Optional[str], removed: int, size: int) -> int:
    if args.json:
        print_json(sys.stdout, {"cache_dir": path, "function": function, "entries": removed, "bytes": size})
    else:
        what = f" of {function}" if function else ""
        console().print(f"deleted {plural(removed, 'entry', 'entries')}{what} ({human_size(size)}) from {path}", markup=False)
    return EXIT_OK
