"""Reliability round 2 (issue 13): options that used to be misread, through the public API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy  # a test dependency (setup.cfg's test extra), never skipped
import pytest

from memollm import cache_llm
from memollm.config import use_cache_dir


@pytest.mark.parametrize("secret", ["", b""])
def test_an_empty_secret_is_rejected_at_decoration(secret: Any) -> None:
    with pytest.raises(ValueError, match=r"secret.*empty"):
        cache_llm(secret=secret)
    with pytest.raises(ValueError, match=r"secret.*empty"):

        @cache_llm(secret=secret)
        def f(x: int) -> int:  # pragma: no cover - never decorated
            return x


def test_an_empty_memollm_secret_counts_as_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def complete(x: int) -> int:
        calls.append(x)
        return x

    monkeypatch.setenv("MEMOLLM_SECRET", "")
    with_empty = cache_llm(cache_dir=tmp_path)(complete)
    assert with_empty(1) == with_empty(1) == 1
    assert calls == [1]
    monkeypatch.delenv("MEMOLLM_SECRET")
    unset = cache_llm(cache_dir=tmp_path)(complete)
    assert unset(1) == 1
    assert calls == [1], "an entry written with an empty MEMOLLM_SECRET reads as an unsigned one"


@pytest.mark.parametrize("ttl", [10**400, -(10**400), 10**5000], ids=["1e400", "-1e400", "1e5000"])
def test_a_ttl_beyond_any_float_is_the_usual_error(ttl: int) -> None:
    with pytest.raises(ValueError, match=r"ttl=.*positive, finite"):
        cache_llm(ttl=ttl)


@pytest.mark.parametrize("cache_dir", ["", Path("")])  # (Path("") is ".", the current dir: a real path)
def test_an_empty_cache_dir_is_rejected(cache_dir: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if isinstance(cache_dir, Path):
        cache_llm(cache_dir=cache_dir)  # allowed
        return
    with pytest.raises(ValueError, match=r"cache_llm\(cache_dir=.*empty"):
        cache_llm(cache_dir=cache_dir)
    with pytest.raises(ValueError, match=r"use_cache_dir\(cache_dir=.*empty"):
        with use_cache_dir(cache_dir):
            pass  # pragma: no cover


def test_an_empty_cache_dir_is_rejected_everywhere_else(tmp_path: Path) -> None:
    from memollm.integrations.langchain import MemollmCache
    from memollm.stores.disk import DiskStore

    with pytest.raises(ValueError, match=r"MemollmCache\(cache_dir=.*empty"):
        MemollmCache(cache_dir="")
    with pytest.raises(ValueError, match=r"DiskStore\(cache_dir=.*empty"):
        DiskStore("")
    from memollm.stores.redis import RedisStore

    with pytest.raises(ValueError, match=r"local='' is empty"):
        RedisStore("redis://127.0.0.1:1/0", local="")
    result = subprocess.run(
        [sys.executable, "-m", "memollm", "--cache-dir", "", "ls"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert result.returncode != 0
    assert "--cache-dir is empty" in result.stderr


# -- entry paths that hold no regular file ---------------------------------------------------
# Each scenario runs in a subprocess with a timeout: a regression hangs (a FIFO) or exhausts
# memory (/dev/zero), and must fail instead of stopping the suite.

HELPER = """
import json, sys, warnings
from memollm import cache_llm, CacheWarning

calls = []

