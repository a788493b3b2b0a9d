"""``memollm demo``: a simulated LLM provider called twice through ``@cache_llm``, with timings.

No network and no API key: the provider sleeps like a real one (300-800 ms per completion,
about 30 ms between streamed tokens). ``MEMOLLM_DEMO_LATENCY`` (or ``--latency-scale``)
multiplies those delays, e.g. ``0.01`` for a fast run in tests. By default the demo caches
into a temporary directory that it removes afterwards.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from typing import Any, Iterator, Optional, TextIO

from . import cache_llm, cache_mode
from .stores.disk import DiskStore

LATENCY_ENV = "MEMOLLM_DEMO_LATENCY"

PROMPT = "In one sentence, why cache LLM calls?"
STREAM_PROMPT = "Write a haiku about caches."
_ANSWERS = {
    PROMPT: "Because an identical request deserves an identical answer, and fetching it from disk takes microseconds "
    "instead of seconds and costs nothing.",
    STREAM_PROMPT: "Same prompt, same words; / the answer waits on the disk, / instant as a thought.",
}


def latency_scale(value: Optional[float] = None) -> float:
    """The delay multiplier: ``value``, else ``$MEMOLLM_DEMO_LATENCY``, else 1."""
    if value is None:
        text = os.environ.get(LATENCY_ENV, "").strip()
        if not text:
            return 1.0
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{LATENCY_ENV}={text!r} must be a number (a latency multiplier such as 0.01)") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"the demo latency scale must be a finite number >= 0, not {value!r}")
    return float(value)


class SimulatedProvider:
    """Answers like a chat-completions API, with realistic delays; counts its calls."""

    def __init__(self, scale: float = 1.0, seed: int = 0) -> None:
        self.scale = scale
        self.calls = 0
        self._rng = random.Random(seed)

    def _answer(self, messages: list[dict[str, str]]) -> str:
        prompt = messages[-1]["content"]
        return _ANSWERS.get(prompt, f"A simulated answer to: {prompt}")

    def chat(self, messages: list[dict[str, str]], model: str, temperature: float) -> dict[str, Any]:
        """One completion, in the OpenAI response shape (as a dict)."""
        self.calls += 1
        time.sleep(self._rng.uniform(0.3, 0.8) * self.scale)
        text = self._answer(messages)
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        completion_tokens = len(text.split())
        return {
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def stream(self, messages: list[dict[str, str]], model: str, temperature: float) -> Iterator[str]:
        """The same answer token by token, about 30 ms apart."""
        self.calls += 1
        time.sleep(self._rng.uniform(0.2, 0.4) * self.scale)  # time to first token
        for word in self._answer(messages).split(" "):
            time.sleep(self._rng.uniform(0.02, 0.04) * self.scale)
            yield word + " "


# The helpers a user would write; run() applies @cache_llm to them.


def complete(prompt: str, model: str = "sim-1", temperature: float = 0.0, client: Optional[SimulatedProvider] = None) -> dict[str, Any]:
    """Ask the provider for a completion."""
    assert client is not None
    return client.chat([{"role": "user", "content": prompt}], model=model, temperature=temperature)


def stream_answer(prompt: str, model: str = "sim-1", temperature: float = 0.0, client: Optional[SimulatedProvider] = None) -> Iterator[str]:
    """Stream the provider's answer token by token."""
    assert client is not None
    yield from client.stream([{"role": "user", "content": prompt}], model=model, temperature=temperature)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def _speedup(miss: float, hit: float) -> str:
    return f"{miss / hit:,.0f}x faster" if hit > 0 else "instant"


def run(out: Optional[TextIO] = None, scale: Optional[float] = None, cache_dir: Optional[str] = None) -> int:
    """Run the demo, printing to ``out``; returns an exit code.

    With ``cache_dir`` the demo's entries are kept there (to look at with ``memollm ls``);
    otherwise a temporary directory is used and removed.
    """
    out = out or sys.stdout
    factor = latency_scale(scale)
    temporary = cache_dir is None
    path = tempfile.mkdtemp(prefix="memollm-demo-") if cache_dir is None else os.path.abspath(cache_dir)
    store = DiskStore(path)
    try:
        with cache_mode("readwrite"), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _run(out, SimulatedProvider(factor), store, path, temporary)
        for w in caught:
            out.write(f"note: {w.message}\n")
    finally:
        store.close()
        if temporary:
            shutil.rmtree(path, ignore_errors=True)
    return 0


def _run(out: TextIO, provider: SimulatedProvider, store: DiskStore, path: str, temporary: bool) -> None:
    def say(line: str = "") -> None:
        out.write(line + "\n")
        out.flush()

    cached_complete: Any = cache_llm(store=store, ignore=("client",))(complete)
    cached_stream: Any = cache_llm(store=store, ignore=("client",))(stream_answer)
    cached_complete.cache_clear()  # a kept cache dir from an earlier run would turn call 1 into a hit
    cached_stream.cache_clear()

    say("memollm demo: a simulated LLM provider (no network, no API key) behind @cache_llm")
    say(f"cache dir: {path}" + (" (temporary, removed afterwards)" if temporary else ""))
    say()
    say("1. A helper returning a completion")
    say("     @cache_llm(ignore=('client',))")
    say("     def complete(prompt, model='sim-1', temperature=0.0, client=None): ...")
    say()
    t0 = time.perf_counter()
    first = cached_complete(PROMPT, client=provider)
    miss = time.perf_counter() - t0
    say(f"   call 1  miss  {_ms(miss):>12}  {first['choices'][0]['message']['content']}")
    calls = provider.calls
    t0 = time.perf_counter()
    second = cached_complete(PROMPT, client=provider)
    hit = time.perf_counter() - t0
    served = provider.calls == calls
    say(f"   call 2  {'hit ' if served else 'miss'}  {_ms(hit):>12}  {'the same answer, from the cache' if second == first else 'a different answer'}")
    if served:
        say(f"   speed-up: {_speedup(miss, hit)} ({first['usage']['total_tokens']} tokens not paid for twice)")
    say()

    say("2. A streaming helper (a generator yielding tokens)")
    say("     @cache_llm(ignore=('client',))")
    say("     def stream_answer(prompt, model='sim-1', temperature=0.0, client=None): yield from ...")
    say()
    live = _consume(out, "   call 1  live   ", cached_stream(STREAM_PROMPT, client=provider))
    calls = provider.calls
    replay = _consume(out, "   call 2  replay ", cached_stream(STREAM_PROMPT, client=provider))
    if provider.calls == calls:
        say(f"   speed-up: {_speedup(live[1], replay[1])}, {replay[0]} chunks replayed in order")
    else:
        say("   (this version of memollm did not replay the stream from the cache: the provider was called again)")
    say()
    info = cached_complete.cache_info()
    say(f"cache_info() of complete: hits={info.hits} misses={info.misses} entries={info.entries} "
        f"seconds_saved={info.seconds_saved:.3f} tokens_saved={info.tokens_saved}")
    if not temporary:
        say(f"entries kept: look at them with `memollm ls --cache-dir {path}`")


def _consume(out: TextIO, label: str, chunks: Iterator[str]) -> tuple[int, float]:
    """Print a stream as it arrives; returns (chunk count, seconds)."""
    out.write(label)
    out.flush()
    count = 0
    start = time.perf_counter()
    for chunk in chunks:
        out.write(chunk)
        out.flush()
        count += 1
    elapsed = time.perf_counter() - start
    out.write(f"\n{' ' * len(label)}{count} chunks in {_ms(elapsed)}\n")
    out.flush()
    return count, elapsed
