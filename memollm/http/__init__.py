"""memollm at the HTTP layer: cache what any SDK or framework sends through httpx or httpx2.

* ``CachingTransport`` / ``AsyncCachingTransport``: wrap a transport.
* ``client()`` / ``async_client()``: a ready client to pass as ``http_client=``.
* ``intercept()``: every httpx and httpx2 client in a block (or decorated function).

Needs httpx2 or httpx (``pip install 'memollm[http]'``); neither is a core dependency.
"""

from .client import async_client, client
from .intercept import Interceptor, intercept
from .transport import AsyncCachingTransport, CachingTransport

__all__ = ["AsyncCachingTransport", "CachingTransport", "Interceptor", "async_client", "client", "intercept"]
