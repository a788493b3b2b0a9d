"""The ``memollm`` command: look into a cache dir, prune it, clear it, and run the demo.

Tables for people, ``--json`` for scripts. Exit codes: 0 success, 1 error, 2 usage. Errors are
one line on stderr (set ``MEMOLLM_DEBUG=1`` for a traceback). Read-only commands never create
a cache dir.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime as _dt
import decimal
import enum
import json
import logging
import os
import pathlib
import sqlite3
import sys
import time
import uuid
import warnings
from typing import Any, Callable, Iterable, Optional, Sequence, TextIO

from . import __version__, prices
from .codec import UndecodableValue, Unresolved
from .config import default_cache_dir, parse_size, secret_bytes
from .entry import CorruptEntry, EntryMeta, Stream, decode_body, read_meta
from .stats import Usage
from .stores.backend import STAGING_DIRNAME
from .stores.base import PruneReport
from .stores.disk import DiskStore
from .stores.index import INDEX_FILENAME

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
PROGRESS_MIN = 1000  # entries; smaller jobs finish before a progress bar would help
DEBUG_ENV = "MEMOLLM_DEBUG"


class CliError(Exception):
    """A problem reported as one line on stderr, exit code 1."""


# ---------------------------------------------------------------------------------------------
# Reading a cache dir


@dataclasses.dataclass
class Listed:
    """An entry as the CLI shows it: its metadata and its use counters from the index."""

    meta: EntryMeta
    hits: int = 0
    last_access: Optional[float] = None

    @property
    def function(self) -> str:
        return self.meta.function

    @property
    def key(self) -> str:
        return self.meta.key

    def to_json(self, now: float) -> dict[str, Any]:
        m = self.meta
        return {
            "function": m.function,
            "key": m.key,
            "created": m.created,
            "expires": m.expires,
            "expired": m.expired(now),
            "size": m.size,
            "hits": self.hits,
            "last_access": self.last_access,
            "kind": m.kind,
            "duration": m.duration,
            "tokens": m.tokens,
        }


@dataclasses.dataclass
class FunctionStats:
    """Per-function figures. ``misses`` stays ``None`` until counters are persisted."""

    function: str
    entries: int = 0
    bytes: int = 0
    hits: int = 0
    misses: Optional[int] = None
    seconds_saved: float = 0.0  # original call time of the hits served
    tokens_saved: int = 0
    recorded_seconds: float = 0.0  # original call time of the stored entries
    recorded_tokens: int = 0
    dollars_saved: Optional[float] = None  # the hits' usage at today's prices; None without a price table

    def add(self, row: Listed) -> None:
        m = row.meta
        self.entries += 1
        self.bytes += m.size
        self.hits += row.hits
        self.seconds_saved += row.hits * m.duration
        self.tokens_saved += row.hits * m.tokens
        self.recorded_seconds += m.duration
        self.recorded_tokens += m.tokens


def persisted_counters(store: DiskStore) -> dict[str, dict[str, Any]]:
    """Counters persisted in the cache dir, per function (``hits``, ``misses``, ``seconds_saved``,
    ``tokens_saved``); they take precedence over the per-entry sums of the index.

    Read from the store's usage log (``store.usage.totals()``, rows with a ``function``) when the
    store keeps one; otherwise there are none and ``stats`` reports the index's per-entry hits.
    """
    totals = getattr(getattr(store, "usage", None), "totals", None)
    if not callable(totals):
        return {}
    try:
        rows = list(totals())
    except Exception:  # usage figures are best effort, like the counters themselves
        return {}
    return {str(row["function"]): dict(row) for row in rows if isinstance(row, dict) and "function" in row}


def persisted_usage(store: DiskStore) -> dict[str, dict[Usage, int]]:
    """Persisted hits per function and token usage (``store.usage.saved()``), like ``persisted_counters``."""
    saved = getattr(getattr(store, "usage", None), "saved", None)
    if not callable(saved):
        return {}
    try:
        return dict(saved())
    except Exception:  # usage figures are best effort
        return {}


class CacheDir:
    """A cache dir opened for the CLI; ``store`` is ``None`` when it holds no cache yet."""

    def __init__(self, path: str, store: Optional[DiskStore]) -> None:
        self.path = path
        self.store = store

    @classmethod
    def open(cls, cache_dir: Optional[str]) -> "CacheDir":
        """Open an existing cache dir; a missing one is an error (never created here)."""
        path = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
        if not os.path.exists(path):
            raise CliError(f"no cache dir at {path} (nothing was cached there; pass --cache-dir DIR or set MEMOLLM_CACHE_DIR)")
        if not os.path.isdir(path):
            raise CliError(f"{path} is not a directory (pass --cache-dir DIR)")
        if not any(os.path.exists(os.path.join(path, name)) for name in ("joblib", STAGING_DIRNAME, INDEX_FILENAME)):
            return cls(path, None)  # an empty dir, or not a cache: nothing in it, and nothing written to it
        try:
            return cls(path, DiskStore(path))
        except OSError as exc:
            raise CliError(f"cannot open the cache dir {path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> "CacheDir":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def rows(self) -> list[Listed]:
        """Every entry, by function then creation time."""
        if self.store is None:
            return []
        metas = list(self.store.entries())
        usage = self._usage()
        rows = [Listed(m, *usage.get(m.key, (0, None))) for m in metas]
        rows.sort(key=lambda r: (r.meta.function, r.meta.created, r.meta.key))
        return rows

    def _usage(self) -> dict[str, tuple[int, Optional[float]]]:
        """``key -> (hits, last access)`` from the index; empty if it cannot be read."""
        try:
            cursor = self.store.index.execute("SELECT key, hits, last_access FROM entries")  # type: ignore[union-attr]
            return {key: (int(hits or 0), last) for key, hits, last in cursor}
        except (sqlite3.Error, OSError, AttributeError):
            return {}

    def stats(self, rows: Iterable[Listed]) -> list[FunctionStats]:
        per: dict[str, FunctionStats] = {}
        saved: dict[str, dict[Usage, int]] = {}  # function -> hits per token usage, priced below
        for row in rows:
            per.setdefault(row.function, FunctionStats(row.function)).add(row)
            usage = row.meta.usage
            if row.hits and usage is not None:
                mine = saved.setdefault(row.function, {})
                mine[usage] = mine.get(usage, 0) + row.hits
        if self.store is not None:
            persisted_saved = persisted_usage(self.store)
            for function, counters in persisted_counters(self.store).items():
                stats = per.setdefault(function, FunctionStats(function))
                for name in ("hits", "misses", "seconds_saved", "tokens_saved"):
                    if counters.get(name) is not None:
                        setattr(stats, name, counters[name])
                saved[function] = persisted_saved.get(function, {})
        for function, stats in per.items():
            stats.dollars_saved = prices.total(saved.get(function, {}))
        return [per[name] for name in sorted(per)]

    def find(self, key: str) -> Listed:
        """The entry with this key, or with this unique key prefix."""
        wanted = key.strip().lower()
        if not wanted or any(c not in "0123456789abcdef" for c in wanted):
            raise CliError(f"{key!r} is not a cache key (32 hexadecimal characters, or a prefix of one; see `memollm ls`)")
        rows = self.rows()
        exact = [r for r in rows if r.key == wanted]
        found = exact or [r for r in rows if r.key.startswith(wanted)]
        if not found:
            raise CliError(f"no entry with key {key} in {self.path}")
        if len(found) > 1:
            raise CliError(f"key prefix {key} matches {len(found)} entries in {self.path}; give more characters")
        return found[0]


def match_functions(name: str, functions: Iterable[str]) -> list[str]:
    """Functions named ``name``: the exact identity, else those whose identity ends with ``.name``."""
    names = sorted(set(functions))
    if name in names:
        return [name]
    return [f for f in names if f.endswith("." + name)]


def _filter(rows: list[Listed], function: Optional[str]) -> list[Listed]:
    if function is None:
        return rows
    wanted = set(match_functions(function, (r.function for r in rows)))
    return [r for r in rows if r.function in wanted]


# ---------------------------------------------------------------------------------------------
# Output helpers


def human_dollars(dollars: Optional[float]) -> str:
    """US dollars for a table: cents below a dollar are worth showing; ``-`` when not priced."""
    if dollars is None:
        return "-"
    return f"${dollars:,.2f}" if dollars >= 1 else f"${dollars:.4f}"


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def human_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.001 or seconds == 0 else f"{seconds * 1e6:.0f} us"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def human_time(epoch: Optional[float]) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def human_expiry(meta: EntryMeta, now: float) -> str:
    if meta.expires is None:
        return "never"
    if meta.expires <= now:
        return "expired"
    return "in " + human_duration(meta.expires - now)


def print_table(out: TextIO, headers: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int] = ()) -> None:
    """Aligned columns; the columns numbered in ``right`` are right-aligned."""
    right_set = set(right)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if i in right_set else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    out.write(line(headers) + "\n")
    for r in rows:
        out.write(line(r) + "\n")


def print_json(out: TextIO, value: Any) -> None:
    json.dump(value, out, indent=2, ensure_ascii=False, default=str)
    out.write("\n")


def to_jsonable(value: Any) -> Any:
    """A JSON-friendly view of a cached value (for display only; the cache keeps the real types)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_jsonable(v) for v in value), key=repr)
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(data).decode("ascii")}
    if isinstance(value, Unresolved):
        return {"__class__": value.class_name, **(to_jsonable(value.data) if isinstance(value.data, dict) else {"value": to_jsonable(value.data)})}
    if hasattr(value, "model_dump") and callable(value.model_dump):
        try:
            return to_jsonable(value.model_dump(mode="json"))
        except Exception:
            pass
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal, pathlib.PurePath, _dt.timedelta, complex)):
        return str(value)
    return repr(value)


