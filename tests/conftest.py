"""Shared test setup: tests/ on sys.path (for llm_server), a clean memollm environment per test."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _isolated_memollm_env(monkeypatch, tmp_path_factory):
    """No test touches the user's cache or inherits a mode/secret from the environment."""
    monkeypatch.setenv("MEMOLLM_CACHE_DIR", str(tmp_path_factory.mktemp("default-cache")))
    monkeypatch.delenv("MEMOLLM_MODE", raising=False)
    monkeypatch.delenv("MEMOLLM_SECRET", raising=False)
    from memollm import report

    report.reset()
    yield
