"""``cache_llm``: options are resolved once at decoration; each call path is one short function."""

from __future__ import annotations

import inspect
import io
import operator
import os
import pickle
import time
import types
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union, overload

import wrapt

from . import keys, streams
from .config import TTL
from .core import MISSING, Cache, CacheOptions, request_tree, resolve, samples
from .core import explain as explaining
from .entry import Stream
from .modes import Mode, current_mode
from .observers import OFFLINE_MISS
from .report import warn_uncacheable
from .stats import CacheInfo
from .stores.base import Store

F = TypeVar("F", bound=Callable[..., Any])
_OFF, _OFFLINE = Mode.OFF, Mode.OFFLINE  # enum member access costs ~0.1 us
_PLAIN = object()  # the "instance" wrapt passes for a plain function (see CachedFunction.__init__)
# SDK helpers that return a context manager around a stream (``with ... as stream``): not a
# value, and not a stream until entered. The fixes that work are named in the warning.
_STREAM_MANAGERS = {
    ("openai", "ChatCompletionStreamManager"),
    ("openai", "AsyncChatCompletionStreamManager"),
    ("openai", "ResponseStreamManager"),
    ("openai", "AsyncResponseStreamManager"),
    ("openai", "AssistantStreamManager"),
    ("openai", "AsyncAssistantStreamManager"),
    ("anthropic", "MessageStreamManager"),
    ("anthropic", "AsyncMessageStreamManager"),
    ("anthropic", "BetaMessageStreamManager"),
    ("anthropic", "BetaAsyncMessageStreamManager"),
}


