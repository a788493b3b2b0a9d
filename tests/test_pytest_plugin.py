"""The pytest plugin, exercised on inner test files run with ``pytester``.

Inner runs load the plugin with ``-p memollm.pytest_plugin`` and, to stay fast, no other
installed plugin; the last tests load it through the ``pytest11`` entry point, alone and
together with ``-p memollm.pytest_plugin``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess

import pytest

from memollm import observers

pytest_plugins = ["pytester"]

PLUGIN = ("-p", "memollm.pytest_plugin")
VALID = "readwrite, readonly, refresh, offline, off"

# An inner test module: a cached "provider" call that logs every real call to calls.log.
ASK = '''
import json, os, pathlib, threading
import pytest
import memollm

HERE = pathlib.Path(__file__).parent
CALLS = HERE / "calls.log"


@memollm.cache_llm
def ask(prompt):
    with CALLS.open("a") as f:
        f.write(prompt + "\\n")
    return "answer to " + prompt
'''


def calls(pytester: pytest.Pytester) -> list[str]:
    log = pytester.path / "calls.log"
    if not log.exists():
        return []
    lines = log.read_text().split()
    log.unlink()
    return lines


def entry_files(cache_dir) -> list[str]:
    return sorted(str(p.relative_to(cache_dir)) for p in cache_dir.rglob("output.msgpack"))


@pytest.fixture(autouse=True)
def _no_plugin_autoload(monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / "recorded-cache"
    monkeypatch.setenv("MEMOLLM_CACHE_DIR", str(path))
    return path


def test_record_then_replay_offline(pytester, cache_dir):
    pytester.makepyfile(
        test_replay=ASK
        + '''
def test_hi():
    assert ask("hi") == "answer to hi"
    assert ask("hi") == "answer to hi"

def test_bye():
    assert ask("bye") == "answer to bye"
'''
    )
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=2)
    assert calls(pytester) == ["hi", "bye"]
    assert len(entry_files(cache_dir)) == 2

    result = pytester.runpytest(*PLUGIN, "--memollm-mode=offline")
    result.assert_outcomes(passed=2)
    assert calls(pytester) == []  # every call served from the recording
    result.stdout.fnmatch_lines(["memollm: cache mode offline (--memollm-mode)"])
    assert "MEMOLLM_MODE" not in os.environ  # the session's mode does not leak out


def test_offline_miss_names_function_key_dir_and_fix(pytester, cache_dir):
    pytester.makepyfile(
        test_miss=ASK
        + '''
def test_unrecorded_call_raises():
    with pytest.raises(memollm.CacheMiss) as info:
        ask("never recorded")
    message = str(info.value)
    assert "test_miss.ask" in message
    assert ask.cache_key("never recorded") in message
    assert os.environ["MEMOLLM_CACHE_DIR"] in message
    assert "readwrite" in message
    assert info.value.key == ask.cache_key("never recorded")

def test_unrecorded_call_fails_the_test():
    ask("also never recorded")
'''
    )
    result = pytester.runpytest(*PLUGIN, "--memollm-mode=offline")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*CacheMiss: memollm: no cached entry for test_miss.ask (key *) in *'readwrite'*"])
    assert calls(pytester) == []


def test_unknown_mode_is_a_usage_error(pytester):
    pytester.makepyfile(test_nothing="def test_nothing(): pass")
    result = pytester.runpytest(*PLUGIN, "--memollm-mode=bogus")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--memollm-mode*'bogus'*{VALID}*"])


def test_unknown_mode_in_environment_is_a_usage_error(pytester, monkeypatch):
    pytester.makepyfile(test_nothing="def test_nothing(): pass")
    monkeypatch.setenv("MEMOLLM_MODE", "sometimes")
    result = pytester.runpytest(*PLUGIN)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*MEMOLLM_MODE*'sometimes'*{VALID}*"])


def test_mode_precedence(pytester, cache_dir, monkeypatch):
    """Call-site context > --memollm-mode (over MEMOLLM_MODE) > decorator default; threads start fresh."""
    monkeypatch.setenv("MEMOLLM_MODE", "readwrite")
    pytester.makepyfile(
        test_precedence=ASK
        + '''
@memollm.cache_llm(mode="readwrite")
def ask_rw(prompt):
    return ask(prompt)

def test_option_beats_environment_and_decorator():
    assert os.environ["MEMOLLM_MODE"] == "offline"
    with pytest.raises(memollm.CacheMiss):
        ask("x")
    with pytest.raises(memollm.CacheMiss):
        ask_rw("x")

def test_context_beats_option():
    with memollm.cache_mode("readwrite"):
        assert ask("y") == "answer to y"
        errors = []

        def in_thread():
            try:
                ask("z")
            except memollm.CacheMiss as exc:
                errors.append(exc)

        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join()
        assert len(errors) == 1  # a new thread does not inherit the context: offline again
    assert ask("y") == "answer to y"  # recorded above, replayed offline
'''
    )
    result = pytester.runpytest(*PLUGIN, "--memollm-mode=offline")
    result.assert_outcomes(passed=2)
    assert calls(pytester) == ["y"]
    assert os.environ["MEMOLLM_MODE"] == "readwrite"  # restored after the session


def test_marker_overrides_mode_and_cache_dir(pytester, cache_dir):
    sub = pytester.mkpydir("sub")
    (sub / "test_marker.py").write_text(
        ASK.replace('HERE = pathlib.Path(__file__).parent', 'HERE = pathlib.Path(__file__).parent.parent')
        + '''
@pytest.mark.memollm(mode="readwrite", cache_dir="recorded")
def test_records_despite_offline_session(memollm_cache):
    assert memollm_cache.mode == "readwrite"
    assert memollm_cache.cache_dir == str(pathlib.Path(__file__).parent / "recorded")
    assert ask("hi") == "answer to hi"

@pytest.mark.memollm(cache_dir="recorded")
def test_replays_from_the_marker_dir(memollm_cache):
    assert memollm_cache.mode == "offline"
    assert ask("hi") == "answer to hi"

def test_without_marker_the_session_mode_and_default_dir_apply(memollm_cache):
    assert memollm_cache.mode == "offline"
    assert memollm_cache.cache_dir == os.path.abspath(os.environ["MEMOLLM_CACHE_DIR"])
    with pytest.raises(memollm.CacheMiss):
        ask("hi")

@pytest.mark.memollm("refresh")
class TestClassMarker:
    @pytest.mark.memollm(cache_dir="recorded")
    def test_method_and_class_markers_combine(self, memollm_cache):
        assert memollm_cache.mode == "refresh"
        assert ask("hi") == "answer to hi"

@pytest.mark.memollm(mode="offline", cache_dir="recorded")
@pytest.mark.asyncio
async def test_async_test_sees_the_marker():
    assert memollm.Mode.OFFLINE == memollm.modes.current_mode()
    assert ask("hi") == "answer to hi"

@pytest.mark.memollm(mode="sometimes")
def test_bad_marker_mode():
    pass
'''
    )
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest(*PLUGIN, "--memollm-mode=offline", "-p", "asyncio")
    result.assert_outcomes(passed=5, errors=1)
    result.stdout.fnmatch_lines([f"*ValueError: @pytest.mark.memollm(mode=...)='sometimes' is not a memollm cache mode; use one of: {VALID}"])
    assert calls(pytester) == ["hi", "hi"]  # recorded once, refreshed once
    assert len(entry_files(sub / "recorded")) == 1
    assert not cache_dir.exists() or entry_files(cache_dir) == []


def test_fixture_reports_the_store_and_this_tests_hits(pytester, cache_dir):
    pytester.makepyfile(
        test_fixture=ASK
        + '''
from memollm.stores.disk import DiskStore

@pytest.mark.memollm(cache_dir="fixture-cache")
def test_fixture(memollm_cache):
    assert memollm_cache.stats().hits == 0
    ask("a"); ask("a"); ask("a"); ask("b")
    info = memollm_cache.stats()
    assert (info.hits, info.entries) == (2, 2)
    assert info.bytes > 0 and info.bytes == memollm_cache.info.bytes
    assert isinstance(memollm_cache.store, DiskStore)
    assert memollm_cache.store.location == memollm_cache.cache_dir
    assert memollm_cache.store.count() == 2
    assert [m.key for m in memollm_cache.reads] == [ask.cache_key("a")] * 2

@pytest.mark.memollm(cache_dir="fixture-cache")
def test_counts_are_per_test(memollm_cache):
    ask("b")
    assert memollm_cache.hits == 1

@pytest.mark.memollm(mode="offline", cache_dir=42)
def test_bad_marker_cache_dir():
    pass

def test_a_failed_marker_leaves_nothing_behind(memollm_cache):
    assert memollm_cache.mode == "readwrite"
    assert memollm_cache.cache_dir == os.path.abspath(os.environ["MEMOLLM_CACHE_DIR"])
'''
    )
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*TypeError: *@pytest.mark.memollm(cache_dir=...) must be a path, not int"])


@pytest.mark.skipif(not hasattr(observers, "miss_observers"), reason="needs the miss hook observers.miss_observers")
def test_fixture_counts_misses(pytester, cache_dir):
    pytester.makepyfile(
        test_misses=ASK
        + '''
def test_misses(memollm_cache):
    ask("a"); ask("a"); ask("b")
    assert (memollm_cache.stats().hits, memollm_cache.stats().misses) == (1, 2)

def test_offline_miss_counts(memollm_cache):
    with memollm.cache_mode("offline"):
        with pytest.raises(memollm.CacheMiss):
            ask("c")
    assert memollm_cache.misses == 1
'''
    )
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=2)


REPORT = ASK + '''
KEYS = HERE / "keys.json"

def test_record():
    for prompt in ("a", "b", "c"):
        ask(prompt)
    KEYS.write_text(json.dumps({p: ask.cache_key(p) for p in "abc"}))

def test_replay_a():
    assert ask("a") == "answer to a"
'''


def test_report_unused_lists_exactly_the_unread_entries(pytester, cache_dir):
    pytester.makepyfile(test_unused_report=REPORT)
    pytester.runpytest(*PLUGIN, "-k", "record").assert_outcomes(passed=1)
    keys = json.loads((pytester.path / "keys.json").read_text())

    result = pytester.runpytest(*PLUGIN, "-k", "replay_a", "--memollm-mode=offline", "--memollm-report-unused")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*memollm: unused cache entries*", f"{cache_dir}: 2 of 3 entries were not read by any test"])
    listed = re.findall(r"^  test_unused_report\.ask  ([0-9a-f]{32})  created .* joblib/\S+$", result.stdout.str(), re.MULTILINE)
    assert sorted(listed) == sorted([keys["b"], keys["c"]])
    for key in listed:  # each line shows the entry's directory, to delete it
        assert f"joblib/test_unused_report.ask/{key[:2]}/{key}" in result.stdout.str()

    result = pytester.runpytest(*PLUGIN, "--memollm-mode=offline", "--memollm-report-unused", "-k", "not record")
    assert keys["a"] not in result.stdout.str()


def test_report_unused_counts_entries_recorded_in_the_session_as_used(pytester, cache_dir):
    pytester.makepyfile(test_unused_report=REPORT)
    result = pytester.runpytest(*PLUGIN, "--memollm-report-unused")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"{cache_dir}: all 3 entries were read (or recorded) in this session"])


def test_report_unused_includes_marker_dirs_no_test_read(pytester, cache_dir):
    pytester.makepyfile(
        test_marker_dir=ASK
        + '''
@pytest.mark.memollm(cache_dir="marked")
def test_record():
    ask("kept")

@pytest.mark.memollm(cache_dir="marked")
def test_nothing_read():
    pass
'''
    )
    pytester.runpytest(*PLUGIN, "-k", "record").assert_outcomes(passed=1)
    result = pytester.runpytest(*PLUGIN, "-k", "nothing_read", "--memollm-report-unused")
    result.stdout.fnmatch_lines([f"{pytester.path / 'marked'}: 1 of 1 entries were not read by any test", "  test_marker_dir.ask  *"])


def test_report_unused_gathers_what_every_xdist_worker_read(pytester, cache_dir):
    """Under ``pytest -n 2`` the reads happen in two worker processes; the controller reports."""
    pytest.importorskip("xdist")
    pytester.makepyfile(
        test_workers=ASK
        + """
