"""``memollm.http`` under the SDKs and frameworks people use: anthropic (plain, streamed, the
``messages.stream()`` helper), LangChain's ``ChatOpenAI``, Agno agents, litellm under ``intercept()``.

Each runs twice against the loopback fake provider: one provider request, the same content.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from llm_server import FakeLLMServer, reply_tokens

import memollm.http
from memollm import CacheMiss, cache_llm, cache_mode

pytestmark = pytest.mark.timeout(120)

API_KEY = "sk-ant-test-0123456789"
CLAUDE = "claude-test"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh(server: FakeLLMServer) -> None:
    server.reset()


def claude(server: FakeLLMServer, http: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=API_KEY, base_url=server.anthropic_base_url, http_client=http, max_retries=0)


# -- anthropic ----------------------------------------------------------------------------------


def test_anthropic_messages_create_plain_and_streamed(server: FakeLLMServer, tmp_path) -> None:
    client = claude(server, memollm.http.client(cache_dir=tmp_path))
    messages = [{"role": "user", "content": "hello claude"}]
    first = client.messages.create(model=CLAUDE, max_tokens=64, messages=messages)  # type: ignore[arg-type]
    second = client.messages.create(model=CLAUDE, max_tokens=64, messages=messages)  # type: ignore[arg-type]
    assert server.request_count == 1
    assert second.content[0].text == first.content[0].text == "echo: hello claude"  # type: ignore[union-attr]
    assert second.usage == first.usage
    runs = [list(client.messages.create(model=CLAUDE, max_tokens=64, messages=messages, stream=True)) for _ in range(2)]  # type: ignore[arg-type]
    assert server.request_count == 2
    assert [e.model_dump() for e in runs[1]] == [e.model_dump() for e in runs[0]]
    assert runs[1][-1].type == "message_stop"
    client.messages.create(model=CLAUDE, max_tokens=65, messages=messages)  # type: ignore[arg-type]
    assert server.request_count == 3


def test_anthropic_stream_helper(server: FakeLLMServer, tmp_path) -> None:
    client = claude(server, memollm.http.client(cache_dir=tmp_path))
    results = []
    for _ in range(2):
        with client.messages.stream(model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "stream the helper"}]) as stream:
            parts = list(stream.text_stream)
            final = stream.get_final_message()
        results.append((parts, final.content[0].text, final.usage.output_tokens))  # type: ignore[union-attr]
    assert server.request_count == 1
    tokens = reply_tokens("echo: stream the helper")
    assert results[0] == results[1] == (tokens, "echo: stream the helper", len(tokens))


def test_anthropic_version_header_is_part_of_the_key(server: FakeLLMServer, tmp_path) -> None:
    client = claude(server, memollm.http.client(cache_dir=tmp_path))
    messages = [{"role": "user", "content": "versioned"}]
    client.messages.create(model=CLAUDE, max_tokens=8, messages=messages)  # type: ignore[arg-type]
    client.messages.create(model=CLAUDE, max_tokens=8, messages=messages, extra_headers={"anthropic-version": "2099-01-01"})  # type: ignore[arg-type]
    client.messages.create(model=CLAUDE, max_tokens=8, messages=messages, extra_headers={"anthropic-beta": "x-2099"})  # type: ignore[arg-type]
    assert server.request_count == 3


@pytest.mark.asyncio
async def test_async_anthropic_stream_helper(server: FakeLLMServer, tmp_path) -> None:
    client = anthropic.AsyncAnthropic(
        api_key=API_KEY, base_url=server.anthropic_base_url, http_client=memollm.http.async_client(cache_dir=tmp_path), max_retries=0
    )
    texts = []
    for _ in range(2):
        async with client.messages.stream(model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "async helper"}]) as stream:
            parts = [text async for text in stream.text_stream]
            texts.append(("".join(parts), (await stream.get_final_message()).content[0].text))  # type: ignore[union-attr]
    assert texts == [("echo: async helper", "echo: async helper")] * 2
    assert server.request_count == 1
    await client.close()


def test_anthropic_offline_miss_is_the_cause_of_its_connection_error(server: FakeLLMServer, tmp_path) -> None:
    client = claude(server, memollm.http.client(cache_dir=tmp_path))
    with cache_mode("offline"), pytest.raises(anthropic.APIConnectionError) as caught:
        client.messages.create(model=CLAUDE, max_tokens=8, messages=[{"role": "user", "content": "not recorded"}])
    assert isinstance(caught.value.__cause__, CacheMiss)  # the anthropic SDK wraps any transport error
    assert server.request_count == 0


# -- a decorated helper returning an SDK stream manager ----------------------------------------


def test_decorated_helper_returning_a_stream_manager_warns_with_the_fixes(server: FakeLLMServer, tmp_path) -> None:
    oai = openai.OpenAI(api_key="sk-x", base_url=server.base_url, max_retries=0)
    ant = anthropic.Anthropic(api_key="sk-x", base_url=server.anthropic_base_url, max_retries=0)

    @cache_llm(cache_dir=tmp_path)
    def openai_helper(prompt: str) -> Any:
        return oai.chat.completions.stream(model="gpt-test", messages=[{"role": "user", "content": prompt}])

    @cache_llm(cache_dir=tmp_path)
    def anthropic_helper(prompt: str) -> Any:
        return ant.messages.stream(model=CLAUDE, max_tokens=8, messages=[{"role": "user", "content": prompt}])

    aoai = openai.AsyncOpenAI(api_key="sk-x", base_url=server.base_url, max_retries=0)
    aant = anthropic.AsyncAnthropic(api_key="sk-x", base_url=server.anthropic_base_url, max_retries=0)

    @cache_llm(cache_dir=tmp_path)
    def async_openai_helper(prompt: str) -> Any:
        return aoai.chat.completions.stream(model="gpt-test", messages=[{"role": "user", "content": prompt}])

    @cache_llm(cache_dir=tmp_path)
    def async_anthropic_helper(prompt: str) -> Any:
        return aant.messages.stream(model=CLAUDE, max_tokens=8, messages=[{"role": "user", "content": prompt}])

    def warned(call: Any) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        return [str(w.message) for w in caught]

    def consume(helper: Any) -> None:
        with helper("managed") as stream:
            list(stream)

    async def consume_async(helper: Any) -> None:
        async with helper("managed async") as stream:
            async for _ in stream:
                pass

    import asyncio

    for messages in (
        warned(lambda: consume(openai_helper)),
        warned(lambda: consume(anthropic_helper)),
        warned(lambda: asyncio.run(consume_async(async_openai_helper))),
        warned(lambda: asyncio.run(consume_async(async_anthropic_helper))),
    ):
        assert any("memollm.http" in m and "generator" in m and "yield" in m for m in messages), messages
        assert not any("allow_pickle" in m for m in messages)


# -- LangChain ----------------------------------------------------------------------------------


def test_langchain_chat_openai_invoke_and_stream(server: FakeLLMServer, tmp_path) -> None:
    from langchain_openai import ChatOpenAI

    def model() -> ChatOpenAI:
        return ChatOpenAI(
            model="gpt-test", base_url=server.base_url, api_key="sk-x", http_client=memollm.http.client(cache_dir=tmp_path), max_retries=0
        )  # type: ignore[arg-type]

    assert model().invoke("hello langchain").content == "echo: hello langchain"
    assert model().invoke("hello langchain").content == "echo: hello langchain"
    assert server.request_count == 1
    server.chunk_delay = 0.01
    first = [chunk.content for chunk in model().stream("stream langchain")]
    assert server.request_count == 2
    second = []
    for chunk in model().stream("stream langchain"):
        second.append(chunk.content)
        assert server.request_count == 2  # each replayed chunk arrives without a request
    assert second == first and "".join(second) == "echo: stream langchain"  # type: ignore[arg-type]
    assert len([c for c in second if c]) == len(reply_tokens("echo: stream langchain"))


# -- Agno ---------------------------------------------------------------------------------------


@pytest.mark.skipif(sys.version_info < (3, 10), reason="agno does not import on Python 3.9 (an asyncio.Lock made at import)")
def test_agno_agent_runs_twice_with_one_request(server: FakeLLMServer, tmp_path) -> None:
    from agno.agent import Agent
    from agno.models.openai import OpenAIChat

    outputs = []
    for _ in range(2):
        http = memollm.http.client(library="httpx", cache_dir=tmp_path)
        agent = Agent(model=OpenAIChat(id="gpt-test", base_url=server.base_url, api_key="sk-x", http_client=http), telemetry=False)
        outputs.append(agent.run("hello agno").content)
    assert outputs == ["echo: hello agno"] * 2
    assert server.request_count == 1


@pytest.mark.skipif(sys.version_info < (3, 10), reason="agno does not import on Python 3.9 (an asyncio.Lock made at import)")
def test_agno_claude_takes_the_anthropic_sdks_client_class(server: FakeLLMServer, tmp_path) -> None:
    from agno.agent import Agent
    from agno.models.anthropic import Claude

    sdk_client = type(anthropic.Anthropic(api_key=API_KEY)._client)
    library = "httpx2" if any(c.__module__.startswith("httpx2") for c in sdk_client.__mro__) else "httpx"  # httpx2 for anthropic 2.x
    outputs = []
    for _ in range(2):
        http = memollm.http.client(library=library, cache_dir=tmp_path)
        model = Claude(id=CLAUDE, api_key=API_KEY, client_params={"base_url": server.anthropic_base_url}, http_client=http)
        outputs.append(Agent(model=model, telemetry=False).run("hello agno claude").content)
    assert outputs == ["echo: hello agno claude"] * 2
    assert server.request_count == 1


# -- litellm ------------------------------------------------------------------------------------


def test_litellm_completion_under_intercept(server: FakeLLMServer, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
    import litellm

    def complete(prompt: str, **extra: Any) -> Any:
        return litellm.completion(
            model="openai/gpt-test", api_base=server.base_url, api_key="sk-x", messages=[{"role": "user", "content": prompt}], **extra
        )

    with memollm.http.intercept(cache_dir=tmp_path) as cache:
        texts = [complete("hello litellm").choices[0].message.content for _ in range(2)]
        streamed = ["".join(c.choices[0].delta.content or "" for c in complete("stream litellm", stream=True)) for _ in range(2)]
    assert texts == ["echo: hello litellm"] * 2
    assert streamed == ["echo: stream litellm"] * 2
    assert server.request_count == 2
    assert (cache.cache_info().hits, cache.cache_info().misses) == (2, 2)
    complete("hello litellm")  # outside the block: not cached
    assert server.request_count == 3
    assert os.listdir(tmp_path)
