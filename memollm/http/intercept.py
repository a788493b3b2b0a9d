"""``intercept()``: every httpx and httpx2 client sends through the cache, for code that does not
expose its HTTP client (frameworks, litellm...).

It patches one method on the four client classes (``Client`` and ``AsyncClient`` of both
libraries): ``_transport_for_url``, which picks the transport of each request. Under
``intercept`` it returns that transport wrapped in a caching transport (a light wrapper made
per request, sharing the interceptor's cache), so clients created before the block, inside it,
with mounts or proxies, all go through the cache, and their own transports still do the sending.
Leaving the last active block puts the original methods back exactly.

Blocks nest: the innermost active one decides (its options, its counters). The patch is
process-wide, as the clients are: a request made by another thread during the block is cached too.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import threading
from typing import Any, Callable, Optional, TypeVar

from ..stats import CacheInfo
from .library import LIBRARIES, load
from .transport import AsyncCachingTransport, CachingTransport, HttpCache, check_option_names

F = TypeVar("F", bound=Callable[..., Any])
_PATCHED = "_transport_for_url"

_lock = threading.RLock()
_active: list["Interceptor"] = []  # innermost last
_originals: dict[type, Any] = {}  # client class -> its own _transport_for_url, while patched


class Interceptor:
    """What ``intercept()`` returns: a context manager and a decorator (sync or async functions)."""

    def __init__(self, **options: Any) -> None:
        self._http = HttpCache("intercept", **options)

    def cache_info(self) -> CacheInfo:
        """Hits, misses, seconds and tokens saved under this interceptor; HTTP entries in its store."""
        return self._http.info()

    def __enter__(self) -> "Interceptor":
        with _lock:
            if not _active:
                _patch()
            _active.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        with _lock:
            for i in range(len(_active) - 1, -1, -1):  # the innermost entry of this interceptor
                if _active[i] is self:
                    del _active[i]
                    break
            if not _active:
                _unpatch()

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await func(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return run  # type: ignore[return-value]

    def _wrap(self, transport: Any, library_name: str, is_async: bool) -> Any:
        """A caching transport over ``transport`` using this interceptor's cache."""
        cls = AsyncCachingTransport if is_async else CachingTransport
        return cls._sharing(transport, self._http, load(library_name))


def intercept(**options: Any) -> Interceptor:
    """Send every httpx and httpx2 request made in this block (or decorated function) through the cache.

    Takes the options of ``CachingTransport`` (``ttl``, ``cache_dir``, ``store``, ``mode``,
    ``secret``, ``replay``, ``max_stream_size``, ``max_size``, ``match``, ``key_headers``,
    ``cache_if``, ``record_request``, ``samples``); bad options raise here. Leaving the block restores the clients exactly.
    """
    if "library" in options or "transport" in options:
        raise TypeError("intercept() patches both httpx and httpx2 clients and their own transports; it takes no library= or transport=")
    check_option_names("memollm.http.intercept", options)
    return Interceptor(**options)


def active() -> Optional[Interceptor]:
    """The innermost active interceptor, if any."""
    return _active[-1] if _active else None


def _client_classes() -> list[tuple[type, str, bool]]:
    classes = []
    for name in LIBRARIES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        classes.append((module.Client, name, False))
        classes.append((module.AsyncClient, name, True))
    return classes


def _patch() -> None:
    for cls, library_name, is_async in _client_classes():
        original = cls.__dict__.get(_PATCHED)
        if original is None:  # pragma: no cover - a library version without the method
            continue
        _originals[cls] = original
        setattr(cls, _PATCHED, _patched(original, library_name, is_async))


def _unpatch() -> None:
    for cls, original in list(_originals.items()):
        setattr(cls, _PATCHED, original)
        del _originals[cls]


def _patched(original: Callable[..., Any], library_name: str, is_async: bool) -> Callable[..., Any]:
    wrapped_types = (CachingTransport, AsyncCachingTransport)

    @functools.wraps(original)
    def _transport_for_url(self: Any, url: Any) -> Any:
        transport = original(self, url)
        interceptor = _active[-1] if _active else None
        if interceptor is None or isinstance(transport, wrapped_types):
            return transport  # already caching (memollm.http.client()): not twice
        return interceptor._wrap(transport, library_name, is_async)

    return _transport_for_url
