"""``cache_llm``: options are resolved once at decoration; each call path is one short function."""

from __future__ import annotations

import inspect
import io
import os
import pickle
import time
import types
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union, overload

import wrapt

from . import flight, keys, observers, otel, prices, streams
from .codec import UndecodableValue, UnencodableValue, decode
from .config import TTL, cache_dir_for, disk_store, is_open, parse_size, parse_ttl, secret_bytes
from .entry import KIND_STREAM, KIND_VALUE, CorruptEntry, EntryMeta, Stream, decode_body, encode_value, pack_entry, read_meta
from .errors import CacheMiss
from .modes import Mode, current_mode, parse_mode
from .report import warn_once, warn_uncacheable
from .stats import CacheInfo, Counters, Usage, tokens_of, usage_of
from .stores.base import Store
from .stores.memory import SHARED_MEMORY_STORE
from .trust import UntrustedCacheDir

F = TypeVar("F", bound=Callable[..., Any])
_MISSING = object()
_OFF, _OFFLINE, _READWRITE = Mode.OFF, Mode.OFFLINE, Mode.READWRITE  # enum member access costs ~0.1 us
_PLAIN = object()  # the "instance" wrapt passes for a plain function (see CachedFunction.__init__)
_PARSED_CACHE_SIZE = 256  # verified entries remembered per function, by the identity of their bytes
_STORE_METHODS = ("get", "set", "delete", "clear", "entries")


