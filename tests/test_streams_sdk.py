"""Streams through the real ``openai`` and ``anthropic`` SDKs, against the loopback FakeLLMServer.

The server counts requests: after two identical calls through a cached helper it has seen one.
Clients are created per test (``max_retries=0``) and closed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import anthropic
import openai
import pytest
import pytest_asyncio
from anthropic.types import RawContentBlockDeltaEvent, RawMessageStartEvent
from llm_server import FakeLLMServer
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from memollm import cache_llm
from memollm.streams import AsyncReplayStream, ReplayStream

pytestmark = pytest.mark.timeout(30)

API_KEY = "sk-test"
MODEL = "gpt-test"
CLAUDE = "claude-test"


def ask(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def content_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture
def oai(server: FakeLLMServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url, max_retries=0, timeout=5)
    yield client
    client.close()


@pytest_asyncio.fixture
async def aoai(server: FakeLLMServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=server.base_url, max_retries=0, timeout=5)
    yield client
    await client.close()


@pytest.fixture
def claude(server: FakeLLMServer) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(api_key=API_KEY, base_url=server.anthropic_base_url, max_retries=0, timeout=5)
    yield client
    client.close()


@pytest_asyncio.fixture
async def aclaude(server: FakeLLMServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(api_key=API_KEY, base_url=server.anthropic_base_url, max_retries=0, timeout=5)
    yield client
    await client.close()


# -- (a) generator helpers that yield delta.content ---------------------------------------------


def test_openai_generator_helper(tmp_path, server, oai):
    @cache_llm(cache_dir=tmp_path, ignore=("client",))
    def stream_text(client: openai.OpenAI, prompt: str, model: str = MODEL):
        with client.chat.completions.create(model=model, messages=ask(prompt), stream=True) as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

    first = list(stream_text(oai, "tell me a story"))
    second = list(stream_text(oai, "tell me a story"))
    assert "".join(first) == "echo: tell me a story"
    assert first == second == ["echo: ", "tell ", "me ", "a ", "story"]
    assert server.request_count == 1
    assert list(stream_text(oai, "tell me a story", model="other")) == first
    assert server.request_count == 2


@pytest.mark.asyncio
async def test_openai_async_generator_helper(tmp_path, server, aoai):
    @cache_llm(cache_dir=tmp_path, ignore=("client",))
    async def stream_text(client: openai.AsyncOpenAI, prompt: str):
        stream = await client.chat.completions.create(model=MODEL, messages=ask(prompt), stream=True)
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

    first = [t async for t in stream_text(aoai, "hello async world")]
    second = [t async for t in stream_text(aoai, "hello async world")]
    assert "".join(first) == "echo: hello async world"
    assert first == second
    assert server.request_count == 1


def test_openai_generator_helper_aborted_stream_is_not_stored(tmp_path, server, oai):
    @cache_llm(cache_dir=tmp_path, ignore=("client",))
    def stream_text(client: openai.OpenAI, prompt: str):
        with client.chat.completions.create(model=MODEL, messages=ask(prompt), stream=True) as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

    def undecorated(prompt: str) -> list[str]:
        out = []
        with oai.chat.completions.create(model=MODEL, messages=ask(prompt), stream=True) as stream:
            for chunk in stream:
                out.append(chunk)
        return out

    server.abort_next_stream(after_tokens=2)
    with pytest.raises(Exception) as raw_error:
        undecorated("one two three four")

    server.abort_next_stream(after_tokens=2)
    got: list[str] = []
    with pytest.raises(Exception) as cached_error:
        for token in stream_text(oai, "one two three four"):
            got.append(token)
    assert type(cached_error.value) is type(raw_error.value)  # the SDK's own error, unchanged
    assert got == ["echo: ", "one "]
    assert stream_text.cache_info().entries == 0

    assert "".join(stream_text(oai, "one two three four")) == "echo: one two three four"
    assert "".join(stream_text(oai, "one two three four")) == "echo: one two three four"
    assert server.request_count == 3  # raw, aborted, recorded; the last one was a hit


# -- (b) helpers that return the SDK's Stream -------------------------------------------------


def test_openai_stream_returning_helper(tmp_path, server, oai):
    @cache_llm(cache_dir=tmp_path, ignore=("client",))
    def open_stream(client: openai.OpenAI, prompt: str) -> openai.Stream[ChatCompletionChunk]:
        return client.chat.completions.create(model=MODEL, messages=ask(prompt), stream=True, stream_options={"include_usage": True})

    stream = open_stream(oai, "stream me")
    assert stream.response.status_code == 200  # SDK attributes reach the real stream
    assert stream.response.headers["content-type"].startswith("text/event-stream")
    recorded = list(stream)
    assert all(type(c) is ChatCompletionChunk for c in recorded)
    assert content_of(recorded) == "echo: stream me"
    assert recorded[-1].usage is not None and recorded[-1].usage.completion_tokens == 3

    replay = open_stream(oai, "stream me")
    assert isinstance(replay, ReplayStream) and not isinstance(replay, openai.Stream)
    with replay as s:
        replayed = list(s)
    assert replayed == recorded
    assert all(type(c) is ChatCompletionChunk for c in replayed)
    assert server.request_count == 1
    info = open_stream.cache_info()
    assert (info.hits, info.misses, info.entries) == (1, 1, 1)
    assert info.tokens_saved == recorded[-1].usage.total_tokens


def test_openai_stream_returning_helper_with_block(tmp_path, server, oai):
    @cache_llm(cache_dir=tmp_path, ignore=("client",))
    def open_stream(client: openai.OpenAI, prompt: str):
        return client.chat.completions.create(model=MODEL, messages=ask(prompt), stream=True)

    with open_stream(oai, "with block") as stream:
        assert stream.response.status_code == 200
        recorded = [c for c in stream]
    with open_stream(oai, "with block") as stream:
        replayed = [c for c in stream]
    assert replayed == recorded and content_of(replayed) == "echo: with block"
    assert server.request_count == 1

    # Leaving a with-block early stores nothing and closes the SDK stream.
    with open_stream(oai, "left early") as stream:
        next(stream)
        response = stream.response
    assert response.is_closed
    assert open_stream.cache_info().entries == 1
    assert content_of(list(open_stream(oai, "left early"))) == "echo: left early"
    assert server.request_count == 3


@pytest.mark.asyncio
async def test_openai_async_stream_returning_helper(tmp_path, server, aoai):
    @cache_llm(cache_dir=tmp_path, ignore=("client",))
    async def open_stream(client: openai.AsyncOpenAI, prompt: str):
        return await client.chat.completions.create(model=MODEL, messages=ask(prompt), stream=True)

    stream = await open_stream(aoai, "async stream")
    assert stream.response.status_code == 200
    async with stream as s:
        recorded = [c async for c in s]
    assert all(type(c) is ChatCompletionChunk for c in recorded)
    assert content_of(recorded) == "echo: async stream"

    replay = await open_stream(aoai, "async stream")
    assert isinstance(replay, AsyncReplayStream) and not isinstance(replay, openai.AsyncStream)
    async with replay as s:
        replayed = [c async for c in s]
    assert replayed == recorded
    assert all(type(c) is ChatCompletionChunk for c in replayed)
    assert server.request_count == 1

    partial = await open_stream(aoai, "closed early")
    await partial.__anext__()
    await partial.close()
    assert partial.response.is_closed
    assert open_stream.cache_info().entries == 1


# -- (c) non-streaming create --------------------------------------------------------------------


def test_openai_non_streaming_completion(tmp_path, server, oai):
    @cache_llm(cache_dir=tmp_path, ignore=("client",))
    def complete(client: openai.OpenAI, prompt: str) -> ChatCompletion:
        return client.chat.completions.create(model=MODEL, messages=ask(prompt))

    first = complete(oai, "plain call")
    second = complete(oai, "plain call")
    assert server.request_count == 1
    assert type(second) is ChatCompletion
    assert second == first
    assert second.model_dump() == first.model_dump()
    assert second.model_dump(exclude_unset=True) == first.model_dump(exclude_unset=True)
    assert second._request_id == first._request_id
    assert repr(second) == repr(first)
    assert second.choices[0].message.content == "echo: plain call"
    assert first.usage is not None
    assert complete.cache_info().tokens_saved == first.usage.total_tokens


@pytest.mark.asyncio
async def test_openai_async_non_streaming_completion(tmp_path, server, aoai):
    @cache_llm(cache_dir=tmp_path, ignore=("client",))
    async def complete(client: openai.AsyncOpenAI, prompt: str) -> ChatCompletion:
        return await client.chat.completions.create(model=MODEL, messages=ask(prompt))

    first = await complete(aoai, "plain async")
    second = await complete(aoai, "plain async")
    assert type(second) is ChatCompletion and second == first
    assert server.request_count == 1


# -- (d) anthropic ------------------------------------------------------------------------------


def test_anthropic_raw_event_stream_helper(tmp_path, server, claude):
    @cache_llm(cache_dir=tmp_path, ignore=("client",))
    def open_stream(client: anthropic.Anthropic, prompt: str):
        return client.messages.create(model=CLAUDE, max_tokens=64, messages=ask(prompt), stream=True)

    with open_stream(claude, "hi claude") as stream:
        recorded = list(stream)
    replayed = list(open_stream(claude, "hi claude"))
    assert replayed == recorded
    assert [type(e) for e in replayed] == [type(e) for e in recorded]
    assert type(replayed[0]) is RawMessageStartEvent
    text = "".join(e.delta.text for e in replayed if isinstance(e, RawContentBlockDeltaEvent) and e.delta.type == "text_delta")
    assert text == "echo: hi claude"
    assert server.request_count == 1


def test_anthropic_text_stream_generator_helper(tmp_path, server, claude):
    @cache_llm(cache_dir=tmp_path, ignore=("client",))
    def stream_text(client: anthropic.Anthropic, prompt: str):
        with client.messages.stream(model=CLAUDE, max_tokens=64, messages=ask(prompt)) as stream:
            yield from stream.text_stream
            return stream.get_final_message()

    def drain(gen):
        chunks = []
        try:
            while True:
                chunks.append(next(gen))
        except StopIteration as stop:
            return chunks, stop.value

    first, final = drain(stream_text(claude, "stream me please"))
    second, replayed_final = drain(stream_text(claude, "stream me please"))
    assert "".join(first) == "echo: stream me please"
    assert first == second
    assert isinstance(replayed_final, anthropic.types.Message) and type(replayed_final) is type(final)
    assert replayed_final.content[0].text == "echo: stream me please"
    assert replayed_final.usage.output_tokens == final.usage.output_tokens
    assert server.request_count == 1


@pytest.mark.asyncio
async def test_anthropic_async_helpers(tmp_path, server, aclaude):
    @cache_llm(cache_dir=tmp_path, ignore=("client",))
    async def stream_text(client: anthropic.AsyncAnthropic, prompt: str):
        async with client.messages.stream(model=CLAUDE, max_tokens=64, messages=ask(prompt)) as stream:
            async for text in stream.text_stream:
                yield text

    @cache_llm(cache_dir=tmp_path, ignore=("client",))
    async def open_stream(client: anthropic.AsyncAnthropic, prompt: str):
        return await client.messages.create(model=CLAUDE, max_tokens=64, messages=ask(prompt), stream=True)

    assert "".join([t async for t in stream_text(aclaude, "async claude")]) == "echo: async claude"
    assert "".join([t async for t in stream_text(aclaude, "async claude")]) == "echo: async claude"
    async with await open_stream(aclaude, "raw events") as s:
        recorded = [e async for e in s]
    replayed = [e async for e in await open_stream(aclaude, "raw events")]
    assert replayed == recorded and type(replayed[0]) is RawMessageStartEvent
    assert server.request_count == 2


# -- (e) the client is ignored, its api key never stored ------------------------------------------


def test_client_parameter_ignored_and_api_key_never_stored(tmp_path, server):
    cache_dir = tmp_path / "cache"

    @cache_llm(cache_dir=cache_dir, ignore=("client",))
    def stream_text(client: openai.OpenAI, prompt: str):
        for chunk in client.chat.completions.create(model=MODEL, messages=ask(prompt), stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    @cache_llm(cache_dir=cache_dir, ignore=("client",))
    def open_stream(client: openai.OpenAI, prompt: str):
        return client.chat.completions.create(model=MODEL, messages=ask(prompt), stream=True)

    @cache_llm(cache_dir=cache_dir, ignore=("client",))
    def complete(client: openai.OpenAI, prompt: str):
        return client.chat.completions.create(model=MODEL, messages=ask(prompt))

    one = openai.OpenAI(api_key=API_KEY, base_url=server.base_url, max_retries=0, timeout=5)
    other = openai.OpenAI(api_key="sk-other-key", base_url=server.base_url, max_retries=0, timeout=5)
    try:
        text = list(stream_text(one, "secret stuff"))
        assert list(stream_text(other, "secret stuff")) == text  # a different client: the same entry
        assert stream_text.cache_key(one, "secret stuff") == stream_text.cache_key(other, "secret stuff")
        assert content_of(list(open_stream(one, "secret stuff"))) == "echo: secret stuff"
        assert content_of(list(open_stream(other, "secret stuff"))) == "echo: secret stuff"
        assert complete(one, "secret stuff") == complete(other, "secret stuff")
        assert server.request_count == 3
    finally:
        one.close()
        other.close()

    files = [os.path.join(root, name) for root, _, names in os.walk(cache_dir) for name in names]
    assert any(name.endswith(".msgpack") for name in files)
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        for secret in (API_KEY.encode(), b"sk-other-key", b"Bearer"):
            assert secret not in data, f"{secret!r} found in {path}"
