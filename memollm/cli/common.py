"""What every command shares: opening a cache dir, its entries as the CLI lists them, per-function
figures, and the one-line error type."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from typing import Any, Iterable, Optional

from .. import prices
from ..config import default_cache_dir
from ..entry import EntryMeta
from ..keys import readable
from ..stats import Usage
from ..stores.backend import STAGING_DIRNAME
from ..stores.disk import DiskStore
from ..stores.index import INDEX_FILENAME

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A problem reported as one line on stderr, exit code 1."""


def entry_request(meta: EntryMeta) -> Any:
    """The request an entry answers as plain data (tagged values such as dates in their text
    form, ``keys.readable``), or ``None`` when it was not recorded."""
    request = getattr(meta, "request", None)
    if request is None:
        return None
    request = readable(request)
    if isinstance(request, dict) and {"method", "scheme", "host", "path"} <= set(request):  # an HTTP request
        request = {"url": http_url(request), **request}
    return request


def http_url(request: dict[str, Any]) -> str:
    """The URL of a recorded HTTP request (credential query parameters were never recorded)."""
    from urllib.parse import urlencode

    host, port = request["host"], request.get("port")
    if port not in (None, {"http": 80, "https": 443}.get(request["scheme"])):
        host = f"{host}:{port}"
    query = request.get("query") or []
    suffix = "?" + urlencode([tuple(item) for item in query]) if query else ""
    return f"{request['scheme']}://{host}{request['path']}{suffix}"


def entry_sample(meta: EntryMeta) -> Optional[int]:
    """The entry's sample index, or ``None`` for an entry that is not one of several samples."""
    sample = getattr(meta, "sample", None)
    return sample if isinstance(sample, int) and not isinstance(sample, bool) else None


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
            "sample": entry_sample(m),
        }


@dataclasses.dataclass
class FunctionStats:
    """Per-function figures. ``misses`` stays ``None`` until counters are persisted;
    ``dollars_saved`` stays ``None`` while no price is known."""

    function: str
    entries: int = 0
    bytes: int = 0
    hits: int = 0
    misses: Optional[int] = None
    seconds_saved: float = 0.0  # original call time of the hits served
    tokens_saved: int = 0
    recorded_seconds: float = 0.0  # original call time of the stored entries
    recorded_tokens: int = 0
    dollars_saved: Optional[float] = None

    def add(self, row: Listed) -> None:
        m = row.meta
        self.entries += 1
        self.bytes += m.size
        self.hits += row.hits
        self.seconds_saved += row.hits * m.duration
        self.tokens_saved += row.hits * m.tokens
        self.recorded_seconds += m.duration
        self.recorded_tokens += m.tokens

    def merge(self, other: "FunctionStats") -> None:
        """Add ``other``'s figures to these (for a total)."""
        for name in ("entries", "bytes", "hits", "seconds_saved", "tokens_saved", "recorded_seconds", "recorded_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if self.misses is not None:
            self.misses += other.misses or 0
        if other.dollars_saved is not None:
            self.dollars_saved = (self.dollars_saved or 0.0) + other.dollars_saved

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "function"}


COUNTER_NAMES = ("hits", "misses", "seconds_saved", "tokens_saved", "dollars_saved")


def persisted_counters(store: Any) -> dict[str, dict[str, Any]]:
    """Counters persisted in the cache dir, per function (``hits``, ``misses``, ``seconds_saved``,
    ``tokens_saved``, and ``dollars_saved`` where the store prices usage); they take precedence
    over the per-entry sums of the index.

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


def persisted_usage(store: Any) -> dict[str, dict[Usage, int]]:
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
        if cache_dir is not None and not cache_dir:
            raise CliError("--cache-dir is empty; pass a directory, or leave it out for the default (MEMOLLM_CACHE_DIR, else ~/.cache/memollm)")
        path = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
        if not os.path.exists(path):
            raise CliError(f"no cache dir at {path} (nothing was cached there; pass --cache-dir DIR or set MEMOLLM_CACHE_DIR)")
        if not os.path.isdir(path):
            raise CliError(f"{path} is not a directory (pass --cache-dir DIR)")
        if not any(os.path.exists(os.path.join(path, name)) for name in ("joblib", STAGING_DIRNAME, INDEX_FILENAME)):
            return cls(path, None)  # an empty dir, or not a cache: nothing in it, and nothing written to it
        try:
            store = DiskStore(path)
        except OSError as exc:
            raise CliError(f"cannot open the cache dir {path}: {exc.strerror or exc}") from None
        _rebuild_index_with_progress(store)
        return cls(path, store)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> "CacheDir":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def rows(self, label: str = "reading") -> list[Listed]:
        """Every entry, by function then creation time (behind a progress bar for a large dir)."""
        from .ui import Progress

        if self.store is None:
            return []
        rows = []
        with Progress(label, self.store.count(), transient=True) as progress:  # drawn while the index is read
            metas = list(self.store.entries())
            usage = self._usage()
            progress.update(0, len(metas))
            for m in metas:
                rows.append(Listed(m, *usage.get(m.key, (0, None))))
                progress.advance()
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
        """Per-function figures of ``rows``, with the counters the dir persisted. A function with
        no entry left is listed only while it has counters that were not cleared."""
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
                saved[function] = persisted_saved.get(function, {})  # the persisted hits, like the counters
                stats = per.get(function)
                if stats is None:
                    if not any(counters.get(name) for name in COUNTER_NAMES):
                        continue  # nothing left to say about it (its entries and counters were cleared)
                    stats = per[function] = FunctionStats(function)
                for name in COUNTER_NAMES:
                    if counters.get(name) is not None:
                        setattr(stats, name, counters[name])
        for function, stats in per.items():
            if stats.dollars_saved is None:
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

    def read(self, row: Listed) -> bytes:
        """The bytes of a listed entry (an error if its file is gone)."""
        assert self.store is not None
        data = self.store.get(row.function, row.key)
        if data is None:
            raise CliError(f"entry {row.key} is listed but its file is gone or is not a regular file (run `memollm prune`)")
        return data


def _rebuild_index_with_progress(store: DiskStore) -> None:
    """Rebuild a missing index now, behind a progress bar (it reads every entry file)."""
    from .ui import Progress

    try:
        if os.path.exists(store.index.path):
            return
    except OSError:
        return
    rebuild = getattr(store, "ensure_index", None)
    if not callable(rebuild):
        return
    with Progress("rebuilding the index", 0, transient=True) as progress:
        rebuild(progress=progress.update)


def match_functions(name: str, functions: Iterable[str]) -> list[str]:
    """Functions named ``name``: the exact identity, else those whose identity ends with ``.name``."""
    names = sorted(set(functions))
    if name in names:
        return [name]
    return [f for f in names if f.endswith("." + name)]


def filter_rows(rows: list[Listed], function: Optional[str]) -> list[Listed]:
    if function is None:
        return rows
    wanted = set(match_functions(function, (r.function for r in rows)))
    return [r for r in rows if r.function in wanted]