PROMPTS = [f"p{i}" for i in range(8)]

@pytest.mark.parametrize("prompt", PROMPTS)
def test_ask(prompt):
    assert ask(prompt) == "answer to " + prompt

def test_keys():
    (HERE / "keys.json").write_text(json.dumps({p: ask.cache_key(p) for p in [*PROMPTS, "marked"]}))

@pytest.mark.memollm(cache_dir="marked")
def test_marked():
    if os.environ.get("RECORD_MARKED"):
        ask("marked")

def test_crash():
    if os.environ.get("CRASH"):
        ask("p0")
        os._exit(3)
"""
    )
    os.environ["RECORD_MARKED"] = "1"
    try:
        pytester.runpytest(*PLUGIN).assert_outcomes(passed=11)
    finally:
        del os.environ["RECORD_MARKED"]
    keys = json.loads((pytester.path / "keys.json").read_text())
    xdist = ("-p", "xdist", "-n", "2", "--memollm-mode=offline", "--memollm-report-unused")

    result = pytester.runpytest(*PLUGIN, *xdist, "-k", "ask and not p7 or marked")
    result.assert_outcomes(passed=8)
    out = result.stdout.str()
    assert sorted(re.findall(r"^  test_workers\.ask  ([0-9a-f]{32}) ", out, re.MULTILINE)) == sorted([keys["p7"], keys["marked"]])
    result.stdout.fnmatch_lines([f"{cache_dir}: 1 of 8 entries were not read by any test", f"{pytester.path / 'marked'}: 1 of 1 *"])
    assert "went down" not in out

    os.environ["CRASH"] = "1"  # a worker that dies cannot tell what it read: the report says so
    try:
        result = pytester.runpytest(*PLUGIN, *xdist, "-k", "crash")
    finally:
        del os.environ["CRASH"]
    result.stdout.fnmatch_lines(["*pytest-xdist worker(s) gw* went down before reporting what they read*"])


def test_committed_cache_dir_replays_from_a_copy(pytester, cache_dir, tmp_path, monkeypatch):
    """The recipe: record, commit (copy) the cache dir, replay offline from the copy."""
    pytester.makepyfile(
        test_commit=ASK
        + '''
def test_calls():
    assert ask("one") == "answer to one"
    assert ask("two") == "answer to two"
'''
    )
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=1)
    assert calls(pytester) == ["one", "two"]

    clone = tmp_path / "elsewhere" / "cassettes"
    from memollm.stores import usage

    usage._flush_all()  # the inner run was in this process: write its usage now, not during rmtree
    shutil.copytree(cache_dir, clone)
    shutil.rmtree(cache_dir)
    monkeypatch.setenv("MEMOLLM_CACHE_DIR", str(clone))
    pytester.runpytest(*PLUGIN, "--memollm-mode=offline").assert_outcomes(passed=1)
    assert calls(pytester) == []

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git = ["git", "-C", str(clone)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    staged = subprocess.run([*git, "ls-files"], check=True, capture_output=True, text=True).stdout.split()
    assert sorted(f for f in staged if f.endswith("output.msgpack")) == entry_files(clone)
    assert len(entry_files(clone)) == 2
    assert not [f for f in staged if "index.sqlite3" in f]  # the index is rebuilt, not committed


def test_loads_without_the_entry_point(pytester, cache_dir):
    pytester.makepyfile(
        test_noauto=ASK
        + '''
@pytest.mark.memollm(mode="offline")
def test_marker_works(memollm_cache):
    assert memollm_cache.mode == "offline"
'''
    )
    pytester.runpytest(*PLUGIN, "--memollm-mode=readonly").assert_outcomes(passed=1)


def _entry_point_installed() -> bool:
    eps = importlib.metadata.entry_points()
    group = eps.select(group="pytest11") if hasattr(eps, "select") else eps.get("pytest11", ())  # 3.9: a dict
    return any(ep.name == "memollm" for ep in group)


@pytest.mark.skipif(not _entry_point_installed(), reason="memollm is not installed with its pytest11 entry point")
def test_loads_through_the_entry_point_alone_or_with_dash_p(pytester, cache_dir, monkeypatch):
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        test_auto='''
import pytest

@pytest.mark.memollm(mode="offline")
def test_marker_works(memollm_cache):
    assert memollm_cache.mode == "offline"
'''
    )
    for extra in ((), PLUGIN):
        result = pytester.runpytest(*extra, "-p", "no:hypothesispytest", "--memollm-mode=readonly", "--strict-markers")
        result.assert_outcomes(passed=1)
    result = pytester.runpytest("-p", "no:hypothesispytest", "--help")
    result.stdout.fnmatch_lines(["*--memollm-mode=MODE*", "*--memollm-report-unused*"])


def test_fixture_reports_this_tests_dollars_saved(pytester, cache_dir):
    pytest.importorskip("genai_prices")
    pytester.makepyfile(
        test_fixture_dollars='''
import genai_prices
import pytest
import memollm

@memollm.cache_llm
def chat(prompt):
    return {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 500, "completion_tokens": 50, "total_tokens": 550}}

@pytest.mark.memollm(cache_dir="dollars-cache")
def test_dollars(memollm_cache):
    chat("a"); chat("a"); chat("a")
    one = float(genai_prices.calc_price(genai_prices.Usage(input_tokens=500, output_tokens=50), "gpt-4o-mini").total_price)
    assert memollm_cache.stats().dollars_saved == pytest.approx(2 * one)
'''
    )
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=1)
