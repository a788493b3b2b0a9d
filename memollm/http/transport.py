"""``CachingTransport`` and ``AsyncCachingTransport``: memollm's cache at the httpx/httpx2 transport.

A transport's ``handle_request`` converts the request (``convert``), asks the cache core, and
converts back; ``HttpCache`` holds what both transports share: the options, what is cached
(``match``), how a request is keyed, and how a response is stored or replayed. Lookup,
verification, expiry, single flight, modes and storing are the core's (``memollm.core``).
"""

from __future__ import annotations

import difflib
import inspect
import os
import time
from typing import Any, Callable, Iterable, Optional, Union

from .. import observers, streams
from ..config import TTL
from ..core import MISSING, Cache, request_tree, resolve
from ..entry import Stream
from ..modes import Mode
from ..observers import OFFLINE_MISS
from ..report import warn_once
from ..stats import CacheInfo, usage_of
from ..stores.base import Store
from . import convert
from .library import Library, default_name, load, name_of, of_request, replay_stream
from .sse import EventWatcher

_OFF, _OFFLINE = Mode.OFF, Mode.OFFLINE


class HttpCache:
    """The options and the steps shared by the sync and async transports (and ``intercept``)."""

    def __init__(
        self,
        owner: str,
        *,
        ttl: TTL = None,
        cache_dir: Union[str, "os.PathLike[str]", None] = None,
        store: Union[str, Store, None] = None,
        mode: Union[str, Mode, None] = None,
        secret: Union[str, bytes, None] = None,
        replay: str = "instant",
        max_stream_size: Union[int, str] = streams.DEFAULT_MAX_STREAM_SIZE,
        max_size: Union[int, str, None] = None,
        match: Optional[Callable[[Any], Any]] = None,
        key_headers: Iterable[str] = convert.DEFAULT_KEY_HEADERS,
        cache_if: Optional[Callable[[Any], Any]] = None,
        record_request: bool = True,
        samples: Optional[int] = None,
    ) -> None:
        options = resolve(
            owner,
            ttl=ttl,
            cache_dir=cache_dir,
            store=store,
            mode=mode,
            secret=secret,
            replay=replay,
            max_stream_size=max_stream_size,
            max_size=max_size,
            cache_if=cache_if,
            record_request=record_request,
            samples=samples,
        )
        if match is not None and not callable(match):
            raise TypeError(
                f"{owner}(match=...) must be a callable taking the request and returning whether to cache it, not {type(match).__name__}"
            )
        self.owner = owner
        self.match = match
        self.key_headers = convert.parse_key_headers(key_headers, owner)
        self.key_header_bytes = frozenset(name.encode("latin-1") for name in self.key_headers)
        self.cache = Cache(options, owner, ["http"], shares_values=True)  # respond() only reads entries
        self.realtime = options.realtime

    # -- a request --------------------------------------------------------------------------

    def wants(self, request: Any, content_type: Optional[str]) -> bool:
        """Whether the request goes through the cache (``match`` sees it with its body read)."""
        if self.match is None:
            return convert.json_post(request.method, content_type)
        try:
            return bool(self.match(request))
        except Exception as exc:  # the cache must not break the request: it goes out uncached
            warn_once(self.owner, "match", f"memollm: the match= predicate of {self.owner} raised {type(exc).__name__}: {exc}; such requests are sent uncached")
            return False

    def plan(self, request: Any, content_type: Optional[str], chosen: Optional[dict[str, str]]) -> Any:
        """``(mode, store, function, key, packed request, hit or MISSING, sample)``, or ``None``
        to send the request uncached (mode off). Offline, a miss raises ``CacheMiss``."""
        cache = self.cache
        mode = cache.current_mode()
        if mode is _OFF:
            if observers.watching:
                cache.bypass(convert.function_id(convert.request_parts(request, chosen)))
            return None
        function, key, packed, parts = convert.keyed(request, content_type, chosen)
        base = key
        key, sample = cache.sample_key(base)
        store = cache.store(create=mode.writes)
        value = MISSING
        if store is not None and mode.reads:
            value = cache.lookup(store, function, key)
        if value is MISSING and mode is _OFFLINE:
            cache.note_miss(store, function, key, OFFLINE_MISS, sample)
            url = request.url
            query = "&".join(f"{k}={v}" for k, v in parts["query"])  # (credential parameters left out)
            asked = f"{request.method} {url.scheme}://{url.netloc.decode('ascii')}{url.path}{'?' + query if query else ''}"
            raise cache.offline_miss(store, function, base, key, sample, request_tree(packed), what=asked)
        return mode, store, function, key, packed, value, sample

    # -- a response -------------------------------------------------------------------------

    def respond(self, library: Library, value: Any) -> Any:
        """The library's response for an entry: the stored body, or the recorded chunks."""
        if type(value) is Stream:
            head = value.result
            return library.response(head["status"], head["headers"], replay_stream(library, value, self.realtime))
        return library.response(value["status"], value["headers"], library.ByteStream(value["body"]))

    def storable(self, plan: Any, response: Any) -> bool:
        return 200 <= response.status_code < 300 and plan[1] is not None and plan[0].writes

    def settle(self, library: Library, plan: Any, response: Any, raw: bytes, duration: float) -> Any:
        """Store a response read on a miss; the caller gets it as a hit would give it (its body
        decoded, ``content-encoding`` gone), with its cookies. A body that cannot be decoded
        is handed back as it came, unstored."""
        headers = response.headers
        body, live = raw, list(headers.multi_items())
        if "content-encoding" in headers:
            try:
                body = library.Response(response.status_code, headers=headers, content=raw).content
            except Exception:  # a corrupt compressed body: the caller's library reports it
                return library.response(response.status_code, live, library.ByteStream(raw), response.extensions)
            live = [(k, v) for k, v in live if k.lower() not in ("content-encoding", "content-length")]
            live.append(("content-length", str(len(body))))
        answer = library.response(response.status_code, live, library.ByteStream(body), response.extensions)
        self.save(library, plan, answer, body, duration)
        return answer

    def save(self, library: Library, plan: Any, response: Any, body: bytes, duration: float) -> None:
        """Store a read response (``cache_if`` judges the response handed to the caller)."""
        mode, store, function, key, packed, _, sample = plan
        value = {"status": response.status_code, "headers": convert.stored_headers(response.headers), "body": body}
        reported = convert.json_usage(body, response.headers.get("content-type"))
        if reported is not None:
            value["usage"] = reported["usage"]
        subject = (
            library.Response(response.status_code, headers=response.headers, content=body) if self.cache.cache_if is not None else MISSING
        )
        self.cache.save(store, function, key, value, duration, request_tree(packed), sample, subject=subject, usage=usage_of(reported))

    def finisher(
        self, library: Library, plan: Any, release: Callable[[], None], response: Any, kept: Optional[list[bytes]]
    ) -> streams.Finish:
        """What stores a recorded event stream once it completed, and ends the flight."""
        mode, store, function, key, packed, _, sample = plan

        def judged(recorder: streams.Recorder, result: Any) -> Any:
            return library.Response(response.status_code, headers=response.headers, content=b"".join(kept or []))

        return self.cache.finisher(mode, store, function, key, release, request_tree(packed), sample, subject=judged)

    def info(self) -> CacheInfo:
        return self.cache.info(convert.is_http_function)


