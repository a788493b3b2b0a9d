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


# A plain function's wrapper skips wrapt's per-call ``__self__`` probe; binding it to a class
# later must still behave exactly like a method, and ``key=`` must see the real arguments.


def test_a_cached_plain_function_attached_to_a_class_later_binds_like_a_method(tmp_path):
    calls = []

    def complete(self, prompt):
        calls.append(prompt)
        return f"{self.model}: {prompt}"

    cached = cache_llm(cache_dir=tmp_path)(complete)

    class Later:
        method = cached
        static = staticmethod(cache_llm(cache_dir=tmp_path)(lambda prompt: f"static: {prompt}"))

        def __init__(self, model):
            self.model = model

        def __cache_key__(self):
            return self.model

    small, large = Later("small"), Later("large")
    assert small.method("hi") == small.method("hi") == "small: hi"
    assert large.method("hi") == "large: hi"
    assert Later.method(small, "hi") == "small: hi"  # unbound, through the class
    assert calls == ["hi", "hi"]
    assert small.method.cache_key("hi") == Later.method.cache_key(small, "hi") != large.method.cache_key("hi")
    assert Later.static("x") == small.static("x") == "static: x"
    assert cached(small, "hi") == "small: hi" and calls == ["hi", "hi"]  # called directly, same key


def test_key_callable_of_a_plain_function_sees_exactly_the_call_arguments(tmp_path):
    seen = []

    def key(*args, **kwargs):
        seen.append((args, kwargs))
        return [args, kwargs]

    @cache_llm(cache_dir=tmp_path, key=key)
    def complete(prompt, model="m"):
        return prompt + model

    assert complete("a", model="x") == complete("a", model="x") == "ax"
    assert seen[0] == (("a",), {"model": "x"})
    assert complete.cache_key("a", model="x") == complete.cache_key("a", model="x")
    assert seen[-1] == (("a",), {"model": "x"})
