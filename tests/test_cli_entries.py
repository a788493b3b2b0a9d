"""Seeing into entries from the command line: ``show`` (request, then response), ``ls --grep``,
``textconv`` and the cache dir's ``.gitattributes`` with a real ``git diff``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

import memollm
from memollm import cli
from memollm.entry import KIND_STREAM, EntryMeta, Stream, encode_stream, encode_value
from memollm.stores.disk import DiskStore

RECORDS_REQUESTS = "request" in getattr(EntryMeta, "__dataclass_fields__", {})


def call(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cache(tmp_path):
    d = str(tmp_path / "cache")

    @memollm.cache_llm(cache_dir=d)
    def complete(prompt, model="sim", api_key=None):
        return {"text": prompt.upper() + " from the model", "usage": {"total_tokens": 5}}

    complete("Hello there", api_key="sk-do-not-store-me")
    complete("Goodbye")
    store = DiskStore(d)
    meta = EntryMeta("tests.fake.streamer", "ab" * 16, time.time(), None, duration=0.3, kind=KIND_STREAM)
    store.set(meta, encode_stream(meta, Stream(["Once ", "upon ", "a TIME"], None, [0.1, 0.2, 0.3])))
    store.close()
    return {"dir": d, "complete": complete}


def test_ls_grep_searches_responses_and_streams_case_insensitively(cache, capsys):
    code, out, err = call(capsys, "ls", "--cache-dir", cache["dir"], "--grep", "hello THERE", "--json")
    assert code == 0, err
    assert [e["key"] for e in json.loads(out)] == [cache["complete"].cache_key("Hello there")]

    code, out, _ = call(capsys, "ls", "--cache-dir", cache["dir"], "--grep", "a time", "--json")
    assert [e["key"] for e in json.loads(out)] == ["ab" * 16]  # in the chunks of a stream

    code, out, _ = call(capsys, "ls", "--cache-dir", cache["dir"], "--grep", "from the model")
    assert code == 0 and "2 entries" in out

    code, out, _ = call(capsys, "ls", "--cache-dir", cache["dir"], "--grep", "nowhere to be found")
    assert code == 0 and "no entries containing 'nowhere to be found'" in out
    code, out, _ = call(capsys, "ls", "--cache-dir", cache["dir"], "--grep", "nowhere", "--json")
    assert json.loads(out) == []


def test_ls_grep_finds_the_request(cache, capsys):
    code, out, _ = call(capsys, "ls", "--cache-dir", cache["dir"], "--grep", "goodbye", "--function", "complete", "--json")
    assert [e["key"] for e in json.loads(out)] == [cache["complete"].cache_key("Goodbye")]
    # "sim" is only in the request (the model argument): found once requests are recorded
    code, out, _ = call(capsys, "ls", "--cache-dir", cache["dir"], "--grep", "sim", "--json")
    assert len(json.loads(out)) == (2 if RECORDS_REQUESTS else 0)
    code, out, _ = call(capsys, "ls", "--cache-dir", cache["dir"], "--grep", "sk-do-not-store-me", "--json")
    assert json.loads(out) == []  # a secret argument is never recorded


def test_show_prints_the_request_then_the_response(cache, capsys):
    key = cache["complete"].cache_key("Hello there")
    code, out, err = call(capsys, "show", key, "--cache-dir", cache["dir"])
    assert code == 0, err
    assert out.index("request:") < out.index("response:") < out.index("HELLO THERE from the model")
    assert "sk-do-not-store-me" not in out
    code, out, _ = call(capsys, "show", key, "--cache-dir", cache["dir"], "--json")
    doc = json.loads(out)
    assert "request" in doc and doc["sample"] is None
    if RECORDS_REQUESTS:
        assert "Hello there" in json.dumps(doc["request"]) and "sk-do-not-store-me" not in json.dumps(doc["request"])
    else:
        assert doc["request"] is None


def test_textconv_prints_an_entry_as_stable_text(cache, capsys):
    path = DiskStore(cache["dir"]).item_path("tests.fake.streamer", "ab" * 16)
    code, first, err = call(capsys, "textconv", path)
    assert code == 0, err
    assert first.startswith("memollm entry\n") and "key:       " + "ab" * 16 in first
    assert "stream of 3 chunks" in first and '[2] +0.300s "a TIME"' in first
    code, again, _ = call(capsys, "textconv", path)
    assert again == first

    broken = os.path.join(cache["dir"], "broken.msgpack")
    with open(broken, "wb") as f:
        f.write(b"MLLM not really an entry")
    code, out, _ = call(capsys, "textconv", broken)
    assert code == 0 and out.startswith("not a readable memollm entry")
    code, _, err = call(capsys, "textconv", os.path.join(cache["dir"], "missing"))
    assert code == 1 and err.startswith("memollm: error: cannot read")


def test_cache_dir_marks_entry_files_for_textconv(tmp_path):
    d = tmp_path / "cache"
    DiskStore(str(d)).close()
    text = (d / ".gitattributes").read_text()
    assert "joblib/**/output.msgpack -text diff=memollm" in text
    (d / ".gitattributes").write_text("# mine\n")  # a file someone edited is kept
    DiskStore(str(d)).close()
    assert (d / ".gitattributes").read_text() == "# mine\n"


def _git(repo, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("git") is None and os.environ.get("CI", "").lower() != "true", reason="git is not installed")
def test_git_diff_shows_what_was_recorded(tmp_path):
    """The documented one-liner, a committed cache dir, a re-recorded entry: `git diff` shows text."""
    repo = tmp_path / "repo"
    repo.mkdir()
    bin_dir = tmp_path / "bin"  # `memollm` on PATH runs this checkout
    bin_dir.mkdir()
    shim = bin_dir / "memollm"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m memollm "$@"\n')
    shim.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(tmp_path),
    }
    _git(repo, "init", "-q", env=env)
    _git(repo, "config", "diff.memollm.textconv", "memollm textconv", env=env)
    cache_dir = repo / "tests" / "llm-cache"
    store = DiskStore(str(cache_dir))
    meta = EntryMeta("app.complete", "cd" * 16, 1_700_000_000.0, None, duration=0.5)
    store.set(meta, encode_value(meta, {"text": "The capital of France is Paris."}))
    store.close()
    _git(repo, "add", "-A", env=env)
    committed = _git(repo, "ls-files", env=env)
    assert "tests/llm-cache/.gitattributes" in committed and "output.msgpack" in committed
    assert "index.sqlite3" not in committed
    _git(repo, "commit", "-q", "-m", "record", env=env)

    store = DiskStore(str(cache_dir))
    store.set(meta, encode_value(meta, {"text": "The capital of France is Lyon."}))
    store.close()
    diff = _git(repo, "diff", env=env)
    assert "Binary files" not in diff
    assert '-    "text": "The capital of France is Paris."' in diff
    assert '+    "text": "The capital of France is Lyon."' in diff
    assert " response: (dict)" in diff  # unchanged context, as text


def test_ls_and_show_give_the_sample_index(tmp_path, capsys):
    d = str(tmp_path / "cache")

    @memollm.cache_llm(cache_dir=d, samples=2)
    def complete(prompt):
        return {"text": f"answer {time.monotonic_ns()}"}

    for _ in range(3):
        complete("same question")
    code, out, err = call(capsys, "ls", "--cache-dir", d, "--json")
    assert code == 0, err
    assert sorted(e["sample"] for e in json.loads(out)) == [0, 1]
    code, out, _ = call(capsys, "ls", "--cache-dir", d)
    assert out.splitlines()[0].split()[:7] == ["FUNCTION", "KEY", "CREATED", "EXPIRES", "SIZE", "HITS", "SAMPLE"]
    (second,) = [e for e in json.loads(call(capsys, "ls", "--cache-dir", d, "--json")[1]) if e["sample"] == 1]
    code, out, _ = call(capsys, "show", second["key"], "--cache-dir", d)
    assert "sample:    1" in out and "same question" in out


def test_an_index_of_an_older_version_gains_the_sample_column(tmp_path, capsys):
    import sqlite3

    d = str(tmp_path / "cache")

    @memollm.cache_llm(cache_dir=d)
    def complete(prompt):
        return prompt

    complete("x")
    DiskStore(d).close()
    conn = sqlite3.connect(os.path.join(d, "index.sqlite3"))
    conn.execute("ALTER TABLE entries DROP COLUMN sample")  # the first release's table
    conn.commit()
    conn.close()
    code, out, err = call(capsys, "ls", "--cache-dir", d, "--json")
    assert code == 0, err
    (entry,) = json.loads(out)
    assert entry["sample"] is None


def test_stats_after_clear_lists_no_cleared_function(tmp_path, capsys):
    d = str(tmp_path / "cache")

    @memollm.cache_llm(cache_dir=d)
    def kept(prompt):
        return prompt

    @memollm.cache_llm(cache_dir=d)
    def dropped(prompt):
        return prompt

    for f in (kept, dropped, kept, dropped):
        f("same")
    from memollm.stores import usage

    usage._flush_all()
    names = lambda: [k.rsplit(".", 1)[-1] for k in json.loads(call(capsys, "stats", "--cache-dir", d, "--json")[1])["functions"]]  # noqa: E731
    assert names() == ["dropped", "kept"]
    assert call(capsys, "clear", "--cache-dir", d, "--function", "dropped", "--yes")[0] == 0
    assert names() == ["kept"]
    store = DiskStore(d)
    assert [r["function"].rsplit(".", 1)[-1] for r in store.usage.history()] == ["kept"]  # its history went too
    store.close()
    assert call(capsys, "clear", "--cache-dir", d, "--yes")[0] == 0
    assert names() == []
    code, out, _ = call(capsys, "stats", "--cache-dir", d)
    assert "no entries" in out and "dropped" not in out and "kept" not in out


def test_http_entries_show_their_request_and_json_body(tmp_path, capsys):
    import httpx

    import memollm.http

    d = str(tmp_path / "cache")

    def reply(request):
        return httpx.Response(200, json={"choices": [{"message": {"content": "Paris, of course"}}]})

    http = httpx.Client(transport=memollm.http.CachingTransport(httpx.MockTransport(reply), cache_dir=d))
    http.post(
        "https://api.example.com/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "Capital of France?"}]},
        headers={"authorization": "Bearer sk-http-secret"},
    )
    http.close()
    (entry,) = json.loads(call(capsys, "ls", "--cache-dir", d, "--grep", "capital of france", "--json")[1])
    code, out, err = call(capsys, "show", entry["key"], "--cache-dir", d)
    assert code == 0, err
    assert out.index('"path": "/v1/chat/completions"') < out.index('"body (JSON)": {') < out.index('"content": "Paris, of course"')
    assert "sk-http-secret" not in out
    doc = json.loads(call(capsys, "show", entry["key"], "--cache-dir", d, "--json")[1])
    assert isinstance(doc["value"]["body"], str)  # --json keeps what is stored
    path = DiskStore(d).item_path(entry["function"], entry["key"])
    code, out, _ = call(capsys, "textconv", path)
    assert '      "content": "Paris, of course"' in out and "sk-http-secret" not in out
