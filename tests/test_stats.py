"""Stats: per-function cache_info, tokens saved from usage, counters persisted for the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from memollm import cache_llm
from memollm.stores.disk import DiskStore


def test_cache_info_counts_time_and_tokens_saved(tmp_path):
    @cache_llm(cache_dir=tmp_path)
    def complete(prompt):
        time.sleep(0.05)
        return {"text": prompt, "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}

    complete("a")
    complete("a")
    complete("a")
    info = complete.cache_info()
    assert (info.hits, info.misses, info.entries) == (2, 1, 1)
    assert info.tokens_saved == 14
    assert info.seconds_saved >= 0.09
    assert info.bytes > 0


@pytest.mark.parametrize(
    "usage, tokens",
    [
        ({"total_tokens": 11}, 11),  # OpenAI
        ({"input_tokens": 5, "output_tokens": 6}, 11),  # Anthropic
        (None, 0),
    ],
)
def test_tokens_from_dict_and_object_usage(tmp_path, usage, tokens):
    from types import SimpleNamespace

    from memollm.stats import tokens_of

    assert tokens_of({"usage": usage}) == tokens
    if usage is not None:
        assert tokens_of(SimpleNamespace(usage=SimpleNamespace(**usage))) == tokens


def test_tokens_saved_from_openai_and_anthropic_objects(tmp_path):
    import anthropic.types
    import openai.types.chat

    completion = openai.types.chat.ChatCompletion.model_validate(
        {
            "id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
        }
    )
    message = anthropic.types.Message.model_validate(
        {
            "id": "m1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "end_turn",
            "content": [{"type": "text", "text": "hi"}], "usage": {"input_tokens": 8, "output_tokens": 3},
        }
    )

    @cache_llm(cache_dir=tmp_path)
    def openai_helper(prompt):
        return completion

    @cache_llm(cache_dir=tmp_path)
    def anthropic_helper(prompt):
        return message

    for helper in (openai_helper, anthropic_helper):
        helper("x")
        helper("x")
    assert openai_helper.cache_info().tokens_saved == 12
    assert anthropic_helper.cache_info().tokens_saved == 11


def test_stream_tokens_are_counted(tmp_path):
    @cache_llm(cache_dir=tmp_path)
    def stream(prompt):
        yield {"delta": "a"}
        yield {"delta": "b", "usage": {"total_tokens": 9}}

    list(stream("p"))
    list(stream("p"))
    assert stream.cache_info().tokens_saved == 9


SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from memollm import cache_llm

    @cache_llm(cache_dir=sys.argv[1])
    def complete(prompt):
        time.sleep(0.02)
        return {"text": prompt, "usage": {"total_tokens": 5}}

    for prompt in ["a", "a", "b", "a"]:
        complete(prompt)
    """
)


