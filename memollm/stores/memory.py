"""A per-process store with the disk store's semantics (entries are bytes, decoded per hit)."""

from __future__ import annotations

import threading
import time
from typing import Iterator, Optional

from ..entry import EntryMeta
from .base import PruneReport, Store


class MemoryStore(Store):
    """Entries in a dict, guarded by a lock. ``store="memory"`` uses one shared instance."""

    location = "memory"

    def __init__(self) -> None:
        self._entries: dict[str, tuple[EntryMeta, bytes]] = {}
        self._lock = threading.Lock()

    def get(self, function: str, key: str) -> Optional[bytes]:
        item = self._entries.get(key)
        return None if item is None else item[1]

    def set(self, meta: EntryMeta, data: bytes) -> None:
        meta.size = len(data)
        with self._lock:
            self._entries[meta.key] = (meta, data)

    def delete(self, function: str, key: str) -> bool:
        with self._lock:
            return self._entries.pop(key, None) is not None

    def clear(self, function: Optional[str] = None) -> int:
        with self._lock:
            doomed = [k for k, (m, _) in self._entries.items() if function is None or m.function == function]
            for k in doomed:
                del self._entries[k]
        return len(doomed)

    def entries(self, function: Optional[str] = None) -> Iterator[EntryMeta]:
        with self._lock:
            metas = [m for m, _ in self._entries.values()]
        return iter([m for m in metas if function is None or m.function == function])

    def prune(self) -> PruneReport:
        now = time.time()
        report = PruneReport()
        with self._lock:
            for k, (m, data) in list(self._entries.items()):
                if m.expired(now):
                    del self._entries[k]
                    report.removed(len(data), expired=True)
        return report


SHARED_MEMORY_STORE = MemoryStore()
