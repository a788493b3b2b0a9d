"""The disk store: safe loading, corrupt files, the rebuildable index, permissions, git, secrets."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any, Optional

import pytest

import memollm
from memollm import CacheWarning, cache_llm

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOLLM_CACHE_DIR", str(tmp_path / "default-cache"))
    for name in ("MEMOLLM_MODE", "MEMOLLM_SECRET"):
        monkeypatch.delenv(name, raising=False)
    memollm.report.reset()


def entry_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.rglob("output.msgpack"))


def all_files(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.rglob("*") if p.is_file())


def overwrite(path: Path, data: bytes) -> None:
    """Replace a file's content with ``data``; SQLite's ``-shm`` keeps its size (garbage of the same
    length). Connections of this process map that file: shrinking it under them makes their next
    access past the new end a SIGBUS, in any program using SQLite, which no cache can survive
    (SQLite's documented limit). Garbage in it is detected and rebuilt, which is what is tested."""
    if path.name.endswith("-shm"):
        size = path.stat().st_size
        data = (data * (size // max(1, len(data)) + 1))[:size]
    path.write_bytes(data)


class Counter:
    """A cached function that counts its real calls."""

    def __init__(self, cache_dir: Path, **options: Any) -> None:
        self.calls: list[Any] = []

        def provider(prompt: str, n: int = 0) -> dict[str, Any]:
            self.calls.append((prompt, n))
            return {"text": f"{prompt}-{n}", "items": [n, (n, n)]}

        self.f = cache_llm(cache_dir=cache_dir, **options)(provider)


def run_python(code: str, cwd: Path, **env: str) -> str:
    full_env = {**os.environ, **env}
    full_env.pop("MEMOLLM_MODE", None)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def only_cache_warnings(caught: list[warnings.WarningMessage]) -> None:
    for w in caught:
        assert issubclass(w.category, CacheWarning), w


# -- loading never executes code -------------------------------------------------------------


class Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (self.marker, "w"))


# Calls provider("p", 0..2) against each cache dir given on the command line (through
# MEMOLLM_CACHE_DIR, read per call) and prints one JSON line per dir.
POPULATE = """
import json, os, sys
from memollm import cache_llm
calls = []
@cache_llm
def provider(prompt, n=0):
    calls.append(n)
    return {"text": prompt, "n": n}
for d in sys.argv[1:]:
    os.environ["MEMOLLM_CACHE_DIR"] = d
    before = len(calls)
    values = [provider("p", i) for i in range(3)]
    assert values == [{"text": "p", "n": i} for i in range(3)], values
    print(json.dumps({"dir": d, "called": len(calls) - before, "entries": provider.cache_info().entries}))
"""


def run_populate(cwd: Path, *dirs: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-c", POPULATE, *map(str, dirs)],
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if k != "MEMOLLM_MODE"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Cache dirs populated by one process, damaged, then used by two fresh ones."""
    root = tmp_path_factory.mktemp("damaged")
    dirs = {name: root / name for name in ("pickles", "index-garbage", "index-deleted")}
    assert [r["called"] for r in run_populate(root, *dirs.values())] == [3, 3, 3]
    marker = root / "PWNED"
    payload = pickle.dumps(Evil(str(marker)))
    for path in all_files(dirs["pickles"]):
        path.write_bytes(payload)
    (dirs["index-garbage"] / "index.sqlite3").write_bytes(b"this is not a database" * 100)
    for path in dirs["index-deleted"].glob("index.sqlite3*"):
        path.unlink()
    first = run_populate(root, *dirs.values())
    second = run_populate(root, dirs["pickles"])
    return {"dirs": dirs, "marker": marker, "first": dict(zip(dirs, first)), "second": second[0]}


def test_malicious_pickles_everywhere_are_never_loaded(damaged: dict[str, Any]) -> None:
    # a fresh process: every call is a miss, nothing is unpickled, nothing escapes
    assert damaged["first"]["pickles"] == {"dir": str(damaged["dirs"]["pickles"]), "called": 3, "entries": 3}
    # and the recomputed entries were written back: the next process hits
    assert damaged["second"]["called"] == 0
    assert not damaged["marker"].exists()


def test_index_garbage_in_new_process(damaged: dict[str, Any]) -> None:
    assert damaged["first"]["index-garbage"]["called"] == 0
    assert damaged["first"]["index-garbage"]["entries"] == 3


def test_deleted_index_is_rebuilt_in_new_process(damaged: dict[str, Any]) -> None:
    assert damaged["first"]["index-deleted"]["called"] == 0
    assert damaged["first"]["index-deleted"]["entries"] == 3
    assert (damaged["dirs"]["index-deleted"] / "index.sqlite3").exists()


def test_malicious_pickles_in_process(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    marker = tmp_path / "PWNED"
    c = Counter(cache)
    for i in range(3):
        c.f("p", i)
    payload = pickle.dumps(Evil(str(marker)))
    for path in all_files(cache):
        overwrite(path, payload)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(3):
            assert c.f("p", i) == {"text": f"p-{i}", "items": [i, (i, i)]}
        c.f.cache_info()
    only_cache_warnings(caught)
    assert len(c.calls) == 6
    assert not marker.exists()
    assert c.f("p", 0) == {"text": "p-0", "items": [0, (0, 0)]}
    assert len(c.calls) == 6


def test_pickled_value_is_not_loaded_without_allow_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"

    def provider(prompt: str) -> Any:
        return Evil(str(marker)) if prompt == "evil" else "fine"

    writer = cache_llm(cache_dir=tmp_path / "cache", allow_pickle=True)(provider)
    reader = cache_llm(cache_dir=tmp_path / "cache")(provider)
    assert writer.cache_key("evil") == reader.cache_key("evil")
    writer("evil")  # stores a pickle (the user opted in for this function)
    assert len(entry_files(tmp_path / "cache")) == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = reader("evil")  # same key, pickle not allowed: a miss, recomputed
    only_cache_warnings(caught)
    assert isinstance(value, Evil)
    assert not marker.exists()
    assert reader.cache_info().hits == 0


GADGET = """
import os
with open(os.environ["GADGET_MARKER"], "a") as f:
    f.write(__name__ + "\\n")
import dataclasses
@dataclasses.dataclass
class Thing:
    x: int
"""

RETURNS_GADGET = """
import os, sys
from memollm import cache_llm
{preload}
@cache_llm(cache_dir={cache_dir!r})
def provider(module):
    if os.environ.get("MAKE_GADGET"):
        import importlib
        return importlib.import_module(module).Thing(1)
    return "recomputed"
for module in ("gadget", "gadgetpkg.sub"):
    print("RESULT", module, repr(provider(module)), module in sys.modules)
"""


def test_entries_never_import_modules(tmp_path: Path) -> None:
    """An entry naming a class of a module the reader has not imported must not import it."""
    code_dir = tmp_path / "code"
    (code_dir / "gadgetpkg").mkdir(parents=True)
    (code_dir / "gadget.py").write_text(GADGET)
    (code_dir / "gadgetpkg" / "__init__.py").write_text("")
    (code_dir / "gadgetpkg" / "sub.py").write_text(GADGET)
    env = {"PYTHONPATH": str(code_dir)}
    writer_marker, reader_marker = tmp_path / "writer-marker", tmp_path / "reader-marker"
    # the package (not its submodule) is imported by the reader, so only the submodule is off limits
    script = RETURNS_GADGET.format(cache_dir=str(tmp_path / "cache"), preload="import gadgetpkg")
    out = run_python(script, code_dir, MAKE_GADGET="1", GADGET_MARKER=str(writer_marker), **env)
    assert "RESULT gadget Thing(x=1) True" in out and "RESULT gadgetpkg.sub Thing(x=1) True" in out
    assert writer_marker.read_text().split() == ["gadget", "gadgetpkg.sub"]
    assert len(entry_files(tmp_path / "cache")) == 2

    out = run_python(script, code_dir, GADGET_MARKER=str(reader_marker), **env)
    assert "RESULT gadget 'recomputed' False" in out
    assert "RESULT gadgetpkg.sub 'recomputed' False" in out
    assert not reader_marker.exists()


# -- corrupt entries -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    ["garbage", "empty", "truncated", "flipped-byte", "appended", "other-entry", "directory"],
)
def test_corrupt_entry_is_a_miss_and_is_overwritten(damage: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    c = Counter(cache)
    c.f("a")
    c.f("b")
    [path] = [p for p in entry_files(cache) if p.parent.name == c.f.cache_key("a")]
    [other] = [p for p in entry_files(cache) if p.parent.name == c.f.cache_key("b")]
    good = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(os.urandom(len(good)))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "flipped-byte":
        data = bytearray(good)
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "appended":
        path.write_bytes(good + b"\x00")
    elif damage == "other-entry":
        path.write_bytes(other.read_bytes())  # a valid entry, but for another key
    elif damage == "directory":
        path.unlink()
        path.mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert c.f("a") == {"text": "a-0", "items": [0, (0, 0)]}
    only_cache_warnings(caught)
    assert c.calls == [("a", 0), ("b", 0), ("a", 0)]
    if damage != "directory":
        assert c.f("a") == {"text": "a-0", "items": [0, (0, 0)]}  # overwritten: a hit now
        assert len(c.calls) == 3
    assert c.f("b") == {"text": "b-0", "items": [0, (0, 0)]}
    assert len(c.calls) <= 4


def test_corrupt_entry_warns_at_most_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    c = Counter(cache)
    for i in range(3):
        c.f("a", i)
    for path in entry_files(cache):
        path.write_bytes(b"MLLM\x01\x00garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(3):
            c.f("a", i)
    only_cache_warnings(caught)
    assert len(caught) <= 1
    assert len(c.calls) == 6


# -- the index -------------------------------------------------------------------------------


def _populate(cache: Path, n: int = 3) -> Counter:
    c = Counter(cache)
    for i in range(n):
        c.f("p", i)
    return c


def test_index_garbage_in_process(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    c = _populate(cache)
    for suffix in ("", "-wal", "-shm"):
        index = cache / f"index.sqlite3{suffix}"
        if index.exists():
            overwrite(index, os.urandom(8192))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert c.f("p", 0) == {"text": "p-0", "items": [0, (0, 0)]}  # entries still hit
        c.f("p", 3)
        info = c.f.cache_info()
    only_cache_warnings(caught)
    assert len(c.calls) == 4
    assert info.entries == 4
    assert info.bytes == sum(p.stat().st_size for p in entry_files(cache))


@pytest.mark.parametrize("also_journal", [False, True])
def test_deleted_index_is_rebuilt_in_process(also_journal: bool, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    c = _populate(cache)
    for suffix in ("", "-wal", "-shm") if also_journal else ("",):
        (cache / f"index.sqlite3{suffix}").unlink(missing_ok=True)
    info = c.f.cache_info()
    assert info.entries == 3
    assert info.bytes == sum(p.stat().st_size for p in entry_files(cache))
    assert (cache / "index.sqlite3").exists()
    c.f("p", 3)
    assert c.f.cache_info().entries == 4
    assert c.f("p", 0) == {"text": "p-0", "items": [0, (0, 0)]}
    assert len(c.calls) == 4


def test_index_rows_for_vanished_entries_do_not_break_hits(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    c = _populate(cache)
    shutil.rmtree(entry_files(cache)[0].parent)
    for i in range(3):
        c.f("p", i)
    assert len(c.calls) == 4


# -- files on disk ---------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_permissions(tmp_path: Path) -> None:
    cache = tmp_path / "deep" / "cache"
    c = _populate(cache)
    c.f.cache_info()
    for path in [cache, *cache.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir():
            assert mode == 0o700, (path, oct(mode))
        else:
            assert mode == 0o600, (path, oct(mode))
    assert stat.S_IMODE((tmp_path / "deep").stat().st_mode) == 0o700


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_entries_are_committable(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    c = _populate(repo / ".llm-cache")
    c.f.cache_info()
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    staged = subprocess.run(["git", "ls-files", "--cached"], cwd=repo, capture_output=True, text=True, check=True).stdout.split()
    expected = sorted(str(p.relative_to(repo)) for p in entry_files(repo / ".llm-cache"))
    assert len(expected) == 3
    assert sorted(s for s in staged if s.endswith("output.msgpack")) == expected
    assert not any("index.sqlite3" in s for s in staged)  # the rebuildable index stays out


@pytest.mark.parametrize("record_request", [True, False])
def test_no_absolute_paths_or_secrets_inside(tmp_path: Path, record_request: bool) -> None:
    cache = tmp_path / "cache"

    @cache_llm(cache_dir=cache, record_request=record_request)
    def complete(prompt: str, api_key: Optional[str] = None, headers: Optional[dict[str, str]] = None, **kwargs: Any) -> str:
        return "an answer"

    secrets = ["sk-SECRET-123", "tok-SECRET", "pw-SECRET-9", "xk-SECRET-4"]
    complete("hello", api_key="sk-SECRET-123", headers={"Authorization": "Bearer tok-SECRET", "X-Trace": "t"})
    complete("hello", password="pw-SECRET-9", extra_headers={"X-Api-Key": "xk-SECRET-4"})
    complete("hello", api_key="sk-SECRET-123", headers={"Authorization": "Bearer tok-SECRET", "X-Trace": "t"})
    assert complete.cache_info().hits == 1
    complete.cache_info()
    memollm.config.disk_store(str(cache)).close()  # flush the SQLite journal into the index file
    blobs = [p.read_bytes() for p in all_files(cache)]
    assert blobs
    for blob in blobs:
        for secret in secrets:
            assert secret.encode() not in blob
        assert str(tmp_path).encode() not in blob
    # The request is recorded in its entries (secrets left out), unless record_request=False.
    assert any(b"hello" in blob for blob in blobs) is record_request
    assert any(b"X-Trace" in blob for blob in blobs) is record_request


def test_unusable_cache_dir_still_answers(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    c = Counter(not_a_dir / "cache")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert c.f("a") == {"text": "a-0", "items": [0, (0, 0)]}
        assert c.f("a") == {"text": "a-0", "items": [0, (0, 0)]}
    only_cache_warnings(caught)
    assert len(caught) >= 1
    assert len(c.calls) == 2


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts file descriptors through /proc")
def test_a_process_going_through_many_cache_dirs_keeps_few_files_open(tmp_path):
    """A test suite with a cache dir per test must not run out of file descriptors (1024 is a
    common limit): only the most recently used cache dirs stay open."""
    import time

    from memollm import config

    def open_files():
        return len(os.listdir("/proc/self/fd"))

    before = open_files()
    helpers = []
    for i in range(3 * config.OPEN_STORES_MAX):

        @cache_llm(cache_dir=tmp_path / f"cache-{i}")
        def answer(prompt):
            return prompt * 2

        assert answer("x") == answer("x") == "xx"
        helpers.append(answer)
    time.sleep(0.3)  # background usage flushes
    assert open_files() - before <= 5 * config.OPEN_STORES_MAX
    still_open = {os.path.basename(path) for path in config._disk_stores}
    recent = {f"cache-{i}" for i in range(2 * config.OPEN_STORES_MAX, 3 * config.OPEN_STORES_MAX)}
    assert recent <= still_open  # the least recently used were closed, not the newest
    first = helpers[0]
    assert first("x") == "xx" and first.cache_info().hits == 2  # a closed dir is opened again
