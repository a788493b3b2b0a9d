"""What goes into a cache key, checked through ``cache_key`` of decorated functions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import pathlib
import uuid
from typing import Any, Optional

import pydantic
import pytest

import memollm
from memollm import cache_llm

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOLLM_CACHE_DIR", str(tmp_path / "default-cache"))
    monkeypatch.delenv("MEMOLLM_MODE", raising=False)
    memollm.report.reset()


@cache_llm(store="memory")
def complete(prompt: Any, model: str = "gpt-4o", temperature: float = 0.0, **kwargs: Any) -> Any:
    return prompt


@cache_llm(store="memory")
def anything(value: Any) -> Any:
    return value


def k(value: Any) -> str:
    return anything.cache_key(value)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0


@dataclasses.dataclass(frozen=True)
class Segment:
    start: Point
    end: Point


class Answer(pydantic.BaseModel):
    text: str
    score: float = 0.0


class Verdict(pydantic.BaseModel):
    text: str
    score: float = 0.0


class Conversation(pydantic.BaseModel):
    messages: list[dict[str, str]]
    answer: Optional[Answer] = None


class Client:
    """A client object with a value-based identity for the key."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.api_key = api_key

    def __cache_key__(self) -> Any:
        return {"base_url": self.base_url}


class OtherClient(Client):
    pass


# -- binding ---------------------------------------------------------------------------------


def test_defaults_applied() -> None:
    key = complete.cache_key("x")
    assert complete.cache_key(prompt="x") == key
    assert complete.cache_key("x", model="gpt-4o") == key
    assert complete.cache_key("x", "gpt-4o", 0.0) == key
    assert complete.cache_key(temperature=0.0, prompt="x") == key
    assert complete.cache_key("x", model="gpt-4o-mini") != key
    assert complete.cache_key("x", temperature=0.7) != key
    assert complete.cache_key("y") != key


def test_var_args_and_kwargs_are_keyed() -> None:
    @cache_llm(store="memory")
    def f(*args: Any, **kwargs: Any) -> None:
        return None

    assert f.cache_key(1, 2) == f.cache_key(1, 2)
    assert f.cache_key(1, 2) != f.cache_key(2, 1)
    assert f.cache_key(1, 2) != f.cache_key(1, 2, 3)
    assert f.cache_key(1) != f.cache_key()
    assert f.cache_key(a=1, b=2) == f.cache_key(b=2, a=1)
    assert f.cache_key(a=1) != f.cache_key(a=2)
    assert f.cache_key(a=1) != f.cache_key(b=1)
    assert f.cache_key(tools=[{"name": "search"}]) != f.cache_key(tools=[{"name": "calc"}])
    assert complete.cache_key("x", top_p=0.5) != complete.cache_key("x")
    assert complete.cache_key("x", top_p=0.5) != complete.cache_key("x", top_p=0.6)


def test_positional_only_and_keyword_only() -> None:
    @cache_llm(store="memory")
    def f(a: int, /, b: int = 1, *, c: int = 2) -> None:
        return None

    assert f.cache_key(1) == f.cache_key(1, 1) == f.cache_key(1, b=1, c=2)
    assert f.cache_key(1, c=3) != f.cache_key(1)


def test_different_functions_have_different_keys() -> None:
    @cache_llm(store="memory")
    def one(prompt: str) -> str:
        return prompt

    @cache_llm(store="memory")
    def two(prompt: str) -> str:
        return prompt

    assert one.cache_key("x") != two.cache_key("x")


# -- secrets ---------------------------------------------------------------------------------

SECRET_NAMES = [
    "api_key",
    "apikey",
    "openai_api_key",
    "anthropic_api_key",
    "client_secret",
    "secret",
    "password",
    "passwd",
    "authorization",
    "token",
    "access_token",
    "auth_token",
    "bearer_token",
]
NOT_SECRET = ["max_tokens", "stop_token", "tokens", "tokenizer", "api_key_id", "secretary", "passwords", "my_token", "keys"]


@pytest.mark.parametrize("name", SECRET_NAMES + [n.upper() for n in SECRET_NAMES] + ["Api_Key", "OpenAI_API_Key", "Bearer_Token"])
def test_secret_kwargs_dropped_any_case(name: str) -> None:
    base = complete.cache_key("x")
    assert complete.cache_key("x", **{name: "sk-SECRET-1"}) == base
    assert complete.cache_key("x", **{name: "sk-SECRET-2"}) == base