def type_name(value: Any) -> str:
    if isinstance(value, Unresolved):
        return value.class_name
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


class Progress:
    """A one-line progress bar on stderr, drawn only on a terminal and for large jobs."""

    def __init__(self, label: str, total: int, stream: Optional[TextIO] = None, minimum: Optional[int] = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = total >= (PROGRESS_MIN if minimum is None else minimum) and _isatty(self.stream)
        self._last = 0.0
        self._drawn = -1

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.enabled:
            now = time.monotonic()
            if now - self._last >= 0.1 or self.done >= self.total:
                self._last = now
                self._draw()

    def _draw(self) -> None:
        fraction = min(1.0, self.done / self.total) if self.total else 1.0
        filled = int(fraction * 30)
        bar = "#" * filled + "-" * (30 - filled)
        self.stream.write(f"\r{self.label} [{bar}] {fraction:4.0%} {self.done}/{self.total}")
        self._drawn = self.done
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.done:
            if self._drawn != self.done:
                self._draw()
            self.stream.write("\n")
            self.stream.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def delete_each(cache: CacheDir, rows: Sequence[Listed], label: str) -> tuple[int, int]:
    """Delete entries one by one behind a progress bar; returns (entries, bytes) removed.

    Only used when a progress bar is drawn: otherwise the store's batched clear/prune is faster.
    """
    assert cache.store is not None
    removed = freed = 0
    progress = Progress(label, len(rows))
    try:
        for row in rows:
            if cache.store.delete(row.function, row.key):
                removed += 1
                freed += row.meta.size
            progress.advance()
    finally:
        progress.close()
    return removed, freed


def _wants_progress(count: int) -> bool:
    return count >= PROGRESS_MIN and _isatty(sys.stderr)


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_stats(args: argparse.Namespace) -> int:
    with CacheDir.open(args.cache_dir) as cache:
        stats = cache.stats(cache.rows())
        if args.function is not None:
            wanted = set(match_functions(args.function, (s.function for s in stats)))
            stats = [s for s in stats if s.function in wanted]
        persisted = cache.store is not None and bool(persisted_counters(cache.store))
    total = FunctionStats("TOTAL", misses=0 if persisted else None)
    for s in stats:
        for name in ("entries", "bytes", "hits", "seconds_saved", "tokens_saved", "recorded_seconds", "recorded_tokens"):
            setattr(total, name, getattr(total, name) + getattr(s, name))
        if total.misses is not None:
            total.misses += s.misses or 0
        if s.dollars_saved is not None:
            total.dollars_saved = (total.dollars_saved or 0.0) + s.dollars_saved
    out = sys.stdout
    if args.json:
        summary = {k: v for k, v in dataclasses.asdict(total).items() if k != "function"}
        functions = {s.function: {k: v for k, v in dataclasses.asdict(s).items() if k != "function"} for s in stats}
        print_json(out, {"cache_dir": cache.path, **summary, "price_table": prices.source(), "functions": functions})
        return EXIT_OK
    out.write(f"cache dir: {cache.path}\n")
    if not stats:
        out.write("no entries" + (f" of function {args.function}" if args.function else "") + "\n")
        return EXIT_OK
    headers = ["FUNCTION", "ENTRIES", "SIZE", "HITS"] + (["MISSES"] if persisted else []) + ["TIME SAVED", "TOKENS SAVED", "$ SAVED", "CALL TIME", "TOKENS"]

    def cells(s: FunctionStats) -> list[str]:
        row = [s.function, str(s.entries), human_size(s.bytes), str(s.hits)]
        if persisted:
            row.append("-" if s.misses is None else str(s.misses))
        return row + [human_duration(s.seconds_saved), str(s.tokens_saved), human_dollars(s.dollars_saved), human_duration(s.recorded_seconds), str(s.recorded_tokens)]

    table = [cells(s) for s in stats] + ([cells(total)] if len(stats) > 1 else [])
    print_table(out, headers, table, right=range(1, len(headers)))
    out.write("\nTIME SAVED: original call time of the hits served; CALL TIME and TOKENS: of the entries as recorded.\n")
    table_name = prices.source()
    if table_name is None:
        out.write("$ SAVED: no price table installed (pip install 'memollm[prices]').\n")
    else:
        out.write(f"$ SAVED: the hits' tokens at today's prices ({table_name}); models it does not know add nothing.\n")
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    now = time.time()
    with CacheDir.open(args.cache_dir) as cache:
        rows = _filter(cache.rows(), args.function)
    out = sys.stdout
    if args.json:
        print_json(out, [r.to_json(now) for r in rows])
        return EXIT_OK
    if not rows:
        out.write(f"no entries{' of function ' + args.function if args.function else ''} in {cache.path}\n")
        return EXIT_OK
    table = [
        [r.function, r.key, human_time(r.meta.created), human_expiry(r.meta, now), human_size(r.meta.size), str(r.hits)]
        + (["stream"] if r.meta.kind == "stream" else [""])
        for r in rows
    ]
    print_table(out, ["FUNCTION", "KEY", "CREATED", "EXPIRES", "SIZE", "HITS", "KIND"], table, right=(4, 5))
    total = sum(r.meta.size for r in rows)
    out.write(f"\n{len(rows)} {'entry' if len(rows) == 1 else 'entries'}, {human_size(total)}, in {cache.path}\n")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    with CacheDir.open(args.cache_dir) as cache:
        row = cache.find(args.key)
        assert cache.store is not None
        data = cache.store.get(row.function, row.key)
    if data is None:
        raise CliError(f"entry {row.key} is listed but its file is gone (run `memollm prune`)")
    try:
        meta, body = read_meta(data, secret_bytes(None))
        try:
            value = decode_body(meta, body)
        except UndecodableValue:  # classes this command has not imported (it imports none)
            value = decode_body(meta, body, display=True)
    except (CorruptEntry, UndecodableValue) as exc:
        raise CliError(f"entry {row.key} cannot be read safely: {exc}") from None
    now = time.time()
    out = sys.stdout
    if args.json:
        doc = Listed(meta, row.hits, row.last_access).to_json(now)
        if isinstance(value, Stream):
            doc.update(chunks=[to_jsonable(c) for c in value.chunks], result=to_jsonable(value.result), offsets=list(value.offsets))
        else:
            doc.update(type=type_name(value), value=to_jsonable(value))
        print_json(out, doc)
        return EXIT_OK
    fields = [
        ("key", meta.key),
        ("function", meta.function),
        ("kind", meta.kind),
        ("created", human_time(meta.created)),
        ("expires", "never" if meta.expires is None else f"{human_time(meta.expires)} ({human_expiry(meta, now)})"),
        ("size", human_size(meta.size)),
        ("call time", human_duration(meta.duration)),
        ("tokens", str(meta.tokens)),
        ("hits", str(row.hits)),
    ]
    for name, text in fields:
        out.write(f"{name + ':':<11}{text}\n")
    if isinstance(value, Stream):
        span = value.offsets[-1] if value.offsets else 0.0
        out.write(f"{'stream:':<11}{len(value.chunks)} chunks over {human_duration(span)}\n")
        for i, chunk in enumerate(value.chunks):
            at = f"+{value.offsets[i]:.3f}s " if i < len(value.offsets) else ""
            out.write(f"  [{i:>4}] {at}{_one_line(chunk)}\n")
        out.write(f"{'returned:':<11}{_one_line(value.result)}\n")
    else:
        out.write(f"{'value:':<11}({type_name(value)})\n")
        out.write(_indent(value if isinstance(value, str) else json.dumps(to_jsonable(value), indent=2, ensure_ascii=False)) + "\n")
    return EXIT_OK


def _one_line(value: Any) -> str:
    if value is None or isinstance(value, (str, bool, int, float)):
        return repr(value)
    return json.dumps(to_jsonable(value), ensure_ascii=False)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines() or [""])


