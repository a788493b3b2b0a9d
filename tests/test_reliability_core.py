"""Issue 13's items that live in the cache core: memory released after replaying large streams,
and objects both iterable and async-iterable recorded the way the caller consumes them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest

from memollm import cache_llm


def test_replaying_large_streams_does_not_keep_them_in_memory(tmp_path: Path) -> None:
    """Four different 20 MB streams replayed in one process: what stays allocated afterwards
    is bounded (verified entries are kept by bytes, large ones not at all), not 4 x 20 MB."""
    script = textwrap.dedent(
        f"""
        import gc, json, sys, tracemalloc
        from memollm import cache_llm

        @cache_llm(cache_dir={str(tmp_path)!r})
        def tokens(seed):
            for i in range(2000):
                yield f"{{seed}}-{{i}}-" + "x" * 10_000

        for seed in range(4):                      # record
            for _ in tokens(seed):
                pass
        tracemalloc.start()
        after = []
        for seed in range(4):                      # replay, in a process where all are recorded
            total = sum(len(c) for c in tokens(seed))
            assert total > 20_000_000
            gc.collect()
            after.append(tracemalloc.get_traced_memory()[0])
        print(json.dumps(after))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    after = json.loads(done.stdout)
    assert max(after) < 25 * 2**20, after  # at most about one stream's worth, never all four


class BothWays:
    """Iterable and async-iterable, like litellm's CustomStreamWrapper."""

    def __init__(self, chunks: list[str]) -> None:
        self.chunks = iter(chunks)

    def __iter__(self) -> "BothWays":
        return self

    def __next__(self) -> str:
        return next(self.chunks)

    def __aiter__(self) -> "BothWays":
        return self

    async def __anext__(self) -> str:
        try:
            return next(self.chunks)
        except StopIteration:
            raise StopAsyncIteration from None


def test_a_sync_function_returning_a_both_ways_stream_is_recorded_by_for(tmp_path: Path) -> None:
    calls = []

    @cache_llm(cache_dir=tmp_path)
    def stream(prompt: str) -> Any:
        calls.append(prompt)
        return BothWays(["a", "b", "c"])

    assert list(stream("p")) == ["a", "b", "c"]
    assert list(stream("p")) == ["a", "b", "c"]
    assert calls == ["p"]


def test_an_async_function_returning_a_both_ways_stream_is_recorded_by_async_for(tmp_path: Path) -> None:
    import asyncio

    calls = []

    @cache_llm(cache_dir=tmp_path)
    async def stream(prompt: str) -> Any:
        calls.append(prompt)
        return BothWays(["a", "b"])

    async def consume() -> list[str]:
        return [c async for c in await stream("p")]

    assert asyncio.run(consume()) == ["a", "b"]
    assert asyncio.run(consume()) == ["a", "b"]
    assert calls == ["p"]


@pytest.mark.timeout(300)
def test_litellm_custom_stream_wrapper_is_recorded_and_replayed(tmp_path: Path) -> None:
    """litellm's real ``CustomStreamWrapper`` (``stream=True`` with a mock response, no network)."""
    script = textwrap.dedent(
        f"""
        import json, litellm
        from memollm import cache_llm
        calls = []

        @cache_llm(cache_dir={str(tmp_path)!r})
        def complete(prompt):
            calls.append(prompt)
            return litellm.completion(model="gpt-4o-mini", messages=[{{"role": "user", "content": prompt}}],
                                      mock_response="hello there friend", stream=True)

        first = [c.choices[0].delta.content for c in complete("hi")]
        second = [c.choices[0].delta.content for c in complete("hi")]
        print(json.dumps([first, second, len(calls)]))
        """
    )
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr
    first, second, calls = json.loads(done.stdout.strip().splitlines()[-1])
    assert "".join(c for c in first if c) == "hello there friend"
    assert second == first and calls == 1


def test_generator_recording_is_unchanged(tmp_path: Path) -> None:
    @cache_llm(cache_dir=tmp_path)
    def tokens(prompt: str) -> Iterator[str]:
        yield from prompt

    assert list(tokens("ab")) == list(tokens("ab")) == ["a", "b"]
