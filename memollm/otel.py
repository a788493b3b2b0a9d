"""OpenTelemetry metrics (the ``otel`` extra): what the cache did and saved, per function.

With ``opentelemetry-api`` installed, the counters ``memollm.hits``, ``memollm.misses``,
``memollm.tokens_saved``, ``memollm.seconds_saved`` and ``memollm.dollars_saved`` (attribute
``memollm.function``) are reported through the global meter provider, one set per process.
They are asynchronous (observable) counters: the provider's reader asks for them when it
collects, and they read the counters each cached function keeps anyway, so a cached call costs
nothing more with OpenTelemetry than without it. A meter provider set after memollm started is
used (the API's proxy provider forwards to it). Without the package nothing is imported.
"""

from __future__ import annotations

import importlib.util
import threading
import weakref
from typing import Any, Iterator

from .stats import Counters

FUNCTION_ATTRIBUTE = "memollm.function"

_lock = threading.Lock()
_state = 0  # 0: not set up yet, 1: instruments registered, -1: no opentelemetry
_caches: "weakref.WeakSet[Any]" = weakref.WeakSet()  # memollm.core.Cache objects


def register(cache: Any) -> None:
    """Report a cache core's counters from now on: under its ``function``, or, for a front door
    that caches several functions, under each of them (``by_function``).

    Called when a cache is made (a function decorated...): the first call sets up the meter
    (or finds there is no OpenTelemetry, and then never looks again).
    """
    global _state
    if _state == 0:
        with _lock:
            if _state == 0:
                _state = 1 if _set_up() else -1
    if _state == 1:
        _caches.add(cache)


def _installed() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.metrics") is not None
    except (ImportError, ValueError):  # absent, or blocked (``sys.modules["opentelemetry"] = None``)
        return False


def _set_up() -> bool:
    if not _installed():
        return False
    try:
        from opentelemetry import metrics
    except Exception:
        return False
    from . import __version__

    meter = metrics.get_meter("memollm", __version__)
    meter.create_observable_counter("memollm.hits", [_reporter(0, metrics.Observation)], unit="{hit}", description="Calls answered from the cache")
    meter.create_observable_counter("memollm.misses", [_reporter(1, metrics.Observation)], unit="{miss}", description="Cached calls that went to the provider")
    meter.create_observable_counter("memollm.seconds_saved", [_reporter(2, metrics.Observation)], unit="s", description="Original call time of the hits")
    meter.create_observable_counter("memollm.tokens_saved", [_reporter(3, metrics.Observation)], unit="{token}", description="Tokens the hits' results used")
    meter.create_observable_counter("memollm.dollars_saved", [_reporter(4, metrics.Observation)], unit="USD", description="Price of the hits' token usage (genai-prices)")
    return True


def _totals() -> dict[str, list[Any]]:
    """Per function: hits, misses, seconds, tokens and dollars (``None``: no price table), summed
    over the caches."""
    per: dict[str, list[Any]] = {}
    for cache in list(_caches):
        counted: list[tuple[str, Counters]] = [(cache.function, cache.counters)] if cache.function is not None else []
        counted += list(cache.by_function.items())
        for function, counters in counted:
            totals = counters.totals()
            mine = per.setdefault(function, [0, 0, 0.0, 0, 0.0])
            for i in range(4):
                mine[i] += totals[i]
            mine[4] = None if totals[4] is None or mine[4] is None else mine[4] + totals[4]
    return per


def _reporter(field: int, observation: Any) -> Any:
    def report(options: Any) -> Iterator[Any]:
        for function, values in _totals().items():
            if values[field] is not None:  # no price table: no dollars rather than a false zero
                yield observation(values[field], {FUNCTION_ATTRIBUTE: function})

    return report
