"""``memollm prune``: expired entries, least recently used ones beyond the size bound, leftovers of
interrupted writes and stale index rows; says how many expired and how many were evicted for size."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Optional, Sequence

from ..config import parse_size
from ..stores.base import PruneReport
from .common import EXIT_OK, CacheDir, Listed
from .ui import Progress, console, human_size, plural, print_json, wants_progress

HELP = "remove expired entries, entries beyond the size bound and leftovers of interrupted writes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-size",
        type=size_argument,
        metavar="SIZE",
        help="also evict least recently used entries until the dir holds at most SIZE (bytes, or e.g. 500MB); "
        "default: the max_size last configured for this dir",
    )


def size_argument(text: str) -> int:
    try:
        size = parse_size(int(text) if text.isdigit() else text, "--max-size")
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    assert size is not None
    return size


def configured_limit(cache: CacheDir, max_size: Optional[int]) -> Optional[int]:
    """``--max-size``, else the bound last configured for the dir."""
    if max_size:
        return max_size
    try:
        limit = cache.store.index.get_info("max_size") if cache.store is not None else None
    except Exception:  # no readable index: the store's prune falls back the same way
        return None
    return int(limit) if limit else None


def doomed(rows: Sequence[Listed], limit: Optional[int], now: float, index_bytes: int = 0) -> tuple[list[Listed], list[Listed]]:
    """The entries a prune removes: the expired ones, then (least recently used first) those to
    evict until what is left, with the index's ``index_bytes``, fits ``limit``: the order the
    store itself follows."""
    expired = [r for r in rows if r.meta.expired(now)]
    evicted: list[Listed] = []
    if limit:
        kept = [r for r in rows if not r.meta.expired(now)]
        total = sum(r.meta.size for r in kept) + index_bytes
        for row in sorted(kept, key=lambda r: r.last_access if r.last_access is not None else r.meta.created):
            if total <= limit:
                break
            evicted.append(row)
            total -= row.meta.size
    return expired, evicted


def delete_each(cache: CacheDir, rows: Sequence[Listed], progress: Progress, expired: bool, report: PruneReport) -> None:
    """Delete entries one by one, advancing ``progress`` (only used when a bar is drawn: the
    store's batched prune is faster)."""
    assert cache.store is not None
    for row in rows:
        if cache.store.delete(row.function, row.key):
            report.removed(row.meta.size, expired=expired)
        progress.advance()


def run(args: argparse.Namespace) -> int:
    now = time.time()
    report = PruneReport()
    with CacheDir.open(args.cache_dir) as cache:
        if cache.store is not None:
            limit = configured_limit(cache, args.max_size)
            if limit:
                cache.store.index.bound_log()  # the bound counts the index's log: kept short while pruning
            if wants_progress(cache.store.count()):  # worth listing what will go, to show a bar
                expired, evicted = doomed(cache.rows(), limit, now, cache.store.index.file_bytes())
                if wants_progress(len(expired) + len(evicted)):
                    with Progress("pruning", len(expired) + len(evicted)) as progress:
                        delete_each(cache, expired, progress, True, report)
                        delete_each(cache, evicted, progress, False, report)
            report.add(cache.store.prune(max_size=args.max_size))
    found = dataclasses.asdict(report)
    if args.json:
        print_json(sys.stdout, {"cache_dir": cache.path, **found})
        return EXIT_OK
    out = console()
    if not any(found.values()):
        out.print(f"nothing to prune in {cache.path}", markup=False)
        return EXIT_OK
    parts = [f"{report.expired} expired {'entry' if report.expired == 1 else 'entries'}"]
    if report.evicted or args.max_size:
        parts.append(f"{report.evicted} evicted for size")
    parts.append(plural(report.leftovers, "leftover", "leftovers"))
    if report.stale_rows:
        parts.append(plural(report.stale_rows, "stale index row", "stale index rows"))
    if report.not_files:
        parts.append(plural(report.not_files, "entry path holding no regular file", "entry paths holding no regular file"))
    out.print(f"pruned {', '.join(parts)} from {cache.path}, freed {human_size(report.bytes)}", markup=False)
    return EXIT_OK
