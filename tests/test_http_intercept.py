"""``memollm.http.intercept()`` and the ``memollm_http`` pytest fixture.

Every httpx and httpx2 client, created before the block or inside it, sync or async, sends
through the cache; leaving the block (normally or by an exception) restores the classes exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from llm_server import FakeLLMServer

import memollm.http

httpx2 = pytest.importorskip("httpx2", reason="httpx2 is not installed (the extras add it on Python 3.11 or newer)")

pytestmark = pytest.mark.timeout(60)
pytest_plugins = ["pytester"]

CLASSES = [httpx.Client, httpx.AsyncClient, httpx2.Client, httpx2.AsyncClient]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh(server: FakeLLMServer) -> None:
    server.reset()


def body(prompt: str) -> dict[str, Any]:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": prompt}]}


def originals() -> list[Any]:
    return [cls.__dict__["_transport_for_url"] for cls in CLASSES]


def test_every_client_goes_through_the_cache_and_the_classes_are_restored(server: FakeLLMServer, tmp_path) -> None:
    before = originals()
    early = [httpx.Client(), httpx2.Client()]  # made before the block
    with memollm.http.intercept(cache_dir=tmp_path) as cache:
        assert originals() != before
        for client in early + [httpx.Client(), httpx2.Client()]:
            assert (
                client.post(server.base_url + "/chat/completions", json=body("everyone")).json()["choices"][0]["message"]["content"]
                == "echo: everyone"
            )
        assert server.request_count == 1
        client.get(server.url + "/v1/models")  # not matched (GET): passes through
        assert server.request_count == 2
        assert (cache.cache_info().hits, cache.cache_info().misses) == (3, 1)
    assert originals() == before
    early[0].post(server.base_url + "/chat/completions", json=body("everyone"))
    assert server.request_count == 3


def test_async_clients(server: FakeLLMServer, tmp_path) -> None:
    async def main() -> list[str]:
        answers = []
        async with httpx.AsyncClient() as a, httpx2.AsyncClient() as b:
            for client in (a, b, a):
                response = await client.post(server.base_url + "/chat/completions", json=body("async everyone"))
                answers.append(response.json()["choices"][0]["message"]["content"])
        return answers

    with memollm.http.intercept(cache_dir=tmp_path):
        assert asyncio.run(main()) == ["echo: async everyone"] * 3
    assert server.request_count == 1


def test_restored_after_an_exception(server: FakeLLMServer, tmp_path) -> None:
    before = originals()
    with pytest.raises(ZeroDivisionError):
        with memollm.http.intercept(cache_dir=tmp_path):
            httpx2.Client().post(server.base_url + "/chat/completions", json=body("boom"))
            raise ZeroDivisionError("inside the block")
    assert originals() == before

    @memollm.http.intercept(cache_dir=tmp_path)
    def failing() -> None:
        raise KeyError("inside")

    with pytest.raises(KeyError):
        failing()
    assert originals() == before


def test_nested_blocks_and_decorators(server: FakeLLMServer, tmp_path) -> None:
    before = originals()
    outer = memollm.http.intercept(cache_dir=tmp_path / "outer")
    inner = memollm.http.intercept(cache_dir=tmp_path / "inner")
    client = httpx2.Client()
    with outer:
        client.post(server.base_url + "/chat/completions", json=body("nested"))
        with inner:
            client.post(server.base_url + "/chat/completions", json=body("nested"))  # another cache dir: a miss
            client.post(server.base_url + "/chat/completions", json=body("nested"))
        assert originals() != before  # still intercepted by the outer block
        client.post(server.base_url + "/chat/completions", json=body("nested"))
    assert originals() == before
    assert server.request_count == 2
    assert (outer.cache_info().hits, inner.cache_info().hits) == (1, 1)

    @memollm.http.intercept(cache_dir=tmp_path / "outer")
    def sync_helper() -> str:
        return str(httpx.Client().post(server.base_url + "/chat/completions", json=body("nested")).json()["id"])

    @memollm.http.intercept(cache_dir=tmp_path / "outer")
    async def async_helper() -> str:
        async with httpx2.AsyncClient() as c:
            return str((await c.post(server.base_url + "/chat/completions", json=body("nested"))).json()["id"])

    assert sync_helper() == asyncio.run(async_helper())
    assert server.request_count == 2
    assert originals() == before


def test_a_caching_client_is_not_cached_twice(server: FakeLLMServer, tmp_path) -> None:
    own = memollm.http.client(cache_dir=tmp_path / "own")
    with memollm.http.intercept(cache_dir=tmp_path / "intercepted") as cache:
        for _ in range(2):
            own.post(server.base_url + "/chat/completions", json=body("once"))
    assert server.request_count == 1
    assert cache.cache_info().misses == 0 and own._transport.cache_info().hits == 1


def test_the_openai_sdk_default_client_under_intercept(server: FakeLLMServer, tmp_path) -> None:
    with memollm.http.intercept(cache_dir=tmp_path):
        client = openai.OpenAI(api_key="sk-x", base_url=server.base_url, max_retries=0)
        texts = [
            client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "sdk"}]).choices[0].message.content
            for _ in range(2)
        ]
        streamed = [
            "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "sdk s"}], stream=True)
                if c.choices
            )
            for _ in range(2)
        ]
    assert texts == ["echo: sdk"] * 2 and streamed == ["echo: sdk s"] * 2
    assert server.request_count == 2


def test_intercept_refuses_library_and_transport() -> None:
    with pytest.raises(TypeError, match="library"):
        memollm.http.intercept(library="httpx")


# -- pytest -------------------------------------------------------------------------------------

INNER = """
import httpx2, pytest

URL = {url!r}
BODY = {{"model": "m", "messages": [{{"role": "user", "content": "from a test"}}]}}


def test_recorded(memollm_http):
    assert httpx2.Client().post(URL, json=BODY).json()["choices"][0]["message"]["content"] == "echo: from a test"


@pytest.mark.memollm(mode="offline")
def test_offline_by_marker(memollm_http):
    with pytest.raises(Exception) as caught:
        httpx2.Client().post(URL, json={{"model": "m", "messages": []}})
    assert "no cached entry" in str(caught.value)
    assert httpx2.Client().post(URL, json=BODY).status_code == 200
    assert memollm_http.cache_info().hits == 1
"""


def test_memollm_http_fixture_records_then_replays_offline(pytester: pytest.Pytester, server: FakeLLMServer, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("MEMOLLM_CACHE_DIR", str(tmp_path / "suite-cache"))
    pytester.makepyfile(test_inner=INNER.format(url=server.base_url + "/chat/completions"))
    result = pytester.runpytest_subprocess("-p", "memollm.pytest_plugin", "-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert server.request_count == 1
    result = pytester.runpytest_subprocess("-p", "memollm.pytest_plugin", "-q", "-p", "no:cacheprovider", "--memollm-mode=offline")
    result.assert_outcomes(passed=2)
    assert server.request_count == 1
