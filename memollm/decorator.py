"""``cache_llm``: options are resolved once at decoration; each call path is one short function."""

from __future__ import annotations

import inspect
import os
import time
from typing import Any, Callable, Iterable, Optional, TypeVar, Union, overload

import wrapt

from . import keys
from .codec import UndecodableValue, UnencodableValue
from .config import TTL, default_cache_dir, disk_store, parse_ttl, secret_bytes
from .entry import KIND_VALUE, CorruptEntry, EntryMeta, decode_body, encode_value, read_meta
from .errors import CacheMiss, UncacheableValueWarning
from .modes import Mode, current_mode, parse_mode
from .report import warn_once
from .stats import CacheInfo, Counters, tokens_of
from .stores.base import Store
from .stores.memory import SHARED_MEMORY_STORE

F = TypeVar("F", bound=Callable[..., Any])
_MISSING = object()
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
        self.counters = Counters()
        self.signature = inspect.signature(func)
        self.binder = keys.ArgumentBinder(self.signature)
        self.ignore = ignore
        _check_ignore(func, self.signature, ignore)
        self.identity = [
            func.__module__,
            func.__qualname__,
            keys.source_digest(func),
            keys.normalize(version, "cache_llm(version=...)"),
        ]

    # -- key ------------------------------------------------------------------------------

    def full_args(self, instance: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return args if instance is None else (instance, *args)

    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The cache key of a call (``args`` include ``self``/``cls`` for methods)."""
        if self.key_fn is not None:
            tree: Any = ["key=", keys.normalize(self.key_fn(*args, **kwargs), "the value returned by key=")]
        else:
            tree = keys.arguments_tree(self.binder.bind(args, kwargs), self.ignore)
        return keys.make_key(self.identity, tree)

    def call_key(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Optional[str]:
        """Key of a call, or ``None`` when the arguments do not fit the signature.

        Then the function is called uncached and raises its own ``TypeError``. Arguments that
        fit but cannot be keyed raise ``keys.Unkeyable`` (a ``TypeError`` that says how to fix it).
        """
        full = self.full_args(instance, args)
        try:
            if self.key_fn is not None:
                self.signature.bind(*full, **kwargs)
            return self.key(full, kwargs)
        except keys.Unkeyable:
            raise
        except TypeError:
            if self.key_fn is not None and self._fits(full, kwargs):
                raise
            return None

    def _fits(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError:
            return False
        return True

    # -- store ----------------------------------------------------------------------------

    def store(self) -> Optional[Store]:
        """The store for this call, or ``None`` if it cannot be opened (reported once)."""
        if self.fixed_store is not None:
            return self.fixed_store
        path = self.cache_dir or default_cache_dir()
        try:
            return disk_store(path)
        except Exception as exc:
            warn_once(path, "open", f"memollm: cannot use the cache dir {path} ({exc}); calls go to the provider uncached")
            return None

    def lookup(self, store: Store, key: str) -> Any:
        """The cached value, or ``_MISSING`` (absent, expired, unreadable)."""
        try:
            data = store.get(self.function_id, key)
        except Exception as exc:
            warn_once(store.location, "read", f"memollm: cannot read the cache at {store.location} ({exc}); treating lookups as misses")
            return _MISSING
        if data is None:
            return _MISSING
        try:
            meta, body = read_meta(data, self.secret)
            if meta.key != key or meta.expired():
                return _MISSING
            value = decode_body(meta, body, self.allow_pickle)
        except (CorruptEntry, UndecodableValue) as exc:
            warn_once(store.location, "corrupt", f"memollm: unreadable cache entry {key} in {store.location} ({exc}); recomputing it")
            return _MISSING
        self.counters.hit(meta.duration, meta.tokens)
        return value

    def save(self, store: Store, key: str, value: Any, duration: float) -> None:
        """Store a value; unstorable values and failed writes warn, never raise."""
        now = time.time()
        meta = EntryMeta(
            function=self.function_id,
            key=key,
            created=now,
            expires=None if self.ttl is None else now + self.ttl,
            duration=duration,
            kind=KIND_VALUE,
            tokens=tokens_of(value),
        )
        try:
            data = encode_value(meta, value, self.secret, self.allow_pickle)
        except UnencodableValue as exc:
            kind = type(value).__qualname__
            warn_once(self.function_id, "unencodable:" + kind, f"memollm: {self.function_id} returned a {kind} that was not cached: {exc}", UncacheableValueWarning)
            return
        self.write(store, meta, data)

    def write(self, store: Store, meta: EntryMeta, data: bytes) -> None:
        try:
            store.set(meta, data)
        except Exception as exc:
            warn_once(store.location, "write", f"memollm: cannot write to the cache at {store.location} ({exc}); results are returned but not cached")

    def miss_error(self, store: Optional[Store], key: str) -> CacheMiss:
        where = store.location if store is not None else (self.cache_dir or default_cache_dir())
        return CacheMiss(
            f"memollm: no cached entry for {self.function_id} (key {key}) in {where}, and the cache mode is "
            "'offline'. Record it by running this call once with the cache mode 'readwrite' "
            "(MEMOLLM_MODE=readwrite, or --memollm-mode=readwrite under pytest) and provider access, "
            "then commit or copy the cache dir.",
            function=self.function_id,
            key=key,
            cache_dir=where,
        )

    # -- call paths -----------------------------------------------------------------------

    def prepare(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Decide a call: ``None`` to bypass, else ``(mode, store, key, cached value or _MISSING)``."""
        mode = current_mode(self.mode)
        if mode is Mode.OFF:
            return None
        key = self.call_key(instance, args, kwargs)
        if key is None:
            return None
        store = self.store()
        value = _MISSING
        if store is not None and mode.reads:
            value = self.lookup(store, key)
        if value is _MISSING:
            if mode is Mode.OFFLINE:
                raise self.miss_error(store, key)
            self.counters.miss()
        return mode, store, key, value

    def call_sync(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        plan = self.prepare(instance, args, kwargs)
        if plan is None:
            return wrapped(*args, **kwargs)
        mode, store, key, value = plan
        if value is not _MISSING:
            return value
        start = time.perf_counter()
        result = wrapped(*args, **kwargs)
        if store is not None and mode.writes:
            self.save(store, key, result, time.perf_counter() - start)
        return result

    async def call_async(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        plan = self.prepare(instance, args, kwargs)
        if plan is None:
            return await wrapped(*args, **kwargs)
        mode, store, key, value = plan
        if value is not _MISSING:
            return value
        start = time.perf_counter()
        result = await wrapped(*args, **kwargs)
        if store is not None and mode.writes:
            self.save(store, key, result, time.perf_counter() - start)
        return result

    # -- management -----------------------------------------------------------------------

    def info(self) -> CacheInfo:
        store = self.store()
        entries, size = 0, 0
        if store is not None:
            try:
                for meta in store.entries(self.function_id):
                    entries += 1
                    size += meta.size
            except Exception as exc:
                warn_once(store.location, "list", f"memollm: cannot list the cache at {store.location} ({exc})")
        c = self.counters
        return CacheInfo(c.hits, c.misses, entries, size, c.seconds_saved, c.tokens_saved)

    def clear(self) -> None:
        store = self.store()
        if store is not None:
            try:
                store.clear(self.function_id)
            except Exception as exc:
                warn_once(store.location, "clear", f"memollm: cannot clear the cache at {store.location} ({exc})")
        self.counters.reset()

    def invalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        key = self.key(args, kwargs)
        store = self.store()
        if store is None:
            return False
        try:
            return store.delete(self.function_id, key)
        except Exception as exc:
            warn_once(store.location, "delete", f"memollm: cannot delete from the cache at {store.location} ({exc})")
            return False


class _CacheMethods:
    """``cache_info``, ``cache_clear``, ``cache_key`` and ``invalidate``, shared by both wrappers."""

    _self_engine: _Engine

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

    def _bound_instance(self) -> Any:
        if self._self_binding == "classmethod":
            return getattr(self.__wrapped__, "__self__", None)
        if self._self_binding == "staticmethod":
            return None
        return self._self_instance


class CachedFunction(_CacheMethods, wrapt.FunctionWrapper):  # type: ignore[misc]
    """A function decorated with ``cache_llm`` (a transparent wrapt proxy)."""

    __bound_function_wrapper__ = _BoundCachedFunction

    def __init__(self, wrapped: Any, engine: _Engine) -> None:
        call = {
            "async": engine.call_async,
        }.get(_call_kind(engine.func), engine.call_sync)
        super().__init__(wrapped, call)
        self._self_engine = engine


def _call_kind(func: Callable[..., Any]) -> str:
    if inspect.iscoroutinefunction(func):
        return "async"
    return "sync"


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
            from .stores.redis import RedisStore

            return RedisStore(store)
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
    )

    def decorate(f: Callable[..., Any]) -> Any:
        target = f.__func__ if isinstance(f, (classmethod, staticmethod)) else f
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