@cache_llm(cache_dir=sys.argv[1])
def complete(prompt):
    calls.append(prompt)
    return {"text": prompt.upper()}

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    answers = [complete("hello"), complete("hello")]
print(json.dumps({
    "answers": answers,
    "calls": len(calls),
    "key": complete.cache_key("hello"),
    "warnings": [str(w.message) for w in caught if issubclass(w.category, CacheWarning)],
}))
"""

STRANGE = ["fifo", "symlink-urandom", "symlink-zero", "directory", "sparse-huge"]


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=env)


def run_memollm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "memollm", *args], capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )


def run_helper(cache_dir: Path) -> dict[str, Any]:
    import json

    result = run_python(HELPER, str(cache_dir))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def plant(path: Path, kind: str) -> None:
    """Put something other than an entry at an entry path."""
    from memollm.stores.backend import ENTRY_READ_MAX

    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink-urandom":
        path.symlink_to("/dev/urandom")
    elif kind == "symlink-zero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
        (path / "inside").write_bytes(b"x")
    elif kind == "sparse-huge":
        with open(path, "wb") as f:
            f.truncate(ENTRY_READ_MAX + 1)  # sparse: no disk used, but reading it would take 1 GiB
    else:  # pragma: no cover
        raise AssertionError(kind)


def entry_path(cache_dir: Path) -> Path:
    (path,) = [p for p in cache_dir.joinpath("joblib").rglob("output.msgpack")]
    return path


@pytest.mark.parametrize("kind", STRANGE)
def test_a_strange_entry_is_a_miss_with_one_warning_and_is_replaced(tmp_path: Path, kind: str) -> None:
    first = run_helper(tmp_path)
    assert first["calls"] == 1 and first["warnings"] == []
    path = entry_path(tmp_path)
    plant(path, kind)
    second = run_helper(tmp_path)  # a miss (one warning), recomputed, stored again, then a hit
    assert second["answers"] == [{"text": "HELLO"}] * 2
    assert second["calls"] == 1, "the strange entry is replaced by a good one on write"
    assert len(second["warnings"]) == 1, second["warnings"]
    assert "not a regular file" in second["warnings"][0] or "larger than any entry" in second["warnings"][0]
    assert path.is_file() and not path.is_symlink()
    third = run_helper(tmp_path)
    assert third["calls"] == 0 and third["warnings"] == []


@pytest.mark.parametrize("kind", STRANGE)
@pytest.mark.parametrize("index", ["kept", "deleted"])
def test_the_cli_finishes_and_prune_removes_a_strange_entry(tmp_path: Path, kind: str, index: str) -> None:
    """``index="deleted"``: as in a fresh clone of a committed cache dir (the index is not committed)."""
    import json

    key = run_helper(tmp_path)["key"]
    path = entry_path(tmp_path)
    plant(path, kind)
    if index == "deleted":
        for name in os.listdir(tmp_path):
            if name.startswith("index.sqlite3"):
                os.unlink(tmp_path / name)
    for command in (["ls"], ["stats", "--json"]):
        result = run_memollm("--cache-dir", str(tmp_path), *command)
        assert result.returncode == 0, (command, result.stderr)
    if index == "kept":
        shown = run_memollm("--cache-dir", str(tmp_path), "show", key)
        assert shown.returncode == 1 and "not a regular file" in shown.stderr and "Traceback" not in shown.stderr
    pruned = run_memollm("--cache-dir", str(tmp_path), "prune", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["not_files"] == 1
    assert not path.exists() and not path.is_symlink()
    assert json.loads(run_memollm("--cache-dir", str(tmp_path), "ls", "--json").stdout) == []
    again = run_memollm("--cache-dir", str(tmp_path), "prune")
    assert "nothing to prune" in again.stdout
    assert run_helper(tmp_path)["calls"] == 1  # recorded again, as a regular file


def test_prune_reports_strange_entries_in_words(tmp_path: Path) -> None:
    run_helper(tmp_path)
    plant(entry_path(tmp_path), "directory")
    pruned = run_memollm("--cache-dir", str(tmp_path), "prune")
    assert pruned.returncode == 0, pruned.stderr
    assert "1 entry path holding no regular file" in pruned.stdout


def test_the_memory_of_problems_reported_once_stays_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each strange entry is its own problem (warned once): their number must not grow memory."""
    import warnings

    from memollm import report

    monkeypatch.setattr(report, "SEEN_MAX", 8)
    calls = []

    @cache_llm(cache_dir=tmp_path)
    def complete(i: int) -> int:
        calls.append(i)
        return i

    for i in range(30):
        complete(i)
    for path in tmp_path.joinpath("joblib").rglob("output.msgpack"):
        plant(path, "directory")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(30):
            assert complete(i) == i  # a miss, recomputed
            assert len(report._seen) <= 8
    assert calls == list(range(30)) * 2
    assert sum("not a regular file" in str(w.message) for w in caught) == 30


