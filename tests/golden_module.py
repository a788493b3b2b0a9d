"""Fixed-source functions for tests/test_keys_golden.py. DO NOT EDIT.

Cache keys include each function's module, qualified name and source text, so any change to
this file changes the pinned keys. Load it as the module ``golden_module`` (see ``load``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import pathlib
import uuid
from typing import Any

import pydantic

from memollm import cache_llm


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int = 0


class Answer(pydantic.BaseModel):
    text: str
    score: float = 0.0


@cache_llm(store="memory")
def complete(prompt, model="gpt-4o", temperature=0.0, api_key=None, headers=None):
    return f"{model}:{prompt}"


@cache_llm(store="memory", version="v2", ttl=60)
def summarize(text, *, max_tokens=256, **kwargs):
    return text[:max_tokens]


@cache_llm(store="memory")
def chat(messages, tools=None, response_format=None, *extra):
    return messages


@cache_llm(store="memory")
async def acomplete(prompt, model="gpt-4o"):
    return prompt


class Agent:
    def __init__(self, name):
        self.name = name

    def __cache_key__(self):
        return {"name": self.name}

    @cache_llm(store="memory")
    def ask(self, question):
        return question


MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]


def golden_keys() -> dict[str, Any]:
    """The keys pinned by the golden test, computed afresh."""
    return {
        "complete-default": complete.cache_key("hello"),
        "complete-by-name": complete.cache_key(prompt="hello", model="gpt-4o"),
        "complete-secrets": complete.cache_key("hello", api_key="sk-1", headers={"Authorization": "Bearer x", "X-Trace": "t"}),
        "complete-model": complete.cache_key("hello", model="gpt-4o-mini", temperature=0.7),
        "complete-unicode": complete.cache_key("héllo wörld ✓ 日本"),
        "complete-bytes": complete.cache_key(b"\x00\x01\xff"),
        "complete-scalars": complete.cache_key([True, 1, 1.0, "1", b"1", None, 2**70, -(2**63), 0.1]),
        "summarize": summarize.cache_key("a long text", max_tokens=64, top_p=0.9, extra_headers={"x-api-key": "k", "A": "b"}),
        "chat-messages": chat.cache_key(MESSAGES),
        "chat-tools": chat.cache_key(MESSAGES, tools=({"type": "function", "function": {"name": "search"}},), response_format=None),
        "chat-model-class": chat.cache_key(MESSAGES, response_format=Answer),
        "chat-model-instance": chat.cache_key([Answer(text="a", score=1.5)]),
        "chat-varargs": chat.cache_key(MESSAGES, None, None, "x", 2),
        "chat-types": chat.cache_key(
            [
                Color.RED,
                Point(1, 2),
                {"b", "a", "c"},
                dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc),
                dt.date(2024, 5, 1),
                uuid.UUID("12345678-1234-5678-1234-567812345678"),
                decimal.Decimal("3.14"),
                pathlib.PurePosixPath("docs/index.md"),
                {"z": {"y": 1, "x": [1, (2, 3)]}, "a": None},
            ]
        ),
        "acomplete": acomplete.cache_key("hello"),
        "agent-ask": Agent("bob").ask.cache_key("why?"),
    }