class _Engine:
    """Everything decided at decoration time, and the steps every call path shares."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        ttl: Optional[float],
        cache_dir: Optional[str],
        store: Optional[Store],
        ignore: frozenset[str],
        key: Optional[Callable[..., Any]],
        version: Any,
        mode: Optional[Mode],
        allow_pickle: bool,
        secret: Optional[bytes],
        replay: str,
        max_stream_size: int,
        max_size: Optional[int],
    ) -> None:
        self.func = func
        self.function_id = keys.qualified_name(func)
        self.ttl = ttl
        self.cache_dir = cache_dir
        self.fixed_store = store
        self.key_fn = key
        self.mode = mode
        self.allow_pickle = allow_pickle
        self.secret = secret
        self.realtime = replay == "realtime"
        self.max_stream_size = max_stream_size
        self.max_size = max_size
        self.counters = Counters()
        self._parsed: dict[str, tuple[bytes, EntryMeta, memoryview, bool]] = {}
        self.signature = inspect.signature(func)
        _check_ignore(func, self.signature, ignore)
        identity = [
            func.__module__,
            func.__qualname__,
            keys.source_digest(func),
            keys.normalize(version, "cache_llm(version=...)"),
        ]
        self.keys = keys.KeyMaker(identity, self.signature, ignore)
        otel.register(self)

    # -- key ------------------------------------------------------------------------------

    def full_args(self, instance: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return args if instance is None else (instance, *args)

    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The cache key of a call (``args`` include ``self``/``cls`` for methods)."""
        if self.key_fn is not None:
            return self.keys.key_of(self.key_fn(*args, **kwargs))
        return self.keys.key(args, kwargs)

    def call_key(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Optional[str]:
        """Key of a call, or ``None`` when the arguments do not fit the signature.

        Then the function is called uncached and raises its own ``TypeError``. Arguments that
        fit but cannot be keyed raise ``keys.Unkeyable`` (a ``TypeError`` that says how to fix it).
        """
        full = self.full_args(instance, args)
        if self.key_fn is not None:
            if not self._fits(full, kwargs):
                return None
            return self.keys.key_of(self.key_fn(*full, **kwargs))  # errors raised by key= are the user's
        try:
            return self.keys.key(full, kwargs)
        except keys.Unkeyable:
            raise
        except TypeError:
            return None

    def _fits(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether the function accepts these arguments (checked off the hot path)."""
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError:
            return False
        return True

    # -- store ----------------------------------------------------------------------------

    def store(self, create: bool = True) -> Optional[Store]:
        """The store for this call, or ``None`` if it cannot be opened (reported once), or if
        its cache dir does not exist and ``create`` is false (nothing to read there)."""
        if self.fixed_store is not None:
            return self.fixed_store
        path = cache_dir_for(self.cache_dir)
        if not create and not is_open(path) and not os.path.isdir(path):
            return None
        try:
            return disk_store(path, self.max_size)
        except Exception as exc:
            warn_once(path, "open", f"memollm: cannot use the cache dir {path} ({exc}); calls go to the provider uncached")
            return None

    def lookup(self, store: Store, key: str) -> Any:
        """The cached value, or ``_MISSING`` (absent, expired, unreadable)."""
        try:
            data = store.get(self.function_id, key)
        except Exception as exc:
            _report(store, "read", f"memollm: cannot read the cache at {store.location} ({exc}); treating lookups as misses", exc)
            return _MISSING
        if data is None:
            return _MISSING
        try:
            parsed = self._parsed.get(key)
            if parsed is None or parsed[0] is not data:  # else: the very bytes verified before
                parsed = self._verify(key, data)
            meta = parsed[1]
            if (meta.expires is not None or self.ttl is not None) and self.expired(meta):
                return _MISSING
            value = decode(parsed[2], self.allow_pickle) if parsed[3] else decode_body(meta, parsed[2], self.allow_pickle)
        except (CorruptEntry, UndecodableValue) as exc:
            warn_once(store.location, "corrupt", f"memollm: unreadable cache entry {key} in {store.location} ({exc}); recomputing it")
            return _MISSING
        counters = self.counters  # lock-free, inlined: see Counters
        counters.hits += 1
        counters.seconds_saved += meta.duration
        counters.tokens_saved += meta.tokens
        usage = meta.usage
        if usage is not None:
            saved = counters.saved
            saved[usage] = saved.get(usage, 0) + 1
        note_hit = getattr(store, "note_hit", None)
        if note_hit is not None:
            note_hit(meta)
        if observers.read_observers:
            observers.notify_read(store, meta)
        return value

    def _verify(self, key: str, data: bytes) -> tuple[bytes, EntryMeta, memoryview, bool]:
        """Check an entry's integrity (and signature) once; remembered by the identity of its bytes."""
        meta, body = read_meta(data, self.secret)
        if meta.key != key:
            raise CorruptEntry(f"entry holds key {meta.key}, not {key}")
        if len(self._parsed) >= _PARSED_CACHE_SIZE:
            self._parsed.clear()
        parsed = self._parsed[key] = (data, meta, body, meta.kind == KIND_VALUE)
        return parsed

    def expired(self, meta: EntryMeta) -> bool:
        """Past the expiry written with the entry, or past a since-shortened ``ttl``."""
        now = time.time()
        return meta.expired(now) or (self.ttl is not None and now >= meta.created + self.ttl)

    def save(self, store: Store, key: str, value: Any, duration: float) -> None:
        """Store a value; unstorable values and failed writes warn, never raise."""
        meta = self.new_meta(key, duration, tokens_of(value), KIND_VALUE, usage_of(value))
        try:
            data = encode_value(meta, value, self.secret, self.allow_pickle)
        except UnencodableValue as exc:
            kind = type(value).__qualname__
            warn_uncacheable(self.function_id, "unencodable:" + kind, f"memollm: {self.function_id} returned a value of type {kind} that was not cached: {exc}")
            return
        self.write(store, meta, data)

    def note_miss(self, store: Optional[Store], key: str, outcome: str = observers.MISS) -> None:
        self.counters.miss()
        if observers.watching:
            observers.record(self.function_id, key, outcome)
        note_miss = getattr(store, "note_miss", None)
        if note_miss is not None:
            note_miss(self.function_id)
        if observers.miss_observers:
            observers.notify_miss(store, self.function_id, key)

    def new_meta(self, key: str, duration: float, tokens: int, kind: str, usage: Optional[Usage]) -> EntryMeta:
        now = time.time()
        expires = None if self.ttl is None else now + self.ttl
        return EntryMeta(self.function_id, key, now, expires, duration, kind, tokens, usage=usage)

    def write(self, store: Store, meta: EntryMeta, data: bytes) -> None:
        try:
            store.set(meta, data)
        except Exception as exc:
            _report(store, "write", f"memollm: cannot write to the cache at {store.location} ({exc}); results are returned but not cached", exc)

    def miss_error(self, store: Optional[Store], key: str) -> CacheMiss:
        where = store.location if store is not None else cache_dir_for(self.cache_dir)
        problem = ""
        if store is None and not os.path.isdir(where):
            problem = " (the cache dir does not exist)"
        elif store is None:
            try:
                disk_store(where, self.max_size)
            except Exception as exc:
                problem = f" (the cache dir cannot be used: {exc})"
        return CacheMiss(
            f"memollm: no cached entry for {self.function_id} (key {key}) in {where}{problem}, and the cache mode is "
            "'offline'. Record it by running this call once with the cache mode 'readwrite' "
            "(MEMOLLM_MODE=readwrite, or --memollm-mode=readwrite under pytest) and provider access, "
            "then commit or copy the cache dir.",
            function=self.function_id,
            key=key,
            cache_dir=where,
        )

    # -- single flight --------------------------------------------------------------------

    def acquire(self, mode: Mode, store: Optional[Store], key: str) -> tuple[Any, Callable[[], None]]:
        """Lead the computation of ``key`` (``(_MISSING, release)``) or get what a leader stored."""
        if mode is not _READWRITE or store is None:
            return _MISSING, _noop
        flight_key = f"{store.location}\0{key}"
        deadline = time.monotonic() + flight.DEFAULT_TIMEOUT
        while True:
            leader, event = flight.FLIGHTS.lead(flight_key)
            if leader:
                break
            event.wait(max(0.0, deadline - time.monotonic()))
            value = self.lookup(store, key)
            if value is not _MISSING or time.monotonic() >= deadline:
                return value, _noop
        try:
            acquire_lock = getattr(store, "acquire_lock", None)
            if acquire_lock is not None:  # a store with its own cross-machine lock (Redis)
                lock = acquire_lock(key, deadline)
            else:
                lock_path = getattr(store, "lock_path", _no_lock_path)(key)
                lock = flight.lock_file(lock_path, deadline) if lock_path else None
        except Exception as exc:
            self._no_lock(store, exc)
            lock = None
        except BaseException:  # interrupted: the in-process waiters must not wait for us
            flight.FLIGHTS.land(flight_key, event)
            raise
        return self._after_lock(store, key, flight_key, event, lock)

    async def acquire_async(self, mode: Mode, store: Optional[Store], key: str) -> tuple[Any, Callable[[], None]]:
        """``acquire`` for coroutines: waiting never blocks the event loop."""
        if mode is not _READWRITE or store is None:
            return _MISSING, _noop
        flight_key = f"{store.location}\0{key}"
        deadline = time.monotonic() + flight.DEFAULT_TIMEOUT
        while True:
            leader, event = flight.FLIGHTS.lead(flight_key)
            if leader:
                break
            await flight.wait_async(event, max(0.0, deadline - time.monotonic()))
            value = self.lookup(store, key)
            if value is not _MISSING or time.monotonic() >= deadline:
                return value, _noop
        try:
            acquire_lock_async = getattr(store, "acquire_lock_async", None)
            if acquire_lock_async is not None:
                lock = await acquire_lock_async(key, deadline)
            else:
                lock_path = getattr(store, "lock_path", _no_lock_path)(key)
                lock = await flight.lock_file_async(lock_path, deadline) if lock_path else None
        except Exception as exc:
            self._no_lock(store, exc)
            lock = None
        except BaseException:  # cancelled (a timeout around the call): the other tasks must not wait for us
            flight.FLIGHTS.land(flight_key, event)
            raise
        return self._after_lock(store, key, flight_key, event, lock)

    def _no_lock(self, store: Store, exc: Exception) -> None:
        # Reported as a write problem: a store that refuses locks (full, read-only) refuses the
        # write that follows as well, and that is one problem, reported once.
        _report(store, "write", f"memollm: cannot lock entries in {store.location} ({exc}); results are returned, but may not be cached, and identical concurrent calls may each reach the provider", exc)

    def _after_lock(self, store: Store, key: str, flight_key: str, event: Any, lock: Any) -> tuple[Any, Callable[[], None]]:
        released: list[bool] = []

        def release() -> None:
            if not released:
                released.append(True)
                if lock is not None:
                    lock.release()
                flight.FLIGHTS.land(flight_key, event)

        try:
            value = self.lookup(store, key) if lock is not None else _MISSING  # another process may have filled it
        except BaseException:
            release()
            raise
        if value is not _MISSING:
            release()
            return value, _noop
        return _MISSING, release

    # -- call paths -----------------------------------------------------------------------

    def prepare(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Decide a call: ``None`` to bypass, else ``(mode, store, key, cached value or _MISSING)``."""
        mode = current_mode(self.mode)
        if mode is _OFF:
            return self.bypass()
        if instance is _PLAIN:
            instance = None
        if instance is None and self.key_fn is None:  # the common case, without call_key's frame
            try:
                key = self.keys.key(args, kwargs)
            except keys.Unkeyable:
                raise
            except TypeError:
                return self.bypass()
        else:
            maybe_key = self.call_key(instance, args, kwargs)
            if maybe_key is None:
                return self.bypass()
            key = maybe_key
        store = self.store(create=mode.writes)
        value = _MISSING
        if store is not None and mode.reads:
            value = self.lookup(store, key)
        if value is _MISSING and mode is _OFFLINE:
            if not self._fits(self.full_args(instance, args), kwargs):
                return self.bypass()  # a call the function rejects: let it raise its own TypeError
            self.note_miss(store, key, observers.OFFLINE_MISS)
            raise self.miss_error(store, key)
        return mode, store, key, value

    def bypass(self) -> None:
        """A call not cached (mode off, arguments the function rejects): the plan ``None``."""
        if observers.watching:
            observers.record(self.function_id, None, observers.BYPASS)
        return None

    def finisher(self, mode: Mode, store: Optional[Store], key: str, release: Callable[[], None]) -> streams.Finish:
        """The callback that stores a completed stream (once) and ends the flight."""
        done: list[bool] = []

        def finish(recorder: Optional[streams.Recorder], result: Any) -> None:
            if done:
                return
            done.append(True)
            try:
                if recorder is not None and store is not None and mode.writes:
                    self.save_stream(store, key, recorder, result)
            finally:
                release()

        return finish

    def save_stream(self, store: Store, key: str, recorder: streams.Recorder, result: Any) -> None:
        if recorder.problem is not None:
            warn_uncacheable(self.function_id, "stream:" + recorder.problem[:40], f"memollm: a stream of {self.function_id} was passed through but not cached: {recorder.problem}")
            return
        meta = self.new_meta(key, recorder.duration, recorder.usage.tokens(), KIND_STREAM, recorder.usage.usage())
        try:
            body = recorder.body(result)
        except UnencodableValue as exc:
            warn_uncacheable(self.function_id, "stream-result", f"memollm: the return value of a stream of {self.function_id} cannot be stored: {exc}")
            return
        self.write(store, meta, pack_entry(meta, body, self.secret))

    def recording(self, result: Any, finish: streams.Finish) -> Any:
        """A proxy that records a returned iterator or async iterator while it is consumed."""
        recorder = streams.Recorder(self.max_stream_size, self.allow_pickle)
        if _is_async_stream(result):
            return streams.AsyncRecordingStream(result, recorder, finish)
        return streams.RecordingStream(result, recorder, finish)

    def settle(self, result: Any, duration: float, mode: Mode, store: Optional[Store], key: str, release: Callable[[], None]) -> tuple[Any, Callable[[], None]]:
        """What the caller gets for a provider's result, and what is left to release.

        A returned stream becomes a recording proxy that ends the flight when the stream ends;
        a value is stored now.
        """
        if _is_stream(result) or _is_async_stream(result):
            return self.recording(result, self.finisher(mode, store, key, release)), _noop
        if store is not None and mode.writes:
            self.save(store, key, result, duration)
        return result, release

    def deliver(self, value: Any, is_async: bool) -> Any:
        """A hit's value; a recorded stream becomes a replay object."""
        if isinstance(value, Stream):
            return streams.AsyncReplayStream(value, self.realtime) if is_async else streams.ReplayStream(value, self.realtime)
        return value

    def call_sync(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        plan = self.prepare(instance, args, kwargs)
        if plan is None:
            return wrapped(*args, **kwargs)
        mode, store, key, value = plan
        release = _noop
        if value is _MISSING:
            value, release = self.acquire(mode, store, key)
        if value is not _MISSING:
            return value if type(value) is not Stream else self.deliver(value, False)
        try:
            self.note_miss(store, key)
            start = time.perf_counter()
            result = wrapped(*args, **kwargs)
            result, release = self.settle(result, time.perf_counter() - start, mode, store, key, release)
            return result
        finally:
            release()

    async def call_async(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        plan = self.prepare(instance, args, kwargs)
        if plan is None:
            return await wrapped(*args, **kwargs)
        mode, store, key, value = plan
        release = _noop
        if value is _MISSING:
            value, release = await self.acquire_async(mode, store, key)
        if value is not _MISSING:
            return self.deliver(value, True)
        try:
            self.note_miss(store, key)
            start = time.perf_counter()
            result = await wrapped(*args, **kwargs)
            result, release = self.settle(result, time.perf_counter() - start, mode, store, key, release)
            return result
        finally:
            release()

    def call_generator(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        def run() -> Any:
            plan = self.prepare(instance, args, kwargs)
            if plan is None:
                return (yield from wrapped(*args, **kwargs))
            mode, store, key, value = plan
            release = _noop
            if value is _MISSING:
                value, release = self.acquire(mode, store, key)
            if isinstance(value, Stream):
                return (yield from streams.replay(value, self.realtime))
            source, recorder, finish = self.start_recording(mode, store, key, release, wrapped, args, kwargs)
            return (yield from streams.record(source, recorder, finish))

        return run()

    def start_recording(
        self, mode: Mode, store: Optional[Store], key: str, release: Callable[[], None], wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, streams.Recorder, streams.Finish]:
        """A miss of a generator helper: call it, and what records its stream (the flight ends if the call fails)."""
        finish = self.finisher(mode, store, key, release)
        try:
            self.note_miss(store, key)
            source = wrapped(*args, **kwargs)
        except BaseException:
            finish(None, None)
            raise
        return source, streams.Recorder(self.max_stream_size, self.allow_pickle), finish

    def call_async_generator(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        async def chunks() -> Any:
            plan = self.prepare(instance, args, kwargs)
            if plan is None:
                return streams.record_async(wrapped(*args, **kwargs), streams.Recorder(0, False), _ignore_finish)
            mode, store, key, value = plan
            release = _noop
            if value is _MISSING:
                value, release = await self.acquire_async(mode, store, key)
            if isinstance(value, Stream):
                return streams.replay_async(value, self.realtime)
            source, recorder, finish = self.start_recording(mode, store, key, release, wrapped, args, kwargs)
            return streams.record_async(source, recorder, finish)

        return streams.relay(chunks)

    # -- management -----------------------------------------------------------------------

    def info(self) -> CacheInfo:
        store = self.store(create=False)
        entries, size = 0, 0
        if store is not None:
            try:
                for meta in store.entries(self.function_id):
                    entries += 1
                    size += meta.size
            except Exception as exc:
                _report(store, "list", f"memollm: cannot list the cache at {store.location} ({exc})", exc)
        c = self.counters
        return CacheInfo(c.hits, c.misses, entries, size, c.seconds_saved, c.tokens_saved, prices.total(dict(c.saved)))

    def clear(self) -> None:
        store = self.store(create=False)
        if store is not None:
            try:
                store.clear(self.function_id)
            except Exception as exc:
                _report(store, "clear", f"memollm: cannot clear the cache at {store.location} ({exc})", exc)
        self.counters.reset()

    def invalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        key = self.key(args, kwargs)
        store = self.store(create=False)
        if store is None:
            return False
        try:
            return store.delete(self.function_id, key)
        except Exception as exc:
            _report(store, "delete", f"memollm: cannot delete from the cache at {store.location} ({exc})", exc)
            return False


if TYPE_CHECKING:

    class _HasEngine:
        _self_engine: _Engine

else:
    _HasEngine = object  # no class annotations at run time (see _CacheMethods)


class _CacheMethods(_HasEngine):
    """``cache_info``, ``cache_clear``, ``cache_key`` and ``invalidate``, shared by both wrappers.

    No ``__dict__`` (empty ``__slots__``) and no annotations of its own: the wrappers must keep
    forwarding ``__dict__`` and ``__annotations__`` to the function (``functools.wraps`` stacked
    on top, ``vars()``, ``typing.get_type_hints``).
    """

    __slots__ = ()

    def __copy__(self) -> Any:
        return self  # as copy.copy does for functions

    def __deepcopy__(self, memo: Any) -> Any:
        return self

    def _bound_instance(self) -> Any:
        return None

    def cache_info(self) -> CacheInfo:
        """Hits, misses, entries, bytes, seconds and tokens saved for this function."""
        return self._self_engine.info()

    def cache_clear(self) -> None:
        """Remove every entry of this function (any version or source) and reset its counters."""
        self._self_engine.clear()

    def cache_key(self, *args: Any, **kwargs: Any) -> str:
        """The 32-hex-character key a call with these arguments uses."""
        engine = self._self_engine
        return engine.key(engine.full_args(self._bound_instance(), args), kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Remove the entry of a call with these arguments; True if it existed."""
        engine = self._self_engine
        return engine.invalidate(engine.full_args(self._bound_instance(), args), kwargs)


class _BoundCachedFunction(_CacheMethods, wrapt.BoundFunctionWrapper):  # type: ignore[misc]
    @property
    def _self_engine(self) -> _Engine:  # type: ignore[override]
        return self._self_parent._self_engine  # type: ignore[no-any-return]

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickled as the method it is (``getattr(instance, name)``), as Python pickles bound methods."""
        target = self._bound_instance()  # the instance, or the class of a classmethod
        return (getattr, (self._self_owner if target is None else target, self.__wrapped__.__name__))

    def _bound_instance(self) -> Any:
        if self._self_binding == "classmethod":
            return getattr(self.__wrapped__, "__self__", None)
        if self._self_binding == "staticmethod":
            return None
        return self._self_instance


class CachedFunction(_CacheMethods, wrapt.FunctionWrapper):  # type: ignore[misc]
    """A function decorated with ``cache_llm`` (a transparent wrapt proxy)."""

    __bound_function_wrapper__ = _BoundCachedFunction

    def _bound_instance(self) -> Any:
        wrapped = self.__wrapped__
        return wrapped.__self__ if inspect.ismethod(wrapped) else None

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickled by reference, as Python pickles functions: ``module.qualname``, which names this
        cached function (multiprocessing and ``copy`` rely on it)."""
        qualname = self.__wrapped__.__qualname__
        if "<locals>" in qualname:
            raise pickle.PicklingError(f"cannot pickle {self.__module__}.{qualname}: a function defined inside a function cannot be found by name")
        return qualname

    def __init__(self, wrapped: Any, engine: _Engine) -> None:
        call = {
            "async": engine.call_async,
            "generator": engine.call_generator,
            "async_generator": engine.call_async_generator,
        }.get(_call_kind(engine.func), engine.call_sync)
        if type(wrapped) is types.FunctionType:
            # With no instance, wrapt looks for ``wrapped.__self__`` on every call: a failed
            # getattr costing more than a cache hit's lookup. A plain function has none; saying
            # so up front skips it. Binding to a class still goes through wrapt's ``__get__``.
            super(wrapt.FunctionWrapper, self).__init__(wrapped, _PLAIN, call, None, "function")  # type: ignore[call-arg]
        else:
            super().__init__(wrapped, call)
        self._self_engine = engine


def _report(store: Store, problem: str, message: str, exc: BaseException) -> None:
    """Report a store failure once; an unreachable store (Redis down) or a dir that became untrusted
    is one problem, whatever failed."""
    if isinstance(exc, ConnectionError):
        problem = "unavailable"
    elif isinstance(exc, UntrustedCacheDir):
        problem = "untrusted"
    warn_once(store.location, problem, message)


def _call_kind(func: Callable[..., Any]) -> str:
    if inspect.isasyncgenfunction(func):
        return "async_generator"
    if inspect.iscoroutinefunction(func):
        return "async"
    if inspect.isgeneratorfunction(func):
        return "generator"
    return "sync"


def _is_stream(value: Any) -> bool:
    """A returned iterator (an SDK stream, a generator), as opposed to a value."""
    return isinstance(value, Iterator) and not isinstance(value, (str, bytes, dict, list, tuple, io.IOBase))


def _is_async_stream(value: Any) -> bool:
    return isinstance(value, AsyncIterator)


def _noop() -> None:
    return None


def _no_lock_path(key: str) -> None:
    return None


def _ignore_finish(recorder: Any, result: Any) -> None:
    return None


def _check_ignore(func: Callable[..., Any], signature: inspect.Signature, ignore: frozenset[str]) -> None:
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(ignore - set(params))
    if unknown:
        raise ValueError(
            f"cache_llm(ignore=...) names {', '.join(map(repr, unknown))}, which "
            f"{'is not a parameter' if len(unknown) == 1 else 'are not parameters'} of "
            f"{keys.qualified_name(func)}{signature}; use the parameter names exactly as written"
        )


def _resolve_store(store: Any, cache_dir: Any) -> Optional[Store]:
    if store is None or store == "disk":
        return None
    if cache_dir is not None:
        raise ValueError("cache_llm: pass either store=... or cache_dir=..., not both (cache_dir is for the disk store)")
    if store == "memory":
        return SHARED_MEMORY_STORE
    if isinstance(store, str):
        if store.startswith(("redis://", "rediss://", "unix://")):
            from .stores.redis import redis_store

            return redis_store(store)
        raise ValueError(f"cache_llm(store={store!r}) is not a known store; use 'memory', a redis:// URL, or a Store object")
    if isinstance(store, Store) or all(callable(getattr(store, m, None)) for m in _STORE_METHODS):
        return store  # type: ignore[no-any-return]
    raise TypeError(
        f"cache_llm(store=...) got a {type(store).__name__}; pass 'memory', a redis:// URL, or an object "
        f"implementing memollm.stores.Store ({', '.join(_STORE_METHODS)})"
    )


def _parse_ignore(ignore: Union[str, Iterable[str], None]) -> frozenset[str]:
    if ignore is None:
        return frozenset()
    if not isinstance(ignore, (str, Iterable)):
        raise TypeError(f"cache_llm(ignore=...) must be a parameter name or an iterable of names, not {type(ignore).__name__}")
    names = (ignore,) if isinstance(ignore, str) else tuple(ignore)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"cache_llm(ignore=...) must hold parameter names (str), got {name!r}")
    return frozenset(names)


@overload
def cache_llm(func: F) -> F: ...


@overload
def cache_llm(
    func: None = None,
    *,
    ttl: TTL = None,
    cache_dir: Union[str, "os.PathLike[str]", None] = None,
    store: Union[str, Store, None] = None,
    ignore: Union[str, Iterable[str], None] = (),
    key: Optional[Callable[..., Any]] = None,
    version: Any = None,
    mode: Union[str, Mode, None] = None,
    allow_pickle: bool = False,
    secret: Union[str, bytes, None] = None,
    replay: str = "instant",
    max_stream_size: Union[int, str] = streams.DEFAULT_MAX_STREAM_SIZE,
    max_size: Union[int, str, None] = None,
) -> Callable[[F], F]: ...


def cache_llm(
    func: Optional[Callable[..., Any]] = None,
    *,
    ttl: TTL = None,
    cache_dir: Union[str, "os.PathLike[str]", None] = None,
    store: Union[str, Store, None] = None,
    ignore: Union[str, Iterable[str], None] = (),
    key: Optional[Callable[..., Any]] = None,
    version: Any = None,
    mode: Union[str, Mode, None] = None,
    allow_pickle: bool = False,
    secret: Union[str, bytes, None] = None,
    replay: str = "instant",
    max_stream_size: Union[int, str] = streams.DEFAULT_MAX_STREAM_SIZE,
    max_size: Union[int, str, None] = None,
) -> Any:
    """Cache an LLM helper's results: ``@cache_llm`` or ``@cache_llm(ttl=3600, cache_dir=...)``.

    Identical calls (same function source, ``version`` and arguments, secrets excluded) are
    answered from the store. See the docs for every option.
    """
    seconds = parse_ttl(ttl)
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_llm(cache_dir=...) must be a path (str or os.PathLike), not {type(cache_dir).__name__}")
    fixed_store = _resolve_store(store, cache_dir)
    ignored = _parse_ignore(ignore)
    if key is not None and not callable(key):
        raise TypeError(f"cache_llm(key=...) must be a callable taking the function's arguments, not {type(key).__name__}")
    parsed_mode = None if mode is None else parse_mode(mode, "cache_llm(mode=...)")
    if not isinstance(allow_pickle, bool):
        raise TypeError("cache_llm(allow_pickle=...) must be True or False")
    if replay not in ("instant", "realtime"):
        raise ValueError(f"cache_llm(replay={replay!r}) must be 'instant' (default) or 'realtime' (recorded chunk timing)")
    stream_limit = parse_size(max_stream_size, "cache_llm(max_stream_size=...)")
    size_limit = parse_size(max_size, "cache_llm(max_size=...)")
    if size_limit is not None and fixed_store is not None:
        raise ValueError("cache_llm(max_size=...) bounds a disk cache dir; it does not apply to store=... (Redis has its own maxmemory)")
    options = dict(
        ttl=seconds,
        cache_dir=None if cache_dir is None else os.fspath(cache_dir),
        store=fixed_store,
        ignore=ignored,
        key=key,
        version=version,
        mode=parsed_mode,
        allow_pickle=allow_pickle,
        secret=secret_bytes(secret),
        replay=replay,
        max_stream_size=stream_limit,
        max_size=size_limit,
    )

    def decorate(f: Callable[..., Any]) -> Any:
        # Bound methods too: wrapt passes their ``__self__`` as the instance, keyed like ``self``.
        target = f.__func__ if isinstance(f, (classmethod, staticmethod)) or inspect.ismethod(f) else f
        if not callable(target):
            raise TypeError(f"cache_llm can only decorate functions and methods, not {type(f).__name__}")
        return CachedFunction(f, _Engine(target, **options))  # type: ignore[arg-type]

    if func is None:
        return decorate
    if callable(func) or isinstance(func, (classmethod, staticmethod)):
        return decorate(func)
    raise TypeError(
        f"cache_llm takes options by keyword: use @cache_llm or @cache_llm(ttl=..., cache_dir=...), not cache_llm({func!r})"
    )
