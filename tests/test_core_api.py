"""The public API of ``cache_llm``: options, errors, wrapper behaviour and management methods."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import inspect
import os
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

import memollm
from memollm import CacheMiss, cache_llm
from memollm.entry import EntryMeta
from memollm.stores.base import Store

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test touches the user's cache: the default cache dir is a temp dir."""
    monkeypatch.setenv("MEMOLLM_CACHE_DIR", str(tmp_path / "default-cache"))
    for name in ("MEMOLLM_MODE", "MEMOLLM_SECRET"):
        monkeypatch.delenv(name, raising=False)
    memollm.report.reset()


def entry_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.rglob("output.msgpack"))


# -- decoration forms and option validation ------------------------------------------------


def test_bare_decorator(tmp_path: Path) -> None:
    calls = []

    @cache_llm
    def complete(prompt: str) -> str:
        calls.append(prompt)
        return prompt.upper()

    assert complete("hi") == "HI"
    assert complete("hi") == "HI"
    assert calls == ["hi"]
    assert complete.cache_info().hits == 1
    assert len(entry_files(tmp_path / "default-cache")) == 1


def test_decorator_with_options(tmp_path: Path) -> None:
    calls = []

    @cache_llm(ttl=3600, cache_dir=tmp_path / "c")
    def complete(prompt: str) -> str:
        calls.append(prompt)
        return prompt * 2

    assert complete("a") == complete("a") == "aa"
    assert calls == ["a"]
    assert len(entry_files(tmp_path / "c")) == 1
    assert not (tmp_path / "default-cache").exists()


@pytest.mark.parametrize("ttl", [1, 2.5, dt.timedelta(hours=1), None, 10**12])
def test_valid_ttl(ttl: Any, tmp_path: Path) -> None:
    @cache_llm(ttl=ttl, cache_dir=tmp_path)
    def f(x: int) -> int:
        return x

    assert f(1) == f(1) == 1
    assert f.cache_info().hits == 1


@pytest.mark.parametrize(
    "ttl, error",
    [
        (0, ValueError),
        (0.0, ValueError),
        (-1, ValueError),
        (-0.5, ValueError),
        (dt.timedelta(0), ValueError),
        (dt.timedelta(seconds=-5), ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("10", TypeError),
        (True, TypeError),
        (False, TypeError),
        ([10], TypeError),
        (object(), TypeError),
    ],
)
def test_bad_ttl_fails_at_decoration(ttl: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="ttl"):
        cache_llm(ttl=ttl)
    with pytest.raises(error, match="ttl"):

        @cache_llm(ttl=ttl)
        def f(x: int) -> int:  # pragma: no cover - never decorated
            return x


@pytest.mark.parametrize("cache_dir", [123, 1.5, ["a"], object()])
def test_bad_cache_dir_type(cache_dir: Any) -> None:
    with pytest.raises(TypeError, match="cache_dir"):
        cache_llm(cache_dir=cache_dir)


@pytest.mark.parametrize("store", [123, object(), ["memory"]])
def test_bad_store_type(store: Any) -> None:
    with pytest.raises(TypeError, match="store"):
        cache_llm(store=store)


def test_unknown_store_name() -> None:
    with pytest.raises(ValueError, match="store"):
        cache_llm(store="nosuchstore")


@pytest.mark.parametrize("ignore", [123, [1], ("client", None)])
def test_bad_ignore_type(ignore: Any) -> None:
    with pytest.raises(TypeError):
        cache_llm(ignore=ignore)


def test_bad_ignore_type_message_names_ignore() -> None:
    with pytest.raises(TypeError, match="ignore"):
        cache_llm(ignore=123)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", [123, "prompt"])
def test_bad_key_type(key: Any) -> None:
    with pytest.raises(TypeError, match="key"):
        cache_llm(key=key)


def test_ignore_must_name_parameters() -> None:
    with pytest.raises(ValueError, match="clinet"):

        @cache_llm(ignore=("clinet",))
        def f(prompt: str, client: Any = None) -> str:  # pragma: no cover
            return prompt


def test_ignore_single_string_and_function_still_works(tmp_path: Path) -> None:
    @cache_llm(ignore="client", cache_dir=tmp_path)
    def f(prompt: str, client: Any = None) -> str:
        return prompt

    assert f.cache_key("x", object()) == f.cache_key("x", client=object()) == f.cache_key("x")


def test_positional_options_rejected() -> None:
    with pytest.raises(TypeError):
        cache_llm(3600)  # type: ignore[call-overload]


# -- default cache dir -----------------------------------------------------------------------


def _populate_default() -> None:
    @cache_llm
    def default_dir_probe(x: int) -> int:
        return x

    default_dir_probe(1)


def test_default_dir_from_memollm_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOLLM_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _populate_default()
    assert len(entry_files(tmp_path / "explicit")) == 1
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "home").exists()


