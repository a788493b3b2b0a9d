"""Structured outputs: openai's ``.parse()`` results and other parametrized pydantic generics."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Generic, Iterator, Literal, Optional, TypeVar

import openai
import pydantic
import pytest
from llm_server import FakeLLMServer

from memollm import cache_llm

pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")


class Weather(pydantic.BaseModel):
    city: str
    temp: float


class Page(pydantic.BaseModel, Generic[T]):
    items: list[T]
    cursor: Optional[str] = None


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(reply='{"city": "Paris", "temp": 21.5}') as srv:
        yield srv


def test_openai_parse_results_are_served_from_the_cache(server: FakeLLMServer, tmp_path: Path) -> None:
    client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0, timeout=5)

    @cache_llm(cache_dir=tmp_path, ignore=("client",))
    def extract(client: openai.OpenAI, prompt: str) -> object:
        return client.chat.completions.parse(model="gpt-test", messages=[{"role": "user", "content": prompt}], response_format=Weather)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            first = extract(client, "weather in Paris?")
            hit = extract(client, "weather in Paris?")
    finally:
        client.close()
    assert server.request_count == 1
    assert extract.cache_info().hits == 1
    assert type(hit) is type(first) and hit == first and hit is not first
    assert type(hit.choices[0]) is type(first.choices[0])
    assert hit.choices[0].message.parsed == Weather(city="Paris", temp=21.5)
    assert type(hit.choices[0].message.parsed) is Weather


@pytest.mark.parametrize(
    "page",
    [
        Page[Weather](items=[Weather(city="Oslo", temp=-3.0)], cursor="c1"),
        Page[dt.date](items=[dt.date(2026, 12, 2)]),
        Page[Page[int]](items=[Page[int](items=[1, 2])]),
        Page[Optional[Weather]](items=[None, Weather(city="Rome", temp=18.0)]),
        Page[list[Weather]](items=[[Weather(city="Lima", temp=20.0)]]),
        Page[Literal["yes", "no"]](items=["yes"]),
    ],
    ids=["model", "date", "nested", "optional", "list", "literal"],
)
@pytest.mark.parametrize("kind", ["disk", "memory"])
def test_parametrized_generic_models_come_back_as_their_class(page: pydantic.BaseModel, kind: str, tmp_path: Path) -> None:
    calls = []

    @cache_llm(**({"store": "memory"} if kind == "memory" else {"cache_dir": tmp_path}))
    def produce(name: str) -> pydantic.BaseModel:
        calls.append(name)
        return page

    produce.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        produce("x")
        hit = produce("x")
    assert calls == ["x"]
    assert type(hit) is type(page) and hit == page and hit is not page


def test_a_generic_model_stored_by_one_process_is_read_by_another(tmp_path: Path) -> None:
    module = tmp_path / "models_for_generics.py"
    module.write_text(
        textwrap.dedent(
            """
            from typing import Generic, TypeVar
            import pydantic
            T = TypeVar("T")
            class Item(pydantic.BaseModel):
                name: str
            class Box(pydantic.BaseModel, Generic[T]):
                content: T
            """
        )
    )
    script = textwrap.dedent(
        """
        import sys, warnings
        warnings.simplefilter("error")
        from models_for_generics import Box, Item
        from memollm import cache_llm
        calls = []

        @cache_llm(cache_dir=sys.argv[1])
        def pack(name):
            calls.append(name)
            return Box[Item](content=Item(name=name))

        value = pack("a")
        assert type(value) is Box[Item] and value.content == Item(name="a"), value
        print(len(calls))
        """
    )
    runs = [
        subprocess.run([sys.executable, "-c", script, str(tmp_path / "cache")], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    assert [r.stdout.strip() for r in runs] == ["1", "0"]
