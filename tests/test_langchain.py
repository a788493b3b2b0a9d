"""``MemollmCache``, the LangChain adapter: LangChain's standard cache suites, and a fake chat model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.caches import BaseCache  # noqa: E402
from langchain_core.globals import get_llm_cache, set_llm_cache  # noqa: E402
from langchain_core.language_models.fake_chat_models import FakeListChatModel  # noqa: E402
from langchain_core.messages import AIMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, Generation  # noqa: E402
from langchain_tests.integration_tests import AsyncCacheTestSuite, SyncCacheTestSuite  # noqa: E402

import memollm  # noqa: E402
from memollm import codec, config, entry  # noqa: E402
from memollm.integrations.langchain import FUNCTION_ID, MemollmCache  # noqa: E402
from memollm.stores.memory import MemoryStore  # noqa: E402


class TestMemollmCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, tmp_path) -> BaseCache:
        return MemollmCache(cache_dir=tmp_path / "lc-cache")


# The suite's async tests carry no marker (pytest-asyncio's auto mode is not on here): mark the
# classes; the suite's one sync test then draws a harmless "not an async function" warning.
ASYNC_SUITE = [pytest.mark.asyncio, pytest.mark.filterwarnings("ignore:The test <Function test_no_overrides:pytest.PytestWarning")]


class TestMemollmCacheAsync(AsyncCacheTestSuite):
    pytestmark = ASYNC_SUITE

    @pytest.fixture
    def cache(self, tmp_path) -> BaseCache:
        return MemollmCache(cache_dir=tmp_path / "lc-cache")


class TestMemollmCacheSyncMemoryStore(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self) -> BaseCache:
        return MemollmCache(store=MemoryStore())


# The suite's async tests carry no marker (pytest-asyncio's auto mode is not on here): mark the
# class; the suite's one sync test then draws a harmless "not an async function" warning.
ASYNC_SUITE = [pytest.mark.asyncio, pytest.mark.filterwarnings("ignore:The test <Function test_no_overrides:pytest.PytestWarning")]


class TestMemollmCacheAsyncMemoryStore(AsyncCacheTestSuite):
    pytestmark = ASYNC_SUITE

    @pytest.fixture
    def cache(self) -> BaseCache:
        return MemollmCache(store=MemoryStore())


@pytest.fixture
def global_cache(tmp_path):
    """Install a MemollmCache as LangChain's global LLM cache, and remove it afterwards."""
    previous = get_llm_cache()
    cache = MemollmCache(cache_dir=tmp_path / "lc-cache")
    set_llm_cache(cache)
    yield cache
    set_llm_cache(previous)


def test_second_invoke_is_served_from_the_cache(global_cache, tmp_path):
    model = FakeListChatModel(responses=["first", "second"])
    assert model.invoke("hello").content == "first"
    assert model.invoke("hello").content == "first"  # not "second": the model was not called
    assert model.i == 1
    assert model.invoke("another prompt").content == "second"
    assert model.i == 0

    # A new adapter on the same dir (a new process, say) and a fresh model with the same config.
    set_llm_cache(MemollmCache(cache_dir=tmp_path / "lc-cache"))
    fresh = FakeListChatModel(responses=["first", "second"])
    assert fresh.invoke("hello").content == "first"
    assert fresh.i == 0


@pytest.mark.asyncio
async def test_second_ainvoke_is_served_from_the_cache(global_cache):
    model = FakeListChatModel(responses=["first", "second"])
    assert (await model.ainvoke("hello")).content == "first"
    assert (await model.ainvoke("hello")).content == "first"
    assert model.i == 1


def test_modes_apply_to_langchain_calls(global_cache):
    model = FakeListChatModel(responses=["a", "b", "c"])
    model.invoke("recorded")
    with memollm.cache_mode("offline"):
        assert model.invoke("recorded").content == "a"
        with pytest.raises(memollm.CacheMiss) as info:
            model.invoke("never recorded")
    assert model.i == 1  # the model was not called on the offline miss
    assert info.value.function == FUNCTION_ID
    assert info.value.cache_dir == global_cache.store().location
    assert "'readwrite'" in str(info.value) and info.value.key in str(info.value)

    with memollm.cache_mode("readonly"):
        assert model.invoke("not stored").content == "b"
    assert model.invoke("not stored").content == "c"  # readonly did not write it

    with memollm.cache_mode("refresh"):
        assert model.invoke("recorded").content == "a"  # called again (cycled back to "a"), overwritten
    assert model.i == 1

    with memollm.cache_mode("off"):
        assert model.invoke("recorded").content == "b"


