"""Cache modes through the public API: semantics, precedence, contexts, CacheMiss."""

from __future__ import annotations

import asyncio
import threading

import pytest

import memollm
from memollm import CacheMiss, cache_llm, cache_mode


def counted(tmp_path, **options):
    calls = []

    @cache_llm(cache_dir=tmp_path, **options)
    def complete(prompt):
        calls.append(prompt)
        return f"answer {len(calls)}"

    return complete, calls


def test_readwrite_records_and_serves(tmp_path):
    complete, calls = counted(tmp_path)
    assert complete("a") == complete("a") == "answer 1"
    assert calls == ["a"]


def test_readonly_serves_hits_but_never_writes(tmp_path):
    complete, calls = counted(tmp_path)
    complete("recorded")
    with cache_mode("readonly"):
        assert complete("recorded") == "answer 1"
        assert complete("new") == "answer 2"
        assert complete("new") == "answer 3"  # never written, so called again
    assert complete.cache_info().entries == 1


@pytest.mark.parametrize("mode", ["readonly", "offline"])
def test_modes_that_never_write_do_not_create_the_cache_dir(tmp_path, mode):
    cache_dir = tmp_path / "not-there"
    complete, calls = counted(cache_dir, mode=mode)
    if mode == "offline":
        with pytest.raises(CacheMiss, match="does not exist"):
            complete("a")
    else:
        assert [complete("a"), complete("a")] == ["answer 1", "answer 2"]
    assert complete.cache_info().entries == 0
    assert complete.invalidate("a") is False
    complete.cache_clear()
    assert not cache_dir.exists()


def test_refresh_always_calls_and_overwrites(tmp_path):
    complete, calls = counted(tmp_path)
    complete("a")
    with cache_mode("refresh"):
        assert complete("a") == "answer 2"
        assert complete("a") == "answer 3"
    assert complete("a") == "answer 3"  # the refreshed entry is what readwrite serves now


def test_offline_serves_hits_and_raises_cache_miss(tmp_path):
    complete, calls = counted(tmp_path)
    complete("recorded")
    with cache_mode("offline"):
        assert complete("recorded") == "answer 1"
        with pytest.raises(CacheMiss) as info:
            complete("never recorded")
    assert calls == ["recorded"]
    message = str(info.value)
    assert "complete" in message and complete.cache_key("never recorded") in message
    assert str(tmp_path) in message and "readwrite" in message
    assert info.value.key == complete.cache_key("never recorded")
    assert isinstance(info.value, LookupError)


def test_off_bypasses_and_touches_nothing(tmp_path):
    complete, calls = counted(tmp_path / "cache")
    with cache_mode("off"):
        assert complete("a") == "answer 1"
        assert complete("a") == "answer 2"
    assert not (tmp_path / "cache").exists()
    assert complete.cache_info().hits == 0


def test_precedence_context_then_environment_then_decorator(tmp_path, monkeypatch):
    complete, calls = counted(tmp_path, mode="offline")
    with pytest.raises(CacheMiss):
        complete("a")  # the author's default
    monkeypatch.setenv("MEMOLLM_MODE", "readwrite")
    assert complete("a") == "answer 1"  # the operator's environment beats the decorator
    monkeypatch.setenv("MEMOLLM_MODE", "off")
    with cache_mode("readwrite"):
        assert complete("a") == "answer 1"  # the call site's context beats the environment
    assert complete("a") == "answer 2"  # off: bypassed


def test_default_mode_is_readwrite(tmp_path):
    complete, calls = counted(tmp_path)
    complete("x")
    complete("x")
    assert len(calls) == 1


@pytest.mark.parametrize("bad", ["fast", "", "read-only", 3])
def test_unknown_mode_lists_valid_ones(tmp_path, bad):
    with pytest.raises(ValueError) as info:
        cache_mode(bad)  # at the call, before any block is entered
    for mode in ("readwrite", "readonly", "refresh", "offline", "off"):
        assert mode in str(info.value)
    with pytest.raises(ValueError):
        cache_llm(mode=bad)


def test_unknown_environment_mode_names_the_variable(tmp_path, monkeypatch):
    complete, _ = counted(tmp_path)
    monkeypatch.setenv("MEMOLLM_MODE", "sometimes")
    with pytest.raises(ValueError, match="MEMOLLM_MODE"):
        complete("a")


def test_mode_enum_and_case_are_accepted(tmp_path):
    complete, calls = counted(tmp_path)
    with cache_mode(memollm.Mode.OFF):
        complete("a")
    with cache_mode("OFFLINE"):
        with pytest.raises(CacheMiss):
            complete("a")


def test_asyncio_tasks_inherit_the_mode(tmp_path):
    calls = []

    @cache_llm(cache_dir=tmp_path)
    async def complete(prompt):
        calls.append(prompt)
        return prompt

    async def main():
        with cache_mode("offline"):
            task = asyncio.create_task(complete("unrecorded"))
            with pytest.raises(CacheMiss):
                await task

    asyncio.run(main())
    assert calls == []


def test_new_threads_do_not_inherit_the_context(tmp_path):
    complete, calls = counted(tmp_path)
    outcome = []
    with cache_mode("offline"):
        thread = threading.Thread(target=lambda: outcome.append(complete("t")))
        thread.start()
        thread.join()
    assert outcome == ["answer 1"]  # the thread ran in readwrite: contextvars start empty there


def test_cache_miss_is_not_swallowed_when_the_store_is_broken(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    complete, calls = counted(blocker / "cache")
    with pytest.warns(memollm.CacheWarning):
        assert complete("a") == "answer 1"  # fail-open in readwrite
    with cache_mode("offline"):
        with pytest.raises(CacheMiss):
            complete("a")


def test_offline_streams_raise_at_iteration(tmp_path):
    @cache_llm(cache_dir=tmp_path)
    def tokens(prompt):
        yield from prompt.split()

    with cache_mode("offline"):
        stream = tokens("a b")
        with pytest.raises(CacheMiss):
            next(stream)


def test_offline_call_with_a_wrong_argument_raises_the_functions_type_error(tmp_path):
    @cache_llm(cache_dir=tmp_path)
    def complete(prompt, model="m"):
        return prompt

    with cache_mode("offline"):
        with pytest.raises(TypeError, match="unexpected keyword"):
            complete(prompt="a", modle="typo")
