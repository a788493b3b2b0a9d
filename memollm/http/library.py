"""Which HTTP library a transport or client belongs to: ``httpx`` or ``httpx2``.

The two libraries have the same API under different module names, and each checks that a
response's stream is one of *its* byte streams; so the few classes memollm hands to a library
(replayed bodies, recorded bodies) are made once per library, here.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from types import ModuleType
from typing import Any, AsyncIterator, Callable, Iterator, Optional

from ..entry import Stream

LIBRARIES = ("httpx2", "httpx")
INSTALL_HINT = "pip install 'memollm[http]'"


class Library:
    """One HTTP library, and memollm's byte streams built on its base classes."""

    def __init__(self, module: ModuleType) -> None:
        self.name = module.__name__
        self.module = module
        self.Request = module.Request
        self.Response = module.Response
        self.ByteStream = module.ByteStream
        self.SyncByteStream = module.SyncByteStream
        self.AsyncByteStream = module.AsyncByteStream
        self.ReplayStream = type("ReplayStream", (_Replay, module.SyncByteStream, module.AsyncByteStream), {"__module__": __name__})

    def response(self, status: int, headers: list[tuple[str, str]], stream: Any, extensions: Optional[dict[str, Any]] = None) -> Any:
        return self.Response(status, headers=headers, stream=stream, extensions=extensions or {})

    def default_transport(self, is_async: bool) -> Any:
        """The transport a client of this library builds when given none."""
        return self.module.AsyncHTTPTransport() if is_async else self.module.HTTPTransport()


_loaded: dict[str, Library] = {}


def load(name: str, option: str = "library") -> Library:
    """The ``Library`` called ``name``; errors name the option and how to install it."""
    library = _loaded.get(name)
    if library is not None:
        return library
    if name not in LIBRARIES:
        raise ValueError(f"{option}={name!r} is not a supported HTTP library; use 'httpx2' or 'httpx'")
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"memollm.http needs the {name} package for {option}={name!r} ({exc}); install it with {INSTALL_HINT}") from exc
    library = _loaded[name] = Library(module)
    return library


def default_name() -> str:
    """``httpx2`` if it is installed, else ``httpx``."""
    for name in LIBRARIES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        return name
    raise ImportError(f"memollm.http needs httpx2 or httpx; install them with {INSTALL_HINT}")


def of_request(request: Any, expected: Library) -> Library:
    """The library a request belongs to (``expected``, unless the request says otherwise)."""
    if type(request) is expected.Request:
        return expected
    name = name_of(request)
    return expected if name is None else load(name)


def name_of(obj: Any) -> Optional[str]:
    """``httpx`` or ``httpx2`` for an object of either library (by its class's module), else ``None``."""
    for cls in type(obj).__mro__:
        root = cls.__module__.partition(".")[0]
        if root in LIBRARIES:
            return root
    return None


class _Replay:
    """A recorded body replayed with its recorded chunk boundaries (and pace, if ``realtime``).

    Both a sync and an async byte stream of its library, as the library's own ``ByteStream`` is.
    """

    def __init__(self, chunks: list[bytes], offsets: list[float], realtime: bool) -> None:
        self.chunks = chunks
        self.offsets = offsets if realtime else []

    def __iter__(self) -> Iterator[bytes]:
        start = time.perf_counter()
        for i, chunk in enumerate(self.chunks):
            if i < len(self.offsets):
                delay = self.offsets[i] - (time.perf_counter() - start)
                if delay > 0:
                    time.sleep(delay)
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        start = time.perf_counter()
        for i, chunk in enumerate(self.chunks):
            if i < len(self.offsets):
                delay = self.offsets[i] - (time.perf_counter() - start)
                if delay > 0:
                    await asyncio.sleep(delay)
            yield chunk

    def close(self) -> None:
        self.chunks = []

    async def aclose(self) -> None:
        self.chunks = []


def replay_stream(library: Library, stream: Stream, realtime: bool) -> Any:
    """The byte stream replaying a recorded body."""
    make: Callable[..., Any] = library.ReplayStream
    return make(stream.chunks, stream.offsets, realtime)
