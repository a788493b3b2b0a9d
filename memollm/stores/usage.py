"""Usage of a cache dir: per-entry hits and last access, per-function counters, kept in the index.

Hits happen on the fast path, so they are buffered in memory and written by a background
thread in one transaction ten times a second (and at exit): a hit never waits for SQLite, and
``memollm stats`` run right after a call already sees it.
The counters persist across runs so ``memollm stats`` can report them, and ``last_access``
drives least-recently-used eviction. The same counters per function and hour (UTC epoch hours)
make the history ``memollm report`` draws: one row per function and hour, written in the same
batched transaction.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections import Counter
from operator import itemgetter
from typing import Any, Callable, Optional

from ..entry import EntryMeta
from ..stats import Usage
from .index import Index, _transaction

FLUSH_INTERVAL = 0.1
_first = itemgetter(0)


class UsageLog:
    """Buffered writer of hits/misses into an ``Index``."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._lock = threading.Lock()
        self._entry_hits: dict[str, list[Any]] = {}  # key -> [hits, last access, function]
        self._functions: dict[str, list[Any]] = {}  # function -> [hits, misses, seconds, tokens]
        self._history: dict[tuple[str, int], list[Any]] = {}  # (function, hour) -> [hits, misses, seconds, tokens]
        self._saved: dict[tuple[str, Usage], int] = {}  # (function, usage) -> hits, priced when reported
        self._hits: list[tuple[EntryMeta, float]] = []  # (entry, when) per hit, tallied at flush
        self._writing = threading.Lock()
        _live_logs.add(self)

    def hit(self, meta: EntryMeta) -> None:
        if not _flusher_here:
            _start_flusher()
        self._hits.append((meta, time.time()))  # atomic; tallied at flush

    def miss(self, function: str) -> None:
        if not _flusher_here:
            _start_flusher()
        with self._lock:
            self._functions.setdefault(function, [0, 0, 0.0, 0])[1] += 1
            self._history.setdefault((function, int(time.time() // 3600)), [0, 0, 0.0, 0])[1] += 1

    def flush(self) -> None:
        """Write what is buffered. While the index does not exist yet (a new cache dir, before
        its first entry is written) the tallies are kept for a later flush; on any other failure
        they are dropped (usage figures are best effort).

        One flush at a time: the exit-time flush waits for the usage thread's write under way,
        which would otherwise be cut off at interpreter shutdown with the tallies it took."""
        with self._writing:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            self._tally()
            entry_hits, self._entry_hits = self._entry_hits, {}
            functions, self._functions = self._functions, {}
            history, self._history = self._history, {}
            saved, self._saved = self._saved, {}
        if not entry_hits and not functions and not history:
            return
        try:
            conn = self.index._connect(create=False)
            with _transaction(conn):
                conn.executemany(
                    "UPDATE entries SET hits = hits + ?, last_access = MAX(last_access, ?) WHERE key = ?",
                    [(h, t, k) for k, (h, t, _) in entry_hits.items()],
                )
                conn.executemany(
                    "INSERT INTO stats (function, hits, misses, seconds_saved, tokens_saved) VALUES (?,?,?,?,?) "
                    "ON CONFLICT(function) DO UPDATE SET hits = hits + excluded.hits, misses = misses + excluded.misses, "
                    "seconds_saved = seconds_saved + excluded.seconds_saved, tokens_saved = tokens_saved + excluded.tokens_saved",
                    [(f, *c) for f, c in functions.items()],
                )
                conn.executemany(
                    "INSERT INTO history (function, hour, hits, misses, seconds_saved, tokens_saved) VALUES (?,?,?,?,?,?) "
                    "ON CONFLICT(function, hour) DO UPDATE SET hits = hits + excluded.hits, misses = misses + excluded.misses, "
                    "seconds_saved = seconds_saved + excluded.seconds_saved, tokens_saved = tokens_saved + excluded.tokens_saved",
                    [(f, hour, *c) for (f, hour), c in history.items()],
                )
                conn.executemany(
                    "INSERT INTO saved (function, model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, hits) "
                    "VALUES (?,?,?,?,?,?,?) ON CONFLICT(function, model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens) "
                    "DO UPDATE SET hits = hits + excluded.hits",
                    [(f, *u.as_row(), hits) for (f, u), hits in saved.items()],
                )
        except FileNotFoundError:  # no index yet (flushes never create one): keep the tallies
            self._keep(entry_hits, functions, history, saved)
        except Exception:  # usage is an accelerator's bookkeeping: never worth failing a call
            pass

    def _keep(
        self,
        entry_hits: dict[str, list[Any]],
        functions: dict[str, list[Any]],
        history: dict[tuple[str, int], list[Any]],
        saved: dict[tuple[str, Usage], int],
    ) -> None:
        """Merge tallies back into the buffer (bounded: one item per key, per function, per hour and per usage)."""
        with self._lock:
            for item, hits in saved.items():
                self._saved[item] = self._saved.get(item, 0) + hits
            for bucket, counters in history.items():
                mine = self._history.setdefault(bucket, [0, 0, 0.0, 0])
                for i, value in enumerate(counters):
                    mine[i] += value
            for key, (hits, when, function) in entry_hits.items():
                entry = self._entry_hits.setdefault(key, [0, when, function])
                entry[0] += hits
                entry[1] = max(entry[1], when)
            for function, counters in functions.items():
                mine = self._functions.setdefault(function, [0, 0, 0.0, 0])
                for i, value in enumerate(counters):
                    mine[i] += value

    def _tally(self, credit_entry: Optional[Callable[[str, str], bool]] = None) -> None:
        """Move the raw hits into the per-entry and per-function tallies (under ``_lock``);
        ``credit_entry(function, key)`` false: count the hit for the function only.

        Hits of one entry share its ``EntryMeta`` object: they are counted per object by C-level
        passes (``Counter``, ``dict(zip(...))``), so the Python loop runs once per entry hit, not
        once per hit (a tight loop of hits would otherwise spend as much time here as hitting).
        An entry's hits of one tally (a flush interval) count in the hour of its latest hit.
        """
        hits, self._hits = self._hits, []
        if not hits:
            return
        ids = list(map(id, map(_first, hits)))  # the list keeps every meta alive: ids are unique
        latest = dict(zip(ids, hits))  # each entry's latest hit (hits are appended in time order)
        for ident, count in Counter(ids).items():
            meta, when = latest[ident]
            function, key = meta.function, meta.key
            if credit_entry is None or credit_entry(function, key):
                entry = self._entry_hits.setdefault(key, [0, when, function])
                entry[0] += count
                entry[1] = max(entry[1], when)
            for counters in (self._functions.setdefault(function, [0, 0, 0.0, 0]), self._history.setdefault((function, int(when // 3600)), [0, 0, 0.0, 0])):
                counters[0] += count
                counters[2] += meta.duration * count
                counters[3] += meta.tokens * count
            usage = meta.usage
            if usage is not None and usage.model is not None:
                self._saved[(function, usage)] = self._saved.get((function, usage), 0) + count

    def forget(self, function: Optional[str] = None, key: Optional[str] = None) -> None:
        """Drop the buffered per-entry hits of entries being deleted (one key, a function's, or
        all), so they are not credited to an entry recorded again under the same key. Deleting
        one entry keeps its function's counters (those hits did happen); clearing a function
        (or all) drops them too, as the index's ``remove_function`` drops the persisted ones."""
        with self._lock:
            self._tally(lambda f, k: (function is not None and f != function) or (key is not None and k != key))
            self._entry_hits = {
                k: entry
                for k, entry in self._entry_hits.items()
                if (function is not None and entry[2] != function) or (key is not None and k != key)
            }
            if key is None:
                self._functions = {f: c for f, c in self._functions.items() if function is not None and f != function}
                self._saved = {item: n for item, n in self._saved.items() if function is not None and item[0] != function}

    def forget_history(self, function: Optional[str] = None) -> None:
        """Drop the usage history of a cleared function (or of all): buffered and persisted."""
        with self._lock:
            self._tally()
            self._history = {bucket: c for bucket, c in self._history.items() if function is not None and bucket[0] != function}
        try:
            conn = self.index._connect(create=False)
            if function is None:
                conn.execute("DELETE FROM history")
            else:
                conn.execute("DELETE FROM history WHERE function = ?", (function,))
        except Exception:  # no index yet, or an unusable one: there is no history to drop
            pass

    def totals(self, function: Optional[str] = None) -> list[dict[str, Any]]:
        """Persisted counters per function (after flushing this process's buffer)."""
        self.flush()
        conn = self.index._connect()
        sql = "SELECT function, hits, misses, seconds_saved, tokens_saved FROM stats"
        rows = conn.execute(sql + " WHERE function = ?", (function,)) if function else conn.execute(sql + " ORDER BY function")
        names = ["function", "hits", "misses", "seconds_saved", "tokens_saved"]
        return [dict(zip(names, row)) for row in rows]

    def history(self, function: Optional[str] = None) -> list[dict[str, Any]]:
        """Persisted counters per function and hour, oldest first: ``hour`` is the start of the
        hour in epoch seconds (UTC); then ``hits``, ``misses``, ``seconds_saved``, ``tokens_saved``."""
        self.flush()
        conn = self.index._connect()
        sql = "SELECT function, hour, hits, misses, seconds_saved, tokens_saved FROM history"
        rows = conn.execute(sql + " WHERE function = ? ORDER BY hour", (function,)) if function else conn.execute(sql + " ORDER BY hour, function")
        names = ["function", "hour", "hits", "misses", "seconds_saved", "tokens_saved"]
        return [{**dict(zip(names, row)), "hour": row[1] * 3600} for row in rows]

    def saved(self) -> dict[str, dict[Usage, int]]:
        """Persisted hits per function and token usage (after flushing this process's buffer)."""
        self.flush()
        per: dict[str, dict[Usage, int]] = {}
        sql = "SELECT function, model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, hits FROM saved"
        for function, model, i, o, r, w, hits in self.index._connect().execute(sql):
            per.setdefault(function, {})[Usage(model, i, o, r, w)] = hits
        return per


_live_logs: "weakref.WeakSet[UsageLog]" = weakref.WeakSet()
_flusher_pid = 0
_flusher_here = False  # whether this process runs its flushing thread (false again in a forked child)
_flusher_lock = threading.Lock()


def _flush_loop() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL)
        for log in list(_live_logs):
            log.flush()
            # This thread lives as long as the process: holding a connection (three file
            # descriptors) per cache dir it ever flushed would exhaust them in a long run.
            log.index.close()


def _start_flusher() -> None:
    """Start the flushing thread of this process (again after a fork, where threads are gone)."""
    global _flusher_pid, _flusher_here
    with _flusher_lock:
        if _flusher_pid != os.getpid():
            if _flusher_pid:  # a forked child: what is buffered belongs to the parent, which writes it
                for log in list(_live_logs):
                    log._hits, log._entry_hits, log._functions, log._history, log._saved = [], {}, {}, {}, {}
            threading.Thread(target=_flush_loop, name="memollm-usage", daemon=True).start()
            _flusher_pid = os.getpid()
        _flusher_here = True


def _after_fork_in_child() -> None:
    global _flusher_here
    _flusher_here = False  # the next hit or miss starts this process's own thread (no os.getpid() per hit)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _flush_all() -> None:
    for log in list(_live_logs):
        log.flush()