def test_stats_persist_across_runs_for_the_cli(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    cache = tmp_path / "cache"
    for _ in range(2):
        subprocess.run([sys.executable, str(script), str(cache), str(tmp_path)], check=True, timeout=60)
    totals = {row["function"]: row for row in DiskStore(cache).usage.totals()}
    assert len(totals) == 1
    (row,) = totals.values()
    # run 1: a miss, a hit, b miss, a hit; run 2: four hits
    assert (row["hits"], row["misses"]) == (6, 2)
    assert row["tokens_saved"] == 30
    assert row["seconds_saved"] >= 6 * 0.015

    report = json.loads(
        subprocess.run(
            [sys.executable, "-m", "memollm", "stats", "--cache-dir", str(cache), "--json"],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout
    )
    assert (report["hits"], report["misses"], report["entries"], report["tokens_saved"]) == (6, 2, 2, 30)
    listed = json.loads(
        subprocess.run(
            [sys.executable, "-m", "memollm", "ls", "--cache-dir", str(cache), "--json"],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout
    )
    assert sorted(entry["hits"] for entry in listed) == [1, 5]


def test_the_cli_sees_the_calls_of_a_running_process(tmp_path):
    """Usage is flushed in the background within a fraction of a second: no flush call needed."""

    @cache_llm(cache_dir=tmp_path)
    def complete(prompt):
        return {"text": prompt, "usage": {"total_tokens": 4}}

    complete("a"), complete("a"), complete("a")
    report = json.loads(
        subprocess.run(
            [sys.executable, "-m", "memollm", "stats", "--cache-dir", str(tmp_path), "--json"],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout
    )
    assert (report["hits"], report["misses"], report["tokens_saved"]) == (2, 1, 8)


def cli_json(*args):
    done = subprocess.run([sys.executable, "-m", "memollm", *args, "--json"], check=True, capture_output=True, text=True, timeout=60)
    return json.loads(done.stdout)


def test_misses_counted_before_a_new_dir_has_its_index_are_kept(tmp_path):
    """The first call of a new cache dir is a miss counted while the provider still works: no
    index exists yet to write it to, and the count must wait for it rather than be lost."""

    @cache_llm(cache_dir=tmp_path)
    def slow(prompt):
        time.sleep(0.3)  # several background flushes happen meanwhile
        return prompt

    slow("a"), slow("a")
    time.sleep(0.3)
    report = cli_json("stats", "--cache-dir", str(tmp_path))
    assert (report["hits"], report["misses"]) == (1, 1)


def test_hits_of_a_deleted_entry_are_not_credited_to_its_successor(tmp_path):
    @cache_llm(cache_dir=tmp_path)
    def complete(prompt):
        return prompt

    @cache_llm(cache_dir=tmp_path)
    def summarize(prompt):
        return prompt

    @cache_llm(cache_dir=tmp_path)
    def other(prompt):
        return prompt

    for _ in range(3):
        complete("a"), summarize("s"), other("b")  # two hits each, still buffered
    assert complete.invalidate("a")
    summarize.cache_clear()
    complete("a"), summarize("s")  # recorded again: new entries, never read
    time.sleep(0.3)
    hits = {entry["key"]: entry["hits"] for entry in cli_json("ls", "--cache-dir", str(tmp_path))}
    assert hits == {complete.cache_key("a"): 0, summarize.cache_key("s"): 0, other.cache_key("b"): 2}


FORKING = """
import os, sys, time
from memollm import cache_llm

@cache_llm(cache_dir=sys.argv[1])
def complete(prompt):
    return {"text": prompt, "usage": {"total_tokens": 4}}

complete("a"); complete("a")          # the parent: a miss and a hit, still buffered at the fork
pid = os.fork()
if pid == 0:                          # the child: three hits, written by the child's own thread
    complete("a"); complete("a"); complete("a")
    time.sleep(1.0)                   # longer than the flush interval, then exit without atexit
    os._exit(0)
os.waitpid(pid, 0)
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_hits_in_a_forked_child_are_counted_once(tmp_path):
    """A forked child starts its own usage thread (its parent's is not there) and drops what it
    inherited buffered (the parent writes that): every hit counted exactly once."""
    script = tmp_path / "fork.py"
    script.write_text(FORKING)
    subprocess.run([sys.executable, str(script), str(tmp_path / "cache")], check=True, timeout=60)
    report = cli_json("stats", "--cache-dir", str(tmp_path / "cache"))
    assert (report["hits"], report["misses"], report["tokens_saved"]) == (4, 1, 16)


def test_many_hits_from_threads_are_tallied_exactly_per_entry(tmp_path):
    """Hits are buffered as they happen and tallied per entry at flush: every one is counted,
    per entry, per function and in tokens saved, and ``last_access`` is the latest hit's time."""

    @cache_llm(cache_dir=tmp_path)
    def complete(prompt):
        return {"text": prompt, "usage": {"total_tokens": 3}}

    per_thread = {"a": 700, "b": 300, "c": 1}
    for prompt in per_thread:
        complete(prompt)  # three misses

    def hit_all():
        for prompt, count in per_thread.items():
            for _ in range(count):
                complete(prompt)

    threads = [threading.Thread(target=hit_all) for _ in range(4)]
    before = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    after = time.time()
    time.sleep(0.5)  # the usage thread flushes every 0.1 s
    (row,) = DiskStore(tmp_path).usage.totals()
    total = 4 * sum(per_thread.values())
    assert (row["hits"], row["misses"], row["tokens_saved"]) == (total, 3, 3 * total)
    listed = {entry["key"]: entry for entry in cli_json("ls", "--cache-dir", str(tmp_path))}
    for prompt, count in per_thread.items():
        entry = listed[complete.cache_key(prompt)]
        assert entry["hits"] == 4 * count
        assert before <= entry["last_access"] <= after
