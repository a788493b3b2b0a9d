"""Observers of cache reads (the pytest plugin's ``--memollm-report-unused`` listens here)."""

from __future__ import annotations

from typing import Any, Callable

from .entry import EntryMeta

ReadObserver = Callable[[Any, EntryMeta], None]
read_observers: list[ReadObserver] = []


def notify_read(store: Any, meta: EntryMeta) -> None:
    """Tell every observer that ``meta``'s entry was served from ``store``."""
    for observer in list(read_observers):
        try:
            observer(store, meta)
        except Exception:  # an observer must never break a cached call
            pass
