"""``memollm.http`` transports: keys, what is stored, streams, modes, options, stores, processes.

Mostly through real SDK and httpx/httpx2 clients against the loopback fake provider (which counts
requests); a counting ``MockTransport`` where a response must be shaped by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from llm_server import FakeLLMServer

import memollm
import memollm.http
from memollm import CacheMiss, cache_mode
from memollm.http.sse import EventWatcher

httpx2 = pytest.importorskip("httpx2", reason="httpx2 is not installed (the extras add it on Python 3.11 or newer)")

pytestmark = pytest.mark.timeout(60)

API_KEY = "sk-live-SECRET-do-not-store-0123456789"
LIBRARIES = {"httpx2": httpx2, "httpx": httpx}


def ask(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh(server: FakeLLMServer) -> None:
    server.reset()


def chat(server: FakeLLMServer, http: Any, prompt: str = "hello", **extra: Any) -> Any:
    client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url, http_client=http, max_retries=0)
    return client.chat.completions.create(model="gpt-test", messages=ask(prompt), **extra)


class Counting:
    """An inner transport answering every request with ``make(request)``, counting them."""

    def __init__(self, module: Any, make: Any) -> None:
        self.calls = 0
        self.make = make
        self.mock = module.MockTransport(self._handle)

    def _handle(self, request: Any) -> Any:
        self.calls += 1
        return self.make(request)

    def handle_request(self, request: Any) -> Any:
        return self.mock.handle_request(request)

    async def handle_async_request(self, request: Any) -> Any:
        return await self.mock.handle_async_request(request)

    def close(self) -> None:
        pass


def json_reply(module: Any, status: int = 200, headers: Any = None) -> Any:
    def make(request: Any) -> Any:
        return module.Response(status, json={"answer": 42, "usage": {"total_tokens": 7}}, headers=headers or {})

    return make


# -- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LIBRARIES))
def test_key_ignores_json_key_order_volatile_headers_and_credentials(tmp_path, name: str) -> None:
    module = LIBRARIES[name]
    inner = Counting(module, json_reply(module))
    http = module.Client(transport=memollm.http.CachingTransport(inner, cache_dir=tmp_path))
    url = "https://api.example.com/v1/chat/completions?b=2&a=1"
    http.post(
        url,
        content=json.dumps({"model": "m", "options": {"x": 1, "y": [1, 2]}}),
        headers={"content-type": "application/json", "authorization": "Bearer one"},
    )
    http.post(
        url.replace("b=2&a=1", "a=1&b=2"),
        content=json.dumps({"options": {"y": [1, 2], "x": 1}, "model": "m", "api_key": "sk-in-the-body"}),
        headers={
            "content-type": "application/json",
            "authorization": "Bearer two",
            "x-api-key": "other",
            "user-agent": "another/1.0",
            "x-stainless-retry-count": "3",
            "idempotency-key": "abc",
            "x-request-id": "r1",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
    )
    assert inner.calls == 1
    http.post(url, json={"model": "m", "options": {"x": 1, "y": [2, 1]}})  # a nested value differs
    http.post(url, json={"model": "m", "options": {"x": 1, "y": [1, 2]}}, headers={"anthropic-version": "2023-06-01"})  # a key header
    http.post(url + "&c=3", json={"model": "m", "options": {"x": 1, "y": [1, 2]}})
    http.post(url.replace("api.example.com", "api.example.com:8443"), json={"model": "m", "options": {"x": 1, "y": [1, 2]}})
    assert inner.calls == 5


def test_packed_request_is_the_canonical_packing_of_the_normalized_request() -> None:
    from memollm import keys
    from memollm.http import convert

    request = httpx2.Request(
        "POST",
        "https://API.example.com:8443/v1/x?z=1&a=2&key=SECRET&api_key=SECRET",
        json={"b": [1, {"y": 2, "x": 1}], "a": None, "token": "SECRET", "nested": {"token": "dropped", "schema": {"token": {"type": "string"}}}},
        headers={"Anthropic-Version": "2023-06-01"},
    )
    content_type, chosen = convert.examine(request, frozenset({b"anthropic-version"}))
    parts = convert.request_parts(request, chosen)
    tree = {**parts, "body": convert.body_tree(request.content, content_type)}
    function, key, packed, _ = convert.keyed(request, content_type, chosen)
    assert packed == keys.pack_normalized(tree)
    assert key == keys.digest([keys.KEY_FORMAT, "http", keys.normalize(tree)])
    assert convert.keyed(request, content_type, chosen)[:3] == (function, key, packed)  # remembered: the same answer
    assert function == "http:POST api.example.com:8443/v1/x"
    assert tree == {
        "method": "POST",
        "scheme": "https",
        "host": "api.example.com",
        "port": 8443,
        "path": "/v1/x",
        "query": [("a", "2"), ("z", "1")],
        "headers": {"anthropic-version": "2023-06-01"},
        "body": {"b": [1, {"y": 2, "x": 1}], "a": None, "nested": {"schema": {"token": {"type": "string"}}}},
    }
    assert convert.function_id(parts) == "http:POST api.example.com:8443/v1/x"
    assert convert.function_id(convert.request_parts(httpx2.Request("GET", "https://h.test/p"), None)) == "http:GET h.test/p"


def test_key_headers_option(tmp_path) -> None:
    inner = Counting(httpx2, json_reply(httpx2))
    http = httpx2.Client(transport=memollm.http.CachingTransport(inner, cache_dir=tmp_path, key_headers=["X-Tenant"]))
    for tenant in ("a", "a", "b"):
        http.post("https://x.test/v1/q", json={"q": 1}, headers={"x-tenant": tenant, "anthropic-version": tenant})
    assert inner.calls == 2  # x-tenant is keyed; anthropic-version no longer is


def test_credentials_and_cookies_never_reach_the_disk(server: FakeLLMServer, tmp_path) -> None:
    headers = {"set-cookie": "session=SECRET-COOKIE; Path=/", "x-api-key": "SECRET-HEADER", "x-kept": "yes"}
    inner = Counting(httpx2, json_reply(httpx2, headers=headers))
    http = httpx2.Client(transport=memollm.http.CachingTransport(inner, cache_dir=tmp_path / "mock"))
    first = http.post(
        "https://x.test/v1/q",
        json={"q": 1, "password": "SECRET-BODY"},
        headers={"authorization": "Bearer SECRET-AUTH", "cookie": "c=SECRET-C"},
    )
    assert first.headers["set-cookie"].startswith("session=")  # the live response keeps its cookie
    second = http.post(
        "https://x.test/v1/q",
        json={"q": 1, "password": "other"},
        headers={"api-key": "SECRET-AZURE", "proxy-authorization": "SECRET-PROXY"},
    )
    assert inner.calls == 1
    assert second.json() == first.json() and second.headers["x-kept"] == "yes"
    assert "set-cookie" not in second.headers and "x-api-key" not in second.headers
    chat(server, memollm.http.client(cache_dir=tmp_path / "sdk"), "secret check")
    chat(server, memollm.http.client(cache_dir=tmp_path / "sdk"), "secret check", stream=True).close()
    list(chat(server, memollm.http.client(cache_dir=tmp_path / "sdk"), "secret check 2", stream=True))
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {API_KEY}"
    files = [os.path.join(d, f) for d, _, names in os.walk(tmp_path) for f in names]
    assert len(files) > 4
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        for secret in (API_KEY.encode(), b"SECRET"):
            assert secret not in data, path


# -- what is stored ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LIBRARIES))
def test_compressed_bodies_are_stored_decoded(tmp_path, name: str) -> None:
    import gzip

    module = LIBRARIES[name]
    payload = json.dumps({"answer": "compressed", "usage": {"total_tokens": 11}}).encode()

    def make(request: Any) -> Any:
        packed = gzip.compress(payload)
        return module.Response(200, content=packed, headers={"content-encoding": "gzip", "content-type": "application/json"})

    inner = Counting(module, make)
    transport = memollm.http.CachingTransport(inner, cache_dir=tmp_path)
    http = module.Client(transport=transport)
    answers = [http.post("https://x.test/v1/q", json={"q": 1}) for _ in range(2)]
    assert inner.calls == 1
    assert [a.json()["answer"] for a in answers] == ["compressed"] * 2
    assert all("content-encoding" not in a.headers and a.headers["content-length"] == str(len(payload)) for a in answers)
    assert transport.cache_info().tokens_saved == 11
    files = [os.path.join(d, f) for d, _, names in os.walk(tmp_path) for f in names if f.endswith(".msgpack")]
    assert any(b'"answer": "compressed"' in open(f, "rb").read() for f in files)  # readable by memollm show / ls --grep

    def corrupt(request: Any) -> Any:
        return module.Response(200, content=b"not gzip at all", headers={"content-encoding": "gzip", "content-type": "application/json"})

    broken = module.Client(transport=memollm.http.CachingTransport(Counting(module, corrupt), cache_dir=tmp_path))
    with pytest.raises(module.DecodingError):
        broken.post("https://x.test/v1/broken", json={})


def test_error_responses_are_not_stored(server: FakeLLMServer, tmp_path) -> None:
    http = memollm.http.client(cache_dir=tmp_path)
    server.fail_next(status=500)
    with pytest.raises(openai.InternalServerError):
        chat(server, http, "flaky")
    server.fail_next(status=429)
    with pytest.raises(openai.RateLimitError):
        chat(server, http, "flaky")
    assert chat(server, http, "flaky").choices[0].message.content == "echo: flaky"
    assert chat(server, http, "flaky").choices[0].message.content == "echo: flaky"
    assert server.request_count == 3
    info = http._transport.cache_info()
    assert (info.hits, info.entries) == (1, 1)


def test_unmatched_requests_pass_through(tmp_path) -> None:
    inner = Counting(httpx2, json_reply(httpx2))
    http = httpx2.Client(transport=memollm.http.CachingTransport(inner, cache_dir=tmp_path))
    for _ in range(2):
        http.get("https://x.test/v1/models")
        http.post("https://x.test/v1/form", data={"a": "1"})
    assert inner.calls == 4
    only_gets = httpx2.Client(transport=memollm.http.CachingTransport(inner, cache_dir=tmp_path, match=lambda r: r.method == "GET"))
    for _ in range(2):
        only_gets.get("https://x.test/v1/models")
        only_gets.post("https://x.test/v1/q", json={})
    assert inner.calls == 4 + 3


def test_cache_if_decides_what_is_stored(tmp_path) -> None:
    inner = Counting(httpx2, json_reply(httpx2))
    seen = []

    def only_big_answers(response: Any) -> bool:
        seen.append(response.status_code)
        return response.json()["answer"] > 100

    http = httpx2.Client(transport=memollm.http.CachingTransport(inner, cache_dir=tmp_path, cache_if=only_big_answers))
    for _ in range(2):
        assert http.post("https://x.test/q", json={}).json()["answer"] == 42
    assert inner.calls == 2 and seen == [200, 200]

    def broken(response: Any) -> bool:
        raise RuntimeError("predicate bug")

    http = httpx2.Client(transport=memollm.http.CachingTransport(inner, cache_dir=tmp_path, cache_if=broken))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            assert http.post("https://x.test/q", json={}).json()["answer"] == 42
    assert inner.calls == 4
    assert len([w for w in caught if "cache_if" in str(w.message)]) == 1


def test_cache_if_judges_a_stream(server: FakeLLMServer, tmp_path) -> None:
    http = memollm.http.client(cache_dir=tmp_path, cache_if=lambda response: b"[DONE]" in response.content and b"never" in response.content)
    for _ in range(2):
        list(chat(server, http, "judge me", stream=True))
    assert server.request_count == 2
    http = memollm.http.client(cache_dir=tmp_path, cache_if=lambda response: b"judge" in response.content)
    for _ in range(2):
        list(chat(server, http, "judge me", stream=True))
    assert server.request_count == 3


# -- streams ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LIBRARIES))
def test_hits_are_independent_responses(server: FakeLLMServer, tmp_path, name: str) -> None:
    """Hits share the decoded entry in memory; what a caller does to one response (its headers,
    its stream) changes nothing in the next."""
    http = memollm.http.client(cache_dir=tmp_path, library=name)
    first = chat(server, http, "same")
    hits = [http.post(server.base_url + "/chat/completions", json={"model": "gpt-test", "messages": ask("same")}) for _ in range(3)]
    assert server.request_count == 1  # the same request as the SDK's, but for volatile headers: hits
    hits[0].headers["x-added"] = "1"
    del hits[0].headers["content-type"]
    assert "x-added" not in hits[1].headers and hits[1].headers["content-type"].startswith("application/json")
    assert hits[1].json() == hits[2].json()
    assert chat(server, http, "same").choices[0].message.content == first.choices[0].message.content
    streamed = [list(chat(server, http, "a stream", stream=True)) for _ in range(3)]
    assert server.request_count == 2
    assert [c.model_dump() for c in streamed[1]] == [c.model_dump() for c in streamed[2]] == [c.model_dump() for c in streamed[0]]


def test_stream_closed_early_is_not_stored(server: FakeLLMServer, tmp_path) -> None:
    http = memollm.http.client(cache_dir=tmp_path)
    stream = chat(server, http, "one two three four five", stream=True)
    next(iter(stream))
    stream.close()
    with chat(server, http, "one two three four five", stream=True) as stream:
        for _ in zip(range(2), stream):
            pass
    assert server.request_count == 2
    assert len(list(chat(server, http, "one two three four five", stream=True))) > 3
    assert len(list(chat(server, http, "one two three four five", stream=True))) > 3
    assert server.request_count == 3


def test_stream_cut_by_the_provider_is_not_stored(server: FakeLLMServer, tmp_path) -> None:
    http = memollm.http.client(cache_dir=tmp_path)
    server.abort_next_stream(after_tokens=2)
    with pytest.raises((openai.APIConnectionError, httpx2.TransportError)):
        list(chat(server, http, "cut me off please", stream=True))
    list(chat(server, http, "cut me off please", stream=True))
    list(chat(server, http, "cut me off please", stream=True))
    assert server.request_count == 2


def test_a_stream_larger_than_max_stream_size_passes_through(server: FakeLLMServer, tmp_path) -> None:
    http = memollm.http.client(cache_dir=tmp_path, max_stream_size=200)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            prompt = " ".join(["a long answer"] * 20)
            text = "".join(c.choices[0].delta.content or "" for c in chat(server, http, prompt, stream=True) if c.choices)
            assert text == "echo: " + prompt
    assert server.request_count == 2
    assert any("max_stream_size" in str(w.message) for w in caught)


@pytest.mark.parametrize("split", [1, 2, 3, 7, 64])
def test_event_watcher_finds_terminal_events_split_anywhere(split: int) -> None:
    streams = {
        b'data: {"id": 1}\n\ndata: [DONE]\n\n': True,
        b'event: message_start\ndata: {"type": "message_start", "message": {"usage": {"input_tokens": 3}}}\n\n'
        b'event: message_stop\r\ndata: {"type": "message_stop"}\r\n\r\n': True,
        b'event: response.created\ndata: {"type": "response.created"}\n\nevent: response.completed\ndata: {"type":"response.completed","response":{"usage":{"total_tokens":9}}}\n\n': True,
        b'data: {"type": "response.completed", "response": {}}\n\n': True,
        b'data: {"choices": []}\n\ndata: [DON': False,
        b'event: message_start\ndata: {"type": "message_start"}\n\n': False,
        b'event: error\ndata: {"type": "error", "error": {"message": "overloaded"}}\n\n': False,
    }
    for raw, complete in streams.items():
        watcher = EventWatcher()
        for i in range(0, len(raw), split):
            watcher.feed(raw[i : i + split])
        assert watcher.complete is complete, raw
    watcher = EventWatcher()
    raw = b'event: error\ndata: {"type": "error", "error": {"message": "overloaded"}}\n\n'
    watcher.feed(raw)
    assert watcher.failed
    watcher = EventWatcher()
    for byte in b'data: {"type":"response.completed","response":{"usage":{"total_tokens":9}}}\n\n':
        watcher.feed(bytes([byte]))
    assert watcher.usage == [{"model": None, "usage": {"total_tokens": 9}}]


# -- modes --------------------------------------------------------------------------------------


def test_offline_miss_raises_cache_miss_naming_the_request(server: FakeLLMServer, tmp_path) -> None:
    http = memollm.http.client(cache_dir=tmp_path)
    chat(server, http, "recorded")
    with cache_mode("offline"):
        assert chat(server, http, "recorded").choices[0].message.content == "echo: recorded"
        with pytest.raises(CacheMiss) as caught:
            chat(server, http, "never recorded")
    message = str(caught.value)
    assert f"POST {server.base_url}/chat/completions" in message
    assert "readwrite" in message and "record" in message.lower()
    assert caught.value.function == f"http:POST 127.0.0.1:{server.port}/v1/chat/completions"
    assert server.request_count == 1
    offline = memollm.http.client(cache_dir=tmp_path, mode="offline")
    with pytest.raises(CacheMiss):
        chat(server, offline, "never recorded either")


def test_offline_miss_says_how_the_request_differs_from_the_nearest_entry(server: FakeLLMServer, tmp_path) -> None:
    http = memollm.http.client(cache_dir=tmp_path)
    chat(server, http, "what is recorded", temperature=0.0)
    with cache_mode("offline"), pytest.raises(CacheMiss) as caught:
        chat(server, http, "what is recorded", temperature=0.2)
    assert "temperature" in str(caught.value), str(caught.value)


def test_modes_readonly_refresh_off(server: FakeLLMServer, tmp_path) -> None:
    chat(server, memollm.http.client(cache_dir=tmp_path, mode="readonly"), "modes")
    chat(server, memollm.http.client(cache_dir=tmp_path, mode="readonly"), "modes")
    assert server.request_count == 2  # readonly never writes
    chat(server, memollm.http.client(cache_dir=tmp_path), "modes")
    chat(server, memollm.http.client(cache_dir=tmp_path, mode="refresh"), "modes")
    with cache_mode("off"):
        chat(server, memollm.http.client(cache_dir=tmp_path), "modes")
    assert server.request_count == 5
    chat(server, memollm.http.client(cache_dir=tmp_path, mode="readonly"), "modes")
    assert server.request_count == 5


def test_ttl_expires_entries(server: FakeLLMServer, tmp_path) -> None:
    http = memollm.http.client(cache_dir=tmp_path, ttl=1.5)
    chat(server, http, "short lived")
    chat(server, http, "short lived")
    assert server.request_count == 1
    time.sleep(1.6)
    chat(server, http, "short lived")
    assert server.request_count == 2


# -- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"ttl": -1}, ValueError, "CachingTransport(ttl=-1)"),
        ({"ttl": "1h"}, TypeError, "CachingTransport(ttl=...)"),
        ({"mode": "sometimes"}, ValueError, "CachingTransport(mode=...)"),
        ({"replay": "slow"}, ValueError, "CachingTransport(replay='slow')"),
        ({"max_stream_size": "lots"}, TypeError, "max_stream_size"),
        ({"max_size": 0}, ValueError, "max_size"),
        ({"store": "carrier-pigeon"}, ValueError, "CachingTransport(store='carrier-pigeon')"),
        ({"store": "memory", "cache_dir": "x"}, ValueError, "cache_dir"),
        ({"secret": 42}, TypeError, "CachingTransport(secret=...)"),
        ({"match": "POST"}, TypeError, "CachingTransport(match=...)"),
        ({"cache_if": True}, TypeError, "CachingTransport(cache_if=...)"),
        ({"samples": 0}, ValueError, "CachingTransport(samples=0)"),
        ({"record_request": "no"}, TypeError, "CachingTransport(record_request=...)"),
        ({"key_headers": "openai-beta"}, TypeError, "CachingTransport(key_headers=...)"),
        ({"key_headers": ["Authorization"]}, ValueError, "credential"),
        ({"library": "requests"}, ValueError, "CachingTransport(library='requests')"),
        ({"transport": object()}, TypeError, "CachingTransport(transport=...)"),
        ({"transport": httpx.HTTPTransport(), "library": "httpx2"}, ValueError, "does not match"),
    ],
)
def test_bad_options_fail_at_construction_naming_the_option(options: dict[str, Any], error: type, words: str) -> None:
    with pytest.raises(error) as caught:
        memollm.http.CachingTransport(**options)
    assert words in str(caught.value)


def test_bad_options_of_the_other_front_doors() -> None:
    with pytest.raises(ValueError, match=r"AsyncCachingTransport\(ttl=0\)"):
        memollm.http.AsyncCachingTransport(ttl=0)
    with pytest.raises(TypeError, match="handle_async_request"):
        memollm.http.AsyncCachingTransport(httpx2.HTTPTransport())
    with pytest.raises(ValueError, match=r"intercept\(mode=\.\.\.\)"):
        memollm.http.intercept(mode="nope")
    with pytest.raises(ValueError, match="library"):
        memollm.http.client(library="urllib3")


@pytest.mark.parametrize("front_door", ["client", "async_client", "intercept"])
def test_an_unknown_keyword_is_named_with_the_option_meant(front_door: str) -> None:
    with pytest.raises(TypeError) as caught:
        getattr(memollm.http, front_door)(tll=60)
    message = str(caught.value)
    assert f"memollm.http.{front_door}()" in message and "'tll'" in message and "did you mean 'ttl'" in message
    if front_door != "intercept":
        with pytest.raises(TypeError, match="did you mean 'headers'.*httpx2"):
            getattr(memollm.http, front_door)(header={"x-a": "1"})


def test_transport_choice_and_library() -> None:
    assert memollm.http.CachingTransport().library == "httpx2"
    assert isinstance(memollm.http.CachingTransport(library="httpx").transport, httpx.HTTPTransport)
    assert memollm.http.CachingTransport(httpx.HTTPTransport()).library == "httpx"
    assert isinstance(memollm.http.AsyncCachingTransport().transport, httpx2.AsyncHTTPTransport)
    assert isinstance(memollm.http.client(), httpx2.Client)
    assert isinstance(memollm.http.client(library="httpx"), httpx.Client)
    assert isinstance(memollm.http.async_client(library="httpx"), httpx.AsyncClient)
    assert memollm.http.client(headers={"x-a": "1"}).headers["x-a"] == "1"


# -- concurrency, stores, processes -------------------------------------------------------------


def test_single_flight_across_threads(server: FakeLLMServer, tmp_path) -> None:
    server.delay = 0.3
    http = memollm.http.client(cache_dir=tmp_path)
    answers: list[str] = []
    threads = [threading.Thread(target=lambda: answers.append(chat(server, http, "together").choices[0].message.content)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert answers == ["echo: together"] * 4
    assert server.request_count == 1


@pytest.mark.asyncio
async def test_single_flight_across_tasks(server: FakeLLMServer, tmp_path) -> None:
    import asyncio

    server.delay = 0.3
    client = openai.AsyncOpenAI(
        api_key=API_KEY, base_url=server.base_url, http_client=memollm.http.async_client(cache_dir=tmp_path), max_retries=0
    )
    answers = await asyncio.gather(*[client.chat.completions.create(model="gpt-test", messages=ask("tasks")) for _ in range(4)])
    assert {a.choices[0].message.content for a in answers} == {"echo: tasks"}
    assert server.request_count == 1
    await client.close()


def test_memory_store_and_signing(server: FakeLLMServer, tmp_path) -> None:
    memory = memollm.http.client(store="memory")
    chat(server, memory, "in memory")
    chat(server, memory, "in memory")
    assert server.request_count == 1
    signed = memollm.http.client(cache_dir=tmp_path, secret="s3cret")
    chat(server, signed, "signed")
    chat(server, signed, "signed")
    assert server.request_count == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chat(server, memollm.http.client(cache_dir=tmp_path, secret="another"), "signed")  # bad signature: a miss
    assert server.request_count == 3


def test_redis_store(server: FakeLLMServer, tmp_path) -> None:
    from redis_server import RedisServer, redis_server_path

    if redis_server_path() is None:
        pytest.skip("redis-server is not installed")
    with RedisServer(tmp_path) as redis:
        for _ in range(2):
            chat(server, memollm.http.client(store=redis.url), "through redis")
            list(chat(server, memollm.http.client(store=redis.url), "streamed through redis", stream=True))
        assert server.request_count == 2
        info = memollm.http.client(store=redis.url)._transport.cache_info()
        assert info.entries == 2


RECORD_OR_REPLAY = """
import sys, openai, memollm.http
base_url, cache_dir = sys.argv[1], sys.argv[2]
client = openai.OpenAI(api_key="sk-x", base_url=base_url, http_client=memollm.http.client(cache_dir=cache_dir), max_retries=0, timeout=5)
plain = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "across processes"}])
streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
    model="gpt-test", messages=[{"role": "user", "content": "streamed across"}], stream=True) if c.choices)
