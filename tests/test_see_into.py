"""Issue 14 through the public API: the request in every entry, explain(), samples, cache_if."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest

import memollm
from memollm import CacheMiss, cache_llm
from memollm.entry import read_meta

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}, {"role": "user", "content": "tell me a joke"}]


def entry_files(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "joblib").rglob("output.msgpack"))


def metas(cache_dir: Path) -> list[Any]:
    return [read_meta(p.read_bytes())[0] for p in entry_files(cache_dir)]


# -- the request in every entry -------------------------------------------------------------


def test_entries_record_the_request_as_keyed(tmp_path: Path) -> None:
    @cache_llm(cache_dir=tmp_path, ignore="client")
    def complete(messages: list[dict[str, str]], client: Any = None, model: str = "gpt-4o", temperature: float = 0.0, api_key: str = "") -> str:
        return "an answer"

    complete(MESSAGES, client=object(), api_key="sk-SECRET")
    (meta,) = metas(tmp_path)
    assert meta.request == {"messages": MESSAGES, "model": "gpt-4o", "temperature": 0.0}  # defaults applied, ignored and secret absent
    assert meta.identity[1:3] == [complete.__module__, complete.__qualname__]
    assert meta.sample is None


def test_record_request_false_leaves_the_request_out(tmp_path: Path) -> None:
    @cache_llm(cache_dir=tmp_path, record_request=False)
    def complete(prompt: str) -> str:
        return "an answer"

    complete("a very private prompt")
    (path,) = entry_files(tmp_path)
    assert b"a very private prompt" not in path.read_bytes()
    assert read_meta(path.read_bytes())[0].request is None
    explanation = complete.explain("another prompt")
    assert explanation.outcome == "miss" and not explanation.comparable
    assert "cannot compare" in str(explanation)


def test_entries_without_a_request_still_read(tmp_path: Path) -> None:
    """An entry written before requests were recorded (no request in its header) is a hit."""
    from memollm.entry import EntryMeta, encode_value

    @cache_llm(cache_dir=tmp_path)
    def complete(prompt: str) -> str:
        raise AssertionError("must be served from the old entry")

    key = complete.cache_key("hi")
    store = memollm.config.disk_store(str(tmp_path))
    meta = EntryMeta(f"{complete.__module__}.{complete.__qualname__}", key, time.time(), None, 0.1)
    store.set(meta, encode_value(meta, "old answer"))
    assert complete("hi") == "old answer"
    assert complete.explain("hi").outcome == "hit"
    assert "no recorded request" in str(complete.explain("ho"))


def test_record_request_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="record_request"):
        cache_llm(record_request="no")  # type: ignore[arg-type]


# -- explain ----------------------------------------------------------------------------------


def test_explain_hit_miss_expired_and_differences(tmp_path: Path) -> None:
    calls = []

    @cache_llm(cache_dir=tmp_path, ttl=0.5)
    def complete(messages: list[dict[str, str]], model: str = "gpt-4o", temperature: float = 0.0) -> str:
        calls.append(1)
        return "ok"

    complete(MESSAGES)
    assert complete.explain(MESSAGES).outcome == "hit"
    changed = [dict(m) for m in MESSAGES]
    changed[2]["content"] = "tell me another"
    explanation = complete.explain(changed, temperature=0.2)
    assert explanation.outcome == "miss"
    assert explanation.key == complete.cache_key(changed, temperature=0.2)
    nearest = explanation.nearest[0]
    assert {(d.path, d.recorded, d.current) for d in nearest.differences} == {
        ("messages[2].content", "tell me a joke", "tell me another"),
        ("temperature", 0.0, 0.2),
    }
    text = str(explanation)
    assert "messages[2].content: 'tell me a joke' -> 'tell me another'" in text
    assert "temperature: 0.0 -> 0.2" in text
    assert len(calls) == 1  # explain calls nothing
    time.sleep(0.6)
    assert complete.explain(MESSAGES).outcome == "expired"


def test_a_long_edited_prompt_shows_where_it_changed(tmp_path: Path) -> None:
    @cache_llm(cache_dir=tmp_path)
    def complete(prompt: str) -> str:
        return "ok"

    template = "You are a helpful assistant for travellers. Question: what is the capital of {}? Answer in one word."
    complete(template.format("France"))
    line = str(complete.explain(template.format("Spain")).nearest[0].differences[0])
    assert line.startswith("prompt: ...")  # both values shown from just before the change
    assert "capital of France? Answer" in line and "capital of Spain? Answer" in line
    assert all(len(side) <= 60 for side in line[len("prompt: ") :].split(" -> "))


def test_explain_says_the_source_or_version_changed(tmp_path: Path) -> None:
    def run(version: int, prefix: str, action: str) -> list[str]:
        (tmp_path / "helpers_v.py").write_text(
            textwrap.dedent(
                f"""
                from memollm import cache_llm

                @cache_llm(cache_dir={str(tmp_path / "c")!r}, version={version})
                def complete(prompt):
                    return {prefix!r} + prompt
                """
            )
        )
        code = "import helpers_v; print(helpers_v.complete('hi'))" if action == "call" else (
            "import helpers_v; e = helpers_v.complete.explain('hi'); "
            "print(e.outcome, *[(c.source_changed, c.version_changed) for c in e.nearest])"
        )
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True, text=True, timeout=60)
        return done.stdout.split()

    assert run(1, "a ", "call") == ["a", "hi"]
    assert run(1, "a ", "explain") == ["hit"]
    assert run(1, "b ", "explain") == ["miss", "(True,", "False)"]
    assert run(2, "a ", "explain") == ["miss", "(False,", "True)"]


def test_explanation_has_plain_data_fields(tmp_path: Path) -> None:
    @cache_llm(cache_dir=tmp_path)
    def complete(prompt: str, options: Any = None) -> str:
        return "ok"

    complete("p", options={"a": [1, 2], "b": {"c": "x"}})
    explanation = complete.explain("p", options={"a": [1, 3], "b": {"c": "x", "d": 1}})
    assert isinstance(explanation, memollm.Explanation)
    paths = {d.path: (d.recorded, d.current) for d in explanation.nearest[0].differences}
    assert paths == {"options.a[1]": (2, 3), "options.b.d": ("<absent>", 1)}
    assert explanation.nearest[0].key in {m.key for m in metas(tmp_path)}


def test_explain_with_no_entries(tmp_path: Path) -> None:
    @cache_llm(cache_dir=tmp_path / "never-created")
    def complete(prompt: str) -> str:
        return "ok"

    explanation = complete.explain("p")
    assert explanation.outcome == "miss" and explanation.nearest == ()
    assert not (tmp_path / "never-created").exists()  # explain creates nothing


def test_offline_cache_miss_names_the_differences(tmp_path: Path) -> None:
    @cache_llm(cache_dir=tmp_path)
    def complete(messages: list[dict[str, str]], temperature: float = 0.0) -> str:
        return "ok"

    complete(MESSAGES)
    with memollm.cache_mode("offline"), pytest.raises(CacheMiss) as info:
        complete(MESSAGES, temperature=0.7)
    message = str(info.value)
    assert "nearest recorded entry" in message and "temperature: 0.0 -> 0.7" in message


def test_why_command_prints_the_explanation(tmp_path: Path) -> None:
    package = tmp_path / "proj"
    package.mkdir()
    (package / "whymod.py").write_text(
        textwrap.dedent(
            f"""
            from memollm import cache_llm

            @cache_llm(cache_dir={str(tmp_path / "c")!r})
            def complete(prompt, temperature=0.0):
                return "answer to " + prompt
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", "import whymod; whymod.complete('hello')"], check=True, env=env, cwd=package, timeout=60)
    cli = [sys.executable, "-m", "memollm", "why", "--cache-dir", str(tmp_path / "c"), "--function", "whymod.complete"]
    hit = subprocess.run([*cli, "--args-json", json.dumps({"prompt": "hello"})], capture_output=True, text=True, env=env, cwd=package, timeout=60)
    assert hit.returncode == 0, hit.stderr
    assert "hit" in hit.stdout
    miss = subprocess.run(
        [*cli, "--args-json", json.dumps({"prompt": "hello", "temperature": 0.5}), "--json"], capture_output=True, text=True, env=env, cwd=package, timeout=60
    )
    assert miss.returncode == 0, miss.stderr
    data = json.loads(miss.stdout)
    assert data["outcome"] == "miss"
    assert data["nearest"][0]["differences"] == [{"path": "temperature", "recorded": 0.0, "current": 0.5}]
    short = [*cli[:-1], "complete", "--args-json", json.dumps({"prompt": "hello"}), "--json"]  # the name as ls shows it, shortened
    by_short_name = json.loads(subprocess.run(short, capture_output=True, text=True, env=env, cwd=package, timeout=60, check=True).stdout)
    assert by_short_name["outcome"] == "hit" and by_short_name["note"] == ""  # imported: the defaults are known
    bad = subprocess.run([*cli, "--args-json", "{not json"], capture_output=True, text=True, env=env, cwd=package, timeout=60)
    assert bad.returncode == 2 and "--args-json" in bad.stderr
    # Where the function cannot be imported, the arguments are compared with the recorded requests.
    elsewhere = subprocess.run(
        [*cli, "--args-json", json.dumps({"prompt": "hello", "temperature": 0.0}), "--json"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    found = json.loads(elsewhere.stdout)
    assert found["outcome"] == "hit" and "could not be imported" in found["note"]
    other = subprocess.run([*cli, "--args-json", json.dumps({"prompt": "bye", "temperature": 0.0})], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert other.returncode == 0 and "prompt: 'hello' -> 'bye'" in other.stdout
    unknown = subprocess.run([*cli[:-1], "nothing.here", "--args-json", "{}"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert unknown.returncode == 1 and "no recorded entries" in unknown.stderr


# -- samples ----------------------------------------------------------------------------------


def test_samples_reach_the_provider_then_cycle(tmp_path: Path) -> None:
    calls = []

    @cache_llm(cache_dir=tmp_path, samples=3)
    def complete(prompt: str) -> str:
        calls.append(prompt)
        return f"{prompt} #{len(calls)}"

    first = [complete("p") for _ in range(3)]
    assert first == ["p #1", "p #2", "p #3"] and len(calls) == 3
    assert [complete("p") for _ in range(4)] == ["p #1", "p #2", "p #3", "p #1"]
    assert len(calls) == 3
    assert sorted(m.sample for m in metas(tmp_path)) == [0, 1, 2]
    with memollm.sample(1):
        assert complete("p") == "p #2" and complete("p") == "p #2"
    with pytest.raises(ValueError, match="samples=3"), memollm.sample(5):
        complete("p")


def test_samples_replay_in_order_in_a_new_process(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from memollm import cache_llm, cache_mode
        @cache_llm(cache_dir={str(tmp_path)!r}, samples=2)
        def complete(prompt):
            return prompt + " from process " + sys.argv[1]
        with cache_mode(sys.argv[2]):
            print(complete("p")); print(complete("p")); print(complete("p"))
        """
    )
    first = subprocess.run([sys.executable, "-c", script, "1", "readwrite"], check=True, capture_output=True, text=True, timeout=60).stdout.split("\n")
    assert first[:3] == ["p from process 1"] * 3
    second = subprocess.run([sys.executable, "-c", script, "2", "offline"], check=True, capture_output=True, text=True, timeout=60).stdout.split("\n")
    assert second[:3] == ["p from process 1"] * 3


def test_offline_with_fewer_samples_says_how_many(tmp_path: Path) -> None:
    @cache_llm(cache_dir=tmp_path, samples=3)
    def complete(prompt: str) -> str:
        return "ok"

    complete("p")
    with memollm.cache_mode("offline"):
        with memollm.sample(0):
            assert complete("p") == "ok"
        with memollm.sample(2), pytest.raises(CacheMiss, match="1 of 3 recorded"):
            complete("p")


def test_samples_of_streams(tmp_path: Path) -> None:
    calls = []

    @cache_llm(cache_dir=tmp_path, samples=2)
    def tokens(prompt: str) -> Iterator[str]:
        calls.append(1)
        yield from (prompt, str(len(calls)))

    assert [list(tokens("p")) for _ in range(4)] == [["p", "1"], ["p", "2"], ["p", "1"], ["p", "2"]]
    assert len(calls) == 2


def test_single_flight_holds_per_sample(tmp_path: Path) -> None:
    calls = []
    lock = threading.Lock()

    @cache_llm(cache_dir=tmp_path, samples=2)
    def complete(prompt: str) -> str:
        with lock:
            calls.append(1)
        time.sleep(0.2)
        return "ok"

    barrier = threading.Barrier(4)

    def worker() -> None:
        with memollm.sample(1):
            barrier.wait()
            complete("p")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(calls) == 1


def test_bad_samples_rejected() -> None:
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="samples"):
            cache_llm(samples=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sample"):
        memollm.sample(-1).__enter__()


# -- cache_if ---------------------------------------------------------------------------------


def test_cache_if_stores_only_what_deserves_it(tmp_path: Path) -> None:
    calls = []

    @cache_llm(cache_dir=tmp_path, cache_if=lambda r: r["finish_reason"] != "length")
    def complete(prompt: str) -> dict[str, str]:
        calls.append(prompt)
        return {"text": prompt, "finish_reason": "length" if prompt == "long" else "stop"}

    assert complete("long")["finish_reason"] == "length"
    complete("long")
    assert len(calls) == 2  # truncated: returned, never stored
    complete("short")
    complete("short")
    assert len(calls) == 3


def test_cache_if_for_streams_receives_the_chunks(tmp_path: Path) -> None:
    seen = []

    def non_empty(chunks: list[str]) -> bool:
        seen.append(chunks)
        return "".join(chunks) != ""

    @cache_llm(cache_dir=tmp_path, cache_if=non_empty)
    def tokens(prompt: str) -> Iterator[str]:
        yield from ([] if prompt == "empty" else ["a", "b"])

    assert list(tokens("empty")) == [] and list(tokens("x")) == ["a", "b"]
    assert seen == [[], ["a", "b"]]
    assert len(entry_files(tmp_path)) == 1


def test_cache_if_that_raises_warns_once_and_stores_nothing(tmp_path: Path) -> None:
    @cache_llm(cache_dir=tmp_path, cache_if=lambda r: r["missing"])
    def complete(prompt: str) -> dict[str, str]:
        return {"text": prompt}

    with pytest.warns(memollm.CacheWarning, match="cache_if"):
        assert complete("a") == {"text": "a"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert complete("b") == {"text": "b"}  # reported once
    assert entry_files(tmp_path) == []


def test_cache_if_must_be_callable() -> None:
    with pytest.raises(TypeError, match="cache_if"):
        cache_llm(cache_if=True)  # type: ignore[arg-type]


def test_cache_if_async(tmp_path: Path) -> None:
    calls = []

    @cache_llm(cache_dir=tmp_path, cache_if=bool)
    async def complete(prompt: str) -> str:
        calls.append(1)
        return "" if prompt == "refuse" else "answer"

    async def main() -> None:
        for _ in range(2):
            await complete("refuse")
            await complete("ok")

    asyncio.run(main())
    assert len(calls) == 3
