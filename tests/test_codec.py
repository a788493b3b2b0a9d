"""Values round trip through the cache: same type, equal, fresh objects; unstorable values warn."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import enum
import functools
import importlib.util
import subprocess
import sys
import textwrap
import threading
import types
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import pydantic
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion, ChatCompletionChunk

import memollm
from memollm import UncacheableValueWarning, cache_llm

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOLLM_CACHE_DIR", str(tmp_path / "default-cache"))
    monkeypatch.delenv("MEMOLLM_MODE", raising=False)
    memollm.report.reset()


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = 2


@dataclasses.dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int = 0


@dataclasses.dataclass(frozen=True)
class Reply:
    text: str
    usage: Usage
    tags: tuple[str, ...] = ()
    extra: Optional[dict[str, Any]] = None


@dataclasses.dataclass
class WithComputed:
    a: int
    b: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        self.b = self.a * 2


@dataclasses.dataclass
class Shout:
    text: str

    def __post_init__(self) -> None:
        self.text = self.text.upper() + "!"


class Citation(pydantic.BaseModel):
    url: pydantic.HttpUrl
    title: str = ""


class Structured(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")

    answer: str
    confidence: float = 0.5
    camel: int = pydantic.Field(default=0, alias="camelCase")
    citations: list[Citation] = []
    when: Optional[dt.datetime] = None
    mood: Optional[Mood] = None


class WithPrivate(pydantic.BaseModel):
    text: str
    _seen: int = pydantic.PrivateAttr(default=0)


class WithCachedProperty(pydantic.BaseModel):
    a: int

    @functools.cached_property
    def double(self) -> int:
        return self.a * 2


def _with_cached_property() -> WithCachedProperty:
    value = WithCachedProperty(a=2)
    assert value.double == 4  # now in __dict__, but not a field
    return value


def _with_private() -> WithPrivate:
    value = WithPrivate(text="a")
    value._seen = 3
    return value


def _with_request_id() -> ChatCompletion:
    value = ChatCompletion.model_validate(CHAT_COMPLETION)
    value._request_id = "req_123"  # what the openai SDK does to the responses it returns
    return value


class Plain:
    """Not storable without pickle (but picklable)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other) is Plain and other.value == self.value

    __hash__ = None  # type: ignore[assignment]


CHAT_COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "logprobs": None,
            "message": {
                "role": "assistant",
                "content": "Hello!",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"q": "x"}'}}],
            },
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
    "system_fingerprint": "fp_1",
}
ANTHROPIC_MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-sonnet",
    "content": [
        {"type": "text", "text": "Hi there"},
        {"type": "tool_use", "id": "tu_1", "name": "search", "input": {"q": "x", "n": [1, 2]}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 25},
}
CHUNK = {
    "id": "c",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "gpt-4o",
    "choices": [{"index": 0, "delta": {"content": "He"}, "finish_reason": None}],
}