@pytest.mark.parametrize("kind", ["file", "fifo"])
def test_an_entry_dir_that_is_not_a_directory_is_repaired_on_write(tmp_path: Path, kind: str) -> None:
    run_helper(tmp_path)
    entry_dir = entry_path(tmp_path).parent
    for child in entry_dir.iterdir():
        child.unlink()
    entry_dir.rmdir()
    if kind == "file":
        entry_dir.write_bytes(b"not a directory")
    else:
        os.mkfifo(entry_dir)
    result = run_helper(tmp_path)
    assert result["answers"] == [{"text": "HELLO"}] * 2
    assert result["calls"] == 1, result
    assert entry_dir.is_dir() and not entry_dir.is_symlink()


def test_an_index_that_is_a_fifo_does_not_hang(tmp_path: Path) -> None:
    run_helper(tmp_path)
    index = tmp_path / "index.sqlite3"
    for name in os.listdir(tmp_path):
        if name.startswith("index.sqlite3"):
            os.unlink(tmp_path / name)
    os.mkfifo(index)
    result = run_helper(tmp_path)
    assert result["answers"] == [{"text": "HELLO"}] * 2 and result["calls"] == 0
    assert run_memollm("--cache-dir", str(tmp_path), "ls").returncode == 0
    assert index.is_file()  # moved aside and rebuilt


def test_a_gitignore_that_is_a_fifo_does_not_hang(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    os.mkfifo(tmp_path / ".gitignore")
    result = run_helper(tmp_path)
    assert result["answers"] == [{"text": "HELLO"}] * 2 and result["calls"] == 1


# -- values from real SDKs and builtin subclasses ----------------------------------------------

class Label(str):
    """A str subclass with an attribute of its own."""


class Record(dict):
    pass


class Rows(list):
    pass


def _labelled(text: str) -> Label:
    label = Label(text)
    label.source = "model"  # type: ignore[attr-defined]
    return label


SAME_TYPE_VALUES = {
    "bytearray": lambda: bytearray(b"\x00raw bytes"),
    "nested bytearray": lambda: {"audio": [bytearray(b"abc"), b"def"], "n": 1},
    "str subclass": lambda: _labelled("positive"),
    "dict subclass": lambda: Record(answer=42),
    "list subclass": lambda: Rows([1, 2, 3]),
    "numpy.float64": lambda: numpy.float64(0.8125),
    "numpy.int64": lambda: numpy.int64(-(2**40)),
    "numpy.float32": lambda: numpy.float32(1.5),
    "numpy.bool_": lambda: numpy.bool_(True),
    "numpy values in a dict": lambda: {"score": numpy.float64(0.5), "count": numpy.int64(3)},
}


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b) and getattr(a, "__dict__", None) == getattr(b, "__dict__", None)


@pytest.mark.parametrize("name", list(SAME_TYPE_VALUES))
def test_a_hit_returns_the_same_type(name: str, tmp_path: Path) -> None:
    import warnings

    make = SAME_TYPE_VALUES[name]
    calls = []

    @cache_llm(cache_dir=tmp_path)
    def score(prompt: str) -> Any:
        calls.append(prompt)
        return make()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: stored and read back
        first, second = score("p"), score("p")
    assert calls == ["p"], "the value was stored and read back"
    assert _same(first, make()) and _same(second, make()), (first, second)


SUBCLASS_MODULE = '''
import sys
from memollm import cache_llm

class Label(str):
    pass

@cache_llm(cache_dir=sys.argv[1])
def classify(text):
    label = Label(text.upper())
    label.confidence = 0.9
    return {"label": label, "raw": bytearray(text.encode())}
'''

SUBCLASS_RUN = """
import json, sys
import labels
value = labels.classify("yes")
print(json.dumps({
    "label": [type(value["label"]).__name__, str(value["label"]), value["label"].confidence],
    "raw": type(value["raw"]).__name__,
    "hits": labels.classify.cache_info().hits,
}))
"""