def cmd_prune(args: argparse.Namespace) -> int:
    now = time.time()
    with CacheDir.open(args.cache_dir) as cache:
        report = PruneReport()
        if cache.store is not None:
            removed = freed = 0
            expired = [r for r in cache.rows() if r.meta.expired(now)] if _isatty(sys.stderr) else []
            if _wants_progress(len(expired)):
                removed, freed = delete_each(cache, expired, "pruning")
            report = cache.store.prune(max_size=args.max_size)
            report.entries += removed
            report.bytes += freed
    found = dataclasses.asdict(report)
    if args.json:
        print_json(sys.stdout, {"cache_dir": cache.path, **found})
        return EXIT_OK
    if not any(found.values()):
        sys.stdout.write(f"nothing to prune in {cache.path}\n")
        return EXIT_OK
    what = "expired or over --max-size" if args.max_size else "expired"
    stale = f", {report.stale_rows} stale index {'row' if report.stale_rows == 1 else 'rows'}" if report.stale_rows else ""
    sys.stdout.write(
        f"pruned {report.entries} {what} {'entry' if report.entries == 1 else 'entries'}, {report.leftovers} "
        f"{'leftover' if report.leftovers == 1 else 'leftovers'}{stale} from {cache.path}, freed {human_size(report.bytes)}\n"
    )
    return EXIT_OK


