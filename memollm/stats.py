"""Counters of what the cache did and saved, and the token usage carried by results."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class CacheInfo:
    """What ``cache_info()`` returns: this process's counters plus the store's entries.

    ``dollars_saved`` prices the hits' token usage with the ``genai-prices`` table (the
    ``prices`` extra); hits of models the table does not know add nothing. ``None`` when no
    hit could be priced (the table is not installed, or knows none of the models).
    """

    hits: int
    misses: int
    entries: int
    bytes: int
    seconds_saved: float
    tokens_saved: int
    dollars_saved: Optional[float] = None


@dataclass(frozen=True)
class Usage:
    """The tokens one result used, by model, as the provider reported them.

    ``input`` counts every input token, cached ones included; ``cache_read`` and ``cache_write``
    are the parts of it read from and written to the provider's prompt cache (priced apart).
    ``model`` is ``None`` when the result does not say (then it cannot be priced).
    """

    model: Optional[str]
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    def as_row(self) -> tuple[Optional[str], int, int, int, int]:
        return (self.model, self.input, self.output, self.cache_read, self.cache_write)


SAVED_MAX = 4096
"""Distinct usages a ``Counters`` keeps unpriced; beyond, they are priced in the background."""


class Counters:
    """Hit/miss counters of one cached function (this process).

    Hits are counted on the hit path without the lock (``Cache.lookup``): an attribute ``+=``
    is not interrupted by a thread switch in CPython 3.11+ (no eval-breaker check in between);
    at worst, on older or free-threaded builds, a concurrent hit goes uncounted. Nothing else
    depends on these numbers.

    Dollars: ``saved`` counts hits per entry key, with the entry's token usage (``[usage, hits]``:
    a string key hashes for free, a ``Usage`` does not), priced when asked (``memollm.prices``:
    the table is loaded then, never on the hit path). It holds at most ``SAVED_MAX`` entries:
    then they are priced by a short background thread into ``folded``, so memory stays bounded.
    ``reset`` (``cache_clear``) keeps what was counted before, so monotonic consumers (the
    OpenTelemetry counters, ``totals``) never see a total go down.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = 0  # bumped by reset: prices computed for an older one count as "before"
        self._before: tuple[int, int, float, int] = (0, 0, 0.0, 0)  # hits, misses, seconds, tokens
        self._before_dollars: Optional[float] = None
        self.hits = 0
        self.misses = 0
        self.seconds_saved = 0.0
        self.tokens_saved = 0
        self.saved: dict[str, list[Any]] = {}  # entry key -> [usage, hits]
        self.folded: Optional[float] = None  # dollars priced off the hit path (None: none priced yet)

    def reset(self) -> None:
        with self._lock:
            h, m, sec, t = self._before
            self._before = (h + self.hits, m + self.misses, sec + self.seconds_saved, t + self.tokens_saved)
            self._before_dollars = _plus(self._before_dollars, self.folded)
            saved = self.saved
            self._generation += 1
            self.hits = self.misses = self.tokens_saved = 0
            self.seconds_saved = 0.0
            self.folded = None
            self.saved = {}
        self._price_later(saved, -1)

    def miss(self) -> None:
        with self._lock:
            self.misses += 1

    def hit(self, key: str, duration: float, tokens: int, usage: Optional[Usage]) -> None:
        """Count a hit (the core's hit path counts inline, as this does)."""
        self.hits += 1
        self.seconds_saved += duration
        self.tokens_saved += tokens
        if usage is not None:
            entry = self.saved.get(key)
            if entry is None:
                self.first_saved(key, usage)
            else:
                entry[1] += 1

    def first_saved(self, key: str, usage: Usage) -> None:
        """The first hit of an entry with usage since the last reset (or fold)."""
        saved = self.saved
        saved[key] = [usage, 1]
        if len(saved) > SAVED_MAX:
            with self._lock:
                if self.saved is not saved:
                    return
                self.saved = {}
                generation = self._generation
            self._price_later(saved, generation)

    def _price_later(self, saved: dict[str, list[Any]], generation: int) -> None:
        from . import prices

        if saved and prices.available():
            threading.Thread(target=self._fold, args=(saved, generation), name="memollm-prices", daemon=True).start()

    def _fold(self, saved: dict[str, list[Any]], generation: int) -> None:
        from . import prices

        dollars = prices.total(_per_usage(saved))
        with self._lock:
            if generation == self._generation:
                self.folded = _plus(self.folded, dollars)
            else:
                self._before_dollars = _plus(self._before_dollars, dollars)

    def dollars(self) -> Optional[float]:
        """Dollars the hits since the last reset saved; ``None`` without a price table."""
        from . import prices

        with self._lock:
            saved, folded = _per_usage(self.saved), self.folded
        unfolded = prices.total(saved)
        if folded is None:
            return unfolded
        return folded if unfolded is None else folded + unfolded

    def totals(self) -> tuple[int, int, float, int, Optional[float]]:
        """Hits, misses, seconds, tokens and dollars saved since this process started."""
        with self._lock:
            h, m, sec, t = self._before
            counts = (h + self.hits, m + self.misses, sec + self.seconds_saved, t + self.tokens_saved)
            before = self._before_dollars
        return (*counts, _plus(before, self.dollars()))


