"""A cached function stays a good citizen: stacked decorators, introspection, pickling, copying."""

from __future__ import annotations

import copy
import functools
import pickle
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest

from memollm import cache_llm


def test_functools_wraps_and_vars_see_the_function(tmp_path: Path) -> None:
    def complete(prompt: str, temperature: float = 0.0) -> str:
        """Ask the model."""
        return prompt.upper()

    complete.custom = "kept"  # type: ignore[attr-defined]
    cached = cache_llm(cache_dir=tmp_path)(complete)

    @functools.wraps(cached)  # e.g. a retry decorator stacked on top
    def retried(*args: object, **kwargs: object) -> str:
        return cached(*args, **kwargs)

    assert retried("hi") == retried("hi") == "HI"
    assert cached.cache_info().hits == 1
    assert retried.__name__ == "complete" and retried.__doc__ == "Ask the model."
    assert vars(cached) is complete.__dict__ and cached.custom == "kept"  # type: ignore[attr-defined]


def test_annotations_and_type_hints_are_the_functions(tmp_path: Path) -> None:
    def complete(prompt: str, n: int = 1) -> list[str]:
        return [prompt] * n

    class Model:
        def __cache_key__(self) -> str:
            return "m"

        @cache_llm(cache_dir=tmp_path)
        def ask(self, prompt: str) -> str:
            return prompt

    cached = cache_llm(cache_dir=tmp_path)(complete)
    assert cached.__annotations__ == complete.__annotations__
    assert typing.get_type_hints(cached) == {"prompt": str, "n": int, "return": list[str]}
    assert typing.get_type_hints(Model().ask) == {"prompt": str, "return": str}


MODULE = """
from memollm import cache_llm

@cache_llm(cache_dir=CACHE_DIR)
def square(x):
    return x * x

class Model:
    def __cache_key__(self):
        return "model"

    @cache_llm(cache_dir=CACHE_DIR)
    def ask(self, x):
        return x + 1

    @classmethod
    @cache_llm(cache_dir=CACHE_DIR)
    def build(cls, x):
        return x + 2

    @staticmethod
    @cache_llm(cache_dir=CACHE_DIR)
    def helper(x):
        return x + 3
"""

SCRIPT = """
import copy, multiprocessing, pickle, sys
from concurrent.futures import ProcessPoolExecutor
import cached_module as m

if __name__ == "__main__":
    assert copy.copy(m.square) is m.square and copy.deepcopy(m.square) is m.square
    for f, arg, want in [(m.square, 3, 9), (m.Model().ask, 1, 2), (m.Model.build, 1, 3), (m.Model.helper, 1, 4)]:
        again = pickle.loads(pickle.dumps(f))
        assert again(arg) == want, (f, again(arg))
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert list(pool.map(m.square, [1, 2, 3])) == [1, 4, 9]
    assert m.square(2) == 4
    print(m.square.cache_info().hits)
"""


def test_module_level_cached_functions_pickle_by_reference(tmp_path: Path) -> None:
    (tmp_path / "cached_module.py").write_text(f"CACHE_DIR = {str(tmp_path / 'cache')!r}\n" + textwrap.dedent(MODULE))
    (tmp_path / "main.py").write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run([sys.executable, "main.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 1  # square(2) was computed in a worker process and read back here


def test_a_function_defined_inside_a_function_cannot_be_pickled(tmp_path: Path) -> None:
    @cache_llm(cache_dir=tmp_path)
    def inner(x: int) -> int:
        return x

    with pytest.raises(pickle.PicklingError, match="inside a function"):
        pickle.dumps(inner)
    assert copy.copy(inner) is inner
