"""``memollm.observe()``: one record per cached call made in the block, in order, in this thread or task."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import openai
import pytest

import memollm
from memollm import CacheMiss, CallRecord, cache_llm, cache_mode, observe

pytestmark = pytest.mark.timeout(60)
GPT = "gpt-4o-mini"


def test_records_hit_miss_bypass_and_offline_miss_in_order(tmp_path):
    @cache_llm(cache_dir=tmp_path)
    def answer(prompt: str) -> str:
        return "re: " + prompt

    with observe() as calls:
        answer("a")
        answer("a")
        with cache_mode("off"):
            answer("a")
        with pytest.raises(TypeError):
            answer("a", "unexpected")  # arguments the function rejects: not cached, its own error
        with cache_mode("offline"), pytest.raises(CacheMiss):
            answer("never recorded")
    assert [c.outcome for c in calls] == ["miss", "hit", "bypass", "bypass", "offline-miss"]
    assert all(isinstance(c, CallRecord) and c.function == f"{__name__}.{answer.__qualname__}" for c in calls)
    assert calls[0].key == calls[1].key == answer.cache_key("a")
    assert calls[2].key is None and calls[3].key is None
    assert calls[4].key == answer.cache_key("never recorded")
    assert all(c.sample is None for c in calls)
    assert calls[0].seconds_saved == 0 and calls[0].tokens_saved == 0 and calls[0].dollars_saved == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        calls[0].outcome = "hit"  # type: ignore[misc]


def test_a_hit_saves_the_original_time_tokens_and_dollars(tmp_path, server, oai):
    genai_prices = pytest.importorskip("genai_prices")

    @cache_llm(cache_dir=tmp_path, ignore=("client",))
    def chat(client: openai.OpenAI, prompt: str):
        return client.chat.completions.create(model=GPT, messages=[{"role": "user", "content": prompt}])

    @cache_llm(cache_dir=tmp_path)
    def local(prompt: str) -> dict:
        return {"model": "my-own-finetune-v3", "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}

    with observe() as calls:
        first = chat(oai, "one two")
        chat(oai, "one two")
        local("x")
        local("x")
    miss, hit, _, unknown = calls
    assert (miss.outcome, hit.outcome) == ("miss", "hit")
    assert hit.tokens_saved == first.usage.total_tokens > 0
    assert hit.seconds_saved > 0
    price = genai_prices.calc_price(genai_prices.Usage(input_tokens=first.usage.prompt_tokens, output_tokens=first.usage.completion_tokens), GPT)
    assert hit.dollars_saved == pytest.approx(float(price.total_price))
    assert unknown.outcome == "hit" and unknown.tokens_saved == 6 and unknown.dollars_saved is None  # never a guess
    assert server.request_count == 1


def test_nested_blocks_each_see_their_calls(tmp_path):
    @cache_llm(cache_dir=tmp_path)
    def f(x: int) -> int:
        return x

    with observe() as outer:
        f(1)
        with observe() as inner:
            f(1)
            f(2)
        f(2)
    assert [(c.outcome, c.key) for c in outer] == [("miss", f.cache_key(1)), ("hit", f.cache_key(1)), ("miss", f.cache_key(2)), ("hit", f.cache_key(2))]
    assert inner == outer[1:3]
    f(3)  # outside any block: nobody records it
    assert len(outer) == 4


def test_other_threads_calls_are_not_recorded(tmp_path):
    @cache_llm(cache_dir=tmp_path)
    def f(x: int) -> int:
        return x

    started, release = threading.Event(), threading.Event()
    seen: list[list[CallRecord]] = []

    def other() -> None:
        with observe() as mine:
            started.set()
            release.wait(10)
            f(10)
        seen.append(mine)

    thread = threading.Thread(target=other)
    thread.start()
    started.wait(10)
    with observe() as calls:
        f(1)
        f(1)
        release.set()
        thread.join(10)
    assert [c.key for c in calls] == [f.cache_key(1)] * 2
    assert [c.key for c in seen[0]] == [f.cache_key(10)]


def test_each_task_sees_its_own_calls(tmp_path):
    @cache_llm(cache_dir=tmp_path)
    async def f(x: int) -> int:
        await asyncio.sleep(0)
        return x

    async def task(x: int) -> list[CallRecord]:
        with observe() as calls:
            for _ in range(3):
                await f(x)
                await asyncio.sleep(0)
        return calls

    async def main() -> tuple[list[CallRecord], list[list[CallRecord]]]:
        with observe() as outer:
            results = await asyncio.gather(task(1), task(2))
        return outer, results

    outer, (one, two) = asyncio.run(main())
    assert [c.outcome for c in one] == ["miss", "hit", "hit"] and {c.key for c in one} == {f.cache_key(1)}
    assert [c.outcome for c in two] == ["miss", "hit", "hit"] and {c.key for c in two} == {f.cache_key(2)}
    # The tasks started in the outer block are inside it: it sees all six calls.
    assert sorted(c.key for c in outer) == sorted(c.key for c in one + two)


def test_streams_and_generators_are_recorded(tmp_path):
    @cache_llm(cache_dir=tmp_path)
    def words(text: str):
        yield from text.split()

    with observe() as calls:
        assert list(words("a b")) == ["a", "b"]
        assert list(words("a b")) == ["a", "b"]
    assert [c.outcome for c in calls] == ["miss", "hit"]


def test_memory_store_and_method_calls(tmp_path):
    class Bot:
        @cache_llm(store="memory", ignore=("self",))
        def ask(self, q: str) -> str:
            return q.upper()

    bot = Bot()
    with observe() as calls:
        bot.ask("observe-me")
        bot.ask("observe-me")
    assert [c.outcome for c in calls] == ["miss", "hit"]
    assert calls[0].function.endswith("Bot.ask")


def test_a_block_leaves_no_observer_behind(tmp_path):
    from memollm import observers

    before = list(observers.read_observers)
    with pytest.raises(RuntimeError):
        with observe():
            raise RuntimeError("boom")
    assert observers.read_observers == before and observers.watching == 0
    assert memollm.observe is observe


def test_records_carry_the_sample_index(tmp_path):
    @cache_llm(cache_dir=tmp_path, samples=2)
    def pick(prompt: str) -> str:
        return prompt

    with observe() as calls:
        for _ in range(4):
            pick("p")
    assert [(c.outcome, c.sample) for c in calls] == [("miss", 0), ("miss", 1), ("hit", 0), ("hit", 1)]