def test_default_dir_from_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMOLLM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _populate_default()
    assert len(entry_files(tmp_path / "xdg" / "memollm")) == 1
    assert not (tmp_path / "home").exists()


def test_default_dir_in_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMOLLM_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _populate_default()
    assert len(entry_files(tmp_path / "home" / ".cache" / "memollm")) == 1


# -- stores ----------------------------------------------------------------------------------


class DictStore(Store):
    """A minimal store implementing memollm.stores.base.Store on a dict."""

    location = "dict-store"

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], tuple[EntryMeta, bytes]] = {}

    def get(self, function: str, key: str) -> Optional[bytes]:
        item = self.data.get((function, key))
        return None if item is None else item[1]

    def set(self, meta: EntryMeta, data: bytes) -> None:
        meta.size = len(data)
        self.data[(meta.function, meta.key)] = (meta, data)

    def delete(self, function: str, key: str) -> bool:
        return self.data.pop((function, key), None) is not None

    def clear(self, function: Optional[str] = None) -> int:
        doomed = [k for k in self.data if function is None or k[0] == function]
        for k in doomed:
            del self.data[k]
        return len(doomed)

    def entries(self, function: Optional[str] = None) -> Iterator[EntryMeta]:
        return iter([m for (fn, _), (m, _) in self.data.items() if function is None or fn == function])


@pytest.mark.parametrize("kind", ["memory", "custom"])
def test_other_stores_same_semantics(kind: str, tmp_path: Path) -> None:
    store: Any = "memory" if kind == "memory" else DictStore()
    calls = []

    @cache_llm(store=store, ttl=60)
    def f(prompt: str, model: str = "m") -> dict[str, Any]:
        calls.append(prompt)
        return {"answer": [prompt, (1, 2)]}

    f.cache_clear()
    first = f("x")
    second = f(prompt="x")
    assert first == second == {"answer": ["x", (1, 2)]}
    assert type(second["answer"][1]) is tuple
    second["answer"].append("mutated")
    assert f("x", model="m") == {"answer": ["x", (1, 2)]}
    assert calls == ["x"]
    info = f.cache_info()
    assert (info.hits, info.misses, info.entries) == (2, 1, 1)
    assert info.bytes > 0
    assert f.invalidate("x") is True
    assert f.invalidate("x") is False
    f("x")
    assert calls == ["x", "x"]
    f.cache_clear()
    assert f.cache_info().entries == 0
    assert not (tmp_path / "default-cache").exists()
    if kind == "custom":
        assert store.data == {}


def test_custom_store_receives_entries() -> None:
    store = DictStore()

    @cache_llm(store=store)
    def f(x: int) -> int:
        return x * 2

    f(21)
    [(function, key)] = list(store.data)
    assert function.endswith("test_custom_store_receives_entries.<locals>.f")
    assert key == f.cache_key(21)


def test_cache_key_is_the_key_a_call_stores_under_in_every_form() -> None:
    class Model:
        def __cache_key__(self) -> str:
            return "m"

        def ask(self, x: int) -> int:
            return x + 1

    store = DictStore()
    plain = cache_llm(store=store)(lambda x: x)
    chosen = cache_llm(store=store, key=lambda x: {"only": x % 10})(lambda x: x)
    bound = cache_llm(store=store)(Model().ask)
    for fn in (plain, chosen, bound):
        before = set(store.data)
        fn(13)
        [(_, key)] = set(store.data) - before
        assert fn.cache_key(13) == key == fn.cache_key(x=13)
    assert chosen.cache_key(3) == chosen.cache_key(13) != plain.cache_key(13)


def test_memory_store_and_disk_store_are_separate(tmp_path: Path) -> None:
    calls = []

    def raw(x: int) -> int:
        calls.append(x)
        return x

    mem = cache_llm(store="memory")(raw)
    disk = cache_llm(cache_dir=tmp_path)(raw)
    mem.cache_clear()
    mem(1)
    disk(1)
    assert calls == [1, 1]
    assert mem.cache_key(1) == disk.cache_key(1)


