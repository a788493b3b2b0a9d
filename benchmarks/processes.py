"""Section "processes": two processes hitting one cache dir, total hits per second against one.

The cache dir holds ``ENTRIES`` requests of the benchmark's size (the first worker fills it). In turns,
one process alone and two processes at once (fresh interpreters, started together) each serve
hits cycling over those entries for ``seconds``, and report how many they served. Per-process
state (the in-memory copy of recently read entries) and shared state (the index, the usage
counters every hit updates, the files) are both exercised: the total with two processes
should approach twice one process's, on a machine with at least two free cores.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from .common import Section, Settings, print_ratios, print_table, progress

NAME = "processes"
ENTRIES = 200
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The worker: decorate the same stub, warm every entry, wait for the common start time, then
# count hits until the common end. Any provider call is a failure (they must all hit).
WORKER = r"""
import json, sys, time
sys.path.insert(0, {root!r})
from benchmarks.common import RESPONSE, distinct_requests
from memollm import cache_llm

calls = []
@cache_llm(cache_dir={cache_dir!r})
def chat(messages, model, temperature, max_tokens):
    calls.append(1)
    return RESPONSE

requests = list(distinct_requests({entries}, "processes"))
for r in requests:  # the first worker to run fills the cache dir
    chat(**r)
del calls[:]
start, stop = {start}, {stop}
while time.time() < start:
    time.sleep(0.001)
hits, i, n = 0, 0, len(requests)
while time.time() < stop:
    for _ in range(100):
        chat(**requests[i])
        i = (i + 1) % n
    hits += 100
print(json.dumps({{"hits": hits, "calls": len(calls)}}))
"""


def burst(cache_dir: str, processes: int, seconds: float) -> float:
    """Total hits per second of ``processes`` workers running side by side."""
    start = time.time() + 1.5  # time for the interpreters to start and warm up
    code = WORKER.format(root=ROOT, cache_dir=cache_dir, entries=ENTRIES, start=start, stop=start + seconds)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(processes)]
    total = 0
    for proc in procs:
        out, err = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"processes: a worker failed: {err[-2000:]}")
        result = json.loads(out.strip().splitlines()[-1])
        if result["calls"] != 0:
            raise RuntimeError("processes: a worker's hit reached the provider")
        total += result["hits"]
    return total / seconds


def run(settings: Settings) -> Section:
    section = Section(NAME)
    cache_dir = settings.scratch_dir("processes")
    burst(cache_dir, 1, 0.1)  # fills the cache dir
    seconds = 1.0 if settings.quick else 3.0
    rounds = 2 if settings.quick else 5
    rates: dict[int, list[float]] = {1: [], 2: []}
    for r in range(rounds):
        for processes in (1, 2) if r % 2 == 0 else (2, 1):
            rates[processes].append(burst(cache_dir, processes, seconds))
        progress(f"  processes: round {r + 1}/{rounds}: 1 process {rates[1][-1]:,.0f} hits/s, 2 processes {rates[2][-1]:,.0f} hits/s")
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    section.figures.update(
        entries=ENTRIES, seconds_per_burst=seconds, rounds=rounds, cpu_count=os.cpu_count(),
        hits_per_s={"1 process": round(one), "2 processes": round(two)}, samples={str(k): [round(v) for v in vs] for k, vs in rates.items()},
    )  # fmt: skip
    section.ratio("2 processes/1 process (total hits/s)", two / one, ">= 1.8")
    print_table(
        f"processes: hits per second on one cache dir ({ENTRIES} entries, median of {rounds} bursts of {seconds:g} s)",
        ["processes", "total hits/s", "per process"],
        [["1", f"{one:,.0f}", f"{one:,.0f}"], ["2", f"{two:,.0f}", f"{two / 2:,.0f}"]],
    )
    print_ratios(section)
    return section
