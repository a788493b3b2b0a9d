"""The options every front door shares (``ttl``, ``store``, ``mode``...), checked once.

``cache_llm``, ``memollm.http``'s transports and the LangChain adapter take the same options with
the same meaning; ``resolve`` validates them with errors that name the front door and the option.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from ..config import TTL, parse_size, parse_ttl, secret_bytes
from ..modes import Mode, parse_mode
from ..stores.base import Store
from ..stores.memory import SHARED_MEMORY_STORE, MemoryStore
from ..streams import DEFAULT_MAX_STREAM_SIZE

STORE_METHODS = ("get", "set", "delete", "clear", "entries")
REPLAYS = ("instant", "realtime")


@dataclass(frozen=True)
class CacheOptions:
    """Resolved options of one cache front door (a decorated function, a transport...)."""

    ttl: Optional[float] = None
    cache_dir: Optional[str] = None
    store: Optional[Store] = None  #: ``None``: the disk store of the cache dir in effect
    mode: Optional[Mode] = None  #: the author's default mode
    allow_pickle: bool = False
    secret: Optional[bytes] = None
    realtime: bool = False
    max_stream_size: int = DEFAULT_MAX_STREAM_SIZE
    max_size: Optional[int] = None
    cache_if: Optional[Callable[[Any], Any]] = None
    record_request: bool = True
    samples: Optional[int] = None


def resolve(
    owner: str,
    *,
    ttl: TTL = None,
    cache_dir: Union[str, "os.PathLike[str]", None] = None,
    store: Union[str, Store, None] = None,
    mode: Union[str, Mode, None] = None,
    allow_pickle: bool = False,
    secret: Union[str, bytes, None] = None,
    replay: str = "instant",
    max_stream_size: Union[int, str] = DEFAULT_MAX_STREAM_SIZE,
    max_size: Union[int, str, None] = None,
    cache_if: Optional[Callable[[Any], Any]] = None,
    record_request: bool = True,
    samples: Optional[int] = None,
) -> CacheOptions:
    """Check and normalize the shared options; ``owner`` names the front door in errors."""
    seconds = parse_ttl(ttl, owner)
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"{owner}(cache_dir=...) must be a path (str or os.PathLike), not {type(cache_dir).__name__}")
    if cache_dir is not None and not os.fspath(cache_dir):
        raise ValueError(f"{owner}(cache_dir='') is empty; pass a directory path, or leave cache_dir out for the default ($MEMOLLM_CACHE_DIR)")
    fixed_store = resolve_store(store, cache_dir, owner)
    parsed_mode = None if mode is None else parse_mode(mode, f"{owner}(mode=...)")
    if not isinstance(allow_pickle, bool):
        raise TypeError(f"{owner}(allow_pickle=...) must be True or False")
    if replay not in REPLAYS:
        raise ValueError(f"{owner}(replay={replay!r}) must be 'instant' (default) or 'realtime' (recorded chunk timing)")
    stream_limit = parse_size(max_stream_size, f"{owner}(max_stream_size=...)")
    size_limit = parse_size(max_size, f"{owner}(max_size=...)")
    if size_limit is not None and fixed_store is SHARED_MEMORY_STORE:
        fixed_store = MemoryStore(max_size=size_limit)  # a bounded store of its own
    elif size_limit is not None and fixed_store is not None:
        raise ValueError(
            f"{owner}(max_size=...) bounds a disk cache dir or store='memory'; it does not apply to Redis or a store "
            "object (bound Redis with its maxmemory setting; a store object bounds itself, e.g. MemoryStore(max_size=...))"
        )
    if cache_if is not None and not callable(cache_if):
        raise TypeError(f"{owner}(cache_if=...) must be a callable taking the result and returning whether to store it, not {type(cache_if).__name__}")
    if not isinstance(record_request, bool):
        raise TypeError(f"{owner}(record_request=...) must be True or False")
    if samples is not None and (not isinstance(samples, int) or isinstance(samples, bool) or samples < 1):
        raise ValueError(f"{owner}(samples={samples!r}) must be a whole number of samples per request, 1 or more (or None)")
    return CacheOptions(
        ttl=seconds,
        cache_dir=None if cache_dir is None else os.fspath(cache_dir),
        store=fixed_store,
        mode=parsed_mode,
        allow_pickle=allow_pickle,
        secret=secret_bytes(secret, owner),
        realtime=replay == "realtime",
        max_stream_size=stream_limit or DEFAULT_MAX_STREAM_SIZE,
        max_size=size_limit,
        cache_if=cache_if,
        record_request=record_request,
        samples=None if samples in (None, 1) else samples,
    )


def resolve_store(store: Any, cache_dir: Any, owner: str = "cache_llm") -> Optional[Store]:
    """The store named by ``store=`` (``None``: the disk store of the cache dir in effect)."""
    if store is None or store == "disk":
        return None
    if cache_dir is not None:
        raise ValueError(f"{owner}: pass either store=... or cache_dir=..., not both (cache_dir is for the disk store)")
    if store == "memory":
        return SHARED_MEMORY_STORE
    if isinstance(store, str):
        if store.startswith(("redis://", "rediss://", "unix://")):
            from ..stores.redis import redis_store

            return redis_store(store)
        raise ValueError(f"{owner}(store={store!r}) is not a known store; use 'memory', a redis:// URL, or a Store object")
    if isinstance(store, Store) or all(callable(getattr(store, m, None)) for m in STORE_METHODS):
        return store  # type: ignore[no-any-return]
    raise TypeError(
        f"{owner}(store=...) got a {type(store).__name__}; pass 'memory', a redis:// URL, or an object "
        f"implementing memollm.stores.Store ({', '.join(STORE_METHODS)})"
    )
