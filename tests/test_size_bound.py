"""Size bound: ``cache_llm(max_size=...)`` per cache dir, least-recently-used eviction, enforced by prune."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from memollm import CacheMiss, cache_llm, cache_mode

pytestmark = pytest.mark.timeout(60)

VALUE_SIZE = 500_000  # each entry is a little over 500 KB on disk (the index takes ~150 KB of the bound)


ALLOWANCE = 64 * 2**10  # documented: what the bound may be exceeded by (docs/reliability.md#size-bound)


def disk_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in cache.rglob("output.msgpack"))


def dir_bytes(cache: Path) -> int:
    """Everything in the cache dir: entries, the index and its log, temporary and lock files."""
    return sum(p.lstat().st_size for p in cache.rglob("*") if not p.is_dir())


class Sized:
    """A cached provider of ``VALUE_SIZE``-character answers, counting its calls."""

    def __init__(self, cache: Path, **options: Any) -> None:
        self.calls: list[str] = []

        def answer(prompt: str) -> str:
            self.calls.append(prompt)
            return (prompt + ":").ljust(VALUE_SIZE, "x")

        self.f = cache_llm(cache_dir=cache, **options)(answer)

    def stored(self, prompt: str) -> bool:
        """Whether ``prompt`` has an entry (a read, in offline mode: it counts as a use)."""
        try:
            with cache_mode("offline"):
                self.f(prompt)
        except CacheMiss:
            return False
        return True


def test_total_stays_within_max_size(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    s = Sized(cache, max_size=2_000_000)
    for i in range(10):
        assert s.f(f"k{i}") == f"k{i}:".ljust(VALUE_SIZE, "x")
        assert dir_bytes(cache) <= 2_000_000 + ALLOWANCE
    assert s.stored("k9")  # the entry just written is kept
    assert 3 <= len(list(cache.rglob("output.msgpack"))) <= 4
    assert s.f.cache_info().bytes <= 2_000_000


def test_least_recently_used_is_evicted_first(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    s = Sized(cache, max_size=2_000_000)  # room for three entries
    for i in range(3):
        s.f(f"k{i}")
        time.sleep(0.02)
    assert s.f("k0") and s.calls == ["k0", "k1", "k2"]  # k0 read: now the most recently used
    time.sleep(0.02)
    s.f("k3")  # one entry must go: k1 (least recently used), not k0 (first written)
    assert s.stored("k0")
    assert not s.stored("k1")
    assert s.stored("k2") and s.stored("k3")


def test_reads_in_other_processes_count_as_use(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    module = tmp_path / "sizedmod.py"
    module.write_text(
        "import sys\n"
        "from memollm import cache_llm\n\n"
        f"@cache_llm(cache_dir=sys.argv[1], max_size=2_000_000)\n"
        "def answer(prompt):\n"
        f"    return (prompt + ':').ljust({VALUE_SIZE}, 'x')\n"
    )
    run = [sys.executable, "-c", "import sys, sizedmod; print(sizedmod.answer.cache_info().hits if [sizedmod.answer(p) for p in sys.argv[2:]] else 0)"]

    def call(*prompts: str) -> int:
        out = subprocess.run([*run, str(cache), *prompts], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return int(out.stdout)

    assert call("k0", "k1", "k2") == 0
    time.sleep(0.02)
    assert call("k0") == 1  # read in another process ...
    time.sleep(0.02)
    assert call("k3") == 0  # ... so the next write evicts k1
    assert call("k0") == 1
    assert call("k2", "k3") == 2
    assert call("k1") == 0


def test_prune_enforces_max_size(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    unbounded = Sized(cache)
    for i in range(6):
        unbounded.f(f"k{i}")
    assert disk_bytes(cache) > 3_000_000
    bounded = Sized(cache, max_size=2_000_000)
    bounded.f("k5")  # a hit: nothing written, so nothing evicted yet
    out = subprocess.run([sys.executable, "-m", "memollm", "prune", "--cache-dir", str(cache), "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["entries"] >= 2
    assert disk_bytes(cache) <= 2_000_000
    assert bounded.stored("k5")  # the most recently used survive


def test_prune_max_size_option_bounds_a_dir_without_a_configured_limit(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    unbounded = Sized(cache)
    for i in range(6):
        unbounded.f(f"k{i}")
    unbounded.f("k0")  # now the most recently used
    prune = [sys.executable, "-m", "memollm", "prune", "--cache-dir", str(cache)]
    out = subprocess.run([*prune, "--max-size", "2000kB", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["entries"] >= 2
    assert disk_bytes(cache) <= 2_000_000
    assert unbounded.stored("k0") and unbounded.stored("k5")
    bad = subprocess.run([*prune, "--max-size", "lots"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--max-size" in bad.stderr and "Traceback" not in bad.stderr


def test_a_value_larger_than_max_size_is_returned_but_not_kept(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    s = Sized(cache, max_size=400_000)
    assert s.f("big") == "big:".ljust(VALUE_SIZE, "x")
    assert disk_bytes(cache) <= 400_000


@pytest.mark.parametrize("size", [2_000_000, "500MB", "1GiB", "2000kB", "2 MiB"])
def test_max_size_forms(size: Any, tmp_path: Path) -> None:
    s = Sized(tmp_path / "cache", max_size=size)
    assert s.f("q") == s.f("q")
    assert s.calls == ["q"]


@pytest.mark.parametrize("size", ["lots", -1, 0, "0MB", "-5MB", "12 parsecs", True, [100]])
def test_bad_max_size_is_rejected_at_decoration(size: Any) -> None:
    with pytest.raises((TypeError, ValueError)) as raised:
        cache_llm(max_size=size)
    assert "max_size" in str(raised.value)


def test_the_whole_dir_stays_within_max_size_index_and_log_included(tmp_path: Path) -> None:
    """Many small entries, hits between writes (the usage log writes to the index too) and a
    reader in the same process: the index's log used to grow to 1.5 MB beside a 1 MB bound."""
    cache = tmp_path / "cache"
    calls = []

    @cache_llm(cache_dir=cache, max_size="1MB")
    def small(i: int) -> str:
        calls.append(i)
        return f"{i}:".ljust(10_000, "y")

    peak = 0
    for i in range(400):
        assert small(i) == small(i) == f"{i}:".ljust(10_000, "y")
        small(i // 2)
        if i % 20 == 0:
            time.sleep(0.12)  # let the usage log's background writer run
        peak = max(peak, dir_bytes(cache))
    assert peak <= 1_000_000 + ALLOWANCE, peak
    assert disk_bytes(cache) > 600_000, "most of the bound still holds entries"


def test_without_a_bound_the_log_stays_within_4_mib(tmp_path: Path) -> None:
    """Without ``max_size`` the index's log is checkpointed every 1,000 pages (sparing a miss the
    fsync of a checkpoint every few writes) and still never grows past 4 MiB."""
    cache = tmp_path / "cache"

    @cache_llm(cache_dir=cache)
    def small(i: int) -> str:
        return f"{i}:".ljust(300, "y")

    log = cache / "index.sqlite3-wal"
    sizes = []
    for i in range(1_500):
        small(i)
        if i % 25 == 0:
            sizes.append(log.stat().st_size if log.exists() else 0)
    assert max(sizes) <= 4 * 2**20 + 64 * 2**10, max(sizes)
    assert max(sizes) > 256 * 2**10, "the log is not checkpointed every few pages without a bound"


def test_a_memory_store_with_max_size_evicts_the_least_recently_used() -> None:
    calls = []

    @cache_llm(store="memory", max_size=10_000)
    def reply(i: int) -> str:
        calls.append(i)
        return str(i).ljust(1_000, "z")

    @cache_llm(store="memory")
    def unbounded(i: int) -> int:  # the shared memory store is not affected by the bound
        return i

    unbounded(0)
    for i in range(50):
        assert reply(i) == str(i).ljust(1_000, "z")
        assert reply(0) == str(0).ljust(1_000, "z")  # kept in use: never evicted
        assert reply.cache_info().bytes <= 10_000
    assert calls == list(range(50)), "0 stayed cached throughout"
    assert 5 <= reply.cache_info().entries <= 9, "the bound holds as many ~1 KB entries as fit"
    reply(1)
    assert calls[-1] == 1, "an early entry was evicted"
    assert unbounded.cache_info().entries == 1


def test_a_memory_store_keeps_nothing_larger_than_max_size() -> None:
    import warnings

    calls = []

    @cache_llm(store="memory", max_size="1KB")
    def reply(n: int) -> str:
        calls.append(n)
        return "x" * n

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert reply(5_000) == reply(5_000) == "x" * 5_000
    assert calls == [5_000, 5_000]
    assert sum("max_size=1000" in str(w.message) for w in caught) == 1, [str(w.message) for w in caught]
    assert reply(10) == reply(10) and calls[-1] == 10 and len(calls) == 3


def test_max_size_does_not_apply_to_redis_or_store_objects() -> None:
    from memollm.stores import MemoryStore

    for store in ("redis://:hunter2@localhost:1/0", MemoryStore()):
        with pytest.raises(ValueError, match=r"max_size.*maxmemory") as raised:
            cache_llm(store=store, max_size="1MB")
        assert "hunter2" not in str(raised.value)


def test_expired_entries_leave_a_memory_store_as_writes_go() -> None:
    """Without ``max_size`` too, a long-running process holds what is live, not all it ever wrote."""
    from memollm.stores import MemoryStore
    from memollm.stores.memory import SWEEP_MIN

    store = MemoryStore()
    calls = []

    @cache_llm(store=store, ttl=1)
    def reply(i: int) -> int:
        calls.append(i)
        return i

    for i in range(SWEEP_MIN + 100):
        reply(i)
    time.sleep(1.1)  # all of those expire
    peak = 0
    for i in range(SWEEP_MIN + 100, 4 * SWEEP_MIN):
        reply(i)
        peak = max(peak, store.count())
    live = 4 * SWEEP_MIN - (SWEEP_MIN + 100)
    assert store.count() == live, "every expired entry was dropped, every live one kept"
    assert peak == live, f"{peak}: without the sweeps {4 * SWEEP_MIN}"
    before = len(calls)
    assert reply(4 * SWEEP_MIN - 1) == 4 * SWEEP_MIN - 1 and len(calls) == before, "live entries stay"


def test_the_http_layer_bounds_a_memory_store_too() -> None:
    httpx = pytest.importorskip("httpx")
    from memollm import http

    sent = []

    def provider(request: Any) -> Any:
        sent.append(request.url.path)
        return httpx.Response(200, json={"path": request.url.path, "pad": "x" * 2_000})

    transport = http.CachingTransport(transport=httpx.MockTransport(provider), store="memory", max_size="10KB")
    with httpx.Client(transport=transport) as client:
        for i in range(20):
            assert client.post(f"http://provider.test/v1/p{i}", json={"i": i}).json()["path"] == f"/v1/p{i}"
            assert transport.cache_info().bytes <= 10_000
        client.post("http://provider.test/v1/p19", json={"i": 19})  # the latest is kept
    assert len(sent) == 20