print(plain.choices[0].message.content + "|" + streamed)
"""


def test_record_in_one_process_replay_offline_in_another(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    with FakeLLMServer() as own:
        base_url = own.base_url
        recorded = subprocess.run(
            [sys.executable, "-c", RECORD_OR_REPLAY, base_url, str(tmp_path)], capture_output=True, text=True, timeout=60, env=env
        )
        assert recorded.returncode == 0, recorded.stderr
        assert own.request_count == 2
    replayed = subprocess.run(
        [sys.executable, "-c", RECORD_OR_REPLAY, base_url, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "MEMOLLM_MODE": "offline"},
    )
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == recorded.stdout == "echo: across processes|echo: streamed across\n"


TOGETHER = """
import os, sys, time, openai, memollm.http
base_url, cache_dir, go = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(api_key="sk-x", base_url=base_url, http_client=memollm.http.client(cache_dir=cache_dir), max_retries=0, timeout=30)
print("ready", flush=True)
deadline = time.monotonic() + 30
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.005)
print(client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "one for all"}]).choices[0].message.content)
"""


def test_single_flight_across_processes(server: FakeLLMServer, tmp_path) -> None:
    server.delay = 1.0
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-c", TOGETHER, server.base_url, str(tmp_path / "cache"), str(go)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        go.touch()
        outputs = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert [out.strip() for out, _ in outputs] == ["echo: one for all"] * 3, [err for _, err in outputs]
    assert server.request_count == 1


def test_many_distinct_url_paths_keep_memory_bounded_and_still_hit(tmp_path, monkeypatch) -> None:
    """Paths holding ids make a function each; the tables memollm keeps per function stay capped
    (here lowered to 4) and every entry is still served from the cache after they were cut."""
    import memollm.core.cache
    import memollm.stores.disk

    monkeypatch.setattr(memollm.stores.disk, "FUNCTION_DIRS_MAX", 4)
    monkeypatch.setattr(memollm.core.cache, "FUNCTIONS_COUNTED_MAX", 4)
    inner = Counting(httpx, json_reply(httpx))
    transport = memollm.http.CachingTransport(inner, cache_dir=tmp_path)
    urls = [f"http://api.test/v1/threads/t{i}/runs" for i in range(12)]
    client = httpx.Client(transport=transport)
    for _ in range(2):
        for url in urls:
            assert client.post(url, json={"q": url}).json()["answer"] == 42
    client.close()
    assert inner.calls == len(urls)  # the second round: all hits
    store = memollm.config.disk_store(str(tmp_path), None)
    assert len(store._function_dirs) <= 4
    assert sorted(m.function for m in store.entries()) == sorted(f"http:POST {url.split('//')[1]}" for url in urls)


def test_entries_are_listed_by_the_cli(server: FakeLLMServer, tmp_path) -> None:
    chat(server, memollm.http.client(cache_dir=tmp_path), "listed")
    done = subprocess.run([sys.executable, "-m", "memollm", "ls", "--cache-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"http:POST 127.0.0.1:{server.port}/v1/chat/completions" in done.stdout


def test_version_and_public_names() -> None:
    assert set(memollm.http.__all__) >= {"CachingTransport", "AsyncCachingTransport", "client", "async_client", "intercept"}
    assert memollm.CacheMiss is CacheMiss
