"""Seeing each cached call: ``memollm.observe()`` records, and the read/miss observers the pytest
plugin listens to (its fixture and ``--memollm-report-unused``).

Outside an ``observe()`` block a call pays one check of a module-level list on a hit and of a
module-level counter on the other outcomes: ``read_observers`` is empty and ``watching`` is 0.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from .entry import EntryMeta
from .prices import price

HIT, MISS, BYPASS, OFFLINE_MISS = "hit", "miss", "bypass", "offline-miss"


@dataclass(frozen=True)
class CallRecord:
    """One cached call made inside a ``memollm.observe()`` block.

    ``outcome``: ``"hit"`` (answered from the cache), ``"miss"`` (the provider was called),
    ``"bypass"`` (not cached: mode ``off``, or arguments the function rejects) or
    ``"offline-miss"`` (mode ``offline`` and no entry: ``CacheMiss`` was raised).
    ``key`` is ``None`` for a bypass. A hit saved the original call's ``seconds_saved``,
    ``tokens_saved`` and ``dollars_saved`` (``None`` when its model has no known price, or no
    price table is installed); other outcomes saved nothing. ``sample`` is the sample index when
    the function keeps several samples per request, else ``None``.
    """

    function: str
    key: Optional[str]
    outcome: str
    seconds_saved: float = 0.0
    tokens_saved: int = 0
    dollars_saved: Optional[float] = 0.0
    sample: Optional[int] = None


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


# -- observe() ------------------------------------------------------------------------------

#: The record lists of the blocks open in this thread or task, outermost first.
_blocks: contextvars.ContextVar[tuple[list[CallRecord], ...]] = contextvars.ContextVar("memollm_observe", default=())
#: ``observe()`` blocks open in any thread: 0 means no call needs to build a record.
watching = 0
_lock = threading.Lock()


@contextlib.contextmanager
def observe() -> Iterator[list[CallRecord]]:
    """``with memollm.observe() as calls:`` collects a ``CallRecord`` per cached call made in the
    block, in order, in this thread or task (and tasks it starts; not other threads). Nested
    blocks each get their calls."""
    global watching
    calls: list[CallRecord] = []
    token = _blocks.set(_blocks.get() + (calls,))
    with _lock:
        watching += 1
        if watching == 1:
            read_observers.append(_record_read)
    try:
        yield calls
    finally:
        try:
            _blocks.reset(token)
        except ValueError:  # exited in another context than entered (a generator moved across tasks)
            _blocks.set(tuple(block for block in _blocks.get() if block is not calls))
        with _lock:
            watching -= 1
            if watching == 0:
                read_observers.remove(_record_read)


def _record_read(store: Any, meta: EntryMeta) -> None:
    blocks = _blocks.get()
    if blocks:  # (the price table is imported when the first hit with usage is recorded)
        record = CallRecord(meta.function, meta.key, HIT, meta.duration, meta.tokens, price(meta.usage), getattr(meta, "sample", None))
        for calls in blocks:
            calls.append(record)


def record(function: str, key: Optional[str], outcome: str, sample: Optional[int] = None) -> None:
    """Record a call that saved nothing (a miss, a bypass, an offline miss) in the open blocks.

    Callers check ``watching`` first, so this costs nothing when no block is open anywhere.
    """
    blocks = _blocks.get()
    if blocks:
        entry = CallRecord(function, key, outcome, sample=sample)
        for calls in blocks:
            calls.append(entry)
