"""``memollm report --html FILE``: what a cache dir saved, as one self-contained HTML page.

The figures are those of ``memollm stats`` (the same code computes them), plus the usage history
the store keeps per hour, the largest and the most-hit entries, and the most recent recorded
calls (request and response, streams as their chunks) decoded for display only. The page needs
no network: CSS, script and SVG charts are inline. See ``report_page`` for the page itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from .common import EXIT_OK, CacheDir, CliError, FunctionStats, Listed
from .entries import UnreadableEntry, read_entry
from .stats import collect
from .ui import Progress, console, human_size, plural

HELP = "write an HTML report of what the cache saved: per function, over time, and the recorded calls"
CALLS_DEFAULT = 1000  # recorded calls embedded in the page (the most recent ones)
TEXT_MAX = 20_000  # characters of one request or response shown; the rest is cut, with a note
CHUNKS_MAX = 500  # chunks of one stream shown
TOP = 10  # rows of the largest and most-hit tables


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--html", metavar="FILE", required=True, help="the HTML file to write (replaced if it exists)")
    parser.add_argument(
        "--calls",
        type=_count,
        metavar="N",
        default=CALLS_DEFAULT,
        help=f"how many recorded calls the page lists, most recent first (default {CALLS_DEFAULT}; 0 for none)",
    )


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--calls takes a whole number of calls (0 or more), not {text!r}")
    return value


@dataclass
class Call:
    """One recorded call as the page lists it."""

    row: Listed
    request: Optional[str]  #: JSON text, ``None`` when not recorded
    response: Optional[str]  #: JSON text of a value (``None`` for a stream)
    chunks: Optional[list[str]] = None  #: JSON text of each chunk of a stream
    returned: Optional[str] = None  #: a stream's return value
    sample: Optional[int] = None
    type: str = ""
    cut: bool = False  #: something was too long and was shortened
    error: Optional[str] = None  #: why the entry could not be read


@dataclass
class Report:
    """Everything the page shows."""

    cache_dir: str
    generated: float
    functions: list[FunctionStats]
    total: FunctionStats
    persisted: bool
    history: list[dict[str, Any]]
    largest: list[Listed]
    most_hit: list[Listed]
    calls: list[Call] = field(default_factory=list)
    entries: int = 0  #: entries in the dir (the page lists ``len(calls)`` of them)


def gather(cache: CacheDir, calls: int = CALLS_DEFAULT) -> Report:
    """Collect the report's figures from an open cache dir."""
    functions, total, persisted = collect(cache)
    rows = cache.rows()
    report = Report(
        cache_dir=cache.path,
        generated=time.time(),
        functions=functions,
        total=total,
        persisted=persisted,
        history=_history(cache),
        largest=sorted(rows, key=lambda r: (-r.meta.size, r.key))[:TOP],
        most_hit=[r for r in sorted(rows, key=lambda r: (-r.hits, r.key)) if r.hits][:TOP],
        entries=len(rows),
    )
    recent = sorted(rows, key=lambda r: (-r.meta.created, r.key))[:calls]
    with Progress("reading calls", len(recent), transient=True) as progress:
        for row in recent:
            report.calls.append(_call(cache, row))
            progress.advance()
    return report


def _history(cache: CacheDir) -> list[dict[str, Any]]:
    history = getattr(getattr(cache.store, "usage", None), "history", None)
    if not callable(history):
        return []
    try:
        return list(history())
    except Exception:  # usage figures are best effort
        return []


def _call(cache: CacheDir, row: Listed) -> Call:
    from .ui import as_text, one_line, type_name

    data = cache.store.get(row.function, row.key) if cache.store is not None else None
    if data is None:
        return Call(row, None, None, error="its file is gone (run `memollm prune`)")
    try:
        shown = read_entry(data)
    except UnreadableEntry as exc:
        return Call(row, None, None, error=f"it cannot be read safely: {exc}")
    row.meta = shown.meta  # the header's metadata: it carries the request and the sample
    cut = False

    def text(value: Any, pretty: bool = True) -> str:
        nonlocal cut
        shown_text = as_text(value) if pretty else one_line(value)
        if len(shown_text) > TEXT_MAX:
            cut = True
            return shown_text[:TEXT_MAX] + f"\n... ({len(shown_text) - TEXT_MAX:,} more characters not shown)"
        return shown_text

    request = shown.request
    call = Call(row, None if request is None else text(request), None, sample=shown.sample, type=type_name(shown.value))
    if shown.is_stream:
        stream = shown.value
        chunks = stream.chunks[:CHUNKS_MAX]
        call.chunks = [text(c, pretty=False) for c in chunks]
        if len(stream.chunks) > CHUNKS_MAX:
            cut = True
            call.chunks.append(f"... ({len(stream.chunks) - CHUNKS_MAX:,} more chunks not shown)")
        call.returned = text(stream.result, pretty=False)
        call.type = f"stream of {len(stream.chunks)} chunks"
    else:
        call.response = text(shown.value)
    call.cut = cut
    return call


def run(args: argparse.Namespace) -> int:
    from .report_page import render

    path = os.path.abspath(os.path.expanduser(args.html))
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise CliError(f"cannot write {path}: no directory {folder} (create it, or pass another --html FILE)")
    with CacheDir.open(args.cache_dir) as cache:
        report = gather(cache, args.calls)
    page = render(report)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    listed = f"{len(report.calls)} of {plural(report.entries, 'entry', 'entries')} listed"
    console(sys.stdout).print(f"wrote {path} ({human_size(len(page.encode()))}; {listed})", markup=False)
    return EXIT_OK
