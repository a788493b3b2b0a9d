"""The openai SDK through ``memollm.http``: sync and async, plain and streamed, Chat Completions and
the Responses API, over httpx2 and over httpx, against the loopback fake provider.

The server counts requests: a hit makes none, and answers with the same content (streams with
the same chunks).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator

import openai
import pytest
from llm_server import FakeLLMServer, reply_tokens

import memollm.http

pytestmark = pytest.mark.timeout(60)

API_KEY = "sk-test-openai-0123456789"
LIBRARIES = [
    pytest.param("httpx2", marks=pytest.mark.skipif(importlib.util.find_spec("httpx2") is None, reason="httpx2 is not installed (the extras add it on Python 3.11 or newer)")),
    "httpx",
]


def ask(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh(server: FakeLLMServer) -> None:
    server.reset()


def sync_openai(server: FakeLLMServer, http_client: object) -> openai.OpenAI:
    return openai.OpenAI(api_key=API_KEY, base_url=server.base_url, http_client=http_client, max_retries=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("library", LIBRARIES)
def test_chat_completion_plain(server: FakeLLMServer, tmp_path, library: str) -> None:
    http = memollm.http.client(library=library, cache_dir=tmp_path)
    assert type(http).__module__.partition(".")[0] == library
    client = sync_openai(server, http)
    first = client.chat.completions.create(model="gpt-test", messages=ask("hello plain"), temperature=0)
    second = client.chat.completions.create(model="gpt-test", messages=ask("hello plain"), temperature=0)
    assert server.request_count == 1
    assert second.choices[0].message.content == first.choices[0].message.content == "echo: hello plain"
    assert second.usage == first.usage
    assert second.id == first.id
    other = client.chat.completions.create(model="gpt-test", messages=ask("hello plain"), temperature=0.5)
    assert server.request_count == 2 and other.choices[0].message.content == "echo: hello plain"
    info = http._transport.cache_info()
    assert (info.hits, info.misses, info.entries) == (1, 2, 2)
    assert info.tokens_saved == first.usage.total_tokens  # type: ignore[union-attr]
    client.close()


@pytest.mark.parametrize("library", LIBRARIES)
def test_chat_completion_stream(server: FakeLLMServer, tmp_path, library: str) -> None:
    client = sync_openai(server, memollm.http.client(library=library, cache_dir=tmp_path))
    server.chunk_delay = 0.01

    def run() -> list[object]:
        stream = client.chat.completions.create(
            model="gpt-test", messages=ask("stream this now"), stream=True, stream_options={"include_usage": True}
        )
        return list(stream)

    first, second = run(), run()
    assert server.request_count == 1
    deltas = [c.choices[0].delta.content for c in second if c.choices]  # type: ignore[attr-defined]
    assert "".join(d or "" for d in deltas) == "echo: stream this now"
    assert [c.model_dump() for c in second] == [c.model_dump() for c in first]  # type: ignore[attr-defined]
    assert second[-1].usage.completion_tokens == len(reply_tokens("echo: stream this now"))  # type: ignore[attr-defined]
    client.close()


@pytest.mark.parametrize("library", LIBRARIES)
def test_responses_api_plain_and_stream(server: FakeLLMServer, tmp_path, library: str) -> None:
    client = sync_openai(server, memollm.http.client(library=library, cache_dir=tmp_path))
    texts = [client.responses.create(model="gpt-test", input="answer me", instructions="be brief").output_text for _ in range(2)]
    assert texts == ["echo: answer me"] * 2 and server.request_count == 1
    runs = [list(client.responses.create(model="gpt-test", input="stream me", stream=True)) for _ in range(2)]
    assert server.request_count == 2
    assert [e.type for e in runs[1]] == [e.type for e in runs[0]]
    assert runs[1][-1].type == "response.completed"
    assert runs[1][-1].response.output_text == "echo: stream me"  # type: ignore[union-attr]
    with client.responses.stream(model="gpt-test", input="stream me") as stream:  # the SDK's helper, same request
        final = stream.get_final_response()
    assert final.output_text == "echo: stream me" and server.request_count == 2
    client.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("library", LIBRARIES)
async def test_async_chat_and_responses(server: FakeLLMServer, tmp_path, library: str) -> None:
    http = memollm.http.async_client(library=library, cache_dir=tmp_path)
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=server.base_url, http_client=http, max_retries=0)
    for _ in range(2):
        plain = await client.chat.completions.create(model="gpt-test", messages=ask("async plain"))
        assert plain.choices[0].message.content == "echo: async plain"
    assert server.request_count == 1
    streamed = []
    for _ in range(2):
        stream = await client.chat.completions.create(model="gpt-test", messages=ask("async stream"), stream=True)
        streamed.append([c.choices[0].delta.content async for c in stream if c.choices])
    assert streamed[0] == streamed[1] and "".join(s or "" for s in streamed[0]) == "echo: async stream"
    assert server.request_count == 2
    for _ in range(2):
        events = [e async for e in await client.responses.create(model="gpt-test", input="async resp", stream=True)]
        assert events[-1].type == "response.completed"
    for _ in range(2):
        assert (await client.responses.create(model="gpt-test", input="async resp")).output_text == "echo: async resp"
    assert server.request_count == 4
    info = http._transport.cache_info()
    assert (info.hits, info.misses) == (4, 4)
    await client.close()


def test_replayed_stream_has_the_recorded_chunk_boundaries(server: FakeLLMServer, tmp_path) -> None:
    http = memollm.http.client(cache_dir=tmp_path)
    body = {"model": "gpt-test", "stream": True, "messages": ask("one two three four")}
    server.chunk_delay = 0.01
    runs = []
    for _ in range(2):
        with http.stream("POST", server.base_url + "/chat/completions", json=body) as response:
            runs.append(list(response.iter_raw()))
    assert server.request_count == 1
    assert runs[1] == runs[0] and len(runs[0]) > 3  # one chunk per event, as the provider sent them


def test_realtime_replay_keeps_the_pace(server: FakeLLMServer, tmp_path) -> None:
    server.chunk_delay = 0.05
    body = {"model": "gpt-test", "stream": True, "messages": ask("a b c d")}
    with memollm.http.client(cache_dir=tmp_path) as http:
        with http.stream("POST", server.base_url + "/chat/completions", json=body) as response:
            response.read()
    realtime = memollm.http.client(cache_dir=tmp_path, replay="realtime")
    start = time.perf_counter()
    with realtime.stream("POST", server.base_url + "/chat/completions", json=body) as response:
        response.read()
    assert server.request_count == 1
    assert time.perf_counter() - start >= 0.15  # five tokens 50 ms apart were recorded: four gaps replayed
