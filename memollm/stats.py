"""Counters of what the cache did and saved, and the token usage carried by results."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CacheInfo:
    """What ``cache_info()`` returns: this process's counters plus the store's entries."""

    hits: int
    misses: int
    entries: int
    bytes: int
    seconds_saved: float
    tokens_saved: int


class Counters:
    """Hit/miss counters of one decorated function (this process).

    Hits are counted on the hit path without the lock (``_Engine.lookup``): an attribute ``+=``
    is not interrupted by a thread switch in CPython 3.11+ (no eval-breaker check in between);
    at worst, on older or free-threaded builds, a concurrent hit goes uncounted. Nothing else
    depends on these numbers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.hits = 0
        self.misses = 0
        self.seconds_saved = 0.0
        self.tokens_saved = 0

    def miss(self) -> None:
        with self._lock:
            self.misses += 1


def _field(obj: Any, name: str) -> Any:
    if type(obj) is dict or isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def tokens_of(value: Any) -> int:
    """Tokens a result used: OpenAI ``usage.total_tokens`` or Anthropic input + output tokens."""
    usage = _field(value, "usage")
    if usage is None:
        return 0
    total = _field(usage, "total_tokens")
    if isinstance(total, int):
        return total
    parts = [_field(usage, "input_tokens"), _field(usage, "output_tokens")]
    return sum(p for p in parts if isinstance(p, int))


class UsageTally:
    """Tokens reported along a stream (OpenAI's usage chunk, Anthropic's message events)."""

    def __init__(self) -> None:
        self.total = self.input = self.output = 0

    def add(self, chunk: Any) -> None:
        for usage in (_field(chunk, "usage"), _field(_field(chunk, "message"), "usage")):
            if usage is None:
                continue
            values = [_field(usage, n) for n in ("total_tokens", "input_tokens", "output_tokens")]
            t, i, o = (v if isinstance(v, int) else 0 for v in values)
            self.total, self.input, self.output = max(self.total, t), max(self.input, i), max(self.output, o)

    def tokens(self) -> int:
        return self.total or self.input + self.output
