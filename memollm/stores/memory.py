"""A per-process store with the disk store's semantics (entries are bytes, decoded per hit)."""

from __future__ import annotations

import threading
import time
from typing import Iterator, Optional

from ..entry import EntryMeta
from ..report import warn_once
from .base import PruneReport, Store

SWEEP_MIN = 1_024
"""Entries held before a write first drops the expired ones; then each time their number doubles."""


class MemoryStore(Store):
    """Entries in a dict, guarded by a lock. ``store="memory"`` uses one shared instance.

    Expired entries are dropped as writes go (a sweep each time the number of entries has
    doubled since the last one), so a long-running process holds what is live, not every entry
    it ever wrote. With ``max_size`` (bytes), the least recently used entries are evicted
    before a write would push the total over it; a larger entry is not kept.
    """

    location = "memory"

    def __init__(self, max_size: Optional[int] = None) -> None:
        self._entries: dict[str, tuple[EntryMeta, bytes]] = {}
        self._lock = threading.Lock()
        self._sweep_at = SWEEP_MIN
        self.max_size = max_size
        self._bytes = 0
        if max_size is not None:
            self.get = self._get_in_use_order  # type: ignore[method-assign]

    def get(self, function: str, key: str) -> Optional[bytes]:
        item = self._entries.get(key)
        return None if item is None else item[1]

    def _get_in_use_order(self, function: str, key: str) -> Optional[bytes]:
        """``get`` under ``max_size``: a read moves the entry to the end (the dict is in use order)."""
        with self._lock:
            item = self._entries.pop(key, None)
            if item is None:
                return None
            self._entries[key] = item
        return item[1]

    def set(self, meta: EntryMeta, data: bytes) -> None:
        meta.size = len(data)
        if self.max_size is not None and meta.size > self.max_size:
            warn_once(
                self.location,
                f"too-large:{id(self)}",
                f"memollm: max_size={self.max_size} bytes leaves no room in memory for an entry of {meta.size} bytes; "
                "results that large are returned but not cached",
            )
            self.delete(meta.function, meta.key)
            return
        with self._lock:
            self._pop(meta.key)
            if len(self._entries) >= self._sweep_at:
                self._drop_expired(time.time())
                self._sweep_at = max(SWEEP_MIN, 2 * len(self._entries))
            if self.max_size is not None:
                while self._entries and self._bytes + meta.size > self.max_size:
                    self._pop(next(iter(self._entries)))
            self._entries[meta.key] = (meta, data)
            self._bytes += meta.size

    def delete(self, function: str, key: str) -> bool:
        with self._lock:
            return self._pop(key) is not None

    def _pop(self, key: str) -> Optional[tuple[EntryMeta, bytes]]:
        """Remove an entry and its bytes from the total (the lock is held)."""
        item = self._entries.pop(key, None)
        if item is not None:
            self._bytes -= len(item[1])
        return item

    def clear(self, function: Optional[str] = None) -> int:
        with self._lock:
            doomed = [k for k, (m, _) in self._entries.items() if function is None or m.function == function]
            for k in doomed:
                self._pop(k)
        return len(doomed)

    def entries(self, function: Optional[str] = None) -> Iterator[EntryMeta]:
        with self._lock:
            metas = [m for m, _ in self._entries.values()]
        return iter([m for m in metas if function is None or m.function == function])

    def prune(self) -> PruneReport:
        with self._lock:
            return self._drop_expired(time.time())

    def _drop_expired(self, now: float) -> PruneReport:
        """Remove the expired entries (the lock is held)."""
        report = PruneReport()
        for k, (m, data) in list(self._entries.items()):
            if m.expired(now):
                self._pop(k)
                report.removed(len(data), expired=True)
        return report


SHARED_MEMORY_STORE = MemoryStore()
