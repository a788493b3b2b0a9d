"""Section "savings": total wall time of realistic workloads with and without memollm.

A simulated provider answers after a lognormal delay: time to first token 150-600 ms, then
8-120 tokens streamed at 50 tokens/s, so a call takes 0.3-3 s (median about 1.2 s). Each
prompt's latency is fixed by its text, so a repeated prompt costs the same every time.
All sleeps are multiplied by ``--time-scale``; the figures are reported as measured and
"projected" back to real latency: measured wall time plus the provider time the scaling
took away (the cache's own overhead is not scaled).

Workloads:
- eval re-run: N prompts, run twice (the second run is what re-running an eval costs).
- dev loop: streamed calls while editing a prompt; about 70% of the calls repeat an earlier one.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from typing import Any, Callable, Iterator, Sequence

import xxhash

from .common import Section, Settings, fmt_s, make_request, print_ratios, print_table, progress

NAME = "savings"
TOKENS_PER_S = 50.0
REPEAT_SHARE = 0.7


class Provider:
    """A fake LLM API with a realistic latency per prompt, scaled by ``time_scale``."""

    def __init__(self, time_scale: float) -> None:
        self.time_scale = time_scale
        self.calls = 0
        self.nominal_seconds = 0.0  # unscaled latency of the calls made

    @staticmethod
    def profile(messages: list[dict[str, str]]) -> tuple[float, int]:
        """(time to first token in s, completion tokens) of a prompt, fixed by its text."""
        rng = random.Random(xxhash.xxh3_64_intdigest(json.dumps(messages).encode()))
        ttft = min(0.6, max(0.15, rng.lognormvariate(-1.05, 0.5)))  # median 0.35 s
        tokens = int(min(120, max(8, rng.lognormvariate(3.8, 0.7))))  # median 45 tokens
        return ttft, tokens

    @classmethod
    def latency(cls, messages: list[dict[str, str]]) -> float:
        ttft, tokens = cls.profile(messages)
        return ttft + tokens / TOKENS_PER_S

    def _begin(self, messages: list[dict[str, str]]) -> tuple[float, int]:
        ttft, tokens = self.profile(messages)
        self.calls += 1
        self.nominal_seconds += ttft + tokens / TOKENS_PER_S
        return ttft, tokens

    def _sleep_until(self, deadline: float) -> None:
        remaining = deadline - time.perf_counter()
        if remaining > 0:
            time.sleep(remaining)

    def function(self, streaming: bool) -> Callable[..., Any]:
        """A plain function calling the provider, as users decorate it."""
        method = self.stream if streaming else self.complete

        def chat(messages: list[dict[str, str]], model: str, temperature: float, max_tokens: int) -> Any:
            return method(messages, model, temperature, max_tokens)

        def chat_stream(messages: list[dict[str, str]], model: str, temperature: float, max_tokens: int) -> Iterator[str]:
            yield from method(messages, model, temperature, max_tokens)

        return chat_stream if streaming else chat

    def complete(self, messages: list[dict[str, str]], model: str, temperature: float, max_tokens: int) -> dict[str, Any]:
        """A non-streaming chat completion."""
        start = time.perf_counter()
        ttft, tokens = self._begin(messages)
        self._sleep_until(start + (ttft + tokens / TOKENS_PER_S) * self.time_scale)
        return {"model": model, "choices": [{"message": {"role": "assistant", "content": " tok" * tokens}}], "usage": {"completion_tokens": tokens}}

    def stream(self, messages: list[dict[str, str]], model: str, temperature: float, max_tokens: int) -> Iterator[str]:
        """A streamed chat completion: one token at a time, at ``TOKENS_PER_S``."""
        start = time.perf_counter()
        ttft, tokens = self._begin(messages)
        for i in range(tokens):
            self._sleep_until(start + (ttft + i / TOKENS_PER_S) * self.time_scale)
            yield " tok"


def prompt(i: int, edit: int = 0) -> dict[str, Any]:
    """A distinct ~4 KB chat request (``edit`` numbers the revisions of a dev-loop prompt)."""
    return make_request(i % 50, suffix=f" [prompt {i}, revision {edit}]")


def dev_loop_workload(count: int, rng: random.Random) -> list[dict[str, Any]]:
    """``count`` calls: a new prompt revision 30% of the time, else one tried before."""
    seen: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for _ in range(count):
        if not seen or rng.random() >= REPEAT_SHARE:
            seen.append(prompt(len(seen), edit=len(seen)))
            calls.append(seen[-1])
        else:
            calls.append(rng.choice(seen))
    return calls


def run_workload(calls: list[dict[str, Any]], call: Callable[..., Any], provider: Provider, streaming: bool) -> dict[str, Any]:
    """Wall time of making ``calls`` in order (streams consumed to the end)."""
    started = time.perf_counter()
    for request in calls:
        result = call(**request)
        if streaming:
            "".join(result)
    measured = time.perf_counter() - started
    projected = measured + provider.nominal_seconds * (1 - provider.time_scale)
    return {"measured_s": round(measured, 4), "projected_s": round(projected, 3), "provider_calls": provider.calls}


def compare(name: str, calls: list[dict[str, Any]], settings: Settings, streaming: bool = False, prefill: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The workload without and with memollm; ``prefill`` calls fill the cache first (untimed)."""
    from memollm import cache_llm

    plain = Provider(settings.time_scale)
    without = run_workload(calls, plain.function(streaming), plain, streaming)
    provider = Provider(settings.time_scale)
    cached = cache_llm(cache_dir=settings.scratch_dir(f"savings-{name}"))(provider.function(streaming))
    if prefill:
        run_workload(list(prefill), cached, provider, streaming)
        provider.calls, provider.nominal_seconds = 0, 0.0
    with_cache = run_workload(calls, cached, provider, streaming)
    return {
        "calls": len(calls),
        "unique_prompts": len({json.dumps(c["messages"]) for c in calls}),
        "streaming": streaming,
        "without": without,
        "with_memollm": with_cache,
        "speedup": round(without["projected_s"] / with_cache["projected_s"], 2),
        "speedup_measured": round(without["measured_s"] / with_cache["measured_s"], 2),
        "saved_s": round(without["projected_s"] - with_cache["projected_s"], 1),
    }


