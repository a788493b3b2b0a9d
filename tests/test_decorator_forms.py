"""Decorating already-bound methods: keyed by their instance, like ``self`` in a method."""

from __future__ import annotations

import pytest

from memollm import cache_llm


class Client:
    def __init__(self, model: str) -> None:
        self.model = model
        self.calls = 0

    def __cache_key__(self) -> str:
        return self.model

    def complete(self, prompt: str) -> str:
        self.calls += 1
        return f"{self.model}: {prompt}"


def test_a_bound_method_is_cached_per_instance(tmp_path):
    small, large = Client("small"), Client("large")
    cached_small = cache_llm(cache_dir=tmp_path)(small.complete)
    cached_large = cache_llm(cache_dir=tmp_path)(large.complete)
    assert cached_small("hi") == cached_small("hi") == "small: hi"
    assert cached_large("hi") == "large: hi"
    assert (small.calls, large.calls) == (1, 1)
    assert cached_small.cache_info().hits == 1
    assert cached_small.cache_key("hi") != cached_large.cache_key("hi")
    assert cached_small.invalidate("hi") is True
    assert cached_small.invalidate("hi") is False


def test_a_bound_method_of_an_unkeyable_instance_says_how_to_fix_it(tmp_path):
    class Plain:
        def complete(self, prompt):
            return prompt

    cached = cache_llm(cache_dir=tmp_path)(Plain().complete)
    with pytest.raises(TypeError, match="self"):
        cached("hi")
    ignored = cache_llm(cache_dir=tmp_path, ignore=("self",))(Plain().complete)
    assert ignored("hi") == ignored("hi") == "hi"
    assert ignored.cache_info().hits == 1
