"""Section "redis": a hit through the Redis store against its floor and LangChain's ``RedisCache``.

One real ``redis-server`` (started as the tests start it: a free loopback port, no persistence)
serves every contender, side by side:

- memollm-redis: ``@cache_llm(store="redis://...")``, a call with the benchmark request;
- floor: what any Redis cache must do for that hit: the key with the fastest sorted-keys msgpack
  encoder and xxh3-128, one redis-py ``GET`` of the very bytes memollm stored, and decoding the
  value they hold (no verification);
- langchain-redis: langchain-community's ``RedisCache`` through ``BaseCache.lookup``, on a
  client of the same server (the value stored as one ``Generation``, as in the hit section);
- memollm-redis+local (for reference): ``RedisStore(url, local=cache_dir)``, a disk tier in
  front of Redis, read-through: a hit is served by the disk tier without a round trip;
- round trip (for reference): redis-py ``PING``, the least any Redis hit costs.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Any, Callable

import xxhash

from .common import REQUEST, RESPONSE, Section, Settings, fmt_us, measure, optional, print_ratios, print_table, stats_figures
from .hit import decorated, fastest_sorted_encoder, langchain_op

NAME = "redis"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def redis_server(settings: Settings) -> Any:
    """A started ``tests.redis_server.RedisServer``, or ``None`` without redis-server."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from tests.redis_server import RedisServer, redis_server_path

    if redis_server_path() is None:
        return None
    return RedisServer(settings.scratch_dir("redis-server")).start()


def floor_op(client: Any, entry_key: str, request: dict[str, Any]) -> Callable[[], Any]:
    """GET the stored entry and decode its value part (offsets read once from the entry)."""
    from memollm import codec
    from memollm.entry import read_meta

    data = client.get(entry_key)
    _, body = read_meta(data)
    start = len(data) - len(body) - 16  # the body, then the 16-byte checksum
    stop = start + len(body)
    _, pack = fastest_sorted_encoder()
    digest = xxhash.xxh3_128_hexdigest
    get = client.get
    decode = codec.decode

    def op() -> Any:
        digest(pack(request))
        raw = get(entry_key)
        return decode(memoryview(raw)[start:stop])

    if op() != RESPONSE:
        raise RuntimeError("redis floor: the stored entry does not decode to the response")
    return op


def run(settings: Settings) -> Section:
    section = Section(NAME)
    redis = optional("redis")
    if redis is None:
        section.skipped["redis"] = "redis-py is not installed (pip install -e '.[redis]')"
        print_ratios(section)
        return section
    server = redis_server(settings)
    if server is None:
        section.skipped["redis"] = "redis-server is not installed (Debian package redis-server)"
        print_ratios(section)
        return section
    try:
        from memollm import cache_llm

        request = REQUEST
        store_url = f"{server.url}?namespace=bench"
        fn_holder: list[Any] = []

        def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
            fn_holder.append(cache_llm(store=store_url)(f))
            return fn_holder[-1]  # type: ignore[no-any-return]

        ops: dict[str, Callable[[], Any]] = {"memollm-redis": decorated(decorate, request)}
        client = redis.Redis.from_url(server.url)
        key = fn_holder[-1].cache_key(**request)
        names = [n for n in client.keys("bench:e:*") if n.decode().endswith(key)]
        if len(names) != 1:
            raise RuntimeError(f"redis: expected one stored entry for the request, found {len(names)}")
        ops["floor"] = floor_op(client, names[0].decode(), request)
        from memollm.stores.redis import RedisStore

        tiered = RedisStore(server.url, namespace="bench-local", local=settings.scratch_dir("redis-local"))
        ops["memollm-redis+local"] = decorated(cache_llm(store=tiered), request)
        ops["round trip"] = client.ping
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # langchain-community announces its sunset on import
            module = optional("langchain_community.cache")
        if module is None:
            section.skipped["langchain-redis"] = "langchain-community is not installed"
        else:
            ops["langchain-redis"] = langchain_op(module.RedisCache(redis_=redis.Redis.from_url(server.url)), request)
        stats = measure(ops, reps=settings.reps // 2, rounds=settings.rounds, warmup=settings.warmup)
    finally:
        server.stop()
    section.figures["response_bytes"] = len(json.dumps(RESPONSE))
    section.figures["contenders"] = stats_figures(stats)
    section.ratio("memollm-redis/floor", stats["memollm-redis"].median_us / stats["floor"].median_us, "<= 1.3")
    if "langchain-redis" in stats:
        section.ratio("langchain-redis/memollm-redis", stats["langchain-redis"].median_us / stats["memollm-redis"].median_us, ">= 5")
        section.ratio("langchain-redis/memollm-redis+local", stats["langchain-redis"].median_us / stats["memollm-redis+local"].median_us)
    section.ratio("memollm-redis/round trip", stats["memollm-redis"].median_us / stats["round trip"].median_us)
    rows = [[name, fmt_us(s.median_us), fmt_us(s.p90_us)] for name, s in sorted(stats.items(), key=lambda kv: kv[1].median_us)]
    print_table("redis hit (the ~4 KB request -> ~4 KB response, one local redis-server)", ["contender", "median", "p90"], rows)
    print_ratios(section)
    return section
