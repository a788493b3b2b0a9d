"""``memollm ls``: one line per entry; ``--grep TEXT`` keeps those whose request or response holds TEXT."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

from .common import EXIT_OK, CacheDir, Listed, entry_sample, filter_rows
from .entries import UnreadableEntry, matches, read_entry
from .ui import Progress, console, human_expiry, human_size, human_time, plural, print_json, print_table

HELP = "list entries: function, key, created, expires, size, hits, sample"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grep",
        metavar="TEXT",
        help="only entries whose request or response contains TEXT (case-insensitive; reads every entry)",
    )


def grep(cache: CacheDir, rows: list[Listed], text: str) -> list[Listed]:
    """The rows whose entry's request or response contains ``text`` (unreadable entries never do)."""
    found = []
    with Progress("searching", len(rows), transient=True) as progress:
        for row in rows:
            data = cache.store.get(row.function, row.key) if cache.store is not None else None
            progress.advance()
            if data is None:
                continue
            try:
                shown = read_entry(data)
            except UnreadableEntry:
                continue
            if matches(shown, text):
                row.meta = shown.meta  # the header's: it carries what the index may not (the sample)
                found.append(row)
    return found


def run(args: argparse.Namespace) -> int:
    now = time.time()
    grep_text: Optional[str] = args.grep
    with CacheDir.open(args.cache_dir) as cache:
        rows = filter_rows(cache.rows(), args.function)
        if grep_text:
            rows = grep(cache, rows, grep_text)
    if args.json:
        print_json(sys.stdout, [r.to_json(now) for r in rows])
        return EXIT_OK
    out = console()
    if not rows:
        what = (f" of function {args.function}" if args.function else "") + (f" containing {grep_text!r}" if grep_text else "")
        out.print(f"no entries{what} in {cache.path}", markup=False)
        return EXIT_OK
    samples = any(entry_sample(r.meta) is not None for r in rows)
    headers = ["FUNCTION", "KEY", "CREATED", "EXPIRES", "SIZE", "HITS"] + (["SAMPLE"] if samples else []) + ["KIND"]
    table = []
    for r in rows:
        cells = [r.function, r.key, human_time(r.meta.created), human_expiry(r.meta, now), human_size(r.meta.size), str(r.hits)]
        if samples:
            sample = entry_sample(r.meta)
            cells.append("-" if sample is None else str(sample))
        table.append(cells + ["stream" if r.meta.kind == "stream" else ""])
    right = (4, 5, 6) if samples else (4, 5)
    print_table(out, headers, table, right=right, styles={0: "cyan", 1: "magenta"})
    total = sum(r.meta.size for r in rows)
    out.print()
    out.print(f"{plural(len(rows), 'entry', 'entries')}, {human_size(total)}, in {cache.path}", markup=False)
    return EXIT_OK
