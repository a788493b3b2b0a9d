"""Section "streams": a cached generator's time to first chunk, replay speed and recording memory.

- TTFT overhead: time from calling the generator to its first chunk on a miss (key, lookup,
  single-flight lock, recorder), minus the same for the undecorated generator.
- Replay: consuming a recorded stream of 2,000 chunks on a hit, start to last chunk.
- Replay ratio: that time against consuming the generator itself (dict and str chunks).
- Memory: peak traced allocation (``tracemalloc``) while recording a 10 MB and a 50 MB stream
  (1 KB chunks), as a multiple of the stream's size.
"""

from __future__ import annotations

import gc
import itertools
import time
import tracemalloc
from typing import Any, Callable, Iterator

from .common import GcPaused, Section, Settings, Stats, fmt_us, print_ratios, print_table

NAME = "streams"
REPLAY_CHUNKS = 2_000
BIG_STREAMS = (10 * 2**20, 50 * 2**20)
QUICK_BIG_STREAMS = (10 * 2**20,)
BIG_CHUNK = 1_024
WORDS = ["The", " cache", " answers", " identical", " requests", " from", " disk", ","]


def delta(i: int) -> dict[str, Any]:
    """An OpenAI-style streaming chunk as a plain dict."""
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": WORDS[i % len(WORDS)]}, "finish_reason": None}]}


def small_stream(prompt: str, n: int = 20) -> Iterator[str]:
    """A short stream of words: the first chunk comes at once."""
    for i in range(n):
        yield WORDS[i % len(WORDS)]


def dict_stream(prompt: str, n: int = REPLAY_CHUNKS) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield delta(i)


def word_stream(prompt: str, n: int = REPLAY_CHUNKS) -> Iterator[str]:
    for i in range(n):
        yield WORDS[i % len(WORDS)]