#: The caching options every front door of this package takes: ``HttpCache``'s keywords.
CACHE_OPTIONS = frozenset(inspect.signature(HttpCache.__init__).parameters) - {"self", "owner"}


def check_option_names(owner: str, names: Iterable[str], others: Iterable[str] = (), others_are: str = "") -> None:
    """Raise ``TypeError`` naming the first keyword that is neither a caching option nor one of
    ``others`` (``others_are`` says what those are, e.g. the arguments of ``httpx2.Client``)."""
    others = frozenset(others)
    for name in names:
        if name not in CACHE_OPTIONS and name not in others:
            close = difflib.get_close_matches(name, sorted(CACHE_OPTIONS | others), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(
                f"{owner}() got an unexpected keyword argument {name!r}{hint}: it is not a caching option "
                f"({', '.join(sorted(CACHE_OPTIONS))}){' nor ' + others_are if others_are else ''}"
            )


class _Recording:
    """A live event-stream body: each chunk reaches the caller as it arrives, and is recorded.

    Stored when it completed (terminal event, or the body ended) and did not fail; a body
    closed before that, or cut by an error, is not.
    """

    def __init__(
        self, body: Any, recorder: streams.Recorder, finish: streams.Finish, head: dict[str, Any], kept: Optional[list[bytes]]
    ) -> None:
        self.body = body
        self.recorder = recorder
        self.finish = finish
        self.head = head
        self.kept = kept
        self.watcher = EventWatcher()

    def _add(self, chunk: bytes) -> None:
        self.recorder.add(chunk)
        self.watcher.feed(chunk)
        if self.kept is not None:
            self.kept.append(chunk)

    def _end(self, ended: bool) -> None:
        watcher = self.watcher
        if (ended or watcher.complete) and not watcher.failed:
            for reported in watcher.usage:
                self.recorder.usage.add(reported)
            self.finish(self.recorder, self.head)
        else:
            self.finish(None, None)

    def __del__(self) -> None:
        finish = getattr(self, "finish", None)
        if finish is not None:
            finish(None, None)  # never closed: end the flight (a no-op once finished)


class _SyncRecording(_Recording):
    def __iter__(self) -> Any:
        try:
            for chunk in self.body:
                self._add(chunk)
                yield chunk
        except GeneratorExit:
            raise
        except BaseException:
            self.finish(None, None)
            raise
        self._end(True)

    def close(self) -> None:
        try:
            self._end(False)
        finally:
            self.body.close()


class _AsyncRecording(_Recording):
    async def __aiter__(self) -> Any:
        try:
            async for chunk in self.body:
                self._add(chunk)
                yield chunk
        except GeneratorExit:
            raise
        except BaseException:
            self.finish(None, None)
            raise
        self._end(True)

    async def aclose(self) -> None:
        try:
            self._end(False)
        finally:
            await self.body.aclose()


_recording_classes: dict[tuple[str, bool], type] = {}


def _recording(library: Library, is_async: bool, *args: Any) -> Any:
    cls = _recording_classes.get((library.name, is_async))
    if cls is None:
        bases = (_AsyncRecording, library.AsyncByteStream) if is_async else (_SyncRecording, library.SyncByteStream)
        cls = _recording_classes[library.name, is_async] = type("RecordingStream", bases, {"__module__": __name__})
    return cls(*args)


def _pick_library(owner: str, transport: Any, library: Optional[str]) -> Library:
    found = None if transport is None else name_of(transport)
    if library is not None:
        if library not in ("httpx", "httpx2"):
            raise ValueError(f"{owner}(library={library!r}) is not a supported HTTP library; use 'httpx2' or 'httpx'")
        if found is not None and found != library:
            raise ValueError(
                f"{owner}(library={library!r}) does not match the transport given, a {found} transport ({type(transport).__name__})"
            )
    return load(library or found or default_name(), f"{owner}(library=...)")


class _TransportBase:
    _http: HttpCache
    _library: Library
    _transport: Any

    def cache_info(self) -> CacheInfo:
        """Hits, misses, seconds and tokens saved by this transport; entries and bytes of the
        HTTP layer in its store."""
        return self._http.info()

    @property
    def transport(self) -> Any:
        """The transport requests are sent through on a miss."""
        return self._transport

    @property
    def library(self) -> str:
        """``httpx`` or ``httpx2``."""
        return self._library.name

    def __repr__(self) -> str:
        return f"<memollm.http.{type(self).__name__} over {type(self._transport).__module__}.{type(self._transport).__name__}>"


class CachingTransport(_TransportBase):
    """A sync httpx/httpx2 transport that answers identical requests from memollm's cache.

    ``transport``: the transport to send misses through (default: the library's own
    ``HTTPTransport()``); ``library``: ``"httpx2"`` or ``"httpx"`` when the transport does not
    tell (default ``httpx2`` if installed). The other options mean what they mean for
    ``cache_llm``; ``match`` chooses the requests cached (default: POST with a JSON body),
    ``key_headers`` the request headers that are part of the key, ``cache_if`` the responses stored.
    """

    def __init__(
        self,
        transport: Any = None,
        *,
        library: Optional[str] = None,
        ttl: TTL = None,
        cache_dir: Union[str, "os.PathLike[str]", None] = None,
        store: Union[str, Store, None] = None,
        mode: Union[str, Mode, None] = None,
        secret: Union[str, bytes, None] = None,
        replay: str = "instant",
        max_stream_size: Union[int, str] = streams.DEFAULT_MAX_STREAM_SIZE,
        max_size: Union[int, str, None] = None,
        match: Optional[Callable[[Any], Any]] = None,
        key_headers: Iterable[str] = convert.DEFAULT_KEY_HEADERS,
        cache_if: Optional[Callable[[Any], Any]] = None,
        record_request: bool = True,
        samples: Optional[int] = None,
    ) -> None:
        owner = type(self).__name__
        if transport is not None and not callable(getattr(transport, "handle_request", None)):
            raise TypeError(
                f"{owner}(transport=...) must be a sync httpx/httpx2 transport (with handle_request), not {type(transport).__name__}"
            )
        self._library = _pick_library(owner, transport, library)
        self._http = HttpCache(
            owner,
            ttl=ttl,
            cache_dir=cache_dir,
            store=store,
            mode=mode,
            secret=secret,
            replay=replay,
            max_stream_size=max_stream_size,
            max_size=max_size,
            match=match,
            key_headers=key_headers,
            cache_if=cache_if,
            record_request=record_request,
            samples=samples,
        )
        self._transport = transport if transport is not None else self._library.default_transport(False)

    @classmethod
    def _sharing(cls, transport: Any, http: HttpCache, library: Library) -> "CachingTransport":
        """A transport over ``transport`` using another's cache (``intercept`` wraps clients so)."""
        self = cls.__new__(cls)
        self._transport, self._http, self._library = transport, http, library
        return self

    def handle_request(self, request: Any) -> Any:
        http = self._http
        content_type, chosen = convert.examine(request, http.key_header_bytes)
        if http.match is not None:
            request.read()  # a predicate may look at the body
        if http.wants(request, content_type):
            request.read()
            plan = http.plan(request, content_type, chosen)
            if plan is not None:
                value = plan[5]
                if value is MISSING:
                    value, release = http.cache.acquire(plan[0], plan[1], plan[2], plan[3])
                    if value is MISSING:
                        return self._miss(request, plan, release)
                return http.respond(of_request(request, self._library), value)
        return self._transport.handle_request(request)

    def _miss(self, request: Any, plan: Any, release: Callable[[], None]) -> Any:
        http = self._http
        library = of_request(request, self._library)
        try:
            http.cache.note_miss(plan[1], plan[2], plan[3], sample=plan[6])
            start = time.perf_counter()
            response = self._transport.handle_request(request)
            if not http.storable(plan, response):
                return response
            if convert.is_event_stream(response.headers.get("content-type")):
                kept: Optional[list[bytes]] = [] if http.cache.cache_if is not None else None
                finish = http.finisher(library, plan, release, response, kept)
                release = _noop  # the stream ends the flight
                response.stream = _recording(library, False, response.stream, http.cache.recorder(), finish, convert.head(response), kept)
                return response
            try:
                body = b"".join(response.stream)
            finally:
                response.stream.close()
            return http.settle(library, plan, response, body, time.perf_counter() - start)
        finally:
            release()

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> "CachingTransport":
        self._transport.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._transport.__exit__(*exc)


class AsyncCachingTransport(_TransportBase):
    """``CachingTransport`` for async clients (``httpx2.AsyncClient``, ``httpx.AsyncClient``)."""

    def __init__(
        self,
        transport: Any = None,
        *,
        library: Optional[str] = None,
        ttl: TTL = None,
        cache_dir: Union[str, "os.PathLike[str]", None] = None,
        store: Union[str, Store, None] = None,
        mode: Union[str, Mode, None] = None,
        secret: Union[str, bytes, None] = None,
        replay: str = "instant",
        max_stream_size: Union[int, str] = streams.DEFAULT_MAX_STREAM_SIZE,
        max_size: Union[int, str, None] = None,
        match: Optional[Callable[[Any], Any]] = None,
        key_headers: Iterable[str] = convert.DEFAULT_KEY_HEADERS,
        cache_if: Optional[Callable[[Any], Any]] = None,
        record_request: bool = True,
        samples: Optional[int] = None,
    ) -> None:
        owner = type(self).__name__
        if transport is not None and not callable(getattr(transport, "handle_async_request", None)):
            raise TypeError(
                f"{owner}(transport=...) must be an async httpx/httpx2 transport (with handle_async_request), not {type(transport).__name__}"
            )
        self._library = _pick_library(owner, transport, library)
        self._http = HttpCache(
            owner,
            ttl=ttl,
            cache_dir=cache_dir,
            store=store,
            mode=mode,
            secret=secret,
            replay=replay,
            max_stream_size=max_stream_size,
            max_size=max_size,
            match=match,
            key_headers=key_headers,
            cache_if=cache_if,
            record_request=record_request,
            samples=samples,
        )
        self._transport = transport if transport is not None else self._library.default_transport(True)

    @classmethod
    def _sharing(cls, transport: Any, http: HttpCache, library: Library) -> "AsyncCachingTransport":
        self = cls.__new__(cls)
        self._transport, self._http, self._library = transport, http, library
        return self

    async def handle_async_request(self, request: Any) -> Any:
        http = self._http
        content_type, chosen = convert.examine(request, http.key_header_bytes)
        if http.match is not None:
            await request.aread()  # a predicate may look at the body
        if http.wants(request, content_type):
            await request.aread()
            plan = http.plan(request, content_type, chosen)
            if plan is not None:
                value = plan[5]
                if value is MISSING:
                    value, release = await http.cache.acquire_async(plan[0], plan[1], plan[2], plan[3])
                    if value is MISSING:
                        return await self._miss(request, plan, release)
                return http.respond(of_request(request, self._library), value)
        return await self._transport.handle_async_request(request)

    async def _miss(self, request: Any, plan: Any, release: Callable[[], None]) -> Any:
        http = self._http
        library = of_request(request, self._library)
        try:
            http.cache.note_miss(plan[1], plan[2], plan[3], sample=plan[6])
            start = time.perf_counter()
            response = await self._transport.handle_async_request(request)
            if not http.storable(plan, response):
                return response
            if convert.is_event_stream(response.headers.get("content-type")):
                kept: Optional[list[bytes]] = [] if http.cache.cache_if is not None else None
                finish = http.finisher(library, plan, release, response, kept)
                release = _noop
                response.stream = _recording(library, True, response.stream, http.cache.recorder(), finish, convert.head(response), kept)
                return response
            try:
                body = b"".join([chunk async for chunk in response.stream])
            finally:
                await response.stream.aclose()
            return http.settle(library, plan, response, body, time.perf_counter() - start)
        finally:
            release()

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> "AsyncCachingTransport":
        await self._transport.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._transport.__aexit__(*exc)


def _noop() -> None:
    return None