def test_entries_are_memollm_entries_in_msgpack(tmp_path):
    cache = MemollmCache(cache_dir=tmp_path, ttl=3600)
    generations = [ChatGeneration(message=AIMessage(content="hi", usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}))]
    cache.update("prompt", "llm", generations)
    assert cache.lookup("prompt", "llm") == generations

    store = config.disk_store(tmp_path)
    (meta,) = list(store.entries(FUNCTION_ID))
    assert meta.key == cache.key("prompt", "llm")
    assert meta.tokens == 7
    assert meta.expires is not None and meta.expires - meta.created == pytest.approx(3600)
    raw = store.get(FUNCTION_ID, meta.key)
    stored_meta, body = entry.read_meta(raw)
    payload = codec.decode(body)  # plain msgpack data, decodable without pickle
    assert payload[0]["id"][-1] == "ChatGeneration"
    assert payload[0]["kwargs"]["message"]["kwargs"]["content"] == "hi"


def test_keys_depend_on_prompt_and_llm_string():
    cache = MemollmCache(store=MemoryStore())
    key = cache.key("prompt", "llm")
    assert len(key) == 32 and key == MemollmCache(store=MemoryStore()).key("prompt", "llm")
    assert len({key, cache.key("prompt", "llm2"), cache.key("prompt2", "llm"), cache.key("llm", "prompt")}) == 4


def test_clear_removes_only_the_adapters_entries(tmp_path):
    @memollm.cache_llm(cache_dir=tmp_path)
    def complete(prompt):
        return prompt.upper()

    complete("kept")
    cache = MemollmCache(cache_dir=tmp_path)
    cache.update("p", "llm", [Generation(text="gone")])
    cache.clear()
    assert cache.lookup("p", "llm") is None
    assert complete.cache_info().entries == 1


def test_ttl_expires_entries(tmp_path):
    cache = MemollmCache(cache_dir=tmp_path, ttl=0.2)
    cache.update("p", "llm", [Generation(text="soon gone")])
    assert cache.lookup("p", "llm") == [Generation(text="soon gone")]
    time.sleep(0.3)
    assert cache.lookup("p", "llm") is None


def test_cache_dir_override_applies(tmp_path):
    """The pytest marker's cache_dir (config.use_cache_dir) redirects the adapter too."""
    cache = MemollmCache()
    with config.use_cache_dir(tmp_path / "marked"):
        cache.update("p", "llm", [Generation(text="x")])
        assert cache.lookup("p", "llm") == [Generation(text="x")]
    assert cache.lookup("p", "llm") is None
    assert config.disk_store(tmp_path / "marked").count(FUNCTION_ID) == 1


def test_signed_entries_need_the_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMOLLM_SECRET", "s3cret")
    MemollmCache(cache_dir=tmp_path).update("p", "llm", [Generation(text="signed")])
    assert MemollmCache(cache_dir=tmp_path).lookup("p", "llm") == [Generation(text="signed")]
    monkeypatch.setenv("MEMOLLM_SECRET", "other")
    with pytest.warns(memollm.CacheWarning):
        assert MemollmCache(cache_dir=tmp_path).lookup("p", "llm") is None


def test_entries_reviving_other_classes_are_refused(tmp_path):
    """Only generations and messages are revived from an entry; anything else is a miss."""
    cache = MemollmCache(cache_dir=tmp_path)
    store = cache.store()
    key = cache.key("p", "llm")
    meta = entry.EntryMeta(FUNCTION_ID, key, time.time(), None)
    hostile = [{"lc": 1, "type": "constructor", "id": ["langchain", "prompts", "prompt", "PromptTemplate"], "kwargs": {"template": "{x}", "input_variables": ["x"]}}]
    store.set(meta, entry.encode_value(meta, hostile))
    with pytest.warns(memollm.CacheWarning):
        assert cache.lookup("p", "llm") is None


def test_mode_secret_max_size_and_record_request_as_for_cache_llm(tmp_path):
    generations = [Generation(text="an answer " * 50)]
    offline = MemollmCache(cache_dir=tmp_path / "a", mode="offline")
    with pytest.raises(memollm.CacheMiss):
        offline.lookup("p", "llm")
    readonly = MemollmCache(cache_dir=tmp_path / "a", mode="readonly")
    readonly.update("p", "llm", generations)
    assert readonly.lookup("p", "llm") is None
    with memollm.cache_mode("readwrite"):  # the call site comes first
        readonly.update("p", "llm", generations)
        assert readonly.lookup("p", "llm") == generations

    MemollmCache(cache_dir=tmp_path / "b", secret="k1").update("p", "llm", generations)
    assert MemollmCache(cache_dir=tmp_path / "b", secret="k1").lookup("p", "llm") == generations
    with pytest.warns(memollm.CacheWarning):
        assert MemollmCache(cache_dir=tmp_path / "b", secret="k2").lookup("p", "llm") is None

    bounded = MemollmCache(cache_dir=tmp_path / "c", max_size="200KB")
    for i in range(300):
        bounded.update(f"prompt {i}", "llm", generations)
    assert 0 < config.disk_store(tmp_path / "c").count(FUNCTION_ID) < 300
    assert sum(p.stat().st_size for p in (tmp_path / "c").rglob("*") if p.is_file()) <= 200_000 + 64 * 1024

    private = MemollmCache(cache_dir=tmp_path / "d", record_request=False)
    private.update("a very private prompt", "llm", generations)
    assert private.lookup("a very private prompt", "llm") == generations
    assert not any(b"a very private prompt" in p.read_bytes() for p in (tmp_path / "d").rglob("*") if p.is_file())


