"""Section "observe": what ``memollm.observe()`` costs a memory-store hit.

Three situations, each against ``lru_cache`` (keyed on the request's JSON) timed alongside it:

* ``none``: no ``observe()`` block open anywhere, the state every call outside a block is in;
* ``elsewhere``: a block open in another thread (this thread's calls are not recorded, but the
  hit path sees that some block is open);
* ``inside``: the calls are made in a block, each building a ``CallRecord`` (the list is emptied
  after each call, which is counted too).

The first is measured on its own (no block may be open), the other two side by side, so each is
reported as a ratio to ``lru-json`` measured in the same run; ``inside/none`` and
``elsewhere/none`` divide those ratios.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any, Callable

from .common import REQUEST, Section, Settings, fmt_us, measure, print_ratios, print_table, stats_figures
from .hit import decorated, lru_json

NAME = "observe"


def in_context(op: Callable[[], Any], context: contextvars.Context) -> Callable[[], Any]:
    """``op`` run in ``context``: every contender pays this, so blocks stay where they were opened."""
    return lambda: context.run(op)


def run(settings: Settings) -> Section:
    import memollm

    section = Section(NAME)
    hit = decorated(memollm.cache_llm(store="memory", version=NAME), REQUEST)  # not the "hit" section's entry
    lru = lru_json(REQUEST)
    fresh = contextvars.Context
    reps, rounds, warmup = settings.reps, settings.rounds, settings.warmup

    quiet = measure({"memollm-memory": in_context(hit, fresh()), "lru-json": in_context(lru, fresh())}, reps=reps, rounds=rounds, warmup=warmup)

    # A block held open by another thread until the measurement ends.
    opened, done = threading.Event(), threading.Event()

    def hold_block() -> None:
        with memollm.observe():
            opened.set()
            done.wait()

    holder = threading.Thread(target=hold_block, daemon=True)
    holder.start()
    opened.wait()
    # A block open in a context of its own, entered once: its calls are recorded.
    observed = fresh()
    block = observed.run(memollm.observe)
    calls = observed.run(block.__enter__)

    def observed_hit() -> Any:
        value = hit()
        calls.clear()
        return value

    try:
        busy = measure(
            {
                "memollm-memory (block elsewhere)": in_context(hit, fresh()),
                "memollm-memory (inside a block)": in_context(observed_hit, observed),
                "lru-json": in_context(lru, fresh()),
            },
            reps=reps,
            rounds=rounds,
            warmup=warmup,
        )
        recorded = observed.run(lambda: len(calls))
    finally:
        observed.run(block.__exit__, None, None, None)
        done.set()
        holder.join()
    if recorded:
        raise RuntimeError("the observed list was not emptied after each call")

    none = quiet["memollm-memory"].median_us / quiet["lru-json"].median_us
    elsewhere = busy["memollm-memory (block elsewhere)"].median_us / busy["lru-json"].median_us
    inside = busy["memollm-memory (inside a block)"].median_us / busy["lru-json"].median_us
    section.figures["no_block"] = stats_figures(quiet)
    section.figures["blocks_open"] = stats_figures(busy)
    section.ratio("memory-hit/lru-json (no block)", none)
    section.ratio("memory-hit/lru-json (block elsewhere)", elsewhere)
    section.ratio("memory-hit/lru-json (inside a block)", inside)
    section.ratio("block elsewhere/no block", elsewhere / none)
    section.ratio("inside a block/no block", inside / none)
    rows = [[f"{name} [no block]", fmt_us(s.median_us), fmt_us(s.p90_us)] for name, s in quiet.items()]
    rows += [[f"{name} [blocks open]", fmt_us(s.median_us), fmt_us(s.p90_us)] for name, s in busy.items()]
    print_table("memory hit with and without memollm.observe()", ["contender", "median", "p90"], rows)
    print_ratios(section)
    return section
