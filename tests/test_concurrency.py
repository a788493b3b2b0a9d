"""Many processes on one cache dir, and writers killed with SIGKILL mid-write."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from memollm import cache_llm, cache_mode
from memollm.stores import DiskStore
from memollm.stores.backend import MsgpackStoreBackend

pytestmark = pytest.mark.timeout(120)

# The cached function and its values, shared by every script below (the function is defined in
# ``python -c`` code, so its identity is the same in every process). A value is a string of
# 200 KB to about 1 MB in which every 100-character block names its key and position, so a torn,
# truncated or mixed-up value can never pass for the right one.
COMMON = """
import json, logging, os, random, sys, threading, time
from memollm import CacheMiss, cache_llm, cache_mode

SIZES = {SIZES}
_values = {{}}


def expected(k):
    value = _values.get(k)
    if value is None:
        fill = chr(97 + k) * 88
        value = _values[k] = "".join(f"[{{k:02d}}:{{i:07d}}]{{fill}}" for i in range(SIZES[k] // 100))
    return value


@cache_llm(cache_dir=sys.argv[1])
def answer(k):
    return expected(k)


class Problems(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        if record.levelno >= logging.WARNING:
            self.records.append(record.getMessage())


problems = Problems()
logging.getLogger("memollm").addHandler(problems)
"""

SMALL_SIZES = {k: 200_000 + 89_000 * k for k in range(10)}  # 200 KB .. 1 MB
BIG_SIZES = {k: 1_000_000 + 500_000 * k for k in range(6)}  # 1 MB .. 3.5 MB: long writes, easy to interrupt

# Several threads each make CALLS calls over the small key set: mostly plain calls, some
# invalidations, some refreshes; every value returned is checked.
STRESS = """
seed, calls, threads = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
errors, hits_or_calls = [], [0]


def work(rng):
    for _ in range(calls // threads):
        k = rng.randrange(len(SIZES))
        roll = rng.random()
        try:
            if roll < 0.05:
                answer.invalidate(k)
                continue
            if roll < 0.10:
                with cache_mode("refresh"):
                    value = answer(k)
            else:
                value = answer(k)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        hits_or_calls[0] += 1
        if value != expected(k):
            errors.append(f"wrong value for {k}: {len(value)} chars, starts {value[:24]!r}")


workers = [threading.Thread(target=work, args=(random.Random(seed * 100 + i),)) for i in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
info = answer.cache_info()
print(json.dumps({"errors": errors, "warnings": problems.records, "answered": hits_or_calls[0], "hits": info.hits, "misses": info.misses}))
"""

# Reads every key without calling the provider: prints, per key, "hit", "miss" or what was wrong.
VERIFY = """
seen = {}
with cache_mode("offline"):
    for k in SIZES:
        try:
            seen[k] = "hit" if answer(k) == expected(k) else "WRONG VALUE"
        except CacheMiss:
            seen[k] = "miss"
        except Exception as exc:
            seen[k] = f"ERROR {type(exc).__name__}: {exc}"
print(json.dumps({"seen": seen, "warnings": problems.records}))
"""

# Forks writers on request ("fork SEED" -> the child's pid; "wait PID" -> its wait status). A
# child writes forever (refresh mode: every call writes; now and then an invalidation) until it is
# killed. Forking from a process that has imported memollm and built the values makes a writer
# start in a millisecond, so the kill lands in its writes, not in its start-up.
FORK_SERVER = """
for k in SIZES:
    expected(k)
print("ready", flush=True)
for line in sys.stdin:
    command, arg = line.split()
    if command == "fork":
        pid = os.fork()
        if pid == 0:
            try:
                rng = random.Random(int(arg))
                while True:
                    k = rng.randrange(len(SIZES))
                    if rng.random() < 0.1:
                        answer.invalidate(k)
                    else:
                        with cache_mode("refresh"):
                            answer(k)
            finally:
                os._exit(1)
        print(pid, flush=True)
    elif command == "wait":
        print(os.waitpid(int(arg), 0)[1], flush=True)
"""


def script(body: str, sizes: dict[int, int]) -> str:
    return COMMON.format(SIZES=repr(sizes)) + body


def run_json(code: str, *args: Any, timeout: float = 90) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def entry_files(cache_dir: Path) -> dict[str, int]:
    """Key -> size of every entry file on disk."""
    return {p.parent.name: p.stat().st_size for p in cache_dir.rglob("output.msgpack")}


def leftovers(cache_dir: Path) -> list[Path]:
    """Temporary files of writes: in the staging dir, or (never expected) beside an entry."""
    staged = list((cache_dir / "tmp").glob("*")) if (cache_dir / "tmp").is_dir() else []
    return sorted(staged + list(cache_dir.rglob("output.msgpack.*")))


def indexed(cache_dir: Path) -> dict[str, int]:
    """Key -> size of every entry the index lists (a fresh store: what another process would see)."""
    store = DiskStore(cache_dir)
    try:
        return {m.key: m.size for m in store.entries()}
    finally:
        store.close()


@pytest.fixture(scope="module")
def stress(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """6 processes x 2 threads x 300 calls over 10 keys with 200 KB - 1 MB values, on one cache dir."""
    cache_dir = tmp_path_factory.mktemp("stress") / "cache"
    code = script(STRESS, SMALL_SIZES)
    start = time.monotonic()
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(cache_dir), str(seed), "300", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed in range(6)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=100)
        assert p.returncode == 0, err
        results.append(json.loads(out.splitlines()[-1]))
    seconds = time.monotonic() - start
    return {"cache_dir": cache_dir, "results": results, "seconds": seconds, "seen": run_json(script(VERIFY, SMALL_SIZES), cache_dir)}


@pytest.mark.slow
def test_many_processes_and_threads_no_errors_no_wrong_values(stress: dict[str, Any]) -> None:
    for r in stress["results"]:
        assert r["errors"] == []  # no exception, every value exactly right
        assert r["answered"] > 250
    assert sum(r["hits"] for r in stress["results"]) > 1000  # the processes did share their entries
    seen = stress["seen"]  # what is stored, read by a fresh process
    assert set(seen["seen"].values()) <= {"hit", "miss"}, seen
    assert seen["warnings"] == []
    assert leftovers(stress["cache_dir"]) == []


@pytest.mark.slow
def test_many_processes_and_threads_no_warnings_and_a_consistent_index(stress: dict[str, Any]) -> None:
    assert [r["warnings"] for r in stress["results"]] == [[]] * 6
    assert indexed(stress["cache_dir"]) == entry_files(stress["cache_dir"])


def provider_and_store(cache_dir: Path) -> Any:
    @cache_llm(cache_dir=cache_dir)
    def answer(prompt: str) -> str:
        return prompt * 1000

    return answer


def test_invalidate_racing_a_write_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache_dir = tmp_path / "cache"
    answer = provider_and_store(cache_dir)
    answer("a")
    real_open, raced = os.open, []

    def racing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        if os.fspath(path).startswith(str(cache_dir / "tmp")) and not raced:  # a write's temporary file was just created ...
            raced.append(path)
            assert answer.invalidate("a")  # ... when another process invalidates the entry
        return fd

    monkeypatch.setattr(os, "open", racing_open)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with cache_mode("refresh"):
            assert answer("a") == "a" * 1000
    monkeypatch.undo()
    assert raced
    assert [str(w.message) for w in caught] == []
    assert indexed(cache_dir) == entry_files(cache_dir)


@pytest.mark.parametrize("race", ["delete between a write and its index row", "write between a delete and its index row"])
def test_index_follows_the_files_when_writes_and_deletes_interleave(race: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process's whole delete (or write) lands between this one's file step and its index step."""
    cache_dir = tmp_path / "cache"
    answer = provider_and_store(cache_dir)
    answer("a")
    raced: list[bool] = []
    method = "dump_item" if race.startswith("delete") else "clear_item"
    real = getattr(MsgpackStoreBackend, method)

    def racing(self: MsgpackStoreBackend, *args: Any, **kwargs: Any) -> Any:
        result = real(self, *args, **kwargs)
        if not raced:
            raced.append(True)
            if method == "dump_item":
                answer.invalidate("a")
            else:
                with cache_mode("refresh"):
                    answer("a")
        return result

    monkeypatch.setattr(MsgpackStoreBackend, method, racing)
    if method == "dump_item":
        with cache_mode("refresh"):
            answer("a")
    else:
        answer.invalidate("a")
    monkeypatch.undo()
    assert raced
    assert indexed(cache_dir) == entry_files(cache_dir)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kill_9_mid_write_never_leaves_a_wrong_entry(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    server = subprocess.Popen([sys.executable, "-c", script(FORK_SERVER, BIG_SIZES), str(cache_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdin is not None and server.stdout is not None

    def ask(command: str) -> int:
        server.stdin.write(command + "\n")  # type: ignore[union-attr]
        server.stdin.flush()  # type: ignore[union-attr]
        return int(server.stdout.readline())  # type: ignore[union-attr]

    rng = random.Random(1234)
    try:
        assert server.stdout.readline() == "ready\n"
        for round_ in range(30):
            writers = [ask(f"fork {round_ * 2 + i}") for i in range(2)]
            for pid in writers:
                time.sleep(rng.uniform(0.005, 0.08))
                os.kill(pid, signal.SIGKILL)
            statuses = [ask(f"wait {pid}") for pid in writers]
            assert all(os.WIFSIGNALED(s) and os.WTERMSIG(s) == signal.SIGKILL for s in statuses)
    finally:
        server.kill()
        server.wait()
        server.stdin.close()
        server.stdout.close()

    # every readable entry is exactly right; torn writes never reached an entry's final name
    verify = script(VERIFY, BIG_SIZES)
    seen = run_json(verify, cache_dir)
    assert set(seen["seen"].values()) <= {"hit", "miss"}, seen
    assert "hit" in seen["seen"].values()
    assert seen["warnings"] == []

    # leftovers of interrupted writes are ignored on read (above) and removed by `memollm prune`
    planted = cache_dir / "tmp" / f"{'ab' * 16}.0123abcd-1-2"
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(b"half an entry")
    found = leftovers(cache_dir)
    past = time.time() - 24 * 3600
    for path in found:
        os.utime(path, (past, past))
    out = subprocess.run([sys.executable, "-m", "memollm", "prune", "--cache-dir", str(cache_dir), "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["leftovers"] == len(found)
    assert leftovers(cache_dir) == []
    assert run_json(verify, cache_dir)["seen"] == seen["seen"]  # prune removed no entry


def test_recent_temporary_files_survive_prune(tmp_path: Path) -> None:
    """A temporary file may belong to a live writer: prune leaves young ones alone."""
    cache_dir = tmp_path / "cache"
    run_json(script(POPULATE, {0: 1000}), cache_dir)  # creates the cache dir
    young = cache_dir / "tmp" / f"{'ab' * 16}.0123abcd-1-2"
    young.parent.mkdir(parents=True, exist_ok=True)
    young.write_bytes(b"being written")
    out = subprocess.run([sys.executable, "-m", "memollm", "prune", "--cache-dir", str(cache_dir), "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["leftovers"] == 0
    assert young.exists()


def test_temporary_files_of_dead_writers_are_pruned_soon(tmp_path: Path) -> None:
    """A writer killed mid-write leaves a temporary file named after its pid: once that pid is
    gone (and the file is a few seconds old), prune removes it without waiting for the age rule."""
    cache_dir = tmp_path / "cache"
    run_json(script(POPULATE, {0: 1000}), cache_dir)  # creates the cache dir
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, timeout=60)
    dead_pid = int(dead.stdout)
    shard = cache_dir / "tmp"
    shard.mkdir(parents=True, exist_ok=True)
    key = "ab" * 16
    files = {
        "dead, old enough": (f"{key}.{'0' * 32}-{dead_pid}-7", 60),
        # (dated a little ahead, so a slow start of the prune below cannot age it past the rule)
        "dead, just written": (f"{key}.{'1' * 32}-{dead_pid}-7", -30),
        "alive, old enough": (f"{key}.{'2' * 32}-{os.getppid()}-7", 60),
    }
    for name, age in files.values():
        (shard / name).write_bytes(b"half an entry")
        when = time.time() - age
        os.utime(shard / name, (when, when))
    out = subprocess.run([sys.executable, "-m", "memollm", "prune", "--cache-dir", str(cache_dir), "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["leftovers"] == 1
    remaining = {p.name for p in shard.iterdir()}
    assert remaining == {files["dead, just written"][0], files["alive, old enough"][0]}


POPULATE = """
for k in SIZES:
    answer(k)
print(json.dumps({"entries": answer.cache_info().entries}))
"""


def test_index_rows_without_data_are_ignored_and_pruned(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    sizes = {k: 1000 for k in range(4)}
    assert run_json(script(POPULATE, sizes), cache_dir) == {"entries": 4}
    gone = sorted(cache_dir.rglob("output.msgpack"))[:2]
    for path in gone:  # e.g. a writer killed between removing an entry and updating the index
        path.unlink()
    seen = run_json(script(VERIFY, sizes), cache_dir)
    assert sorted(seen["seen"].values()) == ["hit", "hit", "miss", "miss"]
    assert seen["warnings"] == []
    out = subprocess.run([sys.executable, "-m", "memollm", "prune", "--cache-dir", str(cache_dir), "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert indexed(cache_dir) == entry_files(cache_dir)


def test_prune_does_not_walk_the_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prune's cost follows what it removes: expiry and eviction come from the index, leftovers
    from the staging dir, and index rows are checked for a missing file in bounded batches."""
    from memollm.stores import disk

    cache_dir = tmp_path / "cache"
    answer = provider_and_store(cache_dir)
    for prompt in "abcde":
        answer(prompt)
    for path in sorted(cache_dir.rglob("output.msgpack"))[:3]:
        path.unlink()  # three index rows now lack their file

    def no_walk(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("prune walked the cache dir")

    monkeypatch.setattr(os, "walk", no_walk)
    monkeypatch.setattr(disk, "ORPHAN_CHECK_BATCH", 2)
    store = DiskStore(cache_dir)
    try:
        removed = [store.prune().stale_rows for _ in range(4)]
        assert sum(removed) == 3 and max(removed) <= 2  # two rows looked at per prune, wrapping around
        assert store.count() == 2
    finally:
        store.close()
    monkeypatch.undo()
    assert indexed(cache_dir) == entry_files(cache_dir)