@pytest.mark.parametrize("name", NOT_SECRET)
def test_similar_names_are_kept(name: str) -> None:
    assert complete.cache_key("x", **{name: 1}) != complete.cache_key("x")
    assert complete.cache_key("x", **{name: 1}) != complete.cache_key("x", **{name: 2})


def test_secret_parameters_dropped() -> None:
    @cache_llm(store="memory")
    def f(prompt: str, api_key: Optional[str] = None, Password: str = "", openai_api_key: str = "", max_tokens: int = 10) -> str:
        return prompt

    assert f.cache_key("x", "sk-1", "pw", "sk-2") == f.cache_key("x")
    assert f.cache_key("x", api_key="a") == f.cache_key("x", api_key="b")
    assert f.cache_key("x", max_tokens=11) != f.cache_key("x")


@pytest.mark.parametrize("param", ["headers", "extra_headers"])
@pytest.mark.parametrize("header", ["Authorization", "authorization", "AUTHORIZATION", "api-key", "Api-Key", "x-api-key", "X-API-Key"])
def test_secret_headers_dropped(param: str, header: str) -> None:
    plain = {"X-Trace": "1"}
    base = complete.cache_key("x", **{param: plain})
    assert complete.cache_key("x", **{param: {**plain, header: "Bearer tok-SECRET"}}) == base
    assert complete.cache_key("x", **{param: {header: "other", **plain}}) == base
    # other headers stay in the key
    assert complete.cache_key("x", **{param: {"X-Trace": "2"}}) != base


def test_secret_headers_dropped_from_named_parameter() -> None:
    @cache_llm(store="memory")
    def f(prompt: str, headers: Optional[dict[str, str]] = None, extra_headers: Optional[dict[str, str]] = None) -> str:
        return prompt

    assert f.cache_key("x", {"Authorization": "Bearer a"}) == f.cache_key("x", {})
    assert f.cache_key("x", extra_headers={"x-api-key": "k", "OpenAI-Beta": "v1"}) == f.cache_key("x", extra_headers={"OpenAI-Beta": "v1"})
    assert f.cache_key("x", extra_headers={"OpenAI-Beta": "v2"}) != f.cache_key("x", extra_headers={"OpenAI-Beta": "v1"})


# -- normalization ---------------------------------------------------------------------------


def test_dict_key_order_irrelevant_nested() -> None:
    a = [{"role": "user", "content": "hi", "meta": {"a": 1, "b": [{"x": 1, "y": 2}]}}]
    b = [{"meta": {"b": [{"y": 2, "x": 1}], "a": 1}, "content": "hi", "role": "user"}]
    assert complete.cache_key(a) == complete.cache_key(b)
    assert k({1: "a", 2: "b"}) == k({2: "b", 1: "a"})
    assert k({1: "a"}) != k({"1": "a"})


def test_tuple_and_list_alike() -> None:
    assert k((1, 2)) == k([1, 2])
    assert k({"m": ({"a": (1,)},)}) == k({"m": [{"a": [1]}]})
    assert k((1, 2)) != k([2, 1])


def test_sets() -> None:
    assert k({"b", "a", "c"}) == k({"c", "a", "b"})
    assert k(frozenset({3, 1, 2})) == k(frozenset({1, 2, 3}))
    assert k({1, 2}) != k({1, 3})
    assert k({1, 2}) != k([1, 2])
    assert k({"tools": {"search", "calc"}}) == k({"tools": {"calc", "search"}})


def test_scalars_all_distinct() -> None:
    values = [True, 1, 1.0, "1", b"1", None, False, 0, 0.0, "", b"", "0", [], {}, "True", "None", [1], [True], [1.0]]
    keys = [k(v) for v in values]
    assert len(set(keys)) == len(values)


def test_big_ints_and_floats() -> None:
    assert k(2**70) == k(2**70)
    assert k(2**70) != k(2**70 + 1)
    assert k(-(2**70)) != k(2**70)
    assert k(2**64) != k(str(2**64))
    assert k(0.1) == k(0.1)
    assert k(0.1) != k(0.1000001)


