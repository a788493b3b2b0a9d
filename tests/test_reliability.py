"""Reliability round 2 (issue 13): options that used to be misread, through the public API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


@pytest.mark.parametrize("cache_dir", ["", "   "])
def test_an_empty_cache_dir_is_rejected(cache_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
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
