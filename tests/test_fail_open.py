"""Fail-open: whatever goes wrong with the cache, the provider's answer is returned and the problem is
reported once (``warnings`` and the ``memollm`` logger); ``offline`` mode's ``CacheMiss`` still raises."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import pytest

from memollm import CacheMiss, CacheWarning, cache_llm, cache_mode
from memollm.stores import Store

pytestmark = pytest.mark.timeout(60)


class Reports:
    """Warnings and ``memollm`` log records at WARNING or above, collected during a block."""

    def __init__(self) -> None:
        self.warnings: list[warnings.WarningMessage] = []
        self.records: list[logging.LogRecord] = []

    @property
    def messages(self) -> list[str]:
        return [str(w.message) for w in self.warnings]


@contextmanager
def reports() -> Iterator[Reports]:
    found = Reports()
    logger = logging.getLogger("memollm")
    handler = logging.Handler(logging.WARNING)
    handler.emit = found.records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
    finally:
        logger.removeHandler(handler)
    found.warnings = list(caught)
    for w in found.warnings:
        assert issubclass(w.category, CacheWarning), w


def reported_once(found: Reports) -> None:
    """Exactly one warning, and the same message once on the logger."""
    assert len(found.warnings) == 1, found.messages
    assert [r.getMessage() for r in found.records] == found.messages


class Provider:
    """A cached function (plain, async and streaming flavours) that counts its real calls."""

    def __init__(self, **options: Any) -> None:
        self.calls = 0

        def answer(prompt: str, size: int = 10) -> str:
            self.calls += 1
            return f"{prompt}:" + "x" * size

        async def answer_async(prompt: str, size: int = 10) -> str:
            self.calls += 1
            return f"{prompt}:" + "x" * size

        def tokens(prompt: str) -> Iterator[str]:
            self.calls += 1
            yield from (prompt, ":", "x")

        self.answer = cache_llm(**options)(answer)
        self.answer_async = cache_llm(**options)(answer_async)
        self.tokens = cache_llm(**options)(tokens)

    def exercise(self, rounds: int = 3) -> None:
        """Every call path, each key twice; the answers are always right."""
        for i in range(rounds):
            for _ in range(2):
                assert self.answer(f"p{i}", 2000) == f"p{i}:" + "x" * 2000
                assert asyncio.run(self.answer_async(f"p{i}", 2000)) == f"p{i}:" + "x" * 2000
                assert "".join(self.tokens(f"p{i}")) == f"p{i}:x"


@contextmanager
def failing_os(monkeypatch: pytest.MonkeyPatch, under: Path, code: int, mkdir: bool = False) -> Iterator[None]:
    """Opening files for writing (and, with ``mkdir``, making directories) under ``under`` fails with ``code``."""
    real_open, real_mkdir = os.open, os.mkdir
    prefix = str(under)

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path).startswith(prefix) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if os.fspath(path).startswith(prefix):
            raise OSError(code, os.strerror(code), os.fspath(path))
        real_mkdir(path, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(os, "open", fake_open)
        if mkdir:
            m.setattr(os, "mkdir", fake_mkdir)
        yield


# -- disk full -------------------------------------------------------------------------------

DISK_FULL = """
import json, logging, resource, signal, sys, warnings
from memollm import cache_llm
records = []
handler = logging.Handler(logging.WARNING)
handler.emit = lambda r: records.append(r.getMessage())
logging.getLogger("memollm").addHandler(handler)
calls = []