VALUES: dict[str, Callable[[], Any]] = {
    "str": lambda: "héllo ✓ wörld",
    "empty-str": lambda: "",
    "bytes": lambda: b"\x00\x01\xffbytes",
    "int": lambda: 42,
    "negative": lambda: -7,
    "u64": lambda: 2**64 - 1,
    "bigint": lambda: 2**200 + 1,
    "neg-bigint": lambda: -(2**100),
    "float": lambda: 3.25,
    "inf": lambda: float("inf"),
    "none": lambda: None,
    "true": lambda: True,
    "false": lambda: False,
    "nested": lambda: {"a": [1, (2, 3), {"b": (None, [True, 1.5])}], "c": {"d": b"x"}, 1: "int key", (1, 2): "tuple key"},
    "tuple": lambda: (1, "two", (3.0, [4])),
    "list": lambda: [[], {}, (), ""],
    "set": lambda: {1, 2, 3},
    "frozenset": lambda: frozenset({"a", "b"}),
    "datetime": lambda: dt.datetime(2024, 5, 1, 12, 30, 1, 123, tzinfo=dt.timezone.utc),
    "naive-datetime": lambda: dt.datetime(2024, 5, 1, 12, 30),
    "date": lambda: dt.date(2024, 5, 1),
    "timedelta": lambda: dt.timedelta(days=1, seconds=5),
    "uuid": lambda: uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "decimal": lambda: decimal.Decimal("3.1400"),
    "complex": lambda: complex(1, -2),
    "enum": lambda: [Mood.HAPPY, Mood.SAD],
    "dataclass": lambda: Reply("hi", Usage(3, 4), ("a", "b"), {"k": [1]}),
    "dataclass-init-false": lambda: WithComputed(5),
    "dataclass-post-init": lambda: Shout("hi"),
    "pydantic": lambda: Structured(
        answer="42",
        camelCase=3,
        citations=[Citation(url="https://example.com/a", title="A")],
        when=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
        mood=Mood.SAD,
        surprise={"extra": True},
    ),
    "pydantic-defaults": lambda: Structured(answer="x"),
    "pydantic-list": lambda: [Citation(url="https://example.com/b"), {"nested": Structured(answer="y")}],
    "openai": lambda: ChatCompletion.model_validate(CHAT_COMPLETION),
    "openai-chunk": lambda: ChatCompletionChunk.model_validate(CHUNK),
    "openai-request-id": lambda: _with_request_id(),
    "pydantic-private": lambda: _with_private(),
    "pydantic-cached-property": lambda: _with_cached_property(),
    "anthropic": lambda: Message.model_validate(ANTHROPIC_MESSAGE),
    "ordered-dict": lambda: collections.OrderedDict([("z", 1), ("a", [collections.OrderedDict(k=(1, 2))])]),
    "counter": lambda: collections.Counter({"token": 3, ("tuple", "key"): 1}),
    "defaultdict": lambda: collections.defaultdict(list, {"a": [1], 2: []}),
    "defaultdict-no-factory": lambda: collections.defaultdict(None, {"a": 1}),
}


def assert_same(a: Any, b: Any) -> None:
    """Equal, and of the same type all the way down (containers included)."""
    assert type(a) is type(b), (a, b)
    assert a == b
    if isinstance(a, collections.OrderedDict):
        assert list(a) == list(b)
    if isinstance(a, collections.defaultdict):
        assert a.default_factory is b.default_factory
    if isinstance(a, dict):
        for (ka, va), (kb, vb) in zip(sorted(a.items(), key=repr), sorted(b.items(), key=repr)):
            assert_same(ka, kb)
            assert_same(va, vb)
    elif isinstance(a, (list, tuple)):
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, pydantic.BaseModel):
        assert a.model_fields_set == b.model_fields_set
        assert a.model_dump(exclude_unset=True) == b.model_dump(exclude_unset=True)
        assert a.__pydantic_extra__ == b.__pydantic_extra__
        assert a.__pydantic_private__ == b.__pydantic_private__
        assert {k for k in a.__dict__ if not isinstance(getattr(type(a), k, None), functools.cached_property)} == b.__dict__.keys()
        assert repr(a) == repr(b)
        for name in type(a).model_fields:
            assert_same(getattr(a, name), getattr(b, name))
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name))


def make_cached(kind: str, tmp_path: Path, make: Callable[[], Any], **options: Any) -> Any:
    calls = []

    def produce(name: str) -> Any:
        calls.append(name)
        return make()

    where = {"store": "memory"} if kind == "memory" else {"cache_dir": tmp_path / "cache"}
    cached = cache_llm(**where, **options)(produce)
    cached.cache_clear()
    cached.calls = calls
    return cached