class _Engine:
    """The decorator's front door: binds a call to the signature, keys it, and runs it through
    the cache core, one short function per call kind."""

    def __init__(self, func: Callable[..., Any], options: CacheOptions, ignore: frozenset[str], key: Optional[Callable[..., Any]], version: Any) -> None:
        self.func = func
        self.function_id = keys.qualified_name(func)
        self.key_fn = key
        self.signature = inspect.signature(func)
        _check_ignore(func, self.signature, ignore)
        identity = [
            func.__module__,
            func.__qualname__,
            keys.source_digest(func),
            keys.normalize(version, "cache_llm(version=...)"),
        ]
        self.keys = keys.KeyMaker(identity, self.signature, ignore)
        self.cache = Cache(options, "cache_llm", identity, self.function_id)
        self.realtime = options.realtime

    # -- key ------------------------------------------------------------------------------

    def full_args(self, instance: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return args if instance is None or instance is _PLAIN else (instance, *args)

    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The cache key of a call (``args`` include ``self``/``cls`` for methods)."""
        if self.key_fn is not None:
            return self.keys.key_of(self.key_fn(*args, **kwargs))
        return self.keys.key(args, kwargs)

    def key_for(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The cache key of a call on ``instance`` (``None`` or ``_PLAIN``: a plain function)."""
        return self.key(self.full_args(instance, args), kwargs)

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

    def request(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """What a call's entry records as its request: the arguments exactly as keyed."""
        if not self.cache.record_request:
            return None
        full = self.full_args(instance, args)
        if self.key_fn is not None:
            return request_tree(keys.pack_normalized(["key=", self.key_fn(*full, **kwargs)]))
        return request_tree(self.keys.arguments(full, kwargs))

    def _fits(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether the function accepts these arguments (checked off the hot path)."""
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError:
            return False
        return True

    # -- the steps every call path shares -------------------------------------------------

    def prepare(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``(mode, store, key, value, sample)`` of a call, ``value`` a hit or ``MISSING``; ``None``
        to call the function uncached (mode off, or arguments the function rejects)."""
        cache = self.cache
        mode = current_mode(cache.mode)
        if mode is _OFF:
            cache.bypass(self.function_id)
            return None
        if (instance is _PLAIN or instance is None) and self.key_fn is None:  # the common case, without call_key's frame
            try:
                key = self.keys.key(args, kwargs)
            except keys.Unkeyable:
                raise
            except TypeError:
                cache.bypass(self.function_id)
                return None
        else:
            maybe_key = self.call_key(instance, args, kwargs)
            if maybe_key is None:
                cache.bypass(self.function_id)
                return None
            key = maybe_key
        base = key
        if cache.sampler is None:
            sample = None
        else:
            key, sample = cache.sample_key(key)
        store = cache.fixed_store or cache.store(create=mode.writes)  # (a fixed store without a call)
        value = MISSING
        if store is not None and mode.reads:
            value = cache.lookup(store, self.function_id, key)
        if value is MISSING and mode is _OFFLINE:
            if not self._fits(self.full_args(instance, args), kwargs):
                cache.bypass(self.function_id)  # a call the function rejects: let it raise its own TypeError
                return None
            cache.note_miss(store, self.function_id, key, OFFLINE_MISS, sample)
            raise cache.offline_miss(store, self.function_id, base, key, sample, self.request(instance, args, kwargs))
        return mode, store, key, value, sample

    def explain(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> explaining.Explanation:
        """What a call with these arguments would do now, and why (see ``CachedFunction.explain``)."""
        key = self.key_for(instance, args, kwargs)
        sample = None
        if self.cache.sampler is not None:
            sample = self.cache.sampler.peek(key)
            key = samples.sample_key(key, sample)
        return self.cache.explain(self.function_id, key, self.request(instance, args, kwargs), sample)

    def recording(self, result: Any, finish: streams.Finish, is_async: bool) -> Any:
        """A proxy that records a returned stream while it is consumed, the way the function's
        kind says it is consumed (an object that is both iterable and async-iterable, returned
        by a plain ``def``, is iterated with ``for``)."""
        recorder = self.cache.recorder()
        if _is_async_stream(result) and (is_async or not _is_stream(result)):
            return streams.AsyncRecordingStream(result, recorder, finish)
        return streams.RecordingStream(result, recorder, finish)

    def settle(self, result: Any, duration: float, plan: Any, release: Callable[[], None], request: Any, is_async: bool) -> tuple[Any, Callable[[], None]]:
        """What the caller gets for a provider's result, and what is left to release.

        A returned stream becomes a recording proxy that ends the flight when the stream ends;
        a value is stored now.
        """
        mode, store, key, _, sample = plan
        if _is_stream(result) or _is_async_stream(result):
            finish = self.cache.finisher(mode, store, self.function_id, key, release, request, sample)
            return self.recording(result, finish, is_async), _noop
        if _is_stream_manager(result):
            _warn_stream_manager(self.function_id, result)
        elif store is not None and mode.writes:
            self.cache.save(store, self.function_id, key, result, duration, request, sample)
        return result, release

    def deliver(self, value: Any, is_async: bool) -> Any:
        """A hit's value; a recorded stream becomes a replay object."""
        if isinstance(value, Stream):
            return streams.AsyncReplayStream(value, self.realtime) if is_async else streams.ReplayStream(value, self.realtime)
        return value

    # -- call paths -----------------------------------------------------------------------

    def call_sync(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        plan = self.prepare(instance, args, kwargs)
        if plan is None:
            return wrapped(*args, **kwargs)
        mode, store, key, value, _ = plan
        if value is not MISSING:
            return value if type(value) is not Stream else self.deliver(value, False)
        value, release = self.cache.acquire(mode, store, self.function_id, key)
        if value is not MISSING:
            return self.deliver(value, False)
        try:
            self.cache.note_miss(store, self.function_id, key, sample=plan[4])
            request = self.request(instance, args, kwargs)
            start = time.perf_counter()
            result = wrapped(*args, **kwargs)
            result, release = self.settle(result, time.perf_counter() - start, plan, release, request, False)
            return result
        finally:
            release()

    async def call_async(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        plan = self.prepare(instance, args, kwargs)
        if plan is None:
            return await wrapped(*args, **kwargs)
        value = plan[3]
        if value is MISSING:
            value, release = await self.cache.acquire_async(plan[0], plan[1], self.function_id, plan[2])
        if value is not MISSING:
            return self.deliver(value, True)
        try:
            self.cache.note_miss(plan[1], self.function_id, plan[2], sample=plan[4])
            request = self.request(instance, args, kwargs)
            start = time.perf_counter()
            result = await wrapped(*args, **kwargs)
            result, release = self.settle(result, time.perf_counter() - start, plan, release, request, True)
            return result
        finally:
            release()

    def call_generator(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        def run() -> Any:
            plan = self.prepare(instance, args, kwargs)
            if plan is None:
                return (yield from wrapped(*args, **kwargs))
            value, release = plan[3], _noop
            if value is MISSING:
                value, release = self.cache.acquire(plan[0], plan[1], self.function_id, plan[2])
            if isinstance(value, Stream):
                if self.realtime:
                    return (yield from streams.replay(value, True))
                for chunk in value.chunks:  # inline: one generator level less per chunk than replay()
                    yield chunk
                return value.result
            source, recorder, finish = self.start_recording(plan, release, wrapped, instance, args, kwargs)
            return (yield from streams.record(source, recorder, finish))

        return run()

    def start_recording(
        self, plan: Any, release: Callable[[], None], wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, streams.Recorder, streams.Finish]:
        """A miss of a generator helper: call it, and what records its stream (the flight ends if the call fails)."""
        mode, store, key, _, sample = plan
        try:
            request = self.request(instance, args, kwargs)
        except BaseException:
            release()
            raise
        finish = self.cache.finisher(mode, store, self.function_id, key, release, request, sample)
        try:
            self.cache.note_miss(store, self.function_id, key, sample=sample)
            source = wrapped(*args, **kwargs)
        except BaseException:
            finish(None, None)
            raise
        return source, self.cache.recorder(), finish

    def call_async_generator(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        async def chunks() -> Any:
            plan = self.prepare(instance, args, kwargs)
            if plan is None:
                return streams.record_async(wrapped(*args, **kwargs), streams.Recorder(0, False), _ignore_finish)
            value, release = plan[3], _noop
            if value is MISSING:
                value, release = await self.cache.acquire_async(plan[0], plan[1], self.function_id, plan[2])
            if isinstance(value, Stream):
                return streams.replay_async(value, self.realtime)
            source, recorder, finish = self.start_recording(plan, release, wrapped, instance, args, kwargs)
            return streams.record_async(source, recorder, finish)

        return streams.relay(chunks)

    # -- management -----------------------------------------------------------------------

    def info(self) -> CacheInfo:
        return self.cache.info(self.function_id.__eq__)

    def clear(self) -> None:
        self.cache.clear(self.function_id)

    def invalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        return self.cache.delete(self.function_id, self.key(args, kwargs))


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
    # What wrapt's own attribute lookup does (the proxy's attributes, else the function's via
    # ``__getattr__``), but reached directly: a Python subclass of wrapt's C proxy otherwise
    # calls its ``__getattribute__`` through a method wrapper, ~1k instructions per attribute.
    __getattribute__ = object.__getattribute__

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
        return self._self_engine.key_for(self._bound_instance(), args, kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Remove the entry of a call with these arguments; True if it existed."""
        engine = self._self_engine
        return engine.invalidate(engine.full_args(self._bound_instance(), args), kwargs)

    def explain(self, *args: Any, **kwargs: Any) -> explaining.Explanation:
        """What a call with these arguments would do now: ``"hit"``, ``"expired"`` or ``"miss"``,
        and for a miss the nearest recorded entries with what differs (argument paths with both
        values, a changed source or ``version``, another key format). Calls nothing."""
        return self._self_engine.explain(self._bound_instance(), args, kwargs)


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
        return self._self_bound_to

    # The closure made at decoration, fetched by a C getter (no Python frame but its own).
    cache_key = property(operator.attrgetter("_self_cache_key"), doc="The 32-hex-character key a call with these arguments uses.")

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
        self._self_bound_to = wrapped.__self__ if inspect.ismethod(wrapped) else None  # a bound method decorated
        self._self_cache_key = _key_of_call(engine, self._self_bound_to)


def _key_of_call(engine: _Engine, bound_to: Any) -> Callable[..., str]:
    """``cache_key`` of a decorated function: for a plain one, straight to the key maker."""
    if bound_to is None and engine.key_fn is None:
        key = engine.keys.key

        def cache_key(*args: Any, **kwargs: Any) -> str:
            """The 32-hex-character key a call with these arguments uses."""
            return key(args, kwargs)

    else:

        def cache_key(*args: Any, **kwargs: Any) -> str:
            """The 32-hex-character key a call with these arguments uses."""
            return engine.key_for(bound_to, args, kwargs)

    return cache_key


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


def _is_stream_manager(value: Any) -> bool:
    cls = type(value)
    return (cls.__module__.partition(".")[0], cls.__name__) in _STREAM_MANAGERS


def _warn_stream_manager(function_id: str, value: Any) -> None:
    kind = type(value).__name__
    warn_uncacheable(
        function_id,
        "stream-manager:" + kind,
        f"memollm: {function_id} returned a {kind} (an SDK stream helper such as client.messages.stream(...) or "
        "client.chat.completions.stream(...)), which cannot be cached at the function level. Two fixes work: cache at "
        "the HTTP layer (memollm.http.client() as the SDK's http_client=, or memollm.http.intercept()), which caches "
        "these helpers unchanged; or make the helper a generator that yields from the stream (with ... as stream: "
        "yield from stream.text_stream), which @cache_llm records and replays.",
    )


def _noop() -> None:
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
    cache_if: Optional[Callable[[Any], Any]] = None,
    record_request: bool = True,
    samples: Optional[int] = None,
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
    cache_if: Optional[Callable[[Any], Any]] = None,
    record_request: bool = True,
    samples: Optional[int] = None,
) -> Any:
    """Cache an LLM helper's results: ``@cache_llm`` or ``@cache_llm(ttl=3600, cache_dir=...)``.

    Identical calls (same function source, ``version`` and arguments, secrets excluded) are
    answered from the store. See the docs for every option.
    """
    options = resolve(
        "cache_llm",
        ttl=ttl,
        cache_dir=cache_dir,
        store=store,
        mode=mode,
        allow_pickle=allow_pickle,
        secret=secret,
        replay=replay,
        max_stream_size=max_stream_size,
        max_size=max_size,
        cache_if=cache_if,
        record_request=record_request,
        samples=samples,
    )
    ignored = _parse_ignore(ignore)
    if key is not None and not callable(key):
        raise TypeError(f"cache_llm(key=...) must be a callable taking the function's arguments, not {type(key).__name__}")

    def decorate(f: Callable[..., Any]) -> Any:
        # Bound methods too: wrapt passes their ``__self__`` as the instance, keyed like ``self``.
        target = f.__func__ if isinstance(f, (classmethod, staticmethod)) or inspect.ismethod(f) else f
        if not callable(target):
            raise TypeError(f"cache_llm can only decorate functions and methods, not {type(f).__name__}")
        return CachedFunction(f, _Engine(target, options, ignored, key, version))

    if func is None:
        return decorate
    if callable(func) or isinstance(func, (classmethod, staticmethod)):
        return decorate(func)
    raise TypeError(
        f"cache_llm takes options by keyword: use @cache_llm or @cache_llm(ttl=..., cache_dir=...), not cache_llm({func!r})"
    )
