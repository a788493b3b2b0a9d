"""Section "scale": hit and write latency in a small store against a large one (small values).

Both stores are filled through the decorator (the large one by several processes), then timed
side by side:
- hits cycle over 1,000 random existing entries, each read once beforehand (the files are in
  the OS cache at both sizes);
- first hits in a new process: the same entries read by a freshly spawned interpreter, so no
  in-process state holds them and every hit goes to the file;
- writes add new entries.
The index and the directory layout must not degrade with the number of entries.
"""

from __future__ import annotations

import itertools
import multiprocessing
import random
import time
from typing import Any, Callable, Optional

from .common import GcPaused, Section, Settings, Stats, fmt_us, measure, print_ratios, print_table, progress, remove_tree, stats_figures

NAME = "scale"
SAMPLE = 1_000  # distinct entries the hits cycle over
CHUNK = 5_000  # entries per population task
CALLS = [0]  # provider calls in this process: a "hit" that reaches it was a miss


def complete(prompt: str) -> dict[str, Any]:
    """The provider stub of this section: a small value."""
    CALLS[0] += 1
    return {"text": "ok", "prompt_chars": len(prompt)}


def prompt(i: int) -> str:
    return f"prompt number {i}"


def decorated(cache_dir: str) -> Callable[..., Any]:
    from memollm import cache_llm

    return cache_llm(cache_dir=cache_dir)(complete)  # type: ignore[no-any-return]


def _populate_chunk(job: tuple[str, int, int]) -> int:
    cache_dir, start, stop = job
    fn = decorated(cache_dir)
    for i in range(start, stop):
        fn(prompt(i))
    return stop - start


