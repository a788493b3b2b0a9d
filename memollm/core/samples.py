"""Several recorded answers per request: ``cache_llm(samples=N)`` and ``memollm.sample(i)``.

Sample 0 of a request is stored under the request's own key (so turning ``samples`` on keeps what
was recorded); sample ``i > 0`` under a key derived from it. Within a process the i-th call of
a request gets sample ``i mod N``, unless a ``sample(i)`` block pins the index.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from typing import Iterator, Optional

import xxhash

_pinned: contextvars.ContextVar[Optional[int]] = contextvars.ContextVar("memollm_sample", default=None)
_CALLS_MAX = 100_000  # requests whose call count is remembered per cached function


def sample_key(key: str, index: int) -> str:
    """The entry key of sample ``index`` of the request keyed ``key``."""
    return key if index == 0 else xxhash.xxh3_128_hexdigest(f"{key}#sample{index}".encode())


@contextlib.contextmanager
def sample(index: int) -> Iterator[int]:
    """Pin the sample index of cached calls with ``samples=N`` in this block (``index < N``)."""
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ValueError(f"memollm.sample({index!r}) takes a sample index: a whole number, 0 or more")
    token = _pinned.set(index)
    try:
        yield index
    finally:
        _pinned.reset(token)


class Sampler:
    """Hands out sample indexes of one cached function: cycling per request, or pinned."""

    def __init__(self, samples: int) -> None:
        self.samples = samples
        self._calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def peek(self, key: str) -> int:
        """The index the next call of ``key`` would get (nothing is counted)."""
        pinned = _pinned.get()
        if pinned is not None:
            return min(pinned, self.samples - 1)
        return self._calls.get(key, 0) % self.samples

    def next_index(self, key: str) -> int:
        pinned = _pinned.get()
        if pinned is not None:
            if pinned >= self.samples:
                raise ValueError(f"memollm.sample({pinned}) is beyond samples={self.samples}; use an index from 0 to {self.samples - 1}")
            return pinned
        with self._lock:
            count = self._calls.get(key, 0)
            if count == 0 and len(self._calls) >= _CALLS_MAX:
                self._calls.clear()
            self._calls[key] = count + 1
        return count % self.samples
