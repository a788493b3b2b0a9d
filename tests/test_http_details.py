"""Details of the HTTP layer a careful user meets: the URL shown, the query in an offline miss,
nested credentials, a ``match=`` predicate that fails, streams found by ``ls --grep``, samples
and ``record_request=False`` as for decorated functions."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import memollm
import memollm.http

httpx2 = pytest.importorskip("httpx2", reason="httpx2 is not installed (the extras add it on Python 3.11 or newer)")


def client(tmp_path: Path, calls: list[Any], **options: Any) -> httpx2.Client:
    def answer(request: httpx2.Request) -> httpx2.Response:
        calls.append(request)
        return httpx2.Response(200, json={"text": f"answer {len(calls)}"})

    return httpx2.Client(transport=memollm.http.CachingTransport(httpx2.MockTransport(answer), cache_dir=tmp_path, **options))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memollm", *args], capture_output=True, text=True, timeout=60)


def test_show_prints_the_request_url(tmp_path: Path) -> None:
    calls: list[Any] = []
    client(tmp_path, calls).post("https://api.example.com:8443/v1/gen?alt=json&key=SECRETKEY", json={"prompt": "p"})
    (entry,) = json.loads(cli("ls", "--cache-dir", str(tmp_path), "--json").stdout)
    shown = cli("show", "--cache-dir", str(tmp_path), entry["key"])
    assert shown.returncode == 0, shown.stderr
    assert "https://api.example.com:8443/v1/gen?alt=json" in shown.stdout
    assert shown.stdout.index("request:") < shown.stdout.index("response:")
    assert "SECRETKEY" not in shown.stdout


def test_an_offline_miss_names_the_query(tmp_path: Path) -> None:
    calls: list[Any] = []
    with pytest.raises(memollm.CacheMiss) as info:
        client(tmp_path, calls, mode="offline").post("https://api.example.com/v1/gen?x=1&key=SECRETKEY", json={"q": 1})
    assert "POST https://api.example.com/v1/gen?x=1" in str(info.value)
    assert "SECRETKEY" not in str(info.value) and calls == []


def test_nested_credentials_never_reach_the_disk(tmp_path: Path) -> None:
    calls: list[Any] = []
    http = client(tmp_path, calls)
    schema = {"type": "object", "properties": {"token": {"type": "string"}}}
    http.post("https://api.example.com/v1/gen", json={"prompt": "p", "auth": {"api_key": "sk-NESTED-1"}, "tools": [schema]})
    http.post("https://api.example.com/v1/gen", json={"prompt": "p", "auth": {"api_key": "sk-NESTED-2"}, "tools": [schema]})
    assert len(calls) == 1  # the credential is not part of the key either
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"sk-NESTED" not in path.read_bytes()
    other = {"type": "object", "properties": {"password": {"type": "string"}}}
    http.post("https://api.example.com/v1/gen", json={"prompt": "p", "auth": {"api_key": "sk-NESTED-1"}, "tools": [other]})
    assert len(calls) == 2  # structure under a secret-sounding name (a tool schema) still counts


def test_a_match_predicate_that_raises_sends_the_request_uncached(tmp_path: Path) -> None:
    calls: list[Any] = []

    def broken(request: Any) -> bool:
        raise RuntimeError("boom")

    http = client(tmp_path, calls, match=broken)
    with pytest.warns(memollm.CacheWarning, match="match="):
        assert http.post("https://api.example.com/v1/gen", json={}).status_code == 200
    with warnings.catch_warnings():
        warnings.simplefilter("error", memollm.CacheWarning)
        http.post("https://api.example.com/v1/gen", json={})  # reported once
    assert len(calls) == 2


def test_ls_grep_finds_a_phrase_split_across_stream_chunks(tmp_path: Path) -> None:
    @memollm.cache_llm(cache_dir=tmp_path)
    def tokens(prompt: str) -> Any:
        yield from ("Hel", "lo ", prompt)

    assert "".join(tokens("WOMBAT")) == "Hello WOMBAT"
    found = cli("ls", "--cache-dir", str(tmp_path), "--grep", "hello wombat", "--json")
    assert found.returncode == 0 and len(json.loads(found.stdout)) == 1


def test_explain_follows_the_cache_mode(tmp_path: Path) -> None:
    @memollm.cache_llm(cache_dir=tmp_path)
    def complete(prompt: str) -> str:
        return "ok"

    complete("p")
    assert complete.explain("p").outcome == "hit"
    with memollm.cache_mode("readonly"):
        assert complete.explain("p").outcome == "hit"
    for mode in ("off", "refresh"):
        with memollm.cache_mode(mode):
            explanation = complete.explain("p")
            assert explanation.outcome == "miss" and mode in explanation.note


def test_samples_through_the_openai_sdk(server: Any, tmp_path: Path) -> None:
    import openai

    def sdk(**options: Any) -> Any:
        http = memollm.http.client(cache_dir=tmp_path, **{"samples": 2, **options})
        return openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0, timeout=5, http_client=http)

    oai = sdk()
    messages = [{"role": "user", "content": "a joke"}]
    with memollm.observe() as calls:
        ids = [oai.chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=1).id for _ in range(5)]
    assert server.request_count == 2  # samples 0 and 1 recorded, then replayed in turn
    assert ids[2:] == [ids[0], ids[1], ids[0]] and ids[0] != ids[1]
    assert [(c.outcome, c.sample) for c in calls] == [("miss", 0), ("miss", 1), ("hit", 0), ("hit", 1), ("hit", 0)]
    with memollm.sample(1):
        assert oai.chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=1).id == ids[1]
    streamed = [[chunk.id for chunk in oai.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)][0] for _ in range(4)]
    assert server.request_count == 4 and streamed[2:] == streamed[:2] and streamed[0] != streamed[1]
    listed = json.loads(cli("ls", "--cache-dir", str(tmp_path), "--json").stdout)
    assert sorted(e["sample"] for e in listed) == [0, 0, 1, 1]

    offline = sdk(samples=3, mode="offline")  # a third sample was never recorded
    with memollm.sample(2), pytest.raises(memollm.CacheMiss, match="2 of 3 recorded"):
        offline.chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=1)


def test_record_request_false_leaves_the_request_out(tmp_path: Path) -> None:
    calls: list[Any] = []
    http = client(tmp_path, calls, record_request=False)
    http.post("https://api.example.com/v1/gen", json={"prompt": "a very private prompt"})
    http.post("https://api.example.com/v1/gen", json={"prompt": "a very private prompt"})
    assert len(calls) == 1
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"a very private prompt" not in path.read_bytes()
    (entry,) = json.loads(cli("ls", "--cache-dir", str(tmp_path), "--json").stdout)
    shown = cli("show", "--cache-dir", str(tmp_path), entry["key"])
    assert shown.returncode == 0 and "request:   (not recorded)" in shown.stdout
    with pytest.raises(memollm.CacheMiss, match="record_request=False: requests are not recorded"):
        client(tmp_path, calls, record_request=False, mode="offline").post("https://api.example.com/v1/gen", json={"prompt": "another"})


def test_why_takes_the_json_body_of_an_http_function(tmp_path: Path) -> None:
    calls: list[Any] = []
    client(tmp_path, calls).post("https://api.example.com/v1/gen?alt=json", json={"prompt": "hello", "temperature": 0, "api_key": "sk-A"})
    function = "http:POST api.example.com/v1/gen"

    def why(body: Any, *extra: str) -> subprocess.CompletedProcess:
        return cli("why", "--cache-dir", str(tmp_path), "--function", function, "--args-json", json.dumps(body), *extra)

    missed = why({"prompt": "hello", "temperature": 0.5})
    assert missed.returncode == 0, missed.stderr
    assert f"{function}: miss" in missed.stdout and "body.temperature: 0 -> 0.5" in missed.stdout
    assert "could not be imported" not in missed.stdout
    hit = json.loads(why({"temperature": 0, "prompt": "hello", "api_key": "sk-B"}, "--json").stdout)  # the credential is not keyed
    assert hit["outcome"] == "hit" and hit["key"] == json.loads(cli("ls", "--cache-dir", str(tmp_path), "--json").stdout)[0]["key"]

    private = tmp_path / "private"
    client(private, calls, record_request=False).post("https://api.example.com/v1/gen", json={"prompt": "p"})
    refused = cli("why", "--cache-dir", str(private), "--function", function, "--args-json", '{"prompt": "p"}')
    assert refused.returncode != 0 and "no recorded request" in refused.stderr