def populate(cache_dir: str, count: int, workers: int, budget: Optional[float]) -> int:
    """Write entries 0..count-1 through the decorator, in child processes; returns how many.

    With a ``budget`` (seconds), no new chunk starts once it is spent, so fewer entries may be
    written (always a prefix 0..n-1 of them).
    """
    started = time.perf_counter()
    jobs = iter([(cache_dir, start, min(count, start + CHUNK)) for start in range(0, count, CHUNK)])
    written, last_report = 0, started
    # Even a single chunk is written by a child process, so that this process opens every
    # store the same way (fresh) before timing it.
    with multiprocessing.get_context().Pool(max(1, min(workers, -(-count // CHUNK)))) as pool:
        pending: list[Any] = []
        while True:
            out_of_time = budget is not None and time.perf_counter() - started > budget
            while not out_of_time and len(pending) < workers:
                job = next(jobs, None)
                if job is None:
                    break
                pending.append(pool.apply_async(_populate_chunk, (job,)))
            if not pending:
                break
            written += pending.pop(0).get()
            now = time.perf_counter()
            if now - last_report >= 10:
                rate = written / (now - started)
                progress(f"  {written:,}/{count:,} entries ({rate:,.0f}/s, ~{(count - written) / rate:,.0f} s left at this rate)")
                last_report = now
        pool.close()
        pool.join()
    return written


def sample_prompts(count: int, rng: random.Random) -> tuple[list[str], str]:
    """Up to ``SAMPLE`` random existing prompts, and one more existing prompt outside them."""
    chosen = rng.sample(range(count), min(SAMPLE, count - 1))
    spare = next(i for i in range(count) if i not in set(chosen))
    return [prompt(i) for i in chosen], prompt(spare)


def hit_op(fn: Callable[..., Any], prompts: list[str]) -> Callable[[], Any]:
    """Hits cycling over ``prompts``, each read once now (so the OS cache holds their files)."""
    for p in prompts:
        fn(p)
    cycle = itertools.cycle(prompts).__next__
    return lambda: fn(cycle())


def _first_hits(job: tuple[str, list[str], str]) -> list[int]:
    """In a new process: the first hit of each prompt (no in-process state holds them yet)."""
    cache_dir, prompts, spare = job
    fn = decorated(cache_dir)
    fn(spare)  # the process's first call opens the store
    calls, samples = CALLS[0], []
    clock = time.perf_counter_ns
    with GcPaused():
        for p in prompts:
            start = clock()
            fn(p)
            samples.append(clock() - start)
    if CALLS[0] != calls:
        raise RuntimeError("scale: a first hit reached the provider")
    return samples


def first_hits(jobs: dict[str, tuple[str, list[str], str]], rounds: int) -> dict[str, Stats]:
    """``_first_hits`` for each store in fresh interpreters (spawned, so nothing is inherited)."""
    context = multiprocessing.get_context("spawn")
    samples: dict[str, list[int]] = {name: [] for name in jobs}
    for _ in range(rounds):
        for name, job in jobs.items():
            with context.Pool(1) as pool:
                samples[name] += pool.apply(_first_hits, (job,))
    return {name: Stats.of(s) for name, s in samples.items()}


def write_op(fn: Callable[..., Any], first: int) -> Callable[[], Any]:
    """Writes of new entries, numbered from ``first`` (past the populated ones)."""
    counter = itertools.count(first).__next__
    return lambda: fn(prompt(counter()))


def label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def run(settings: Settings) -> Section:
    section = Section(NAME)
    sizes = {"small": settings.small, "large": settings.large}
    fns: dict[str, Callable[..., Any]] = {}
    dirs: dict[str, str] = {}
    for which, wanted in sizes.items():
        cache_dir = settings.scratch_dir(f"scale-{which}")
        budget = settings.populate_budget if which == "large" else None
        limit = f", at most {budget:.0f} s" if budget else ""
        progress(f"scale: populating {wanted:,} entries through the decorator ({settings.workers} processes{limit})")
        started = time.perf_counter()
        count = populate(cache_dir, wanted, settings.workers, budget)
        seconds = time.perf_counter() - started
        section.figures[f"populate_{which}"] = {"entries": count, "seconds": round(seconds, 1), "entries_per_s": round(count / seconds)}
        if count < wanted:
            note = f"the {which} store has {count:,} entries, not {wanted:,}: populating stopped after the {budget:.0f} s budget"
            section.notes.append(note)
            progress(f"  {note}")
        sizes[which] = count
        fns[which] = decorated(cache_dir)
        dirs[which] = cache_dir
    rng = random.Random(7)
    small, large = label(sizes["small"]), label(sizes["large"])
    samples = {which: sample_prompts(sizes[which], rng) for which in sizes}
    calls_before = CALLS[0]
    hits = {f"hit@{small}": hit_op(fns["small"], samples["small"][0]), f"hit@{large}": hit_op(fns["large"], samples["large"][0])}
    if CALLS[0] != calls_before:
        raise RuntimeError(f"scale: {CALLS[0] - calls_before} of the sampled entries were missing from the populated stores")
    reps = 3 * SAMPLE if settings.quick else 10 * SAMPLE
    hit_stats = measure(hits, reps=reps, rounds=settings.rounds, warmup=0)
    if CALLS[0] != calls_before:
        raise RuntimeError("scale: a timed hit reached the provider")
    jobs = {f"first hit in a new process@{label(sizes[w])}": (dirs[w], *samples[w]) for w in sizes}
    first_stats = first_hits(jobs, rounds=2 if settings.quick else 5)
    write_reps = 300 if settings.quick else 2_000
    writes = {f"write@{small}": write_op(fns["small"], sizes["small"] + 1), f"write@{large}": write_op(fns["large"], sizes["large"] + 1)}
    write_stats = measure(writes, reps=write_reps, rounds=settings.rounds, warmup=settings.rounds)
    stats = {**hit_stats, **first_stats, **write_stats}
    section.figures["sizes"] = sizes
    section.figures["contenders"] = stats_figures(stats)
    section.ratio("hit large/small", hit_stats[f"hit@{large}"].median_us / hit_stats[f"hit@{small}"].median_us, "<= 1.2")
    section.ratio(
        "first hit in a new process large/small",
        first_stats[f"first hit in a new process@{large}"].median_us / first_stats[f"first hit in a new process@{small}"].median_us,
        "<= 1.2",
    )
    section.ratio("write large/small", write_stats[f"write@{large}"].median_us / write_stats[f"write@{small}"].median_us, "<= 1.2")
    for which, cache_dir in dirs.items():
        if sizes[which] > 100_000:
            progress(f"scale: removing the {sizes[which]:,}-entry store (this takes a while)")
        started = time.perf_counter()
        remove_tree(cache_dir)
        section.figures[f"remove_{which}_s"] = round(time.perf_counter() - started, 1)
    rows = [[name, fmt_us(s.median_us), fmt_us(s.p90_us)] for name, s in stats.items()]
    print_table(f"scale: memollm disk store, {sizes['small']:,} vs {sizes['large']:,} entries (small values)", ["operation", "median", "p90"], rows)
    print_ratios(section)
    return section