def test_samples_cache_if_and_offline_differences_as_for_cache_llm(tmp_path):
    set_llm_cache(MemollmCache(cache_dir=tmp_path, samples=3))
    try:
        model = FakeListChatModel(responses=["s0", "s1", "s2", "s3"])
        assert [model.invoke("q").content for _ in range(6)] == ["s0", "s1", "s2"] * 2
        assert model.i == 3  # three samples recorded, then replayed in turn
        with memollm.sample(1):
            assert model.invoke("q").content == "s1"
        assert sorted(m.sample for m in config.disk_store(tmp_path).entries(FUNCTION_ID)) == [0, 1, 2]

        set_llm_cache(MemollmCache(cache_dir=tmp_path, samples=4, mode="offline"))
        replay = FakeListChatModel(responses=["s0", "s1", "s2", "s3"])
        assert [replay.invoke("q").content for _ in range(3)] == ["s0", "s1", "s2"]
        with pytest.raises(memollm.CacheMiss, match="3 of 4 recorded"):
            replay.invoke("q")
        with pytest.raises(memollm.CacheMiss) as info:  # what differs from the nearest entry
            FakeListChatModel(responses=["other"]).invoke("q")
        assert "differs in:" in str(info.value) and "llm_string:" in str(info.value)

        set_llm_cache(MemollmCache(cache_dir=tmp_path / "judged", cache_if=lambda generations: generations[0].text != ""))
        judged = FakeListChatModel(responses=["", "an answer"])
        assert [judged.invoke("p").content for _ in range(3)] == ["", "an answer", "an answer"]
        assert judged.i == 0  # the empty answer was not stored: the second call reached the model
    finally:
        set_llm_cache(None)


def test_why_compares_a_prompt_with_the_adapters_entries(tmp_path):
    MemollmCache(cache_dir=tmp_path).update("hello prompt", "llm-a", [Generation(text="x")])

    def why(llm_string: str) -> dict:
        args = json.dumps({"prompt": "hello prompt", "llm_string": llm_string})
        done = subprocess.run(
            [sys.executable, "-m", "memollm", "why", "--json", "--cache-dir", str(tmp_path), "--function", FUNCTION_ID, "--args-json", args],
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    hit = why("llm-a")
    assert hit["outcome"] == "hit" and hit["key"] == MemollmCache().key("hello prompt", "llm-a")
    assert "is not a decorated function" in hit["note"] and "could not be imported" not in hit["note"]
    missed = why("llm-b")
    assert missed["outcome"] == "miss"
    assert missed["nearest"][0]["differences"] == [{"path": "llm_string", "recorded": "llm-a", "current": "llm-b"}]


def test_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        MemollmCache(cache_dir=tmp_path, store="memory")
    with pytest.raises(ValueError):
        MemollmCache(ttl=-1)
    with pytest.raises(TypeError):
        MemollmCache(cache_dir=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"MemollmCache\(mode=\.\.\.\)"):
        MemollmCache(mode="sometimes")
    with pytest.raises(ValueError, match="MemollmCache.*secret"):
        MemollmCache(secret="")
    with pytest.raises(ValueError, match="max_size"):
        MemollmCache(max_size=0)
    with pytest.raises(TypeError, match=r"MemollmCache\(record_request=\.\.\.\)"):
        MemollmCache(record_request="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"MemollmCache\(samples=0\)"):
        MemollmCache(samples=0)
    with pytest.raises(TypeError, match=r"MemollmCache\(cache_if=\.\.\.\)"):
        MemollmCache(cache_if=3)  # type: ignore[arg-type]


def _python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMOLLM_")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_langchain_is_an_optional_dependency():
    done = _python("import sys, memollm, memollm.integrations; assert 'langchain_core' not in sys.modules, 'imported'")
    assert done.returncode == 0, done.stderr
    done = _python("import sys; sys.modules['langchain_core'] = None; import memollm.integrations.langchain")
    assert done.returncode != 0
    assert "ImportError" in done.stderr and "pip install 'memollm[langchain]'" in done.stderr
