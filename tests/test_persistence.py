"""Entries persist across processes, survive copying and moving the cache dir, and many
processes can share one cache dir."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(90)

# A helper module as a user would write it. It uses the default cache dir, which is read on
# every call, so one process can visit several cache dirs (MEMOLLM_CACHE_DIR per dir).
HELPERS = '''
import os
from memollm import cache_llm

@cache_llm
def complete(prompt, model="gpt-4o", temperature=0.0, messages=None, tools=None, **kwargs):
    """Count real calls in a file shared by all processes."""
    with open(os.environ["CALLS_FILE"], "a") as f:
        f.write(prompt + "\\n")
    return {"text": prompt.upper(), "model": model, "parts": (1, 2), "n": len(messages or [])}
'''

# Calls each spec of argv[1] (JSON) in each cache dir of argv[2:], prints one JSON line per dir.
DRIVER = '''
import json, os, sys
import helpers
specs = json.loads(sys.argv[1])
for d in sys.argv[2:]:
    os.environ["MEMOLLM_CACHE_DIR"] = d
    before = helpers.complete.cache_info()
    results = [helpers.complete(*args, **kwargs) for args, kwargs in specs]
    after = helpers.complete.cache_info()
    print(json.dumps({"dir": d, "results": repr(results), "hits": after.hits - before.hits,
                      "misses": after.misses - before.misses, "entries": after.entries}))
'''

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
SPECS = [
    [["alpha"], {}],
    [["beta"], {"model": "gpt-4o-mini", "messages": MESSAGES, "tools": ["search", "calc"], "api_key": "sk-1"}],
]
# The same calls spelled differently: defaults explicit, keywords, dict order, tuples, another key.
SPECS_AGAIN = [
    [[], {"prompt": "alpha", "model": "gpt-4o", "temperature": 0.0}],
    [
        ["beta", "gpt-4o-mini"],
        {"messages": [{"content": m["content"], "role": m["role"]} for m in MESSAGES], "tools": ("search", "calc"), "api_key": "sk-2"},
    ],
]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / "helpers.py").write_text(HELPERS)
    (code / "driver.py").write_text(DRIVER)
    return tmp_path


def drive(workspace: Path, specs: list[Any], *dirs: Path, hashseed: str = "0", cwd: Path | None = None) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMOLLM_")}
    env.update(PYTHONPATH=str(workspace / "code"), PYTHONHASHSEED=hashseed, CALLS_FILE=str(workspace / "calls.txt"))
    out = subprocess.run(
        [sys.executable, str(workspace / "code" / "driver.py"), json.dumps(specs), *map(str, dirs)],
        cwd=cwd or workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def real_calls(workspace: Path) -> list[str]:
    path = workspace / "calls.txt"
    return path.read_text().split() if path.exists() else []


def test_entries_persist_across_processes_copies_and_moves(workspace: Path) -> None:
    original = workspace / "cache"
    [first] = drive(workspace, SPECS, original)
    assert (first["misses"], first["hits"], first["entries"]) == (2, 0, 2)
    assert real_calls(workspace) == ["alpha", "beta"]

    copied = workspace / "copies" / "copied"
    shutil.copytree(original, copied)
    without_index = workspace / "copies" / "as-from-git"
    shutil.copytree(original, without_index, ignore=shutil.ignore_patterns("index.sqlite3*", ".gitignore"))
    moved = workspace / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(str(original), str(moved))

    # Another process, another hash seed, another working directory, calls spelled differently.
    other_cwd = workspace / "copies"
    runs = drive(workspace, SPECS_AGAIN, copied, without_index, moved, hashseed="12345", cwd=other_cwd)
    assert real_calls(workspace) == ["alpha", "beta"]  # no process called the provider again
    for run in runs:
        assert (run["hits"], run["misses"], run["entries"]) == (2, 0, 2), run
        assert run["results"] == first["results"]
    assert "(1, 2)" in first["results"]  # tuples come back as tuples
    assert (without_index / "index.sqlite3").exists()  # rebuilt from the entries


PROMPTS_V1 = '''
from memollm import cache_llm

@cache_llm(cache_dir={cache!r})
def ask(question):
    return "Answer in one word: " + question
'''
PROMPTS_V2 = PROMPTS_V1.replace("one word", "two words")

EDIT_DRIVER = """
import json, sys, prompts
before = prompts.ask.cache_info().entries
value = prompts.ask("why?")
after = prompts.ask.cache_info()
if "--clear" in sys.argv:
    prompts.ask.cache_clear()
print(json.dumps({"value": value, "before": before, "after": after.entries, "misses": after.misses,
                  "cleared": prompts.ask.cache_info().entries}))
"""


def test_source_edit_makes_new_entries_and_cache_clear_removes_all(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    results = []
    for version, source, args in [("v1", PROMPTS_V1, []), ("v2", PROMPTS_V2, ["--clear"])]:
        code = tmp_path / version
        code.mkdir()
        (code / "prompts.py").write_text(source.format(cache=str(cache)))
        env = {**os.environ, "PYTHONPATH": str(code)}
        env.pop("MEMOLLM_MODE", None)
        out = subprocess.run([sys.executable, "-c", EDIT_DRIVER, *args], cwd=code, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        results.append(json.loads(out.stdout))
    v1, v2 = results
    assert v1 == {"value": "Answer in one word: why?", "before": 0, "after": 1, "misses": 1, "cleared": 1}
    # the edited prompt is a new entry, not v1's answer; cache_clear removes both versions
    assert v2 == {"value": "Answer in two words: why?", "before": 1, "after": 2, "misses": 1, "cleared": 0}
    assert list(cache.rglob("output.msgpack")) == []


CONCURRENT = """
import os, sys, time
import helpers
os.environ["MEMOLLM_CACHE_DIR"] = sys.argv[1]
for round in range(3):
    for i in range(10):
        assert helpers.complete(f"p{i}")["text"] == f"P{i}"
# Count once every process has finished writing: an entry another process has just renamed into
# place is served at once, but counted from the index only when that process's write completes.
done = os.path.join(sys.argv[2], f"done-{os.getpid()}")
open(done, "w").close()
deadline = time.monotonic() + 30
while len(os.listdir(sys.argv[2])) < int(sys.argv[3]) and time.monotonic() < deadline:
    time.sleep(0.01)
print(helpers.complete.cache_info().entries)
"""


def test_many_processes_share_a_cache_dir(workspace: Path) -> None:
    cache = workspace / "shared-cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMOLLM_")}
    env.update(PYTHONPATH=str(workspace / "code"), CALLS_FILE=str(workspace / "calls.txt"))
    finished = workspace / "finished"
    finished.mkdir()
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(CONCURRENT), str(cache), str(finished), "3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
        assert "Traceback" not in err
        assert out.strip() == "10"
    assert len(list(cache.rglob("output.msgpack"))) == 10
    assert len(real_calls(workspace)) < 30  # later rounds hit
    [again] = drive(workspace, [[[f"p{i}"], {}] for i in range(10)], cache)
    assert (again["hits"], again["misses"], again["entries"]) == (10, 0, 10)
