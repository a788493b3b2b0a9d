"""Option parsing and defaults shared by the decorator, the CLI and the integrations."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import os
import re
import threading
from typing import Any, Iterator, Optional, Union

from .stores.disk import DiskStore  # imported eagerly: the first cached call must not pay for joblib's import
from .trust import check_trusted

CACHE_DIR_ENV = "MEMOLLM_CACHE_DIR"
SECRET_ENV = "MEMOLLM_SECRET"

TTL = Union[int, float, _dt.timedelta, None]


_cache_dir_override: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("memollm_cache_dir", default=None)


@contextlib.contextmanager
def use_cache_dir(path: "str | os.PathLike[str]") -> Iterator[str]:
    """Send every disk-store call in this block to ``path`` (the pytest marker uses this)."""
    token = _cache_dir_override.set(os.fspath(path))
    try:
        yield os.fspath(path)
    finally:
        _cache_dir_override.reset(token)


def cache_dir_for(configured: Optional[str]) -> str:
    """The cache dir of a call: a ``use_cache_dir`` block, else the decorator's, else the default."""
    return _cache_dir_override.get() or configured or default_cache_dir()


def default_cache_dir() -> str:
    """``$MEMOLLM_CACHE_DIR``, else ``$XDG_CACHE_HOME/memollm``, else ``~/.cache/memollm``."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return os.path.expanduser(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return os.path.join(os.path.expanduser(xdg), "memollm")
    return os.path.join(os.path.expanduser("~"), ".cache", "memollm")


def parse_ttl(ttl: Any, owner: str = "cache_llm") -> Optional[float]:
    """Seconds as a float, or ``None`` for never; errors name the argument and the fix."""
    if ttl is None:
        return None
    if isinstance(ttl, _dt.timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        try:
            seconds = float(ttl)
        except OverflowError:  # an int beyond any float: no finite duration
            seconds = float("inf")
    else:
        raise TypeError(
            f"{owner}(ttl=...) must be a number of seconds or a datetime.timedelta (or None to never "
            f"expire), not {type(ttl).__name__} {ttl!r}"
        )
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"{owner}(ttl={_short_repr(ttl)}) must be a positive, finite duration; use ttl=None for entries that never expire")
    return seconds


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        return "<a number too large to print>"
    return text if len(text) <= 40 else text[:37] + "..."


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(size: Any, name: str = "max_size") -> Optional[int]:
    """Bytes from an int or a ``"500MB"``/``"1GiB"`` string; ``None`` for unbounded."""
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    elif isinstance(size, str) and _SIZE_RE.match(size):
        number, unit = _SIZE_RE.match(size).groups()  # type: ignore[union-attr]
        unit = (unit or "").lower()
        unit = unit[:-1] if unit.endswith("b") else unit
        value = int(float(number) * _UNITS[unit])
    else:
        raise TypeError(f"{name}={size!r} must be a number of bytes or a string such as '500MB' or '2GiB'")
    if value <= 0:
        raise ValueError(f"{name}={size!r} must be positive; use None for no limit")
    return value


def secret_bytes(secret: Any, owner: str = "cache_llm") -> Optional[bytes]:
    """The signing key from ``secret=`` or ``$MEMOLLM_SECRET`` (an empty variable counts as unset)."""
    if secret is None:
        secret = os.environ.get(SECRET_ENV) or None
    if secret is None:
        return None
    if not isinstance(secret, (str, bytes)):
        raise TypeError(f"{owner}(secret=...) must be str or bytes, not {type(secret).__name__}")
    if not secret:
        raise ValueError(f"{owner}(secret={secret!r}) is empty, which would sign nothing; pass a non-empty key, or secret=None for unsigned entries")
    return secret.encode("utf-8") if isinstance(secret, str) else secret


_disk_stores: dict[str, DiskStore] = {}
_disk_lock = threading.Lock()
OPEN_STORES_MAX = 32
"""Cache dirs kept open per process. Each holds an SQLite connection (three file descriptors);
beyond this many, the least recently used one is closed (it is opened again if used again), so
a process going through many cache dirs (a test suite with one per test) never runs out."""


_clock = [0]  # a use counter: cheaper than time on the hit path, and enough to order uses


def _close_least_recently_used() -> None:
    """Forget the least recently used store and close its index connection in this thread
    (other threads' connections go with their threads)."""
    path = min(_disk_stores, key=lambda p: _disk_stores[p].last_used)
    store = _disk_stores.pop(path)
    try:
        store.close()
    except Exception:  # closing is housekeeping: never worth failing the call that caused it
        pass


def is_open(cache_dir: str) -> bool:
    """Whether this process already uses a ``DiskStore`` for ``cache_dir``."""
    return cache_dir in _disk_stores


def disk_store(cache_dir: "str | os.PathLike[str]", max_size: Optional[int] = None) -> DiskStore:
    """The process-wide ``DiskStore`` for a cache dir (created on first use)."""
    path = os.fspath(cache_dir)
    store = _disk_stores.get(path)
    if store is None:
        check_trusted(os.path.abspath(os.path.expanduser(path)))
        with _disk_lock:
            store = _disk_stores.get(path)
            if store is None:
                store = _disk_stores[path] = DiskStore(path)
                store.last_used = _clock[0] = _clock[0] + 1
                if len(_disk_stores) > OPEN_STORES_MAX:
                    _close_least_recently_used()
    elif store.last_used != _clock[0]:  # (the last store used is the common case: no write)
        store.last_used = _clock[0] = _clock[0] + 1
    if max_size is not None and store.max_size != max_size:
        store.configure(max_size)
    return store