def run(settings: Settings) -> Section:
    section = Section(NAME)
    n_eval = 20 if settings.quick else 100
    n_dev = 60 if settings.quick else 200
    progress(f"savings: simulated provider, sleeps scaled by {settings.time_scale}")
    prompts = [prompt(i) for i in range(n_eval)]
    dev_calls = dev_loop_workload(n_dev, random.Random(11))
    workloads = {
        "eval re-run (2 runs)": compare("eval", prompts + prompts, settings),
        "eval second run": compare("eval-second", prompts, settings, prefill=prompts),
        "dev loop (streamed)": compare("dev", dev_calls, settings, streaming=True),
    }
    latencies = sorted(Provider.latency(c["messages"]) for c in {json.dumps(c): c for c in prompts + dev_calls}.values())
    section.figures["time_scale"] = settings.time_scale
    section.figures["provider"] = {
        "latency_s": {"min": round(latencies[0], 2), "median": round(statistics.median(latencies), 2), "p90": round(latencies[int(0.9 * (len(latencies) - 1))], 2), "max": round(latencies[-1], 2)},
        "tokens_per_s": TOKENS_PER_S,
    }
    section.figures["workloads"] = workloads
    for name, w in workloads.items():
        section.ratio(f"speed-up, {name}", w["speedup"])
    rows = [
        [
            name,
            w["calls"],
            f"{w['without']['provider_calls']} / {w['with_memollm']['provider_calls']}",
            fmt_s(w["without"]["projected_s"]),
            fmt_s(w["with_memollm"]["projected_s"]),
            f"{w['speedup']:,.1f}x",
            f"{fmt_s(w['without']['measured_s'])} / {fmt_s(w['with_memollm']['measured_s'])}",
        ]
        for name, w in workloads.items()
    ]
    print_table(
        f"latency savings, projected to real provider latency (measured with every sleep x{settings.time_scale})",
        ["workload", "calls", "provider calls without / with", "without", "with memollm", "speed-up", "measured without / with"],
        rows,
    )
    print_ratios(section)
    return section