def test_a_str_subclass_and_a_bytearray_come_back_as_themselves_in_another_process(tmp_path: Path) -> None:
    import json

    (tmp_path / "labels.py").write_text(SUBCLASS_MODULE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", SUBCLASS_RUN, str(tmp_path / "cache")], capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout))
    assert runs[0]["hits"] == 0 and runs[1]["hits"] == 1
    for run in runs:
        assert run["label"] == ["Label", "YES", 0.9] and run["raw"] == "bytearray"


def test_a_str_subclass_with_slots_is_not_stored_and_warns(tmp_path: Path) -> None:
    from memollm import UncacheableValueWarning

    class Tagged(str):
        __slots__ = ("tag",)

    calls = []

    @cache_llm(cache_dir=tmp_path)
    def tag(prompt: str) -> Tagged:
        calls.append(prompt)
        value = Tagged(prompt)
        value.tag = "t"
        return value

    with pytest.warns(UncacheableValueWarning, match="__slots__"):
        assert tag("a") == "a"
    with pytest.warns(UncacheableValueWarning):
        assert tag("a").tag == "t"
    assert calls == ["a", "a"]


def test_a_numpy_array_is_not_stored_and_warns(tmp_path: Path) -> None:
    from memollm import UncacheableValueWarning

    @cache_llm(cache_dir=tmp_path)
    def embed(prompt: str) -> Any:
        return numpy.arange(3.0)

    with pytest.warns(UncacheableValueWarning, match="ndarray"):
        assert embed("a").tolist() == [0.0, 1.0, 2.0]


@pytest.fixture
def litellm_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of prices at import
    import litellm

    return litellm


def test_a_litellm_model_response_round_trips(litellm_module: Any, tmp_path: Path) -> None:
    import warnings

    calls = []

    @cache_llm(cache_dir=tmp_path)
    def ask(prompt: str) -> Any:
        calls.append(prompt)
        return litellm_module.completion(model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], mock_response=f"echo: {prompt}")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = ask("hello")
        second = ask("hello")
    ours = [str(w.message) for w in caught if "memollm" in str(w.message)]
    assert ours == [] and calls == ["hello"], ours
    assert type(second) is type(first) is litellm_module.ModelResponse
    assert second.choices[0].message.content == "echo: hello"
    assert second.model_dump() == first.model_dump()
    assert second == first


def test_a_litellm_response_from_the_fake_provider_round_trips(litellm_module: Any, tmp_path: Path) -> None:
    from llm_server import FakeLLMServer

    with FakeLLMServer() as server:

        @cache_llm(cache_dir=tmp_path)
        def ask(prompt: str) -> Any:
            return litellm_module.completion(
                model="openai/gpt-4o-mini", api_base=server.base_url, api_key="sk-test", messages=[{"role": "user", "content": prompt}]
            )

        first = ask("bonjour")
        second = ask("bonjour")
        assert server.request_count == 1
    assert type(second) is litellm_module.ModelResponse
    assert second.choices[0].message.content == "echo: bonjour"
    assert second.usage.total_tokens == first.usage.total_tokens
    assert second.model_dump() == first.model_dump()


@pytest.mark.parametrize("kind", ["fifo", "symlink-zero"])
def test_textconv_of_a_strange_entry_finishes(tmp_path: Path, kind: str) -> None:
    run_helper(tmp_path)
    path = entry_path(tmp_path)
    plant(path, kind)
    result = run_memollm("textconv", str(path))
    assert result.returncode == 0, result.stderr
    assert "not a memollm entry file" in result.stdout and "not a regular file" in result.stdout


def test_a_subclass_the_base_type_cannot_rebuild_is_not_stored_and_warns(tmp_path: Path) -> None:
    import collections

    from memollm import UncacheableValueWarning

    class Ordered(collections.OrderedDict):  # keeps its order in C: dict's __new__ cannot rebuild it
        pass

    calls = []

    @cache_llm(cache_dir=tmp_path)
    def answer(prompt: str) -> Ordered:
        calls.append(prompt)
        return Ordered(b=1, a=2)

    for _ in range(2):
        with pytest.warns(UncacheableValueWarning, match="cannot be rebuilt"):
            assert list(answer("p").items()) == [("b", 1), ("a", 2)]
    assert calls == ["p", "p"]