def _plus(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """A sum of dollar figures where ``None`` means "none priced"."""
    if a is None:
        return b
    return a if b is None else a + b


def _per_usage(saved: dict[str, list[Any]]) -> dict[Usage, int]:
    per: dict[Usage, int] = {}
    for usage, hits in list(saved.values()):
        per[usage] = per.get(usage, 0) + hits
    return per


def _field(obj: Any, name: str) -> Any:
    if type(obj) is dict or isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


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


def _counts(usage: Any) -> Optional[tuple[int, int, int, int]]:
    """``(input, output, cache_read, cache_write)`` of a usage object or dict, input including the
    cached parts; ``None`` if it holds no token counts.

    OpenAI chat: ``prompt_tokens`` (cached ones included: ``prompt_tokens_details.cached_tokens``
    and ``cache_write_tokens``) and ``completion_tokens``. OpenAI responses: ``input_tokens``
    (``input_tokens_details``) and ``output_tokens``. Anthropic: ``input_tokens`` excludes ``cache_read_input_tokens`` and
    ``cache_creation_input_tokens``, so they are added.
    """
    prompt = _field(usage, "prompt_tokens")
    if isinstance(prompt, int):
        details = _field(usage, "prompt_tokens_details")
        cached, written = _int(_field(details, "cached_tokens")), _int(_field(details, "cache_write_tokens"))
        return prompt, _int(_field(usage, "completion_tokens")), cached, written
    given = _field(usage, "input_tokens")
    output = _field(usage, "output_tokens")
    if not isinstance(given, int) and not isinstance(output, int):
        return None
    read, written = _field(usage, "cache_read_input_tokens"), _field(usage, "cache_creation_input_tokens")
    if read is not None or written is not None:  # Anthropic
        read, written = _int(read), _int(written)
        return _int(given) + read + written, _int(output), read, written
    details = _field(usage, "input_tokens_details")
    return _int(given), _int(output), _int(_field(details, "cached_tokens")), _int(_field(details, "cache_write_tokens"))


def _model(value: Any) -> Optional[str]:
    model = _field(value, "model")
    return model if isinstance(model, str) and model else None


def usage_of(value: Any) -> Optional[Usage]:
    """The ``Usage`` of an OpenAI/Anthropic response (object or dict), or ``None`` if it has none."""
    usage = _field(value, "usage")
    if usage is None:
        return None
    counts = _counts(usage)
    return None if counts is None else Usage(_model(value), *counts)


class UsageTally:
    """Tokens and model reported along a stream: OpenAI's usage chunk (each chunk names the
    model), Anthropic's ``message_start`` (model, input) and ``message_delta`` (output so far)
    events, OpenAI Responses events carrying the ``response``."""

    def __init__(self) -> None:
        self.total = self.input = self.output = 0
        self.model: Optional[str] = None
        self.counts: Optional[list[int]] = None  # input, output, cache_read, cache_write (maxima)

    def add(self, chunk: Any) -> None:
        if self.model is None:
            self.model = _model(chunk)
        for holder in (chunk, _field(chunk, "message"), _field(chunk, "response")):
            if holder is None:
                continue
            usage = _field(holder, "usage")
            if usage is None:
                continue
            if holder is not chunk and self.model is None:
                self.model = _model(holder)
            values = [_field(usage, n) for n in ("total_tokens", "input_tokens", "output_tokens")]
            t, i, o = (v if isinstance(v, int) else 0 for v in values)
            self.total, self.input, self.output = max(self.total, t), max(self.input, i), max(self.output, o)
            counts = _counts(usage)
            if counts is not None:
                self.counts = [max(a, b) for a, b in zip(self.counts or (0, 0, 0, 0), counts)]

    def tokens(self) -> int:
        return self.total or self.input + self.output

    def usage(self) -> Optional[Usage]:
        """The stream's ``Usage``, or ``None`` if no chunk reported tokens."""
        return None if self.counts is None else Usage(self.model, *self.counts)
