"""The ``memollm`` command: stats, ls, show, prune, clear; exit codes and one-line errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pytest

import memollm
from memollm import cli
from memollm.entry import KIND_STREAM, EntryMeta, Stream, encode_stream
from memollm.stores.disk import DiskStore


def run_cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memollm", *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def call(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cache(tmp_path):
    """A cache dir holding 2 entries of ``complete``, 1 expired entry of ``short`` and 1 stream."""
    d = str(tmp_path / "cache")

    @memollm.cache_llm(cache_dir=d)
    def complete(prompt, model="sim"):
        return {"text": prompt.upper(), "usage": {"total_tokens": 7}}

    @memollm.cache_llm(cache_dir=d, ttl=0.05)
    def short(prompt):
        return ("tuple", 1)

    complete("hello")
    complete("world")
    complete("hello")
    short("x")
    store = DiskStore(d)
    now = time.time()
    meta = EntryMeta("tests.fake.streamer", "ab" * 16, now, None, duration=0.5, kind=KIND_STREAM)
    store.set(meta, encode_stream(meta, Stream(["Hel", "lo", "!"], "done", [0.1, 0.2, 0.3])))
    store.close()
    time.sleep(0.06)  # let short's entry expire
    return {"dir": d, "complete": complete, "short": short, "stream_key": "ab" * 16}


def test_ls_json_lists_every_entry(cache, capsys):
    code, out, err = call(capsys, "ls", "--cache-dir", cache["dir"], "--json")
    assert code == 0, err
    entries = json.loads(out)
    assert len(entries) == 4
    for e in entries:
        assert {"function", "key", "created", "expires", "size", "hits", "kind"} <= set(e)
        assert isinstance(e["size"], int) and e["size"] > 0
    keys = {e["key"] for e in entries}
    assert cache["complete"].cache_key("hello") in keys
    assert cache["complete"].cache_key("world") in keys
    (short,) = [e for e in entries if e["function"].endswith(".short")]
    assert short["expired"] is True and short["expires"] is not None
    (stream,) = [e for e in entries if e["kind"] == "stream"]
    assert stream["key"] == cache["stream_key"]


def test_ls_table_and_function_filter(cache, capsys):
    code, out, _ = call(capsys, "ls", "--cache-dir", cache["dir"])
    assert code == 0
    header = out.splitlines()[0].split()
    assert header[:6] == ["FUNCTION", "KEY", "CREATED", "EXPIRES", "SIZE", "HITS"]
    assert "expired" in out and "never" in out and "4 entries" in out

    code, out, _ = call(capsys, "ls", "--cache-dir", cache["dir"], "--function", "complete", "--json")
    assert code == 0
    entries = json.loads(out)
    assert len(entries) == 2 and all(e["function"].endswith(".complete") for e in entries)

    full_name = entries[0]["function"]
    code, out, _ = call(capsys, "ls", "--cache-dir", cache["dir"], "--function", full_name, "--json")
    assert len(json.loads(out)) == 2

    code, out, _ = call(capsys, "ls", "--cache-dir", cache["dir"], "--function", "nothing_like_it", "--json")
    assert code == 0 and json.loads(out) == []


def test_stats_per_function(cache, capsys):
    code, out, err = call(capsys, "stats", "--cache-dir", cache["dir"], "--json")
    assert code == 0, err
    stats = json.loads(out)
    assert stats["entries"] == 4
    functions = stats["functions"]
    (complete,) = [v for k, v in functions.items() if k.endswith(".complete")]
    assert complete["entries"] == 2
    assert complete["recorded_tokens"] == 14
    assert complete["bytes"] > 0 and isinstance(complete["hits"], int)
    assert stats["bytes"] == sum(f["bytes"] for f in functions.values())

    code, out, _ = call(capsys, "stats", "--cache-dir", cache["dir"])
    assert code == 0
    assert "FUNCTION" in out and "TIME SAVED" in out and "TOTAL" in out

    code, out, _ = call(capsys, "stats", "--cache-dir", cache["dir"], "--function", "complete", "--json")
    assert [k.rsplit(".", 1)[-1] for k in json.loads(out)["functions"]] == ["complete"]


def test_show_value_and_key_prefix(cache, capsys):
    key = cache["complete"].cache_key("hello")
    code, out, err = call(capsys, "show", key, "--cache-dir", cache["dir"])
    assert code == 0, err
    assert key in out and '"text": "HELLO"' in out and "(dict)" in out

    code, out, _ = call(capsys, "show", key[:10], "--cache-dir", cache["dir"], "--json")
    doc = json.loads(out)
    assert doc["key"] == key and doc["value"] == {"text": "HELLO", "usage": {"total_tokens": 7}}


def test_show_stream_as_chunks(cache, capsys):
    code, out, err = call(capsys, "show", cache["stream_key"], "--cache-dir", cache["dir"])
    assert code == 0, err
    assert "3 chunks" in out
    assert "'Hel'" in out and "'lo'" in out and "'!'" in out
    assert "'done'" in out

    code, out, _ = call(capsys, "show", cache["stream_key"], "--cache-dir", cache["dir"], "--json")
    doc = json.loads(out)
    assert doc["chunks"] == ["Hel", "lo", "!"] and doc["result"] == "done" and doc["kind"] == "stream"


RECORD_FOREIGN = """
import dataclasses, enum, sys
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from memollm import cache_llm