def test_store_and_cache_dir_together_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        cache_llm(store="memory", cache_dir=tmp_path)


# -- the wrapper -----------------------------------------------------------------------------


def test_metadata_preserved(tmp_path: Path) -> None:
    def complete(prompt: str, model: str = "gpt-4o", *, temperature: float = 0.0) -> str:
        """Ask the model."""
        return prompt

    wrapped = cache_llm(cache_dir=tmp_path)(complete)
    assert wrapped.__name__ == "complete"
    assert wrapped.__qualname__ == complete.__qualname__
    assert wrapped.__doc__ == "Ask the model."
    assert wrapped.__module__ == __name__
    assert wrapped.__wrapped__ is complete
    assert inspect.signature(wrapped) == inspect.signature(complete)
    assert not inspect.iscoroutinefunction(wrapped)
    assert callable(wrapped)


def test_coroutine_function_stays_one(tmp_path: Path) -> None:
    @cache_llm(cache_dir=tmp_path)
    async def acomplete(prompt: str) -> str:
        """Async doc."""
        return prompt

    assert inspect.iscoroutinefunction(acomplete)
    assert acomplete.__doc__ == "Async doc."
    assert list(inspect.signature(acomplete).parameters) == ["prompt"]


def test_async_same_semantics(tmp_path: Path) -> None:
    calls = []

    @cache_llm(cache_dir=tmp_path)
    async def acomplete(prompt: str, model: str = "m") -> dict[str, Any]:
        calls.append(prompt)
        await asyncio.sleep(0)
        return {"p": prompt, "t": (1, 2)}

    async def main() -> None:
        a = await acomplete("x")
        b = await acomplete(prompt="x", model="m")
        assert a == b == {"p": "x", "t": (1, 2)}
        b["p"] = "changed"
        assert (await acomplete("x"))["p"] == "x"

    asyncio.run(main())
    assert calls == ["x"]
    info = acomplete.cache_info()
    assert (info.hits, info.misses, info.entries) == (2, 1, 1)
    assert acomplete.invalidate("x") is True
    assert acomplete.invalidate("x") is False


def test_async_exceptions_not_cached(tmp_path: Path) -> None:
    calls = []

    @cache_llm(cache_dir=tmp_path)
    async def flaky(prompt: str) -> str:
        calls.append(prompt)
        if len(calls) == 1:
            raise RuntimeError("rate limited")
        return "ok"

    with pytest.raises(RuntimeError):
        asyncio.run(flaky("x"))
    assert flaky.cache_info().entries == 0
    assert asyncio.run(flaky("x")) == "ok"
    assert asyncio.run(flaky("x")) == "ok"
    assert len(calls) == 2


def test_async_ttl_expiry(tmp_path: Path) -> None:
    calls = []

    @cache_llm(cache_dir=tmp_path, ttl=0.2)
    async def f(x: int) -> int:
        calls.append(x)
        return len(calls)

    assert asyncio.run(f(1)) == 1
    assert asyncio.run(f(1)) == 1
    time.sleep(0.25)
    assert asyncio.run(f(1)) == 2
    assert asyncio.run(f(1)) == 2


def test_concurrent_async_calls_all_answer(tmp_path: Path) -> None:
    @cache_llm(cache_dir=tmp_path)
    async def f(x: int) -> int:
        await asyncio.sleep(0.01)
        return x * 2

    async def main() -> list[int]:
        return await asyncio.gather(*(f(i % 3) for i in range(9)))

    assert asyncio.run(main()) == [0, 2, 4] * 3
    assert asyncio.run(main()) == [0, 2, 4] * 3


def test_exceptions_not_cached(tmp_path: Path) -> None:
    calls = []

    @cache_llm(cache_dir=tmp_path)
    def flaky(prompt: str) -> str:
        calls.append(prompt)
        if len(calls) == 1:
            raise TimeoutError("provider timeout")
        return "ok"

    with pytest.raises(TimeoutError):
        flaky("x")
    assert flaky.cache_info().entries == 0
    assert entry_files(tmp_path) == []
    assert flaky("x") == "ok"
    assert flaky("x") == "ok"
    assert len(calls) == 2


