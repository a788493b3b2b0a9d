"""``client()`` and ``async_client()``: ready httpx2 (or httpx) clients sending through the cache.

Pass one as ``http_client=`` to ``OpenAI``, ``Anthropic``, LangChain's ``ChatOpenAI``, Agno's
``OpenAIChat`` (which accepts only ``httpx`` clients: ``library="httpx"``).
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

from .library import default_name, load
from .transport import CACHE_OPTIONS, AsyncCachingTransport, CachingTransport, check_option_names

# What the openai and anthropic SDKs give their own clients: LLM calls take minutes, not 5 s.
_SDK_DEFAULTS = {"timeout": 600.0, "follow_redirects": True}


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    cache = {k: v for k, v in options.items() if k in CACHE_OPTIONS}
    rest = {k: v for k, v in options.items() if k not in CACHE_OPTIONS}
    for name, value in _SDK_DEFAULTS.items():
        rest.setdefault(name, value)
    return cache, rest


def _build(owner: str, caching: Any, class_name: str, options: dict[str, Any]) -> Any:
    """The library's client class ``class_name`` over ``caching``; an unknown keyword raises, naming it."""
    client_class = getattr(load(caching.library).module, class_name)
    accepted = set(inspect.signature(client_class.__init__).parameters) - {"self", "transport"}
    check_option_names(owner, options, accepted, f"an argument of {caching.library}.{class_name}")
    return client_class(transport=caching, **options)


def client(*, library: Optional[str] = None, transport: Any = None, **options: Any) -> Any:
    """An ``httpx2.Client`` (``httpx.Client`` with ``library="httpx"``) whose requests go through a
    ``CachingTransport`` over ``transport`` (default: the library's own).

    Caching options (``ttl``, ``cache_dir``, ``store``, ``mode``...) configure the cache; any other
    keyword (``headers``, ``timeout``, ``base_url``...) goes to the client.
    """
    cache, rest = _split(options)
    caching = CachingTransport(transport, library=library or (None if transport is not None else default_name()), **cache)
    return _build("memollm.http.client", caching, "Client", rest)


def async_client(*, library: Optional[str] = None, transport: Any = None, **options: Any) -> Any:
    """``client()`` for async code: an ``httpx2.AsyncClient`` (or ``httpx.AsyncClient``)."""
    cache, rest = _split(options)
    caching = AsyncCachingTransport(transport, library=library or (None if transport is not None else default_name()), **cache)
    return _build("memollm.http.async_client", caching, "AsyncClient", rest)