@pytest.mark.parametrize("kind", ["disk", "memory"])
@pytest.mark.parametrize("name", list(VALUES))
def test_round_trip(name: str, kind: str, tmp_path: Path) -> None:
    cached = make_cached(kind, tmp_path, VALUES[name])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        original = cached(name)
        hit = cached(name)
    assert cached.calls == [name]
    assert cached.cache_info().hits == 1
    assert_same(original, hit)
    assert_same(VALUES[name](), hit)
    if isinstance(original, (dict, list, set, pydantic.BaseModel)) or dataclasses.is_dataclass(original):
        assert hit is not original


def test_openai_and_anthropic_responses_serialize_identically(tmp_path: Path) -> None:
    for name in ("openai", "anthropic"):
        cached = make_cached("disk", tmp_path, VALUES[name])
        original, hit = cached(name), cached(name)
        assert type(hit) is type(original)
        assert hit.to_dict() == original.to_dict()
        assert hit.to_json() == original.to_json()
        assert hit.model_dump() == original.model_dump()
        assert repr(hit) == repr(original)


@pytest.mark.parametrize("kind", ["disk", "memory"])
def test_hits_are_fresh_objects(kind: str, tmp_path: Path) -> None:
    cached = make_cached(kind, tmp_path, lambda: {"messages": [{"role": "assistant", "content": "hi"}], "meta": {"n": 1}})
    first = cached("x")
    first["messages"].append("mutated on the miss")
    hit = cached("x")
    assert hit == {"messages": [{"role": "assistant", "content": "hi"}], "meta": {"n": 1}}
    hit["messages"][0]["content"] = "mutated on a hit"
    hit["meta"]["n"] = 99
    again = cached("x")
    assert again == {"messages": [{"role": "assistant", "content": "hi"}], "meta": {"n": 1}}
    assert again is not hit


@pytest.mark.parametrize("kind", ["disk", "memory"])
def test_pydantic_hits_are_fresh_objects(kind: str, tmp_path: Path) -> None:
    cached = make_cached(kind, tmp_path, VALUES["openai"])
    cached("x")
    hit = cached("x")
    hit.choices[0].message.content = "changed"
    hit.choices.append(hit.choices[0])
    again = cached("x")
    assert again == ChatCompletion.model_validate(CHAT_COMPLETION)