def test_wrong_arguments_raise_the_functions_own_typeerror(tmp_path: Path) -> None:
    @cache_llm(cache_dir=tmp_path)
    def f(prompt: str) -> str:
        return prompt

    with pytest.raises(TypeError):
        f()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        f("a", "b")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        f(nope=1)  # type: ignore[call-arg]


def test_ttl_expiry(tmp_path: Path) -> None:
    calls = []

    @cache_llm(cache_dir=tmp_path, ttl=1.0)  # (long enough for a loaded machine to make the second call in time)
    def f(x: int) -> int:
        calls.append(x)
        return len(calls)

    assert f(1) == 1
    assert f(1) == 1
    time.sleep(1.05)
    assert f(1) == 2  # expired: recomputed and overwritten
    assert f(1) == 2
    assert f.cache_info().entries == 1


def test_ttl_expiry_with_a_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    calls = []

    @cache_llm(store="memory", ttl=dt.timedelta(hours=1))
    def f(x: int) -> int:
        calls.append(x)
        return len(calls)

    f.cache_clear()
    assert f(1) == 1
    now[0] += 3599
    assert f(1) == 1
    now[0] += 2
    assert f(1) == 2
    now[0] += 10**9

    @cache_llm(store="memory")
    def forever(x: int) -> int:
        calls.append(x)
        return len(calls)

    forever.cache_clear()
    value = forever(1)
    now[0] += 10**9
    assert forever(1) == value


def test_changing_ttl_keeps_the_key(tmp_path: Path) -> None:
    def raw(x: int) -> int:
        return x

    a = cache_llm(cache_dir=tmp_path, ttl=10)(raw)
    b = cache_llm(cache_dir=tmp_path, ttl=None)(raw)
    c = cache_llm(cache_dir=tmp_path)(raw)
    assert a.cache_key(1) == b.cache_key(1) == c.cache_key(1)


# -- methods ---------------------------------------------------------------------------------


class Bot:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    @cache_llm(store="memory")
    def plain(self, prompt: str) -> str:  # self offers no key: TypeError
        return prompt


class KeyedBot:
    calls: list[str] = []

    def __init__(self, model: str) -> None:
        self.model = model

    def __cache_key__(self) -> dict[str, str]:
        return {"model": self.model}

    @cache_llm(store="memory")
    def ask(self, prompt: str) -> str:
        KeyedBot.calls.append(prompt)
        return f"{self.model}:{prompt}"

    @cache_llm(store="memory", ignore=("self",))
    def shared(self, prompt: str) -> str:
        KeyedBot.calls.append(prompt)
        return f"{self.model}:{prompt}"

    @cache_llm(store="memory")
    @classmethod
    def klass(cls, prompt: str) -> str:
        KeyedBot.calls.append(prompt)
        return f"{cls.__name__}:{prompt}"

    @classmethod
    @cache_llm(store="memory")
    def klass2(cls, prompt: str) -> str:
        KeyedBot.calls.append(prompt)
        return f"{cls.__name__}:{prompt}"

    @cache_llm(store="memory")
    @staticmethod
    def static(prompt: str) -> str:
        KeyedBot.calls.append(prompt)
        return prompt.upper()

    @staticmethod
    @cache_llm(store="memory")
    def static2(prompt: str) -> str:
        KeyedBot.calls.append(prompt)
        return prompt.upper()


class SubBot(KeyedBot):
    pass


@pytest.fixture
def bots() -> Iterator[None]:
    KeyedBot.calls = []
    for m in (KeyedBot.ask, KeyedBot.shared, KeyedBot.klass, KeyedBot.klass2, KeyedBot.static, KeyedBot.static2):
        m.cache_clear()
    yield


def test_self_without_cache_key_raises_typeerror() -> None:
    with pytest.raises(TypeError) as err:
        Bot("a").plain("hi")
    message = str(err.value)
    assert "'self'" in message or '"self"' in message
    assert "Bot" in message
    assert 'ignore=("self",)' in message
    assert "key=" in message
    assert "__cache_key__" in message