def cmd_clear(args: argparse.Namespace) -> int:
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
            return _cleared(args, cache.path, function, 0, 0)
        if not args.yes and rows and not _confirm(f"Delete {len(rows)} {'entry' if len(rows) == 1 else 'entries'} ({human_size(size)}) {what}from {cache.path}? [y/N] "):
            sys.stderr.write("memollm: nothing deleted (pass --yes to clear without being asked)\n")
            return EXIT_ERROR
        assert cache.store is not None
        removed = freed = 0
        if _wants_progress(len(rows)):
            removed, freed = delete_each(cache, rows, "clearing")
        removed += cache.store.clear(function)
    return _cleared(args, cache.path, function, removed, max(size, freed))


def _cleared(args: argparse.Namespace, path: str, function: Optional[str], removed: int, size: int) -> int:
    if args.json:
        print_json(sys.stdout, {"cache_dir": path, "function": function, "entries": removed, "bytes": size})
    else:
        what = f" of {function}" if function else ""
        sys.stdout.write(f"deleted {removed} {'entry' if removed == 1 else 'entries'}{what} ({human_size(size)}) from {path}\n")
    return EXIT_OK


def _size_argument(text: str) -> int:
    try:
        size = parse_size(int(text) if text.isdigit() else text, "--max-size")
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    assert size is not None
    return size


