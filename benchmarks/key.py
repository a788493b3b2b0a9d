"""Section "key": computing the cache key of the benchmark request, against ``json.dumps``.

``fn.cache_key(**request)`` includes binding the arguments to the signature, scrubbing secrets,
normalizing and hashing. The baseline is what a hand-rolled cache would do:
``json.dumps(request, sort_keys=True)`` (without even hashing it).
"""

from __future__ import annotations

import json
from typing import Any, Callable

import xxhash

from .common import REQUEST, Section, Settings, fmt_us, measure, print_ratios, print_table, stats_figures, stub_chat
from .hit import fastest_sorted_encoder

NAME = "key"


def run(settings: Settings) -> Section:
    from memollm import cache_llm

    section = Section(NAME)
    fn = cache_llm(cache_dir=settings.scratch_dir("key"))(stub_chat())
    request = REQUEST
    encoder, pack = fastest_sorted_encoder()
    digest = xxhash.xxh3_128_hexdigest
    dumps = json.dumps
    ops: dict[str, Callable[[], Any]] = {
        "memollm cache_key": lambda: fn.cache_key(**request),
        "json.dumps(sort_keys=True)": lambda: dumps(request, sort_keys=True),
        "json.dumps + xxh3_128": lambda: digest(dumps(request, sort_keys=True).encode()),
        "fastest msgpack + xxh3_128": lambda: digest(pack(request)),
    }
    stats = measure(ops, reps=settings.reps * 2, rounds=settings.rounds, warmup=settings.warmup)
    section.figures["encoder"] = encoder
    section.figures["contenders"] = stats_figures(stats)
    section.ratio("json.dumps/cache_key", stats["json.dumps(sort_keys=True)"].median_us / stats["memollm cache_key"].median_us, ">= 3")
    section.ratio("cache_key/fastest-msgpack-key", stats["memollm cache_key"].median_us / stats["fastest msgpack + xxh3_128"].median_us, "<= 1.5")
    rows = [[name, fmt_us(s.median_us), fmt_us(s.p90_us)] for name, s in stats.items()]
    print_table("key of the ~4 KB request", ["method", "median", "p90"], rows)
    print_ratios(section)
    return section