def test_method_with_cache_key(bots: None) -> None:
    a, b = KeyedBot("gpt-a"), KeyedBot("gpt-b")
    assert a.ask("hi") == "gpt-a:hi"
    assert b.ask("hi") == "gpt-b:hi"  # differing instances never share
    assert KeyedBot("gpt-a").ask("hi") == "gpt-a:hi"
    assert KeyedBot.calls == ["hi", "hi"]
    assert a.ask.cache_info().hits == 1
    assert a.ask.cache_key("hi") == KeyedBot.ask.cache_key(a, "hi") == KeyedBot("gpt-a").ask.cache_key("hi")
    assert a.ask.cache_key("hi") != b.ask.cache_key("hi")
    assert a.ask.invalidate("hi") is True
    assert a.ask.invalidate("hi") is False
    assert a.ask.__name__ == "ask"
    assert list(inspect.signature(a.ask).parameters) == ["prompt"]


def test_method_with_ignored_self(bots: None) -> None:
    assert KeyedBot("a").shared("hi") == "a:hi"
    assert KeyedBot("b").shared("hi") == "a:hi"  # the user chose to share across instances
    assert KeyedBot.calls == ["hi"]


@pytest.mark.parametrize("name", ["klass", "klass2"])
def test_classmethod(name: str, bots: None) -> None:
    method = getattr(KeyedBot, name)
    assert method("q") == "KeyedBot:q"
    assert getattr(KeyedBot("x"), name)("q") == "KeyedBot:q"
    assert getattr(SubBot, name)("q") == "SubBot:q"  # cls is part of the key
    assert KeyedBot.calls == ["q", "q"]
    if name == "klass2" and sys.version_info >= (3, 13):
        # Python 3.13 dropped classmethod's chaining of __get__: KeyedBot.klass2 is a plain bound
        # method, whose attributes are the cached function's (unbound): pass the class.
        method = method.__func__
        assert method.cache_key(KeyedBot, "q") != method.cache_key(SubBot, "q")
        return
    assert method.cache_key("q") == getattr(KeyedBot("x"), name).cache_key("q")
    assert method.cache_key("q") != getattr(SubBot, name).cache_key("q")


@pytest.mark.parametrize("name", ["static", "static2"])
def test_staticmethod(name: str, bots: None) -> None:
    assert getattr(KeyedBot, name)("q") == "Q"
    assert getattr(KeyedBot("x"), name)("q") == "Q"
    assert KeyedBot.calls == ["q"]
    assert getattr(KeyedBot, name).cache_key("q") == getattr(KeyedBot("y"), name).cache_key("q")


# -- management methods ----------------------------------------------------------------------


