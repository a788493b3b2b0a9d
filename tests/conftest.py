"""Shared test setup: tests/ on sys.path (for llm_server), a clean memollm environment per test,
and the loopback fake provider with openai/anthropic clients for it (``server``, ``oai``, ``claude``;
a module may define its own)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from llm_server import FakeLLMServer  # noqa: E402  (found through the path above)


@pytest.fixture(autouse=True)
def _isolated_memollm_env(monkeypatch, tmp_path_factory):
    """No test touches the user's cache or inherits a mode/secret from the environment."""
    monkeypatch.setenv("MEMOLLM_CACHE_DIR", str(tmp_path_factory.mktemp("default-cache")))
    monkeypatch.delenv("MEMOLLM_MODE", raising=False)
    monkeypatch.delenv("MEMOLLM_SECRET", raising=False)
    from memollm import report

    report.reset()
    yield
    _close_litellm_clients()


def _close_litellm_clients() -> None:
    """litellm keeps the SDK clients it makes (for 10 minutes); close those of a finished test,
    whose fake provider is gone (else they are closed only at exit, with ResourceWarnings)."""
    litellm = sys.modules.get("litellm")
    cache = getattr(litellm, "in_memory_llm_clients_cache", None)
    if cache is None:
        return
    for client in list(getattr(cache, "cache_dict", {}).values()):
        close = getattr(client, "close", None)
        if callable(close) and not asyncio.iscoroutinefunction(close):
            close()
    cache.flush_cache()


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture
def oai(server: FakeLLMServer) -> Iterator[object]:
    import openai

    client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0, timeout=5)
    yield client
    client.close()


@pytest.fixture
def claude(server: FakeLLMServer) -> Iterator[object]:
    import anthropic

    client = anthropic.Anthropic(api_key="sk-test", base_url=server.anthropic_base_url, max_retries=0, timeout=5)
    yield client
    client.close()