@pytest.mark.parametrize("kind", ["disk", "memory"])
def test_unstorable_value_warns_and_is_returned(kind: str, tmp_path: Path) -> None:
    lock = threading.Lock()
    cached = make_cached(kind, tmp_path, lambda: lock)
    with pytest.warns(UncacheableValueWarning, match="lock"):
        assert cached("x") is lock
    assert cached.cache_info().entries == 0
    assert not list((tmp_path / "cache").rglob("output.msgpack"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cached("x") is lock
    assert cached.calls == ["x", "x"]


def test_unstorable_nested_value_names_the_type(tmp_path: Path) -> None:
    cached = make_cached("disk", tmp_path, lambda: {"ok": 1, "bad": [Plain(1)]})
    with pytest.warns(UncacheableValueWarning, match="Plain"):
        assert cached("x") == {"ok": 1, "bad": [Plain(1)]}
    assert cached.cache_info().entries == 0


@pytest.mark.parametrize("kind", ["disk", "memory"])
def test_classes_defined_inside_a_function_are_restored_in_the_same_process(kind: str, tmp_path: Path) -> None:
    @dataclasses.dataclass
    class Local:
        x: int

    class Mood(enum.Enum):
        CALM = "calm"

    cached = make_cached(kind, tmp_path, lambda: {"result": Local(1), "mood": Mood.CALM})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = cached("x")
        hit = cached("x")
    assert cached.calls == ["x"]
    assert hit == {"result": Local(1), "mood": Mood.CALM} and type(hit["result"]) is Local
    assert hit["result"] is not first["result"]


def test_a_local_class_unknown_to_the_reading_process_is_a_miss(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import dataclasses, sys, warnings
        from memollm import cache_llm

        def define():
            @dataclasses.dataclass
            class Local:
                x: int
            return Local

        calls = []

        @cache_llm(cache_dir=sys.argv[1])
        def answer(prompt):
            calls.append(prompt)
            return Local(len(prompt))

        Local = define()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert answer("hello") == Local(5) and type(answer("hello")) is Local
        print(len(calls), any("defined inside a function" in str(w.message) for w in caught))
        """
    )
    path = tmp_path / "local.py"
    path.write_text(script)
    cache = tmp_path / "cache"
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, str(path), str(cache)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        runs.append(done.stdout.split())
    assert runs[0] == ["1", "False"]  # stored, then a hit in the same process
    # The next process could not restore it: warned, recomputed once, then hits.
    assert runs[1] == ["1", "True"]
@pytest.mark.parametrize("kind", ["disk", "memory"])
def test_allow_pickle_stores_other_values(kind: str, tmp_path: Path) -> None:
    cached = make_cached(kind, tmp_path, lambda: {"obj": Plain(7)}, allow_pickle=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = cached("x")
        hit = cached("x")
    assert cached.calls == ["x"]
    assert hit == {"obj": Plain(7)} and type(hit["obj"]) is Plain
    assert hit["obj"] is not first["obj"]


def test_allow_pickle_must_be_bool() -> None:
    with pytest.raises(TypeError, match="allow_pickle"):
        cache_llm(allow_pickle="yes")  # type: ignore[call-overload]


def test_allow_pickle_unpicklable_still_warns(tmp_path: Path) -> None:
    lock = threading.Lock()
    cached = make_cached("disk", tmp_path, lambda: lock, allow_pickle=True)
    with pytest.warns(UncacheableValueWarning, match="lock"):
        assert cached("x") is lock
    assert cached.cache_info().entries == 0


EVOLVING_V1 = """
import dataclasses
import pydantic

@dataclasses.dataclass
class Record:
    x: int

class Model(pydantic.BaseModel):
    x: int
"""
EVOLVING_V2 = EVOLVING_V1.replace("x: int", "x: int\n    y: int")


def _load_evolving(path: Path, source: str) -> Any:
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("memollm_test_evolving", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["memollm_test_evolving"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", ["Record", "Model"])
def test_entries_of_changed_classes_are_misses(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "memollm_test_evolving", types.ModuleType("placeholder"))
    calls = []

    @cache_llm(cache_dir=tmp_path / "cache")
    def produce(name: str) -> Any:
        module = sys.modules["memollm_test_evolving"]
        calls.append(name)
        fields = {"x": 1} if len(calls) == 1 else {"x": 1, "y": 2}
        cls = getattr(module, name)
        return cls(**fields) if kind == "Record" else cls.model_validate(fields)

    _load_evolving(tmp_path / "v1.py", EVOLVING_V1)
    assert produce(kind).x == 1
    assert produce(kind).x == 1
    assert calls == [kind]
    _load_evolving(tmp_path / "v2.py", EVOLVING_V2)  # the class gained a field
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = produce(kind)
    assert (value.x, value.y) == (1, 2)  # recomputed, not a half-built object
    assert type(value) is getattr(sys.modules["memollm_test_evolving"], kind)
    assert calls == [kind, kind]
    assert produce(kind) == value


def test_every_call_returning_an_unstorable_value_warns(tmp_path: Path) -> None:
    def build() -> Any:
        return make_cached("disk", tmp_path, lambda: Plain(1))

    cached = build()
    for _ in range(2):
        with pytest.warns(UncacheableValueWarning, match="Plain"):
            cached("x")
    with pytest.warns(UncacheableValueWarning, match="Plain"):  # a new decoration of the same function
        build()("x")


def test_defaultdict_with_a_function_factory_warns_and_is_not_stored(tmp_path: Path) -> None:
    cached = make_cached("disk", tmp_path, lambda: collections.defaultdict(lambda: 0, {"a": 1}))
    with pytest.warns(UncacheableValueWarning, match="default_factory"):
        assert cached("x") == {"a": 1}
    assert cached.cache_info().entries == 0
