"""Tests for the FakeLLMServer test helper, driven by the real openai/anthropic SDKs."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import asyncio
import threading
import time

import anthropic
import httpx
import openai
import pytest
from llm_server import FakeLLMServer, reply_tokens
from openai.types.chat import ChatCompletion, ChatCompletionChunk

pytestmark = pytest.mark.timeout(10)

# openai < 3 lets a connection dropped mid-stream surface as httpx.RemoteProtocolError; later SDKs wrap it
STREAM_DROPPED = (openai.APIConnectionError, httpx.TransportError)

MODEL = "gpt-test"
CLAUDE = "claude-test"
MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "first answer"},
    {"role": "user", "content": "hello there world"},
]
EXPECTED = "echo: hello there world"
# prompt tokens = words in all message texts: 2 + 2 + 2 + 3
EXPECTED_PROMPT_TOKENS = 9
EXPECTED_COMPLETION_TOKENS = 4  # "echo: ", "hello ", "there ", "world"


# -- helpers -------------------------------------------------------------------


def test_reply_tokens_rejoin() -> None:
    assert reply_tokens(EXPECTED) == ["echo: ", "hello ", "there ", "world"]
    for text in ["echo: ", "echo:   a  b \n c ", "echo: x"]:
        assert "".join(reply_tokens(text)) == text


def test_urls(server: FakeLLMServer) -> None:
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert server.anthropic_base_url == f"http://127.0.0.1:{server.port}"


# -- OpenAI, sync ----------------------------------------------------------------


def test_openai_non_streaming(server: FakeLLMServer, oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert isinstance(resp, ChatCompletion)
    assert resp.object == "chat.completion"
    assert resp.model == MODEL
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == EXPECTED
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == EXPECTED_PROMPT_TOKENS
    assert resp.usage.completion_tokens == EXPECTED_COMPLETION_TOKENS
    assert resp.usage.total_tokens == EXPECTED_PROMPT_TOKENS + EXPECTED_COMPLETION_TOKENS

    assert server.request_count == 1
    req = server.requests[0]
    assert req["method"] == "POST"
    assert req["path"] == "/v1/chat/completions"
    assert req["api"] == "openai"
    assert req["stream"] is False
    assert req["json"]["model"] == MODEL
    assert req["json"]["messages"] == MESSAGES
    assert req["headers"]["authorization"] == "Bearer sk-test"

    oai.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert server.request_count == 2


def test_openai_content_parts(oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": [{"type": "text", "text": "a b"}, {"type": "text", "text": "c"}]}],
    )
    assert resp.choices[0].message.content == "echo: a b c"


def test_openai_streaming(server: FakeLLMServer, oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    chunks = list(stream)
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == EXPECTED
    contents = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert contents == reply_tokens(EXPECTED)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].usage is None
    assert server.request_count == 1
    assert server.requests[0]["stream"] is True


def test_openai_streaming_include_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == EXPECTED
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == EXPECTED_PROMPT_TOKENS
    assert last.usage.completion_tokens == EXPECTED_COMPLETION_TOKENS
    assert last.usage.total_tokens == EXPECTED_PROMPT_TOKENS + EXPECTED_COMPLETION_TOKENS
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_openai_stream_chunk_delay_spacing(server: FakeLLMServer, oai: openai.OpenAI) -> None:
    server.chunk_delay = 0.1  # 4 tokens -> ~0.3 s between first and last token
    t0 = time.monotonic()
    arrivals: list[float] = []
    for chunk in oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):
        if chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - t0)
    end = time.monotonic() - t0
    assert len(arrivals) == EXPECTED_COMPLETION_TOKENS
    assert end - arrivals[0] >= 0.25  # the first token arrives well before the stream ends
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert all(g >= 0.07 for g in gaps), gaps  # ...and the rest arrive spaced out


def test_delay(server: FakeLLMServer, oai: openai.OpenAI) -> None:
    server.delay = 0.2
    t0 = time.monotonic()
    resp = oai.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert time.monotonic() - t0 >= 0.2
    assert resp.choices[0].message.content == EXPECTED


def test_openai_fail_next(server: FakeLLMServer, oai: openai.OpenAI) -> None:
    server.fail_next(2)
    with pytest.raises(openai.InternalServerError) as exc_info:
        oai.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert exc_info.value.status_code == 500
    with pytest.raises(openai.InternalServerError):  # streaming requests fail the same way
        oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    resp = oai.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert resp.choices[0].message.content == EXPECTED
    assert server.request_count == 3


def test_openai_fail_next_status(server: FakeLLMServer, oai: openai.OpenAI) -> None:
    server.fail_next(1, status=429, message="slow down")
    with pytest.raises(openai.RateLimitError, match="slow down"):
        oai.chat.completions.create(model=MODEL, messages=MESSAGES)


def test_openai_sdk_retries_are_fast(server: FakeLLMServer) -> None:
    client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=2, timeout=5)
    server.fail_next(2)
    t0 = time.monotonic()
    resp = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert time.monotonic() - t0 < 1.0  # retry-after-ms: 1
    assert resp.choices[0].message.content == EXPECTED
    assert server.request_count == 3
    client.close()


def test_openai_abort_stream(server: FakeLLMServer, oai: openai.OpenAI) -> None:
    server.abort_next_stream(after_tokens=2)
    got: list[str] = []
    stream = oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    with pytest.raises(STREAM_DROPPED):
        for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "echo: hello "
    # the abort was one-shot; the next stream is complete
    stream = oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == EXPECTED


def test_abort_not_consumed_by_non_streaming(server: FakeLLMServer, oai: openai.OpenAI) -> None:
    server.abort_next_stream(after_tokens=0)
    assert oai.chat.completions.create(model=MODEL, messages=MESSAGES).choices[0].message.content == EXPECTED
    with pytest.raises(STREAM_DROPPED):
        list(oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))


def test_openai_disconnect_next(server: FakeLLMServer, oai: openai.OpenAI) -> None:
    server.disconnect_next()
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert oai.chat.completions.create(model=MODEL, messages=MESSAGES).choices[0].message.content == EXPECTED
    assert server.request_count == 2


def test_reply_override(server: FakeLLMServer, oai: openai.OpenAI) -> None:
    server.reply = "fixed reply text"
    assert oai.chat.completions.create(model=MODEL, messages=MESSAGES).choices[0].message.content == "fixed reply text"
    server.reply = lambda body: body["model"].upper()
    stream = oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "GPT-TEST"
    server.reset()
    assert server.reply is None
    assert server.request_count == 0


def test_reset_clears_requests_and_faults(server: FakeLLMServer, oai: openai.OpenAI) -> None:
    oai.chat.completions.create(model=MODEL, messages=MESSAGES)
    server.fail_next(3)
    server.abort_next_stream(2)
    server.delay = 1.0
    server.reset()
    assert server.request_count == 0
    assert server.requests == []
    assert server.delay == 0.0
    stream = oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == EXPECTED
    assert server.request_count == 1


def test_unknown_path_404(server: FakeLLMServer) -> None:
    r = httpx.get(server.url + "/v1/models", timeout=5)
    assert r.status_code == 404
    assert server.requests[0]["api"] is None


def test_concurrency_tracking(server: FakeLLMServer, oai: openai.OpenAI) -> None:
    server.delay = 0.25
    results: list[str | None] = []

    def call() -> None:
        results.append(oai.chat.completions.create(model=MODEL, messages=MESSAGES).choices[0].message.content)

    threads = [threading.Thread(target=call) for _ in range(3)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    assert server.wait_for_requests(3, timeout=2)
    for t in threads:
        t.join(5)
    assert time.monotonic() - t0 < 0.6  # handled concurrently (serially would be >= 0.75 s)
    assert results == [EXPECTED] * 3
    assert server.max_active_requests == 3
    deadline = time.monotonic() + 1  # handlers finish just after the client has the response
    while server.active_requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.active_requests == 0


# -- OpenAI, async --------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_openai(server: FakeLLMServer) -> None:
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0, timeout=5)
    try:
        resp = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert resp.choices[0].message.content == EXPECTED
        assert resp.usage is not None and resp.usage.completion_tokens == EXPECTED_COMPLETION_TOKENS

        server.chunk_delay = 0.06
        t0 = time.monotonic()
        arrivals: list[float] = []
        parts: list[str] = []
        stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        async for chunk in stream:
            assert isinstance(chunk, ChatCompletionChunk)
            if chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
                arrivals.append(time.monotonic() - t0)
        assert "".join(parts) == EXPECTED
        assert arrivals[-1] - arrivals[0] >= 0.15

        # concurrent requests overlap (server is threaded)
        server.chunk_delay = 0.0
        server.delay = 0.25
        t0 = time.monotonic()
        results = await asyncio.gather(*(client.chat.completions.create(model=MODEL, messages=MESSAGES) for _ in range(3)))
        assert time.monotonic() - t0 < 0.6
        assert [r.choices[0].message.content for r in results] == [EXPECTED] * 3
        server.delay = 0.0

        server.fail_next()
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)

        server.abort_next_stream(after_tokens=1)
        got: list[str] = []
        with pytest.raises(STREAM_DROPPED):
            stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
            async for chunk in stream:
                got.append(chunk.choices[0].delta.content or "")
        assert "".join(got) == "echo: "
        assert server.request_count == 7
    finally:
        await client.close()


# -- Anthropic ------------------------------------------------------------------

A_MESSAGES = [
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "first answer"},
    {"role": "user", "content": [{"type": "text", "text": "hello there"}, {"type": "text", "text": "world"}]},
]
A_PROMPT_TOKENS = 2 + 2 + 3 + 2  # messages + system "be brief"


def test_anthropic_non_streaming(server: FakeLLMServer, claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(model=CLAUDE, max_tokens=64, system="be brief", messages=A_MESSAGES)
    assert isinstance(msg, anthropic.types.Message)
    assert msg.type == "message"
    assert msg.role == "assistant"
    assert msg.model == CLAUDE
    assert msg.content[0].type == "text"
    assert msg.content[0].text == EXPECTED
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == A_PROMPT_TOKENS
    assert msg.usage.output_tokens == EXPECTED_COMPLETION_TOKENS

    assert server.request_count == 1
    req = server.requests[0]
    assert req["path"] == "/v1/messages"
    assert req["api"] == "anthropic"
    assert req["json"]["system"] == "be brief"
    assert "sk-test" in (req["headers"].get("x-api-key") or req["headers"].get("authorization", ""))


def test_anthropic_raw_stream_events(server: FakeLLMServer, claude: anthropic.Anthropic) -> None:
    events = list(claude.messages.create(model=CLAUDE, max_tokens=64, messages=A_MESSAGES, stream=True))
    types = [e.type for e in events]  # the SDK drops "ping"
    n = EXPECTED_COMPLETION_TOKENS
    assert types == ["message_start", "content_block_start"] + ["content_block_delta"] * n + [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text == EXPECTED
    assert events[0].message.model == CLAUDE
    delta = events[-2]
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == n
    assert server.requests[0]["stream"] is True


def test_anthropic_raw_sse_wire_format(server: FakeLLMServer) -> None:
    body = {"model": CLAUDE, "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", server.anthropic_base_url + "/v1/messages", json=body, timeout=5) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    names = [line.split(": ", 1)[1] for line in raw.splitlines() if line.startswith("event: ")]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert raw.endswith("\n\n")


def test_openai_raw_sse_wire_format(server: FakeLLMServer) -> None:
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", server.base_url + "/chat/completions", json=body, timeout=5) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == ""
    assert all(e.startswith("data: ") for e in events[:-1])
    assert events[-2] == "data: [DONE]"


# -- OpenAI Responses API ------------------------------------------------------------


def test_responses_plain(server: FakeLLMServer, oai: openai.OpenAI) -> None:
    resp = oai.responses.create(model=MODEL, input="hello there world", instructions="be brief")
    assert resp.output_text == EXPECTED
    assert resp.status == "completed"
    assert resp.usage is not None
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (3 + 2, EXPECTED_COMPLETION_TOKENS)
    assert resp.usage.total_tokens == 5 + EXPECTED_COMPLETION_TOKENS
    assert server.requests[-1]["api"] == "responses"
    assert server.requests[-1]["path"] == "/v1/responses"


def test_responses_message_input(oai: openai.OpenAI) -> None:
    given = [{"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]}]
    assert oai.responses.create(model=MODEL, input=given).output_text == "echo: a b"  # type: ignore[arg-type]


def test_responses_stream_events(server: FakeLLMServer, oai: openai.OpenAI) -> None:
    events = list(oai.responses.create(model=MODEL, input="hello there world", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    assert kinds[-1] == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == reply_tokens(EXPECTED)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert final.output_text == EXPECTED
    assert final.usage is not None and final.usage.output_tokens == EXPECTED_COMPLETION_TOKENS


def test_responses_stream_helper(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model=MODEL, input="hello there world") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == EXPECTED
    assert final.output_text == EXPECTED


def test_responses_raw_sse_wire_format(server: FakeLLMServer) -> None:
    body = {"model": MODEL, "stream": True, "input": "hi"}
    with httpx.stream("POST", server.base_url + "/responses", json=body, timeout=5) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == ""
    assert events[-2].startswith("event: response.completed\ndata: ")


def test_responses_fail_and_abort(server: FakeLLMServer, oai: openai.OpenAI) -> None:
    server.fail_next(status=503)
    with pytest.raises(openai.InternalServerError):
        oai.responses.create(model=MODEL, input="x")
    server.abort_next_stream(after_tokens=1)
    with pytest.raises(STREAM_DROPPED):
        list(oai.responses.create(model=MODEL, input="a b c", stream=True))
    assert oai.responses.create(model=MODEL, input="x").output_text == "echo: x"


@pytest.mark.asyncio
async def test_async_responses_stream(server: FakeLLMServer) -> None:
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0, timeout=5)
    try:
        stream = await client.responses.create(model=MODEL, input="hello there world", stream=True)
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
    finally:
        await client.close()
    assert "".join(deltas) == EXPECTED


def test_anthropic_stream_helper(server: FakeLLMServer, claude: anthropic.Anthropic) -> None:
    server.chunk_delay = 0.02
    with claude.messages.stream(model=CLAUDE, max_tokens=64, messages=A_MESSAGES) as stream:
        parts = list(stream.text_stream)
        final = stream.get_final_message()
    assert parts == reply_tokens(EXPECTED)
    assert "".join(parts) == EXPECTED
    assert final.content[0].type == "text"
    assert final.content[0].text == EXPECTED
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == EXPECTED_COMPLETION_TOKENS
    assert final.usage.input_tokens == 2 + 2 + 3


def test_anthropic_failures(server: FakeLLMServer, claude: anthropic.Anthropic) -> None:
    server.fail_next()
    with pytest.raises(anthropic.InternalServerError) as exc_info:
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=A_MESSAGES)
    assert exc_info.value.status_code == 500

    server.fail_next(1, status=429)
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=A_MESSAGES)

    server.abort_next_stream(after_tokens=2)
    got: list[str] = []
    with pytest.raises(Exception) as exc_info2:  # the SDK surfaces the raw transport error
        with claude.messages.stream(model=CLAUDE, max_tokens=64, messages=A_MESSAGES) as stream:
            for text in stream.text_stream:
                got.append(text)
    assert not isinstance(exc_info2.value, AssertionError)
    assert "".join(got) == "echo: hello "

    msg = claude.messages.create(model=CLAUDE, max_tokens=64, messages=A_MESSAGES)
    assert msg.content[0].text == EXPECTED
    assert server.request_count == 4


@pytest.mark.asyncio
async def test_async_anthropic_stream(server: FakeLLMServer) -> None:
    client = anthropic.AsyncAnthropic(api_key="sk-test", base_url=server.anthropic_base_url, max_retries=0, timeout=5)
    try:
        msg = await client.messages.create(model=CLAUDE, max_tokens=64, messages=A_MESSAGES)
        assert msg.content[0].text == EXPECTED
        async with client.messages.stream(model=CLAUDE, max_tokens=64, messages=A_MESSAGES) as stream:
            parts = [t async for t in stream.text_stream]
        assert "".join(parts) == EXPECTED
    finally:
        await client.close()


# -- lifecycle ------------------------------------------------------------------


def _server_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t is not threading.current_thread()}


def test_stop_is_fast_with_idle_keepalive_connection() -> None:
    before = _server_threads()
    srv = FakeLLMServer().start()
    client = openai.OpenAI(api_key="sk-test", base_url=srv.base_url, max_retries=0, timeout=5)
    # leave a pooled keep-alive connection open (client not closed) while stopping
    assert client.chat.completions.create(model=MODEL, messages=MESSAGES).choices[0].message.content == EXPECTED
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == EXPECTED
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 1.0
    leftover = {t for t in _server_threads() - before if t.is_alive()}
    assert not leftover, leftover
    client.close()
    srv.stop()  # idempotent


def test_stop_interrupts_in_flight_request() -> None:
    srv = FakeLLMServer(delay=30).start()
    client = openai.OpenAI(api_key="sk-test", base_url=srv.base_url, max_retries=0, timeout=5)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            client.chat.completions.create(model=MODEL, messages=MESSAGES)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    assert srv.wait_for_requests(1, timeout=2)
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 1.0
    t.join(3)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], openai.APIConnectionError)
    client.close()


def test_explicit_start_stop_and_restart_rejected() -> None:
    srv = FakeLLMServer()
    with pytest.raises(RuntimeError):
        _ = srv.base_url
    srv.start()
    try:
        with pytest.raises(RuntimeError):
            srv.start()
        r = httpx.post(srv.base_url + "/chat/completions", json={"model": "m", "messages": []}, timeout=5)
        assert r.status_code == 200
        assert r.headers["content-length"] == str(len(r.content))
        assert r.json()["choices"][0]["message"]["content"] == "echo: "
    finally:
        srv.stop()
