"""Usage of a cache dir: per-entry hits and last access, per-function counters, kept in the index.

Hits happen on the fast path, so they are buffered in memory and written in one transaction
at most once a second (and at exit); the counters persist across runs so ``memollm stats``
can report them.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from typing import Any, Optional

from .index import Index, _transaction

FLUSH_INTERVAL = 1.0

_STATS_SCHEMA = """
CREATE TABLE IF NOT EXISTS stats (
    function TEXT PRIMARY KEY,
    hits INTEGER NOT NULL DEFAULT 0,
    misses INTEGER NOT NULL DEFAULT 0,
    seconds_saved REAL NOT NULL DEFAULT 0,
    tokens_saved INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""


class UsageLog:
    """Buffered writer of hits/misses into an ``Index``."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._lock = threading.Lock()
        self._entry_hits: dict[str, list[Any]] = {}  # key -> [hits, last access]
        self._functions: dict[str, list[Any]] = {}  # function -> [hits, misses, seconds, tokens]
        self._last_flush = time.monotonic()
        self._schema_ready = False
        _live_logs.add(self)

    def hit(self, function: str, key: str, duration: float, tokens: int) -> None:
        now = time.time()
        with self._lock:
            entry = self._entry_hits.get(key)
            if entry is None:
                self._entry_hits[key] = [1, now]
            else:
                entry[0] += 1
                entry[1] = now
            counters = self._functions.setdefault(function, [0, 0, 0.0, 0])
            counters[0] += 1
            counters[2] += duration
            counters[3] += tokens
        self._maybe_flush()

    def miss(self, function: str) -> None:
        with self._lock:
            self._functions.setdefault(function, [0, 0, 0.0, 0])[1] += 1
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered; on failure keep nothing (usage figures are best effort)."""
        with self._lock:
            entry_hits, self._entry_hits = self._entry_hits, {}
            functions, self._functions = self._functions, {}
            self._last_flush = time.monotonic()
        if not entry_hits and not functions:
            return
        try:
            conn = self.index._connect()
            if not self._schema_ready:
                conn.executescript(_STATS_SCHEMA)
                self._schema_ready = True
            with _transaction(conn):
                conn.executemany(
                    "UPDATE entries SET hits = hits + ?, last_access = MAX(last_access, ?) WHERE key = ?",
                    [(h, t, k) for k, (h, t) in entry_hits.items()],
                )
                conn.executemany(
                    "INSERT INTO stats (function, hits, misses, seconds_saved, tokens_saved) VALUES (?,?,?,?,?) "
                    "ON CONFLICT(function) DO UPDATE SET hits = hits + excluded.hits, misses = misses + excluded.misses, "
                    "seconds_saved = seconds_saved + excluded.seconds_saved, tokens_saved = tokens_saved + excluded.tokens_saved",
                    [(f, *c) for f, c in functions.items()],
                )
        except Exception:  # usage is an accelerator's bookkeeping: never worth failing a call
            pass

    def totals(self, function: Optional[str] = None) -> list[dict[str, Any]]:
        """Persisted counters per function (after flushing this process's buffer)."""
        self.flush()
        conn = self.index._connect()
        if not self._schema_ready:
            conn.executescript(_STATS_SCHEMA)
            self._schema_ready = True
        sql = "SELECT function, hits, misses, seconds_saved, tokens_saved FROM stats"
        rows = conn.execute(sql + " WHERE function = ?", (function,)) if function else conn.execute(sql + " ORDER BY function")
        names = ["function", "hits", "misses", "seconds_saved", "tokens_saved"]
        return [dict(zip(names, row)) for row in rows]


_live_logs: "weakref.WeakSet[UsageLog]" = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for log in list(_live_logs):
        log.flush()
