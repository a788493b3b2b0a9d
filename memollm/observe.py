"""Observers of cache reads and misses (the pytest plugin's fixture and ``--memollm-report-unused`` listen here)."""

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


MissObserver = Callable[[Any, str, str], None]
miss_observers: list[MissObserver] = []


def notify_miss(store: Any, function: str, key: str) -> None:
    """Tell every observer that ``function``'s entry ``key`` was not in ``store`` (``None`` if unusable)."""
    for observer in list(miss_observers):
        try:
            observer(store, function, key)
        except Exception:  # an observer must never break a cached call
            pass