def test_cache_info_fields(tmp_path: Path) -> None:
    @cache_llm(cache_dir=tmp_path)
    def complete(prompt: str) -> dict[str, Any]:
        time.sleep(0.02)
        return {"text": prompt, "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}

    info = complete.cache_info()
    assert (info.hits, info.misses, info.entries, info.bytes, info.seconds_saved, info.tokens_saved) == (0, 0, 0, 0, 0, 0)
    complete("a")
    complete("b")
    complete("a")
    complete("a")
    info = complete.cache_info()
    assert (info.hits, info.misses, info.entries) == (2, 2, 2)
    assert info.bytes == sum(p.stat().st_size for p in entry_files(tmp_path))
    assert info.seconds_saved >= 0.03
    assert info.tokens_saved == 14
    complete.cache_clear()
    info = complete.cache_info()
    assert (info.hits, info.misses, info.entries, info.bytes, info.tokens_saved) == (0, 0, 0, 0, 0)
    assert info.seconds_saved == 0


def test_cache_key_is_32_hex(tmp_path: Path) -> None:
    @cache_llm(cache_dir=tmp_path)
    def f(prompt: str) -> str:
        return prompt

    key = f.cache_key("x")
    assert isinstance(key, str) and len(key) == 32
    assert int(key, 16) >= 0 and key == key.lower()
    f("x")
    assert [p.parent.name for p in entry_files(tmp_path)] == [key]


def test_cache_clear_only_this_function(tmp_path: Path) -> None:
    @cache_llm(cache_dir=tmp_path)
    def f(x: int) -> int:
        return x

    @cache_llm(cache_dir=tmp_path)
    def g(x: int) -> int:
        return x

    f(1), f(2), g(1)
    f.cache_clear()
    assert f.cache_info().entries == 0
    assert g.cache_info().entries == 1
    assert len(entry_files(tmp_path)) == 1


def test_cache_clear_removes_all_versions(tmp_path: Path) -> None:
    def raw(x: int) -> int:
        return x

    v1 = cache_llm(cache_dir=tmp_path, version=1)(raw)
    v2 = cache_llm(cache_dir=tmp_path, version="2")(raw)
    v1(1)
    v2(1)
    assert v1.cache_key(1) != v2.cache_key(1)
    assert v1.cache_info().entries == 2  # entries of the function, whatever their version
    v2.cache_clear()
    assert entry_files(tmp_path) == []
    assert v1.cache_info().entries == 0


def _load_module(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SOURCE = '''
from memollm import cache_llm

@cache_llm(cache_dir={cache_dir!r}{options})
def complete(prompt, model="gpt-4o"):
    template = "Answer briefly: {{}}"
    return template.format(prompt) + {suffix!r}
'''


def test_source_edit_changes_key_ttl_does_not_and_clear_removes_both(tmp_path: Path) -> None:
    cache_dir = str(tmp_path / "cache")
    versions = {}
    for label, options, suffix in [("v1", "", "!"), ("v1-ttl", ", ttl=60", "!"), ("v2", "", "?")]:
        d = tmp_path / label
        d.mkdir()
        (d / "editable_prompts.py").write_text(SOURCE.format(cache_dir=cache_dir, options=options, suffix=suffix))
        versions[label] = _load_module(d / "editable_prompts.py", "editable_prompts").complete

    v1, v1_ttl, v2 = versions["v1"], versions["v1-ttl"], versions["v2"]
    assert v1.cache_key("x") == v1_ttl.cache_key("x")
    assert v1.cache_key("x") != v2.cache_key("x")
    assert v1("x") == "Answer briefly: x!"
    assert v2("x") == "Answer briefly: x?"  # not served v1's answer
    assert v1_ttl("x") == "Answer briefly: x!"
    assert v1_ttl.cache_info().hits == 1
    assert v2.cache_info().entries == 2
    v2.cache_clear()
    assert v1.cache_info().entries == 0
    assert entry_files(Path(cache_dir)) == []


def test_no_source_function_still_works(tmp_path: Path) -> None:
    namespace: dict[str, Any] = {}
    exec("def generated(prompt, n=1):\n    return prompt * n\n", namespace)
    f = cache_llm(cache_dir=tmp_path)(namespace["generated"])
    assert f("ab", 2) == f("ab", n=2) == "abab"
    assert f.cache_info().hits == 1
    other: dict[str, Any] = {}
    exec("def generated(prompt, n=1):\n    return prompt * (n + 1)\n", other)
    assert cache_llm(cache_dir=tmp_path)(other["generated"]).cache_key("ab") != f.cache_key("ab")
    lam = cache_llm(cache_dir=tmp_path)(lambda p: p + "!")
    assert lam("a") == lam("a") == "a!"
    assert lam.cache_info().hits == 1


def test_cache_miss_exists() -> None:
    assert issubclass(CacheMiss, Exception)
    assert memollm.CacheMiss is CacheMiss


def test_threads_share_entries(tmp_path: Path) -> None:
    @cache_llm(cache_dir=tmp_path)
    def f(x: int) -> int:
        return x

    results: list[int] = []
    threads = [threading.Thread(target=lambda i=i: results.append(f(i % 4))) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(i % 4 for i in range(16))
    assert f.cache_info().entries == 4
    assert len(entry_files(tmp_path)) == 4
    assert os.path.isdir(tmp_path / "joblib")


class AsyncBot:
    calls: list[str] = []

    def __cache_key__(self) -> str:
        return "async-bot"

    @cache_llm(store="memory")
    async def ask(self, prompt: str) -> str:
        AsyncBot.calls.append(prompt)
        return prompt[::-1]

    @cache_llm(store="memory")
    @classmethod
    async def klass(cls, prompt: str) -> str:
        AsyncBot.calls.append(prompt)
        return prompt.upper()


def test_async_methods() -> None:
    AsyncBot.ask.cache_clear()
    AsyncBot.klass.cache_clear()
    assert inspect.iscoroutinefunction(AsyncBot().ask)
    assert inspect.iscoroutinefunction(AsyncBot.klass)
    assert asyncio.run(AsyncBot().ask("abc")) == asyncio.run(AsyncBot().ask("abc")) == "cba"
    assert asyncio.run(AsyncBot.klass("abc")) == asyncio.run(AsyncBot().klass("abc")) == "ABC"
    assert AsyncBot.calls == ["abc", "abc"]
