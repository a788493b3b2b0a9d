"""Section "hit": median latency of a cache hit, memollm against the alternatives and the floor.

Every contender answers the same ~4 KB chat request with the same ~4 KB response from a warm
cache. The floor is the least any persistent cache must do: compute a key with the fastest
sorted-keys msgpack encoder available, then open, read and decode the value file.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from typing import Any, Callable

import msgpack
import xxhash

from .common import REQUEST, RESPONSE, Section, Settings, fmt_us, measure, optional, print_ratios, print_table, stats_figures

NAME = "hit"


def counting_stub(calls: list[int]) -> Callable[..., dict[str, Any]]:
    """The provider stub, counting its calls so a contender that misses is caught."""

    def chat(messages: list[dict[str, str]], model: str, temperature: float, max_tokens: int) -> dict[str, Any]:
        calls.append(1)
        return RESPONSE

    return chat


# -- the floor ----------------------------------------------------------------------------------


def sorted_copy(value: Any) -> Any:
    """``value`` with every dict's keys in sorted order (for encoders without a sort option)."""
    if isinstance(value, dict):
        return {k: sorted_copy(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [sorted_copy(v) for v in value]
    return value


def fastest_sorted_encoder() -> tuple[str, Callable[[Any], bytes]]:
    """The fastest installed msgpack encoder that sorts dict keys, and its name."""
    ormsgpack = optional("ormsgpack")
    if ormsgpack is not None:
        option = ormsgpack.OPT_SORT_KEYS

        def pack(value: Any) -> bytes:
            return ormsgpack.packb(value, option=option)  # type: ignore[no-any-return]

        return "ormsgpack (OPT_SORT_KEYS)", pack
    packer = msgpack.Packer(use_bin_type=True)
    return "msgpack on a sorted copy", lambda value: packer.pack(sorted_copy(value))


def floor_op(root: str, request: dict[str, Any], response: Any) -> tuple[str, Callable[[], Any]]:
    """Write the response file once; return the encoder's name and the floor's hit operation."""
    encoder, pack = fastest_sorted_encoder()
    key = xxhash.xxh3_128_hexdigest(pack(request))
    os.makedirs(os.path.join(root, key[:2]), exist_ok=True)
    with open(os.path.join(root, key[:2], key), "wb") as f:
        f.write(msgpack.packb(response, use_bin_type=True))
    digest = xxhash.xxh3_128_hexdigest
    join = os.path.join
    unpackb = msgpack.unpackb

    def op() -> Any:
        k = digest(pack(request))
        with open(join(root, k[:2], k), "rb") as f:
            return unpackb(f.read())

    return encoder, op


# -- contenders ---------------------------------------------------------------------------------


def decorated(decorate: Callable[[Callable[..., Any]], Callable[..., Any]], request: dict[str, Any]) -> Callable[[], Any]:
    """Decorate a counting stub, fill the cache with one call, check that the next calls hit."""
    calls: list[int] = []
    fn = decorate(counting_stub(calls))
    fn(**request)
    for _ in range(3):
        assert fn(**request) == RESPONSE
    if len(calls) != 1:
        raise RuntimeError(f"contender did not hit its cache ({len(calls)} provider calls for 4 identical requests)")
    return lambda: fn(**request)


def lru_json(request: dict[str, Any]) -> Callable[[], Any]:
    """``functools.lru_cache`` keyed on ``json.dumps(request, sort_keys=True)``."""

    @functools.lru_cache(maxsize=1024)
    def by_json(key: str) -> Any:
        return RESPONSE

    dumps = json.dumps
    return lambda: by_json(dumps(request, sort_keys=True))


def langchain_op(cache: Any, request: dict[str, Any]) -> Callable[[], Any]:
    """LangChain's ``BaseCache`` API: prompt = the messages as JSON, llm_string = the params as JSON."""
    from langchain_core.outputs import Generation

    # SQLiteCache.lookup warns (once) that a default of langchain's loads() will change.
    warnings.filterwarnings("ignore", message=".*allowed_objects")
    def strings() -> tuple[str, str]:
        params = {"model": request["model"], "temperature": request["temperature"], "max_tokens": request["max_tokens"]}
        return json.dumps(request["messages"]), json.dumps(params, sort_keys=True)

    cache.update(*strings(), [Generation(text=json.dumps(RESPONSE))])

    def op() -> Any:
        return cache.lookup(*strings())

    if not op():
        raise RuntimeError(f"{type(cache).__name__} did not hit")
    return op


def sqlite_cache_class() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # langchain-community announces its sunset on import
        module = optional("langchain_community.cache")
    return None if module is None else module.SQLiteCache


def contenders(settings: Settings, section: Section) -> dict[str, Callable[[], Any]]:
    from memollm import cache_llm

    request = REQUEST
    ops: dict[str, Callable[[], Any]] = {
        "memollm-disk": decorated(cache_llm(cache_dir=settings.scratch_dir("memollm-disk")), request),
        "memollm-memory": decorated(cache_llm(store="memory"), request),
    }
    encoder, ops["floor"] = floor_op(settings.scratch_dir("floor"), request, RESPONSE)
    section.figures["floor_encoder"] = encoder
    ops["lru-json"] = lru_json(request)

    import joblib

    ops["joblib"] = decorated(joblib.Memory(settings.scratch_dir("joblib"), verbose=0).cache, request)
    diskcache = optional("diskcache")
    if diskcache is None:
        section.skipped["diskcache"] = "diskcache is not installed (pip install -e '.[bench]')"
    else:
        ops["diskcache"] = decorated(diskcache.Cache(settings.scratch_dir("diskcache")).memoize(), request)
    caches = optional("langchain_core.caches")
    if caches is None:
        section.skipped["langchain-inmemory"] = "langchain-core is not installed"
    else:
        ops["langchain-inmemory"] = langchain_op(caches.InMemoryCache(), request)
    sqlite_cache = sqlite_cache_class()
    if sqlite_cache is None:
        section.skipped["langchain-sqlite"] = "langchain-community is not installed"
    else:
        path = os.path.join(settings.scratch_dir("langchain-sqlite"), "langchain.db")
        ops["langchain-sqlite"] = langchain_op(sqlite_cache(database_path=path), request)
    return ops


TARGETS = [
    ("joblib/memollm-disk", "joblib", "memollm-disk", ">= 30"),
    ("diskcache/memollm-disk", "diskcache", "memollm-disk", ">= 15"),
    ("memollm-disk/floor", "memollm-disk", "floor", "<= 0.6"),
    ("lru-json/memollm-memory", "lru-json", "memollm-memory", ">= 5"),
    ("langchain-sqlite/memollm-disk", "langchain-sqlite", "memollm-disk", None),
    ("langchain-inmemory/memollm-memory", "langchain-inmemory", "memollm-memory", None),
]


def run(settings: Settings) -> Section:
    section = Section(NAME)
    ops = contenders(settings, section)
    stats = measure(ops, reps=settings.reps, rounds=settings.rounds, warmup=settings.warmup)
    section.figures["request_bytes"] = len(json.dumps(REQUEST))
    section.figures["response_bytes"] = len(json.dumps(RESPONSE))
    section.figures["contenders"] = stats_figures(stats)
    for name, num, den, target in TARGETS:
        if num in stats and den in stats:
            section.ratio(name, stats[num].median_us / stats[den].median_us, target)
    fastest = min(s.median_us for s in stats.values())
    rows = [[name, fmt_us(s.median_us), fmt_us(s.p90_us), f"{s.median_us / fastest:.1f}x"] for name, s in sorted(stats.items(), key=lambda kv: kv[1].median_us)]
    print_table("hit latency (a ~4 KB chat request -> a ~4 KB response, warm cache)", ["contender", "median", "p90", "vs fastest"], rows)
    print_ratios(section)
    return section