def test_enums_by_value() -> None:
    assert k(Color.RED) == k(Color.RED)
    assert k(Color.RED) != k(Color.BLUE)
    assert k(Color.RED) == k("red")
    assert k(Level.HIGH) == k(2)
    assert k({"c": Color.BLUE}) == k({"c": "blue"})


def test_dataclasses_by_fields() -> None:
    assert k(Point(1, 2)) == k(Point(1, 2))
    assert k(Point(1)) == k(Point(1, 0))
    assert k(Point(1, 2)) != k(Point(2, 1))
    assert k(Segment(Point(0), Point(1))) == k(Segment(Point(0), Point(1)))
    assert k(Segment(Point(0), Point(1))) != k(Segment(Point(0), Point(2)))


def test_pydantic_instances_by_data() -> None:
    assert k(Answer(text="a")) == k(Answer(text="a", score=0.0))
    assert k(Answer(text="a")) != k(Answer(text="b"))
    assert k(Answer(text="a")) != k(Verdict(text="a"))  # the class is part of it
    conv = Conversation(messages=[{"role": "user", "content": "hi"}], answer=Answer(text="x"))
    assert k(conv) == k(Conversation.model_validate(conv.model_dump()))
    assert k(conv) != k(Conversation(messages=[{"role": "user", "content": "hi"}]))


def _model_factory(kind: type) -> type[pydantic.BaseModel]:
    class Schema(pydantic.BaseModel):
        value: kind  # type: ignore[valid-type]

    return Schema


def test_pydantic_model_classes_as_response_format() -> None:
    @cache_llm(store="memory")
    def structured(prompt: str, response_format: Any = None) -> str:
        return prompt

    assert structured.cache_key("x", response_format=Answer) == structured.cache_key("x", response_format=Answer)
    assert structured.cache_key("x", response_format=Answer) != structured.cache_key("x", response_format=Verdict)
    assert structured.cache_key("x", response_format=Answer) != structured.cache_key("x")
    # same qualified name, different JSON schema: different keys
    as_int, as_str = _model_factory(int), _model_factory(str)
    assert as_int.__qualname__ == as_str.__qualname__
    assert structured.cache_key("x", response_format=as_int) != structured.cache_key("x", response_format=as_str)
    # other classes by qualified name
    assert k(Point) == k(Point)
    assert k(Point) != k(Segment)
    assert k(Point) != k(Point(1))


def test_tagged_standard_types() -> None:
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)
    samples = [
        when,
        when.replace(tzinfo=None),
        dt.date(2024, 5, 1),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        decimal.Decimal("1.10"),
        pathlib.PurePosixPath("docs/a.txt"),
        dt.timedelta(seconds=5),
    ]
    keys = [k(v) for v in samples]
    assert len(set(keys)) == len(samples)
    assert keys == [k(v) for v in samples]
    for value in samples:
        assert k(value) != k(str(value))
    assert k(dt.datetime(2024, 5, 1)) != k(dt.date(2024, 5, 1))
    assert k(dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)) != k(dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))))
    assert k(uuid.UUID(int=1)) != k(uuid.UUID(int=2))
    assert k(pathlib.Path("docs/a.txt")) == k(pathlib.PurePosixPath("docs/a.txt"))
    assert k(pathlib.Path("docs/a.txt")) != k(pathlib.Path("docs/b.txt"))


def test_cache_key_protocol() -> None:
    assert k(Client("https://a", "sk-1")) == k(Client("https://a", "sk-2"))
    assert k(Client("https://a", "sk-1")) != k(Client("https://b", "sk-1"))
    assert k(Client("https://a", "sk-1")) != k(OtherClient("https://a", "sk-1"))
    assert k([Client("https://a", "k")]) == k((Client("https://a", "j"),))


def test_unkeyable_object_raises_typeerror_with_fixes() -> None:
    class Opaque:
        pass

    for call in (
        lambda: complete.cache_key(Opaque()),
        lambda: complete.cache_key([1, {"nested": Opaque()}]),
        lambda: complete(Opaque()),
    ):
        with pytest.raises(TypeError) as err:
            call()
        message = str(err.value)
        assert "prompt" in message
        assert "Opaque" in message
        assert 'ignore=("prompt",)' in message
        assert "key=" in message
        assert "__cache_key__" in message

    with pytest.raises(TypeError, match="client"):
        complete.cache_key("x", client=Opaque())


