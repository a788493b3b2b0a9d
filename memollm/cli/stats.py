"""``memollm stats``: per function, entries, size, hits, misses, time, tokens and dollars saved."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from .. import prices
from .common import EXIT_OK, CacheDir, FunctionStats, Listed, match_functions, persisted_counters
from .ui import console, human_dollars, human_duration, human_size, print_json, print_table

HELP = "per-function entries, size, hits, time, tokens and dollars saved"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def collect(
    cache: CacheDir, function: Optional[str] = None, rows: Optional[list[Listed]] = None
) -> tuple[list[FunctionStats], FunctionStats, bool]:
    """Per-function figures (of ``function`` if given; of ``rows`` if given, else of every entry),
    their total, and whether the dir persists counters (then misses are known)."""
    stats = cache.stats(cache.rows() if rows is None else rows)
    if function is not None:
        wanted = set(match_functions(function, (s.function for s in stats)))
        stats = [s for s in stats if s.function in wanted]
    persisted = cache.store is not None and bool(persisted_counters(cache.store))
    total = FunctionStats("TOTAL", misses=0 if persisted else None)
    for s in stats:
        total.merge(s)
    return stats, total, persisted


def run(args: argparse.Namespace) -> int:
    with CacheDir.open(args.cache_dir) as cache:
        stats, total, persisted = collect(cache, args.function)
    if args.json:
        functions = {s.function: s.to_json() for s in stats}
        print_json(sys.stdout, {"cache_dir": cache.path, **total.to_json(), "price_table": prices.source(), "functions": functions})
        return EXIT_OK
    out = console()
    out.print(f"cache dir: {cache.path}", markup=False)
    if not stats:
        out.print("no entries" + (f" of function {args.function}" if args.function else ""), markup=False)
        return EXIT_OK
    priced = any(s.dollars_saved is not None for s in stats)
    headers = ["FUNCTION", "ENTRIES", "SIZE", "HITS"] + (["MISSES"] if persisted else []) + ["TIME SAVED", "TOKENS SAVED"]
    headers += (["DOLLARS SAVED"] if priced else []) + ["CALL TIME", "TOKENS"]

    def cells(s: FunctionStats) -> list[str]:
        row = [s.function, str(s.entries), human_size(s.bytes), str(s.hits)]
        if persisted:
            row.append("-" if s.misses is None else str(s.misses))
        row += [human_duration(s.seconds_saved), str(s.tokens_saved)]
        if priced:
            row.append(human_dollars(s.dollars_saved))
        return row + [human_duration(s.recorded_seconds), str(s.recorded_tokens)]

    saved = {i for i, h in enumerate(headers) if h.endswith("SAVED")}
    print_table(
        out,
        headers,
        [cells(s) for s in stats],
        right=range(1, len(headers)),
        total=cells(total) if len(stats) > 1 else None,
        styles={0: "cyan", **{i: "green" for i in saved}},
    )
    out.print()
    out.print(
        "TIME SAVED: original call time of the hits served; CALL TIME and TOKENS: of the entries as recorded.",
        markup=False,
        style="dim",
    )
    table = prices.source()
    note = (
        f"DOLLARS SAVED: the hits' tokens at today's prices ({table}); models it does not know add nothing."
        if table
        else "No price table installed (pip install 'memollm[prices]'): no dollars."
    )
    out.print(note, markup=False, style="dim")
    return EXIT_OK