@cache_llm(cache_dir=sys.argv[1])
def answer(prompt):
    calls.append(prompt)
    return prompt * 200_000

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then writes past the limit fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    right = all(answer(p) == p * 200_000 for p in "abcdeabcde")
print(json.dumps({"right": right, "calls": len(calls), "warnings": [str(w.message) for w in caught], "records": records}))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_disk_full_rlimit_fsize(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", DISK_FULL, str(tmp_path / "cache")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["right"] is True
    assert result["calls"] == 10  # nothing could be cached
    assert len(result["warnings"]) == 1, result
    assert "File too large" in result["warnings"][0]
    assert result["records"] == result["warnings"]
    assert not list((tmp_path / "cache").rglob("output.msgpack*"))  # no partial file left behind
    assert not list((tmp_path / "cache" / "tmp").glob("*"))


def test_disk_full_enospc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    p = Provider(cache_dir=cache)
    p.answer("warm")  # the cache dir, its index and lock dirs exist; now the disk fills up
    with failing_os(monkeypatch, cache / "tmp", errno.ENOSPC), reports() as found:  # where entries are written
        p.exercise()
    reported_once(found)
    assert "No space left on device" in found.messages[0]
    assert p.calls == 1 + 3 * 2 * 3  # every call of every path went to the provider, and answered
    assert not list(cache.rglob("output.msgpack.*")) and not list((cache / "tmp").glob("*"))


# -- permissions, read-only file system, unusable cache dir ---------------------------------


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    p = Provider(cache_dir=cache)
    p.answer("warm")
    with failing_os(monkeypatch, cache, errno.EACCES), reports() as found:
        p.exercise()
        assert p.answer("warm") == "warm:" + "x" * 10  # what was stored before is still served
    reported_once(found)
    assert "Permission denied" in found.messages[0]
    assert p.calls == 1 + 3 * 2 * 3


def test_read_only_file_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    p = Provider(cache_dir=cache)
    p.answer("warm")
    with failing_os(monkeypatch, cache, errno.EROFS, mkdir=True), reports() as found:
        p.exercise()
        assert p.answer("warm") == "warm:" + "x" * 10
    assert 1 <= len(found.warnings) <= 2, found.messages  # write (and index), once each, not per call
    assert all("Read-only file system" in m for m in found.messages)
    assert p.calls == 1 + 3 * 2 * 3


def test_cache_dir_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    p = Provider(cache_dir=blocker / "cache")
    with reports() as found:
        p.exercise()
        p.answer.cache_info()
        p.answer.cache_clear()
        assert p.answer.invalidate("p0") is False
    reported_once(found)
    assert p.calls == 3 * 2 * 3
    assert blocker.read_text() == "not a directory"


class BrokenStore(Store):
    """A store whose every operation fails (a network share gone, a broken backend...)."""

    location = "broken://store"

    def get(self, function: str, key: str) -> Optional[bytes]:
        raise OSError(errno.EIO, "I/O error")

    def set(self, meta: Any, data: bytes) -> None:
        raise OSError(errno.EIO, "I/O error")

    def delete(self, function: str, key: str) -> bool:
        raise OSError(errno.EIO, "I/O error")

    def clear(self, function: Optional[str] = None) -> int:
        raise OSError(errno.EIO, "I/O error")

    def entries(self, function: Optional[str] = None) -> Iterator[Any]:
        raise OSError(errno.EIO, "I/O error")


def test_broken_store_every_operation_fails(tmp_path: Path) -> None:
    p = Provider(store=BrokenStore())
    with reports() as found:
        p.exercise()
        p.answer.cache_info()
        p.answer.cache_clear()
        p.answer.invalidate("p0")
    assert p.calls == 3 * 2 * 3
    kinds = {m.split(" the cache at ")[0] for m in found.messages}
    assert len(found.warnings) == len(kinds)  # each kind of failure once (read, write, list...), never per call
    assert len(found.warnings) <= 5


# -- the index -------------------------------------------------------------------------------


def test_locked_index_does_not_hold_calls_up(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    p = Provider(cache_dir=cache)
    p.answer("warm")
    holder = sqlite3.connect(cache / "index.sqlite3", isolation_level=None, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")  # e.g. another process in a long prune, or a stuck tool
    try:
        with reports() as found:
            start = time.monotonic()
            assert p.answer("m0") == "m0:" + "x" * 10
            first = time.monotonic() - start
            later: list[float] = []

            def more() -> None:
                for i in range(1, 4):
                    start = time.monotonic()
                    assert p.answer(f"m{i}") == f"m{i}:" + "x" * 10
                    assert p.answer("warm") == "warm:" + "x" * 10
                    later.append(time.monotonic() - start)

            t = threading.Thread(target=more, daemon=True)
            t.start()
            t.join(2.0)
            done = not t.is_alive()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert first < 6.0  # at most one call waits (for the busy timeout) ...
    assert done and max(later) < 0.5, later  # ... the next ones go on without the index
    assert len(found.warnings) == 1, found.messages


def test_hits_are_not_held_up_by_a_locked_index(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    p = Provider(cache_dir=cache)
    p.answer("warm")
    holder = sqlite3.connect(cache / "index.sqlite3", isolation_level=None, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with reports():
            slowest = 0.0
            deadline = time.monotonic() + 1.5  # long enough for buffered hit counts to be flushed
            while time.monotonic() < deadline:
                start = time.monotonic()
                assert p.answer("warm") == "warm:" + "x" * 10
                slowest = max(slowest, time.monotonic() - start)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert p.calls == 1
    assert slowest < 0.5


# Runs in a fresh process: every call, the provider calls made, entries listed, what was reported.
FRESH = """
import json, logging, sys, warnings
from memollm import cache_llm
records = []
handler = logging.Handler(logging.WARNING)
handler.emit = lambda r: records.append(r.getMessage())
logging.getLogger("memollm").addHandler(handler)
calls = []

@cache_llm(cache_dir=sys.argv[1])
def answer(prompt):
    calls.append(prompt)
    return prompt + "!" * 1000

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    right = all(answer(p) == p + "!" * 1000 for p in ["a", "b", "c", "d", "e"] * 2)
    entries = answer.cache_info().entries
print(json.dumps({"right": right, "calls": len(calls), "entries": entries, "warnings": [str(w.message) for w in caught], "records": records}))
"""


def fresh(cache: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", FRESH, str(cache)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_corrupt_index_is_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert fresh(cache)["calls"] == 5
    for path in cache.glob("index.sqlite3*"):
        path.unlink()
    (cache / "index.sqlite3").write_bytes(os.urandom(8192))
    result = fresh(cache)
    assert result["right"] and result["calls"] == 0 and result["entries"] == 5  # entries served, index rebuilt
    assert len(result["warnings"]) == 1 and "rebuilding" in result["warnings"][0]
    assert result["records"] == result["warnings"]
    again = fresh(cache)
    assert (again["calls"], again["entries"], again["warnings"]) == (0, 5, [])


def test_garbage_in_every_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert fresh(cache)["calls"] == 5
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert len(files) >= 7  # five entries, the index, .gitignore
    for path in files:
        path.write_bytes(os.urandom(path.stat().st_size or 64))
    result = fresh(cache)
    assert result["right"] and result["calls"] == 5 and result["entries"] == 5  # misses, recomputed, stored again
    assert 1 <= len(result["warnings"]) <= 3, result["warnings"]  # per kind of damage, not per file or call
    assert result["records"] == result["warnings"]
    again = fresh(cache)
    assert (again["calls"], again["entries"], again["warnings"]) == (0, 5, [])


# -- offline mode's CacheMiss is never swallowed ----------------------------------------------


def test_offline_cache_miss_is_raised_with_an_unusable_cache_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    p = Provider(cache_dir=blocker / "cache", mode="offline")
    with reports():
        with pytest.raises(CacheMiss):
            p.answer("q")
        with pytest.raises(CacheMiss):
            asyncio.run(p.answer_async("q"))
        with pytest.raises(CacheMiss):
            list(p.tokens("q"))
    assert p.calls == 0


def test_offline_cache_miss_is_raised_with_a_broken_store() -> None:
    p = Provider(store=BrokenStore())
    with reports(), cache_mode("offline"):
        with pytest.raises(CacheMiss):
            p.answer("q")
        with pytest.raises(CacheMiss):
            asyncio.run(p.answer_async("q"))
    assert p.calls == 0


def test_offline_cache_miss_is_raised_for_a_corrupt_entry(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    p = Provider(cache_dir=cache)
    p.answer("q")
    for path in cache.rglob("output.msgpack"):
        path.write_bytes(b"garbage")
    with reports(), cache_mode("offline"):
        with pytest.raises(CacheMiss):
            p.answer("q")
    assert p.calls == 1


def test_offline_cache_miss_is_raised_when_the_disk_is_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    p = Provider(cache_dir=cache)
    p.answer("warm")
    with failing_os(monkeypatch, cache, errno.ENOSPC), reports(), cache_mode("offline"):
        with pytest.raises(CacheMiss):
            p.answer("q")
        assert p.answer("warm") == "warm:" + "x" * 10


def test_a_problem_is_printed_once_by_a_script_that_configures_no_logging(tmp_path: Path) -> None:
    script = (
        "import sys, threading\n"
        "from memollm import cache_llm\n"
        "@cache_llm(cache_dir=sys.argv[1])\n"
        "def f(x):\n"
        "    return threading.Lock()\n"
        "f(1)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cache")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("was not cached") == 1, done.stderr  # the warning, not also a log line