def big_stream(prompt: str, size: int = BIG_STREAMS[0], chunk: int = BIG_CHUNK) -> Iterator[str]:
    """``size`` characters in new ``chunk``-sized strings (as a provider would allocate them)."""
    base = "x" * (chunk - 8)
    for i in range(size // chunk):
        yield f"{i:08d}{base}"


def time_to_first_chunk(settings: Settings, section: Section) -> dict[str, Stats]:
    from memollm import cache_llm

    cached = cache_llm(cache_dir=settings.scratch_dir("streams-ttft"))(small_stream)
    contenders: dict[str, Callable[..., Iterator[Any]]] = {"undecorated": small_stream, "memollm (miss)": cached}
    reps = 150 if settings.quick else 1_000
    counter = itertools.count()
    samples: dict[str, list[int]] = {name: [] for name in contenders}
    clock = time.perf_counter_ns
    with GcPaused():
        for round_ in range(settings.rounds + 1):  # round 0 is the warmup
            for name, fn in contenders.items():
                for _ in range(reps // settings.rounds):
                    prompt = f"prompt {next(counter)}"
                    start = clock()
                    stream = fn(prompt)
                    next(stream)
                    elapsed = clock() - start
                    for _chunk in stream:  # finishing the stream stores it (untimed)
                        pass
                    if round_:
                        samples[name].append(elapsed)
    return {name: Stats.of(s) for name, s in samples.items()}


def replay(settings: Settings, section: Section) -> dict[str, Stats]:
    from memollm import cache_llm

    reps = 30 if settings.quick else 300
    stats: dict[str, Stats] = {}
    for label, source in (("dict chunks", dict_stream), ("str chunks", word_stream)):
        cached = cache_llm(cache_dir=settings.scratch_dir("streams-replay"))(source)
        recorded = list(cached("replay me"))
        assert len(recorded) == REPLAY_CHUNKS
        calls_before = cached.cache_info().misses
        samples: list[int] = []
        plain: list[int] = []
        with GcPaused():
            for i in range(reps + 3):
                start = time.perf_counter_ns()
                count = sum(1 for _ in cached("replay me"))
                elapsed = time.perf_counter_ns() - start
                assert count == REPLAY_CHUNKS
                start = time.perf_counter_ns()
                sum(1 for _ in source("replay me"))
                if i >= 3:  # the first replays warm up
                    samples.append(elapsed)
                    plain.append(time.perf_counter_ns() - start)
        if cached.cache_info().misses != calls_before:
            raise RuntimeError("streams: a replay missed the cache")
        stats[f"replay {label} (memollm hit)"] = Stats.of(samples)
        stats[f"{label} from the generator itself"] = Stats.of(plain)
    return stats


def traced_peak(consume: Callable[[], Any]) -> int:
    """Peak traced memory (bytes) above the starting point while running ``consume``."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        consume()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def recording_memory(settings: Settings, size: int) -> dict[str, Any]:
    from memollm import cache_llm

    cached = cache_llm(cache_dir=settings.scratch_dir("streams-memory"))(big_stream)

    def drain(stream: Iterator[Any]) -> None:
        for _ in stream:
            pass

    drain(cached("prime", size=BIG_CHUNK))  # a cache dir in use: its index exists already
    plain_peak = traced_peak(lambda: drain(big_stream("big", size)))
    recording_peak = traced_peak(lambda: drain(cached("big", size)))
    info = cached.cache_info()
    if info.entries != 2:
        raise RuntimeError(f"streams: the {size // 2**20} MB stream was not stored")
    cached.cache_clear()
    return {"stream_bytes": size, "chunk_bytes": BIG_CHUNK, "undecorated_peak_bytes": plain_peak, "recording_peak_bytes": recording_peak}


def run(settings: Settings) -> Section:
    section = Section(NAME)
    ttft = time_to_first_chunk(settings, section)
    replays = replay(settings, section)
    memories = [recording_memory(settings, size) for size in (QUICK_BIG_STREAMS if settings.quick else BIG_STREAMS)]
    overhead_us = ttft["memollm (miss)"].median_us - ttft["undecorated"].median_us
    section.figures["ttft"] = {name: s.as_dict() for name, s in ttft.items()}
    section.figures["ttft_overhead_us"] = round(overhead_us, 1)
    section.figures["replay"] = {name: s.as_dict() for name, s in replays.items()}
    section.figures["replay_chunks"] = REPLAY_CHUNKS
    section.figures["memory"] = memories
    section.ratio("ttft overhead (µs)", overhead_us, "<= 100")
    for label in ("dict", "str"):
        hit = replays[f"replay {label} chunks (memollm hit)"].median_us
        plain = replays[f"{label} chunks from the generator itself"].median_us
        section.ratio(f"replay 2,000 {label} chunks (ms)", hit / 1e3)
        section.ratio(f"replay/generator, {label} chunks", hit / plain, "<= 1.2")
    for memory in memories:
        mb = memory["stream_bytes"] // 2**20
        section.ratio(f"recording peak / stream size, {mb} MB", memory["recording_peak_bytes"] / memory["stream_bytes"], "<= 1.5")
    rows = [[f"first chunk, {name}", fmt_us(s.median_us), fmt_us(s.p90_us)] for name, s in ttft.items()]
    rows += [[name, fmt_us(s.median_us), fmt_us(s.p90_us)] for name, s in replays.items()]
    print_table("streams: time to first chunk on a miss, and replaying 2,000 chunks", ["operation", "median", "p90"], rows)
    mib = 2**20
    table = []
    for memory in memories:
        size = memory["stream_bytes"]
        for name, peak in (("undecorated", memory["undecorated_peak_bytes"]), ("memollm (recording)", memory["recording_peak_bytes"])):
            table.append([f"{size // mib} MB, {name}", f"{peak / mib:.2f} MiB", f"{peak / size:.2f}"])
    print_table("streams: peak memory while passing a stream of 1 KB chunks through (tracemalloc)", ["generator", "peak", "x stream size"], table)
    print_ratios(section)
    return section
