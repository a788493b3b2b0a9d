"""Dollars of token usage, from the maintained ``genai-prices`` table (the ``prices`` extra).

Prices are looked up when a figure is asked for (``cache_info()``, ``memollm stats``, an
``observe()`` record, an OpenTelemetry collection), from the usage stored with each entry, so a
newer table (``pip install -U genai-prices``, or its opt-in ``UpdatePrices`` in your program)
applies to entries recorded before it. A model the table does not know is never guessed at:
its usage has no price (``None``). Without the package every price is ``None``.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from typing import Any, Optional

from .stats import Usage

_lock = threading.Lock()
_calc: Any = None  # genai_prices.calc_price once imported; False if it cannot be


def _calculator() -> Any:
    """``genai_prices`` (imported on first use: it costs a few tenths of a second), or ``None``."""
    global _calc
    if _calc is None:
        with _lock:
            if _calc is None:
                try:
                    import genai_prices
                except Exception:  # absent (or Python < 3.11, which it does not support)
                    _calc = False
                else:
                    _calc = genai_prices
    return _calc or None


def available() -> bool:
    """Whether a price table is installed (``pip install 'memollm[prices]'``), without importing it."""
    if _calc is None:
        return _installed()
    return _calc is not False


@functools.lru_cache(maxsize=None)
def _installed() -> bool:
    try:
        return importlib.util.find_spec("genai_prices") is not None
    except (ImportError, ValueError):
        return False


def source() -> Optional[str]:
    """Which table prices come from, e.g. ``"genai-prices 0.2.3"``; ``None`` without one."""
    table = _calculator()
    return None if table is None else f"genai-prices {table.__version__}"


@functools.lru_cache(maxsize=65536)
def price(usage: Optional[Usage]) -> Optional[float]:
    """US dollars the call that used ``usage`` costs at today's prices; ``None`` if unknown
    (no table, no model, or a model the table does not know)."""
    if usage is None or usage.model is None:
        return None
    table = _calculator()
    if table is None:
        return None
    counts = {"input_tokens": usage.input, "output_tokens": usage.output}
    if usage.cache_read:
        counts["cache_read_tokens"] = usage.cache_read
    if usage.cache_write:
        counts["cache_write_tokens"] = usage.cache_write
    try:
        tokens = table.Usage(**counts)
        try:
            found = table.calc_price(tokens, usage.model)
        except LookupError:
            if "/" not in usage.model:
                raise
            # "provider/model" (LiteLLM's spelling): the table resolves the prefix itself.
            found = table.calc_price(tokens, usage.model, provider_id="litellm")
    except Exception:  # LookupError (unknown model), ValueError (inconsistent counts): no price
        return None
    return float(found.total_price)


LINEAR_MIN = 8
"""Distinct usages of one model from which ``total`` prices them with per-token rates."""


def total(hits_per_usage: "dict[Usage, int]") -> Optional[float]:
    """Dollars of ``hits`` calls of each usage: ``0.0`` for none; ``None`` without a table, or when
    no usage has a known price. Usage of unknown models adds nothing (never a guess).

    Pricing one usage costs the table ~0.1 ms, so many usages of a model (a large cache dir) are
    priced with its per-token rates, after checking that they give the table's own price for the
    smallest and the largest input of the lot; a model whose price is not linear there (a price
    tier above some prompt size) has each usage priced by the table.
    """
    if not hits_per_usage:
        return 0.0 if available() else None
    if _calculator() is None:
        return None
    by_model: dict[Optional[str], list[tuple[Usage, int]]] = {}
    for usage, hits in hits_per_usage.items():
        by_model.setdefault(usage.model, []).append((usage, hits))
    dollars, priced = 0.0, False
    for model, items in by_model.items():
        rates = _rates(model) if model is not None and len(items) >= LINEAR_MIN else None
        if rates is not None and _linear_for(rates, items):
            dollars += sum(_at(rates, usage) * hits for usage, hits in items)
            priced = True
            continue
        for usage, hits in items:
            each = price(usage)
            if each is not None:
                dollars += each * hits
                priced = True
    return dollars if priced else None


@functools.lru_cache(maxsize=1024)
def _rates(model: str) -> Optional[tuple[float, float, float, float]]:
    """Dollars per input, output, cache-read and cache-write token (the smallest prompt's rates),
    or ``None`` for a model without a known price."""
    unit = [price(Usage(model, 1)), price(Usage(model, 0, 1)), price(Usage(model, 1, 0, 1)), price(Usage(model, 1, 0, 0, 1))]
    if any(rate is None for rate in unit):
        return None
    return unit[0], unit[1], unit[2], unit[3]  # type: ignore[return-value]


def _at(rates: tuple[float, float, float, float], usage: Usage) -> float:
    uncached = usage.input - usage.cache_read - usage.cache_write
    return rates[0] * uncached + rates[1] * usage.output + rates[2] * usage.cache_read + rates[3] * usage.cache_write


def _linear_for(rates: tuple[float, float, float, float], items: list[tuple[Usage, int]]) -> bool:
    """Whether the rates give the table's price for the smallest and the largest input of ``items``."""
    ends = (min(items, key=lambda item: item[0].input)[0], max(items, key=lambda item: item[0].input)[0])
    for usage in ends:
        exact = price(usage)
        if exact is None or abs(_at(rates, usage) - exact) > 1e-9 * max(1.0, exact):
            return False
    return True
