"""Section "miss": a miss's own overhead, i.e. computing the key and writing the ~4 KB value.

The decorated function answers instantly and every call has distinct arguments, so each timed
call is a lookup that misses, a call of the stub, and a write of the response.
"""

from __future__ import annotations

from typing import Any, Callable

from .common import (
    RESPONSE,
    Section,
    Settings,
    distinct_requests,
    fmt_us,
    measure,
    optional,
    print_ratios,
    print_table,
    stats_figures,
    stub_chat,
)

NAME = "miss"


def missing(fn: Callable[..., Any], tag: str, count: int) -> Callable[[], Any]:
    """An op calling ``fn`` with a new request each time (``count`` calls at most)."""
    requests = iter(list(distinct_requests(count, tag)))

    def op() -> Any:
        return fn(**next(requests))

    return op


def run(settings: Settings) -> Section:
    import joblib

    from memollm import cache_llm

    section = Section(NAME)
    reps = settings.reps // 3 if settings.quick else 2_000
    rounds = settings.rounds
    warmup = settings.warmup // 5
    count = reps + warmup + rounds
    decorators: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
        "memollm-disk": cache_llm(cache_dir=settings.scratch_dir("miss-memollm")),
        "memollm-memory": cache_llm(store="memory"),
        "joblib": joblib.Memory(settings.scratch_dir("miss-joblib"), verbose=0).cache,
    }
    diskcache = optional("diskcache")
    if diskcache is None:
        section.skipped["diskcache"] = "diskcache is not installed (pip install -e '.[bench]')"
    else:
        decorators["diskcache"] = diskcache.Cache(settings.scratch_dir("miss-diskcache")).memoize()
    ops: dict[str, Callable[[], Any]] = {}
    for name, decorate in decorators.items():
        fn = decorate(stub_chat())
        ops[name] = missing(fn, name, count)
        assert ops[name]() == RESPONSE
    stats = measure(ops, reps=reps, rounds=rounds, warmup=warmup)
    section.figures["contenders"] = stats_figures(stats)
    if "diskcache" in stats:
        section.ratio("memollm-disk/diskcache", stats["memollm-disk"].median_us / stats["diskcache"].median_us, "<= 0.8")
    section.ratio("joblib/memollm-disk", stats["joblib"].median_us / stats["memollm-disk"].median_us)
    rows = [[name, fmt_us(s.median_us), fmt_us(s.p90_us)] for name, s in sorted(stats.items(), key=lambda kv: kv[1].median_us)]
    print_table("miss overhead (key + write of a ~4 KB value; the function returns instantly)", ["contender", "median", "p90"], rows)
    print_ratios(section)
    return section
