"""Dollars saved: token usage by model stored with each entry, priced with genai-prices.

Expected prices are asked of ``genai_prices`` itself in each test, never written down here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time

import anthropic
import openai
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion
from openai.types.responses import Response, ResponseCompletedEvent

from memollm import cache_llm
from memollm.entry import EntryMeta, encode_value, read_meta
from memollm.stats import Usage, UsageTally, usage_of
from memollm.stores.disk import DiskStore

genai_prices = pytest.importorskip("genai_prices")

pytestmark = pytest.mark.timeout(60)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT = "gpt-4o-mini"
CLAUDE = "claude-3-5-haiku-20241022"


def dollars(model: str, **tokens: int) -> float:
    return float(genai_prices.calc_price(genai_prices.Usage(**tokens), model).total_price)


def ask(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def openai_completion(model: str, prompt: int, completion: int, cached: int = 0) -> ChatCompletion:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
            "usage": usage,
        }
    )


def anthropic_message(model: str, given: int, output: int, read: int = 0, written: int = 0) -> Message:
    return Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "hi"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": given, "output_tokens": output, "cache_read_input_tokens": read, "cache_creation_input_tokens": written},
        }
    )


# -- usage extraction ---------------------------------------------------------------------------


def test_usage_of_sdk_objects_and_dicts():
    assert usage_of(openai_completion(GPT, 1000, 50, cached=600)) == Usage(GPT, 1000, 50, 600, 0)
    # Anthropic's input_tokens excludes the cached parts: the usage counts all input.
    assert usage_of(anthropic_message(CLAUDE, 100, 20, read=3000, written=500)) == Usage(CLAUDE, 3600, 20, 3000, 500)
    assert usage_of({"model": GPT, "usage": {"prompt_tokens": 7, "completion_tokens": 3}}) == Usage(GPT, 7, 3)
    # The OpenAI Responses API spelling.
    assert usage_of({"model": GPT, "usage": {"input_tokens": 9, "output_tokens": 4, "input_tokens_details": {"cached_tokens": 5}}}) == Usage(GPT, 9, 4, 5)
    assert usage_of({"usage": {"prompt_tokens": 7, "completion_tokens": 3}}) == Usage(None, 7, 3)
    details = {"cached_tokens": 10, "cache_write_tokens": 30}
    assert usage_of({"model": GPT, "usage": {"prompt_tokens": 50, "completion_tokens": 3, "prompt_tokens_details": details}}) == Usage(GPT, 50, 3, 10, 30)
    response = Response.model_validate(
        {
            "id": "resp_1", "object": "response", "created_at": 1, "model": GPT, "output": [], "parallel_tool_calls": False,
            "tool_choice": "auto", "tools": [], "status": "completed",
            "usage": {"input_tokens": 20, "output_tokens": 7, "total_tokens": 27, "output_tokens_details": {"reasoning_tokens": 0},
                      "input_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 0}},
        }
    )  # fmt: skip
    assert usage_of(response) == Usage(GPT, 20, 7, 10, 0)
    tally = UsageTally()
    tally.add(ResponseCompletedEvent(type="response.completed", response=response, sequence_number=3))
    assert tally.usage() == Usage(GPT, 20, 7, 10, 0) and tally.tokens() == 27
    assert usage_of("just text") is None
    assert usage_of({"model": GPT, "usage": {}}) is None


def test_stream_usage_from_openai_and_anthropic_events():
    from anthropic.types import RawMessageDeltaEvent, RawMessageStartEvent
    from openai.types.chat import ChatCompletionChunk

    tally = UsageTally()
    for usage in (None, None, {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17, "prompt_tokens_details": {"cached_tokens": 8}}):
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": GPT, "choices": [], "usage": usage}
        tally.add(ChatCompletionChunk.model_validate(chunk))
    assert tally.usage() == Usage(GPT, 12, 5, 8) and tally.tokens() == 17

    tally = UsageTally()
    start = anthropic_message(CLAUDE, 10, 1, read=100).model_dump()
    tally.add(RawMessageStartEvent.model_validate({"type": "message_start", "message": start}))
    tally.add(RawMessageDeltaEvent.model_validate({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}}))
    assert tally.usage() == Usage(CLAUDE, 110, 42, 100)


def test_an_entry_carries_its_usage_and_old_entries_still_read():
    meta = EntryMeta("m.f", "k" * 32, time.time(), None, 1.5, tokens=30, usage=Usage(GPT, 20, 10, 5, 0))
    read, _ = read_meta(encode_value(meta, "v"))
    assert read.usage == Usage(GPT, 20, 10, 5, 0)
    old = EntryMeta("m.f", "k" * 32, time.time(), None, 1.5, tokens=30)  # the header of the first format
    assert "u" not in old.header()
    assert read_meta(encode_value(old, "v"))[0].usage is None


# -- through the decorator ----------------------------------------------------------------------


def test_cache_info_prices_the_hits_of_real_sdk_calls(tmp_path, server, oai, claude):
    @cache_llm(cache_dir=tmp_path, ignore=("client",))
    def chat(client: openai.OpenAI, prompt: str) -> ChatCompletion:
        return client.chat.completions.create(model=GPT, messages=ask(prompt))

    @cache_llm(cache_dir=tmp_path, ignore=("client",))
    def message(client: anthropic.Anthropic, prompt: str) -> Message:
        return client.messages.create(model=CLAUDE, max_tokens=50, messages=ask(prompt))

    first = chat(oai, "one two three")
    for _ in range(3):
        chat(oai, "one two three")
    u = first.usage
    assert chat.cache_info().dollars_saved == pytest.approx(3 * dollars(GPT, input_tokens=u.prompt_tokens, output_tokens=u.completion_tokens))
    reply = message(claude, "four five")
    message(claude, "four five")
    expected = dollars(CLAUDE, input_tokens=reply.usage.input_tokens, output_tokens=reply.usage.output_tokens)
    assert message.cache_info().dollars_saved == pytest.approx(expected) and expected > 0
    assert server.request_count == 2


def test_cached_input_tokens_are_priced_at_their_rate(tmp_path):
    @cache_llm(cache_dir=tmp_path)
    def cached(n: int) -> ChatCompletion:
        return openai_completion("gpt-4o", 10_000, 100, cached=8_000)

    @cache_llm(cache_dir=tmp_path)
    def written(n: int) -> Message:
        return anthropic_message("claude-sonnet-4-20250514", 100, 100, read=2_000, written=8_000)

    cached(1), cached(1), written(1), written(1)
    with_cache = dollars("gpt-4o", input_tokens=10_000, cache_read_tokens=8_000, output_tokens=100)
    assert cached.cache_info().dollars_saved == pytest.approx(with_cache)
    assert with_cache < dollars("gpt-4o", input_tokens=10_000, output_tokens=100)  # the table prices them apart
    expected = dollars("claude-sonnet-4-20250514", input_tokens=10_100, cache_read_tokens=2_000, cache_write_tokens=8_000, output_tokens=100)
    assert written.cache_info().dollars_saved == pytest.approx(expected)


def test_streams_are_priced_from_their_usage_chunks(tmp_path, server, oai, claude):
    @cache_llm(cache_dir=tmp_path, ignore=("client",))
    def stream_chat(client: openai.OpenAI, prompt: str):
        return client.chat.completions.create(model=GPT, messages=ask(prompt), stream=True, stream_options={"include_usage": True})

    @cache_llm(cache_dir=tmp_path, ignore=("client",))
    def stream_message(client: anthropic.Anthropic, prompt: str):
        return client.messages.create(model=CLAUDE, max_tokens=50, messages=ask(prompt), stream=True)

    chunks = list(stream_chat(oai, "a b c d"))
    assert list(stream_chat(oai, "a b c d")) == chunks
    u = chunks[-1].usage
    assert stream_chat.cache_info().dollars_saved == pytest.approx(dollars(GPT, input_tokens=u.prompt_tokens, output_tokens=u.completion_tokens))
    events = list(stream_message(claude, "e f g"))
    list(stream_message(claude, "e f g"))
    given = events[0].message.usage.input_tokens
    output = [e for e in events if e.type == "message_delta"][-1].usage.output_tokens
    assert stream_message.cache_info().dollars_saved == pytest.approx(dollars(CLAUDE, input_tokens=given, output_tokens=output))
    assert server.request_count == 2


def test_unknown_models_count_tokens_and_no_dollars(tmp_path):
    @cache_llm(cache_dir=tmp_path)
    def local(prompt: str) -> dict:
        return {"model": "my-own-finetune-v3", "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}}

    @cache_llm(cache_dir=tmp_path)
    def plain(prompt: str) -> str:
        return "no usage at all"

    local("x"), local("x"), plain("x"), plain("x")
    info = local.cache_info()
    assert info.tokens_saved == 150 and info.dollars_saved is None  # no known price: unknown, not zero
    assert plain.cache_info().dollars_saved == 0.0  # no tokens saved: nothing to price


# -- the index and the CLI ----------------------------------------------------------------------


SCRIPT = textwrap.dedent(
    """
    import json, sys
    from memollm import cache_llm

    @cache_llm(cache_dir=sys.argv[1])
    def chat(prompt, model):
        return {"model": model, "usage": {"prompt_tokens": 2000, "completion_tokens": 300, "total_tokens": 2300,
                                          "prompt_tokens_details": {"cached_tokens": 1000}}}

    for _ in range(3):
        chat("hello", "gpt-4o")
    chat("hello", "my-own-finetune-v3")
    chat("hello", "my-own-finetune-v3")
    print(json.dumps(chat.cache_info().dollars_saved))
    """
)


def run_cli(*args: str, env: "dict[str, str] | None" = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memollm", *args], capture_output=True, text=True, timeout=60, env=env)


def test_stats_json_reports_dollars_saved_from_another_process(tmp_path):
    script = tmp_path / "calls.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "cache")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    one = dollars("gpt-4o", input_tokens=2000, cache_read_tokens=1000, output_tokens=300)
    assert json.loads(proc.stdout) == pytest.approx(2 * one)
    stats = run_cli("stats", "--json", "--cache-dir", str(tmp_path / "cache"))
    assert stats.returncode == 0, stats.stderr
    report = json.loads(stats.stdout)
    (figures,) = report["functions"].values()
    assert figures["dollars_saved"] == pytest.approx(2 * one)  # the unknown model's hit adds no dollars
    assert figures["tokens_saved"] == 3 * 2300
    # Run again: the persisted figures add up across processes.
    subprocess.run([sys.executable, str(script), str(tmp_path / "cache")], capture_output=True, text=True, timeout=60, check=True)
    figures = next(iter(json.loads(run_cli("stats", "--json", "--cache-dir", str(tmp_path / "cache")).stdout)["functions"].values()))
    assert figures["dollars_saved"] == pytest.approx(5 * one)
    table = run_cli("stats", "--cache-dir", str(tmp_path / "cache"))
    assert "$" in table.stdout, table.stdout


def test_an_index_of_the_first_version_gains_the_usage_columns(tmp_path):
    """An index file written before usage was stored keeps working: its rows read as no usage,
    the columns are added, and entries written from then on carry theirs."""
    cache = tmp_path / "cache"
    cache.mkdir()
    conn = sqlite3.connect(cache / "index.sqlite3")
    conn.executescript(
        """
        CREATE TABLE entries (key TEXT PRIMARY KEY, function TEXT NOT NULL, created REAL NOT NULL, expires REAL,
            size INTEGER NOT NULL, duration REAL NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0,
            kind TEXT NOT NULL DEFAULT 'value', hits INTEGER NOT NULL DEFAULT 0, last_access REAL NOT NULL) WITHOUT ROWID;
        CREATE TABLE stats (function TEXT PRIMARY KEY, hits INTEGER NOT NULL DEFAULT 0, misses INTEGER NOT NULL DEFAULT 0,
            seconds_saved REAL NOT NULL DEFAULT 0, tokens_saved INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
        INSERT INTO entries VALUES ('0123456789abcdef0123456789abcdef', 'old.f', 1.0, NULL, 10, 0.5, 7, 'value', 2, 1.0);
        """
    )
    conn.close()

    @cache_llm(cache_dir=cache)
    def chat(prompt: str) -> ChatCompletion:
        return openai_completion(GPT, 100, 10)

    chat("x"), chat("x")
    assert chat.cache_info().dollars_saved == pytest.approx(dollars(GPT, input_tokens=100, output_tokens=10))
    store = DiskStore(str(cache))
    try:
        by_function = {m.function: m for m in store.entries()}
    finally:
        store.close()
    assert by_function[chat.__wrapped__.__module__ + ".test_an_index_of_the_first_version_gains_the_usage_columns.<locals>.chat"].usage == Usage(GPT, 100, 10)
    assert by_function["old.f"].usage is None and by_function["old.f"].tokens == 7


def test_without_genai_prices_there_are_no_dollars_and_nothing_breaks(tmp_path):
    script = tmp_path / "calls.py"
    script.write_text("import sys\nsys.modules['genai_prices'] = None\n" + SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "cache")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) is None
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "sitecustomize.py").write_text("import sys\nsys.modules['genai_prices'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), ROOT, os.environ.get("PYTHONPATH", "")])}
    stats = run_cli("stats", "--json", "--cache-dir", str(tmp_path / "cache"), env=env)
    assert stats.returncode == 0, stats.stderr
    (figures,) = json.loads(stats.stdout)["functions"].values()
    assert figures["dollars_saved"] is None and figures["tokens_saved"] == 3 * 2300


def test_many_distinct_usages_stay_bounded_and_all_priced(tmp_path, monkeypatch):
    """Beyond SAVED_MAX distinct usages the counters price them in the background: memory stays
    bounded, and no dollar is lost (nor counted twice across cache_clear)."""
    from memollm import stats

    monkeypatch.setattr(stats, "SAVED_MAX", 8)

    @cache_llm(store="memory", version="bounded")
    def chat(n: int) -> dict:
        return {"model": GPT, "usage": {"prompt_tokens": 100 + n, "completion_tokens": 10}}

    for n in range(30):
        chat(n), chat(n)
    expected = sum(dollars(GPT, input_tokens=100 + n, output_tokens=10) for n in range(30))
    deadline = time.monotonic() + 20
    while chat.cache_info().dollars_saved != pytest.approx(expected) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert chat.cache_info().dollars_saved == pytest.approx(expected)
    engine = chat._self_engine
    assert len(engine.cache.counters.saved) <= 8
    chat.cache_clear()
    assert chat.cache_info().dollars_saved == 0
    deadline = time.monotonic() + 20
    while engine.cache.counters.totals()[4] != pytest.approx(expected) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.cache.counters.totals()[4] == pytest.approx(expected)  # the monotonic total keeps them


def test_a_rebuilt_index_has_the_usage_of_every_entry(tmp_path):
    @cache_llm(cache_dir=tmp_path)
    def chat(prompt: str) -> ChatCompletion:
        return openai_completion(GPT, 300, 30, cached=100)

    chat("x")
    time.sleep(0.3)  # let the usage thread flush
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"index.sqlite3{suffix}").unlink(missing_ok=True)
    store = DiskStore(str(tmp_path))
    try:
        assert [m.usage for m in store.entries()] == [Usage(GPT, 300, 30, 100, 0)]
    finally:
        store.close()


# -- the HTTP layer -----------------------------------------------------------------------------


def test_http_layer_entries_are_priced_plain_and_streamed(tmp_path, server):
    """The HTTP front door reads usage and model from the JSON body or the SSE events, so its
    entries are priced too, per ``http:METHOD host/path`` function."""
    httpx2 = pytest.importorskip("httpx2")
    import memollm
    import memollm.http

    transport = memollm.http.CachingTransport(cache_dir=tmp_path)
    client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0, http_client=httpx2.Client(transport=transport))
    try:
        with memollm.observe() as calls:
            first = client.chat.completions.create(model=GPT, messages=ask("one two three"))
            client.chat.completions.create(model=GPT, messages=ask("one two three"))
            chunks = list(client.chat.completions.create(model=GPT, messages=ask("four five"), stream=True, stream_options={"include_usage": True}))
            list(client.chat.completions.create(model=GPT, messages=ask("four five"), stream=True, stream_options={"include_usage": True}))
    finally:
        client.close()
    plain = dollars(GPT, input_tokens=first.usage.prompt_tokens, output_tokens=first.usage.completion_tokens)
    streamed = dollars(GPT, input_tokens=chunks[-1].usage.prompt_tokens, output_tokens=chunks[-1].usage.completion_tokens)
    assert [c.outcome for c in calls] == ["miss", "hit", "miss", "hit"]
    assert calls[0].function.startswith("http:POST 127.0.0.1:") and calls[0].function.endswith("/v1/chat/completions")
    assert calls[1].dollars_saved == pytest.approx(plain) and calls[3].dollars_saved == pytest.approx(streamed)
    assert transport.cache_info().dollars_saved == pytest.approx(plain + streamed)
    assert server.request_count == 2
    time.sleep(0.3)  # the usage thread flushes
    figures = json.loads(run_cli("stats", "--json", "--cache-dir", str(tmp_path)).stdout)
    assert figures["dollars_saved"] == pytest.approx(plain + streamed)


@pytest.mark.parametrize("model", [GPT, "claude-sonnet-4-20250514", "gemini-2.5-pro"])
def test_many_usages_are_priced_exactly_as_the_table_prices_each(model):
    """``memollm stats`` on a large dir prices thousands of usages: per-token rates where the
    table's price is linear over them, each usage where it is not (gemini-2.5-pro's price rises
    above 200k prompt tokens); either way the table's own figure, never an approximation."""
    import random

    from memollm import prices

    rng = random.Random(7)
    hits = {}
    for _ in range(300):
        given = rng.choice([rng.randint(10, 5_000), rng.randint(150_000, 400_000)])
        read = rng.randint(0, given // 2)
        written = rng.randint(0, (given - read) // 3) if model.startswith("claude") else 0
        output = rng.randint(1, 2_000)
        hits[Usage(model, given, output, read, written)] = rng.randint(1, 5)
    expected = 0.0
    for usage, n in hits.items():
        tokens = {"input_tokens": usage.input, "output_tokens": usage.output, "cache_read_tokens": usage.cache_read}
        if usage.cache_write:
            tokens["cache_write_tokens"] = usage.cache_write
        expected += n * float(genai_prices.calc_price(genai_prices.Usage(**tokens), model).total_price)
    assert prices.total(hits) == pytest.approx(expected, rel=1e-12)