class Mood(enum.Enum):
    CALM = "calm"

@dataclasses.dataclass
class Verdict:
    label: str
    mood: Mood

@cache_llm(cache_dir=sys.argv[1])
def complete(prompt):
    return ChatCompletion.model_validate({
        "id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-test",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hi " + prompt}}],
    })

@cache_llm(cache_dir=sys.argv[1])
def judge(prompt):
    return Verdict(prompt, Mood.CALM)

@cache_llm(cache_dir=sys.argv[1])
def stream(prompt):
    for word in ("Hi", " there"):
        yield ChatCompletionChunk.model_validate({
            "id": "s1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
            "choices": [{"index": 0, "delta": {"content": word}}],
        })

complete("Ann"), judge("fine"), list(stream("x"))
print(complete.cache_key("Ann"), judge.cache_key("fine"), stream.cache_key("x"))
"""


def test_show_entries_of_classes_the_cli_has_not_imported(tmp_path):
    """SDK responses, dataclasses and enums of the recording program are shown by their data."""
    script = tmp_path / "record.py"
    script.write_text(RECORD_FOREIGN)
    cache_dir = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, str(script), cache_dir], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    completion_key, verdict_key, stream_key = done.stdout.split()

    shown = run_cli("show", completion_key, "--cache-dir", cache_dir)
    assert shown.returncode == 0, shown.stderr
    assert "openai.types.chat.chat_completion.ChatCompletion" in shown.stdout and "Hi Ann" in shown.stdout
    doc = json.loads(run_cli("show", completion_key, "--cache-dir", cache_dir, "--json").stdout)
    assert doc["type"] == "openai.types.chat.chat_completion.ChatCompletion"
    assert doc["value"]["choices"][0]["message"]["content"] == "Hi Ann"

    doc = json.loads(run_cli("show", verdict_key, "--cache-dir", cache_dir, "--json").stdout)
    assert doc["value"] == {"__class__": "__main__.Verdict", "label": "fine", "mood": {"__class__": "__main__.Mood", "value": "calm"}}

    shown = run_cli("show", stream_key, "--cache-dir", cache_dir)
    assert shown.returncode == 0, shown.stderr
    assert "2 chunks" in shown.stdout and '"Hi"' in shown.stdout and '" there"' in shown.stdout


@pytest.mark.parametrize("key", ["0" * 32, "not-a-key"])
def test_show_unknown_key_is_one_line_error(cache, capsys, key):
    code, out, err = call(capsys, "show", key, "--cache-dir", cache["dir"])
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("memollm: error:")


@pytest.mark.parametrize("command", [["stats"], ["ls"], ["show", "0" * 32], ["prune"], ["clear", "--yes"]])
def test_missing_cache_dir_is_an_error_and_not_created(tmp_path, capsys, command):
    missing = tmp_path / "missing"
    code, out, err = call(capsys, *command, "--cache-dir", str(missing))
    assert code == 1
    assert "no cache dir" in err and str(missing) in err
    assert len(err.strip().splitlines()) == 1
    assert not missing.exists()


def test_missing_default_cache_dir_from_environment(tmp_path):
    missing = tmp_path / "env-cache"
    result = run_cli("ls", env={"MEMOLLM_CACHE_DIR": str(missing)})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and str(missing) in result.stderr
    assert not missing.exists()


def test_empty_directory_is_an_empty_cache_left_untouched(tmp_path, capsys):
    code, out, _ = call(capsys, "ls", "--cache-dir", str(tmp_path), "--json")
    assert code == 0 and json.loads(out) == []
    assert list(tmp_path.iterdir()) == []


def test_prune_removes_expired_entries(cache, capsys):
    code, out, err = call(capsys, "prune", "--cache-dir", cache["dir"], "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["entries"] == 1 and report["bytes"] > 0
    code, out, _ = call(capsys, "ls", "--cache-dir", cache["dir"], "--json")
    assert not any(e["function"].endswith(".short") for e in json.loads(out))
    code, out, _ = call(capsys, "prune", "--cache-dir", cache["dir"])
    assert code == 0 and "nothing to prune" in out


def test_prune_removes_leftovers(cache, capsys):
    key = cache["complete"].cache_key("hello")
    leftover = os.path.join(cache["dir"], "tmp", f"{key}.{'0' * 32}-1-2")  # a write interrupted long ago
    with open(leftover, "wb") as f:
        f.write(b"half a write")
    os.utime(leftover, (time.time() - 3600, time.time() - 3600))
    code, out, _ = call(capsys, "prune", "--cache-dir", cache["dir"])
    assert code == 0 and "1 leftover" in out
    assert not os.path.exists(leftover)


def test_clear_without_yes_and_without_input_deletes_nothing(cache):
    result = run_cli("clear", "--cache-dir", cache["dir"])  # stdin is /dev/null: no answer
    assert result.returncode == 1
    assert "Delete 4 entries" in result.stderr and "--yes" in result.stderr and "Traceback" not in result.stderr
    assert DiskStore(cache["dir"]).count() == 4


@pytest.mark.parametrize("answer, remaining", [("yes\n", 0), ("no\n", 4)])
def test_clear_reads_the_answer_from_piped_stdin(cache, answer, remaining):
    result = run_cli("clear", "--cache-dir", cache["dir"], stdin=answer)
    assert result.returncode == (0 if remaining == 0 else 1), result.stderr
    assert "Delete 4 entries" in result.stderr
    assert DiskStore(cache["dir"]).count() == remaining


def test_clear_one_function_then_all(cache, capsys):
    code, out, err = call(capsys, "clear", "--cache-dir", cache["dir"], "--function", "complete", "--yes", "--json")
    assert code == 0, err
    assert json.loads(out)["entries"] == 2
    code, out, _ = call(capsys, "ls", "--cache-dir", cache["dir"], "--json")
    assert not any(e["function"].endswith(".complete") for e in json.loads(out))
    assert cache["complete"].cache_info().entries == 0

    result = run_cli("clear", "--yes", "--cache-dir", cache["dir"])
    assert result.returncode == 0, result.stderr
    assert "deleted 2 entries" in result.stdout
    assert DiskStore(cache["dir"]).count() == 0


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("answer, remaining", [("y\n", 0), ("n\n", 4), ("\n", 4)])
def test_clear_asks_on_a_terminal(cache, capsys, monkeypatch, answer, remaining):
    monkeypatch.setattr(sys, "stdin", _Terminal(answer))
    code, out, err = call(capsys, "clear", "--cache-dir", cache["dir"])
    assert "Delete 4 entries" in err
    assert code == (0 if remaining == 0 else 1)
    assert DiskStore(cache["dir"]).count() == remaining


def test_progress_bar_only_on_a_terminal(cache, capsys, monkeypatch):
    terminal = _Terminal()
    bar = cli.Progress("clearing", 3, stream=terminal, minimum=1)
    for _ in range(3):
        bar.advance()
    bar.close()
    assert "clearing" in terminal.getvalue() and "3/3" in terminal.getvalue()

    piped = io.StringIO()
    bar = cli.Progress("clearing", 10**6, stream=piped)
    bar.advance(10**6)
    bar.close()
    assert piped.getvalue() == ""

    # A large clear on a terminal goes entry by entry behind the bar and still removes everything.
    monkeypatch.setattr(cli.ui, "PROGRESS_MIN", 2)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    code = cli.main(["clear", "--yes", "--cache-dir", cache["dir"]])
    assert code == 0
    assert "clearing" in sys.stderr.getvalue() and "4/4" in sys.stderr.getvalue()
    assert DiskStore(cache["dir"]).count() == 0


def test_usage_errors_exit_2(capsys):
    assert cli.main([]) == 2
    assert cli.main(["no-such-command"]) == 2
    assert cli.main(["show"]) == 2
    assert cli.main(["ls", "--bogus"]) == 2
    assert cli.main(["--help"]) == 0
    assert cli.main(["--version"]) == 0
    assert memollm.__version__ in capsys.readouterr().out


def test_unexpected_failure_is_one_line(cache, capsys, monkeypatch):
    def broken(self, function=None):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(DiskStore, "entries", broken)
    code, out, err = call(capsys, "ls", "--cache-dir", cache["dir"])
    assert code == 1
    assert err.count("\n") == 1 and "disk on fire" in err


def test_python_dash_m_and_cache_dir_before_the_command(cache):
    result = run_cli("--cache-dir", cache["dir"], "ls", "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 4
    result = run_cli("no-such-command")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_console_script_is_declared():
    from importlib.metadata import entry_points

    scripts = entry_points(group="console_scripts") if sys.version_info >= (3, 10) else entry_points()["console_scripts"]
    assert any(ep.name == "memollm" and ep.value == "memollm.cli:main" for ep in scripts)


def test_stats_prefers_counters_persisted_by_the_store(capsys):
    from types import SimpleNamespace

    totals = [{"function": "app.complete", "hits": 5, "misses": 2, "seconds_saved": 3.5, "tokens_saved": 40}]
    store = SimpleNamespace(usage=SimpleNamespace(totals=lambda: totals))
    meta = EntryMeta("app.complete", "cd" * 16, time.time(), None, duration=0.7, tokens=8, size=100)
    (stats,) = cli.CacheDir("/nowhere", store).stats([cli.Listed(meta, hits=1)])  # type: ignore[arg-type]
    assert (stats.entries, stats.bytes, stats.hits, stats.misses, stats.seconds_saved, stats.tokens_saved) == (1, 100, 5, 2, 3.5, 40)


def _fill(store_dir: str, count: int, expired_every: int = 0) -> None:
    """``count`` entries of ``app.f`` (every ``expired_every``-th one already expired)."""
    from memollm.entry import encode_value

    store = DiskStore(store_dir)
    now = time.time()
    for i in range(count):
        expires = now - 1 if expired_every and i % expired_every == 0 else None
        meta = EntryMeta("app.f", f"{i:032x}", now - count + i, expires, duration=0.1, tokens=2)
        store.set(meta, encode_value(meta, {"text": f"answer {i}"}))
    store.close()


@pytest.mark.parametrize("with_bar", [False, True])
def test_prune_max_size_counts_expired_and_evicted_apart(tmp_path, capsys, monkeypatch, with_bar):
    d = str(tmp_path / "cache")
    _fill(d, 10, expired_every=5)  # entries 0 and 5 are expired
    size = DiskStore(d).index.totals()[0] // 10
    if with_bar:  # on a terminal the CLI deletes entry by entry behind a bar: same counts
        monkeypatch.setattr(cli.ui, "PROGRESS_MIN", 2)
        monkeypatch.setattr(sys, "stderr", _Terminal())
    code, out, err = call(capsys, "prune", "--cache-dir", d, "--max-size", str(size * 5 + size // 2), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["expired"], report["evicted"], report["entries"]) == (2, 3, 5)
    left = sorted(m.key for m in DiskStore(d).entries())
    assert left == [f"{i:032x}" for i in (4, 6, 7, 8, 9)]  # expired ones, then the least recently used
    if with_bar:
        assert "pruning" in sys.stderr.getvalue() and "5/5" in sys.stderr.getvalue()

    _fill(d, 10, expired_every=5)
    code, out, _ = call(capsys, "prune", "--cache-dir", d, "--max-size", str(size * 5 + size // 2))
    assert code == 0 and "2 expired entries, 3 evicted for size" in out


def test_prune_report_fields_add_up():
    from memollm.stores.base import PruneReport

    report = PruneReport()
    report.removed(10, expired=True)
    report.removed(5, expired=False)
    report.add(PruneReport(leftovers=1, bytes=3))
    assert (report.entries, report.expired, report.evicted, report.bytes, report.leftovers) == (2, 1, 1, 18, 1)


def test_tables_off_a_terminal_are_plain_and_whole(tmp_path):
    d = str(tmp_path / "cache")
    long_name = "app." + "very_long_module_name." * 8 + "f"
    store = DiskStore(d)
    meta = EntryMeta(long_name, "ef" * 16, time.time(), None, duration=0.1)
    from memollm.entry import encode_value

    store.set(meta, encode_value(meta, "hi"))
    store.close()
    for env in ({}, {"COLUMNS": "40"}, {"FORCE_COLOR": "1"}):
        result = run_cli("ls", "--cache-dir", d, env=env)
        assert result.returncode == 0, result.stderr
        assert "\x1b[" not in result.stdout  # no colour: not a terminal
        assert any(line.startswith(long_name + "  " + "ef" * 16) for line in result.stdout.splitlines())
        assert all(line == line.rstrip() for line in result.stdout.splitlines())


def _in_a_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run ``memollm ARGS`` with stdout and stderr on a pseudo-terminal; returns what it printed."""
    import pty

    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "memollm", *args],
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=terminal,
            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "200", **env},
        )
        os.close(terminal)
        chunks = []
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # the other end closed: the process is done
                break
            if not data:
                break
            chunks.append(data)
        assert process.wait(timeout=60) == 0
    finally:
        os.close(controller)
    return b"".join(chunks).decode("utf-8", "replace")


def test_colour_and_bars_on_a_terminal_unless_no_color(tmp_path):
    d = str(tmp_path / "cache")
    _fill(d, 1200)
    coloured = _in_a_terminal(["stats", "--cache-dir", d], {})
    assert "\x1b[" in coloured and "app.f" in coloured and "1200" in coloured
    plain = _in_a_terminal(["stats", "--cache-dir", d], {"NO_COLOR": "1"})
    assert "\x1b[3" not in plain and "app.f" in plain and "1200" in plain  # no colour codes
    assert "reading" not in plain  # and no bar

    os.remove(os.path.join(d, "index.sqlite3"))
    shown = _in_a_terminal(["ls", "--cache-dir", d], {})
    assert "1200 entries" in shown
    assert "rebuilding the index" in shown  # a bar while the entries are read again
