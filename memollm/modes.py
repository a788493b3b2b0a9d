"""Cache modes and how one is chosen for a call (pure logic, no I/O).

Precedence, innermost first: a ``cache_mode()`` block at the call site, the ``MEMOLLM_MODE``
environment variable, the decorator's ``mode=``, then ``readwrite``.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import os
from typing import Any, ContextManager, Iterator, Optional, Union

MODE_ENV = "MEMOLLM_MODE"


class Mode(str, enum.Enum):
    """What a decorated call does with the cache."""

    READWRITE = "readwrite"  #: serve hits, record misses
    READONLY = "readonly"  #: serve hits, never write
    REFRESH = "refresh"  #: always call the provider and overwrite the entry
    OFFLINE = "offline"  #: serve hits only; a miss raises CacheMiss
    OFF = "off"  #: bypass the cache entirely

    reads: bool  #: serves entries from the cache
    writes: bool  #: records results into the cache


# Plain attributes rather than properties: they are read on every cached call.
for _mode in Mode:
    _mode.reads = _mode in (Mode.READWRITE, Mode.READONLY, Mode.OFFLINE)
    _mode.writes = _mode in (Mode.READWRITE, Mode.REFRESH)


VALID_MODES = tuple(m.value for m in Mode)
_context_mode: contextvars.ContextVar[Optional[Mode]] = contextvars.ContextVar("memollm_mode", default=None)


def parse_mode(value: Union[str, Mode], source: str = "mode") -> Mode:
    """``Mode`` from a string; ``ValueError`` listing the valid modes otherwise."""
    if isinstance(value, Mode):
        return value
    if isinstance(value, str):
        try:
            return Mode(value.strip().lower())
        except ValueError:
            pass
    raise ValueError(f"{source}={value!r} is not a memollm cache mode; use one of: {', '.join(VALID_MODES)}")


def cache_mode(mode: Union[str, Mode]) -> ContextManager[Mode]:
    """Use ``mode`` for every cached call in this block (and in asyncio tasks started in it).

    It is a context variable: new threads start without it (they see ``MEMOLLM_MODE`` or the
    decorator's mode) unless run through ``contextvars.copy_context().run``. An unknown mode
    raises ``ValueError`` here, before the block.
    """
    return _mode_block(parse_mode(mode))


@contextlib.contextmanager
def _mode_block(mode: Mode) -> Iterator[Mode]:
    token = _context_mode.set(mode)
    try:
        yield mode
    finally:
        _context_mode.reset(token)


_READWRITE = Mode.READWRITE
# Reading os.environ costs ~1 us (key encoding, Mapping.get); its backing dict, ~0.1 us.
_environ_data = getattr(os.environ, "_data", None)
_env_key = os.environ.encodekey(MODE_ENV) if hasattr(os.environ, "encodekey") else MODE_ENV  # type: ignore[attr-defined]
_last_env: tuple[Any, Optional[Mode]] = (None, None)


def _environment_mode() -> Optional[Mode]:
    global _last_env
    raw = _environ_data.get(_env_key) if _environ_data is not None else os.environ.get(MODE_ENV)
    if not raw:
        return None
    if raw is not _last_env[0]:
        text = raw.decode() if isinstance(raw, bytes) else raw
        _last_env = (raw, parse_mode(text, MODE_ENV))
    return _last_env[1]


def current_mode(default: Optional[Mode] = None) -> Mode:
    """The mode in force for a call whose decorator says ``default``."""
    mode = _context_mode.get()
    if mode is not None:
        return mode
    if _environ_data is not None and not _environ_data.get(_env_key):  # the usual case, inlined
        return default or _READWRITE
    return _environment_mode() or default or _READWRITE