def _confirm(question: str) -> bool:
    """Ask on stderr, read a line from stdin: only y/yes agrees (no input at all means no)."""
    sys.stderr.write(question)
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline() if sys.stdin is not None else ""
    except (OSError, ValueError):  # stdin closed or unreadable
        answer = ""
    if not _isatty(sys.stdin):
        sys.stderr.write(answer if answer.endswith("\n") else answer + "\n")  # echo what was read
    return answer.strip().lower() in ("y", "yes")


def cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    try:
        scale = demo.latency_scale(args.latency_scale)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return demo.run(sys.stdout, scale, args.cache_dir)


# ---------------------------------------------------------------------------------------------
# Parser and entry point


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the cache dir (default: $MEMOLLM_CACHE_DIR, else $XDG_CACHE_HOME/memollm, else ~/.cache/memollm)",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    by_function = argparse.ArgumentParser(add_help=False)
    by_function.add_argument("--function", metavar="NAME", help="only this function (module.qualname, or just its name)")

    parser = argparse.ArgumentParser(
        prog="memollm",
        description="Look into, prune and clear a memollm cache dir; run the demo.",
        epilog="Exit codes: 0 success, 1 error, 2 usage. Docs: the docs/ folder of the project.",
    )
    parser.add_argument("--version", action="version", version=f"memollm {__version__}")
    parser.add_argument("--cache-dir", metavar="DIR", default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], help: str, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=parents if name == "demo" else [common, *parents])
        p.set_defaults(handler=handler)
        return p

    add("stats", cmd_stats, "per-function entries, size, hits, time and tokens saved", [as_json, by_function])
    add("ls", cmd_ls, "list entries: function, key, created, expires, size, hits", [as_json, by_function])
    show = add("show", cmd_show, "show one entry (a stream as its chunks)", [as_json])
    show.add_argument("key", metavar="KEY", help="the entry's key, or a unique prefix of it")
    prune = add("prune", cmd_prune, "remove expired entries and leftovers of interrupted writes", [as_json])
    prune.add_argument(
        "--max-size",
        type=_size_argument,
        metavar="SIZE",
        help="also evict least recently used entries until the dir holds at most SIZE (bytes, or e.g. 500MB); "
        "default: the max_size last configured for this dir",
    )
    clear = add("clear", cmd_clear, "delete every entry, or those of one function", [as_json, by_function])
    clear.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    demo = add("demo", cmd_demo, "run a simulated provider through @cache_llm and show the speed-up", [])
    demo.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="keep the demo's entries in DIR (default: a temporary dir, removed afterwards; "
        "$MEMOLLM_CACHE_DIR is not used)",
    )
    demo.add_argument(
        "--latency-scale",
        type=float,
        metavar="X",
        default=None,
        help="multiply the simulated latency (default: $MEMOLLM_DEMO_LATENCY or 1)",
    )
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