def test_unkeyable_object_is_not_called(tmp_path: Any) -> None:
    calls = []

    @cache_llm(cache_dir=tmp_path)
    def f(prompt: str, client: Any) -> str:
        calls.append(prompt)
        return prompt

    with pytest.raises(TypeError):
        f("x", object())
    assert calls == []


def test_key_callable() -> None:
    @cache_llm(store="memory", key=lambda prompt, client=None, model="m": {"prompt": prompt.strip(), "model": model})
    def f(prompt: str, client: Any = None, model: str = "m") -> str:
        return prompt

    assert f.cache_key("x", object()) == f.cache_key(" x ", client=object())
    assert f.cache_key("x", model="n") != f.cache_key("x")
    assert len(f.cache_key("x")) == 32

    @cache_llm(store="memory", key=lambda prompt: object())
    def bad(prompt: str) -> str:
        return prompt

    with pytest.raises(TypeError, match="key="):
        bad.cache_key("x")


def test_key_callable_end_to_end(tmp_path: Any) -> None:
    calls = []

    @cache_llm(cache_dir=tmp_path, key=lambda prompt, client: prompt.lower())
    def f(prompt: str, client: Any) -> str:
        calls.append(prompt)
        return prompt

    assert f("Hi", object()) == "Hi"
    assert f("HI", object()) == "Hi"
    assert calls == ["Hi"]


def test_ignore_leaves_parameter_out() -> None:
    @cache_llm(store="memory", ignore=("client", "callback"))
    def f(prompt: str, client: Any = None, callback: Any = None) -> str:
        return prompt

    assert f.cache_key("x", object(), print) == f.cache_key("x")
    assert f.cache_key("y") != f.cache_key("x")


def test_version_changes_key() -> None:
    def raw(prompt: str) -> str:
        return prompt

    keys = {cache_llm(store="memory", version=v)(raw).cache_key("x") for v in (None, 1, "1", 2, "v2", (1, 2))}
    assert len(keys) == 6
    assert cache_llm(store="memory", version=3)(raw).cache_key("x") == cache_llm(store="memory", version=3)(raw).cache_key("x")
    assert cache_llm(store="memory")(raw).cache_key("x") == cache_llm(store="memory", version=None)(raw).cache_key("x")


def test_key_stable_within_process() -> None:
    value = {"messages": [{"role": "user", "content": "hi"}], "tools": {"a", "b"}, "n": 2**80, "when": dt.date(2024, 1, 1)}
    assert len({complete.cache_key(value) for _ in range(5)}) == 1


# --- the native fast path must produce exactly the pure-Python bytes (keys never depend on it) ---


_LEAVES = [
    0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**64 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -(2**31) - 1, -(2**63),
    0.0, -0.0, 1.5, 1e300, float("inf"), True, False, None,
    "", "a" * 31, "b" * 32, "c" * 255, "d" * 256, "é中😀" * 30, "x" * 65536,
    b"", b"\x00" * 255, b"\x01" * 256,
]


def _random_tree(rng, depth=0):
    kind = rng.random()
    if depth > 3 or kind < 0.45:
        return rng.choice(_LEAVES) if kind > 0.05 else "".join(rng.choice("azAZ09 é中\n") for _ in range(rng.randint(0, 40)))
    if kind < 0.7:
        return [_random_tree(rng, depth + 1) for _ in range(rng.choice([0, 1, 15, 16, 17]))]
    return {
        "".join(rng.choice("abcXYZé_") for _ in range(rng.randint(0, 6))): _random_tree(rng, depth + 1)
        for _ in range(rng.choice([0, 1, 15, 16, 17]))
    }


def test_fast_key_packing_matches_pure_python_bytes():
    import random

    import msgpack

    from memollm import keys

    rng = random.Random(20261122)
    for _ in range(400):
        tree = _random_tree(rng)
        assert keys.pack_normalized(tree) == msgpack.packb(keys.normalize(tree), use_bin_type=True)
    # tuples pack like lists; anything tagged falls back to the pure-Python normalizer
    assert keys.pack_normalized((1, "a")) == keys.pack_normalized([1, "a"])
    import datetime

    tagged = {"when": datetime.date(2024, 1, 2), "n": 2**70, "s": {1, 2}}
    assert keys.pack_normalized(tagged) == msgpack.packb(keys.normalize(tagged), use_bin_type=True)
