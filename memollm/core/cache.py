"""The cache itself, for any front door: lookup, verification, expiry, single flight, storing.

A front door (``cache_llm``, ``memollm.http``'s transports, the LangChain adapter) computes a key
for what it caches, under a function identity (``module.qualname``, ``http:POST host/path``...),
then asks a ``Cache``. One call::

    mode = cache.current_mode()                      # off: the front door calls through
    store = cache.store(create=mode.writes)
    value = cache.lookup(store, function, key)       # a hit: the value, or a recorded Stream
    value, release = cache.acquire(mode, store, function, key)   # a miss: lead, or wait for the leader
    ... call the provider ...
    cache.save(...)  or  cache.finisher(...)(recorder, result)   # then release()

Nothing here knows what a Python function or an HTTP request is.
"""

from __future__ import annotations

import dataclasses
import os
import time
import weakref
from typing import Any, Callable, Optional

import msgpack

from .. import flight, observers, otel, streams
from ..codec import UndecodableValue, UnencodableValue, decode, decode_for_display
from ..config import cache_dir_for, disk_store, is_open
from ..entry import (
    KIND_STREAM,
    KIND_VALUE,
    CorruptEntry,
    EntryMeta,
    FreshChunks,
    Stream,
    decode_body,
    encode_value,
    pack_entry_in_place,
    read_meta,
)
from ..errors import CacheMiss
from ..keys import KEY_FORMAT
from ..modes import Mode, current_mode
from ..report import warn_once, warn_uncacheable
from ..stats import CacheInfo, Counters, Usage, tokens_of, usage_of
from ..stores.base import Store
from ..trust import UntrustedCacheDir
from . import explain as explaining
from . import samples
from .options import CacheOptions

MISSING: Any = object()
"""What ``lookup`` and ``acquire`` return for "no usable entry"."""

_READWRITE = Mode.READWRITE
VERIFIED_BYTES_MAX = 32 * 2**20
"""Bytes of verified entries remembered per process (their checksum and signature are not
checked again while the store hands back the very same bytes)."""
VERIFIED_ITEM_MAX = 2**20
"""Larger entries are verified at every hit: stores do not keep them in memory either."""

Verified = tuple[bytes, EntryMeta, memoryview, bool, Any]  # entry bytes, meta, body, is a plain value, shared value
# The shared value is the decoded value (for a stream: its chunks, result and offsets as tuples)
# when nothing in it can be mutated (str, bytes, numbers...: see _immutable), so every hit can
# hand out the same objects; for a stream of mutable chunks, its chunks as ``FreshChunks`` (each
# replay decodes copies a batch at a time); else MISSING (each hit decodes a fresh copy), or None
# (not decoded yet).
_verified: dict[str, Verified] = {}  # entries verified without a secret, by key
_signed: "weakref.WeakSet[Cache]" = weakref.WeakSet()  # caches with a secret keep their own
_verified_bytes = [0]
_IMMUTABLE = frozenset({str, bytes, int, float, bool, type(None)})
SHARED_ITEMS_MAX = 100_000
"""Chunks of a stream shared between hits at most (each counts 64 bytes against VERIFIED_BYTES_MAX)."""
FUNCTIONS_COUNTED_MAX = 1_000
"""Functions a multi-function front door counts apart (~450 bytes each); later ones share one
set of counters, under ``OTHER_FUNCTIONS`` (URL paths holding ids would otherwise grow it forever)."""
OTHER_FUNCTIONS = "(other functions)"


def remember(table: dict[str, Verified], key: str, verified: Verified, size: int) -> None:
    """Keep a verified entry, within ``VERIFIED_BYTES_MAX`` for all tables of the process."""
    previous = table.pop(key, None)
    if previous is not None:
        _verified_bytes[0] -= _weight(previous)
    if _verified_bytes[0] + size > VERIFIED_BYTES_MAX:
        _verified.clear()
        for cache in list(_signed):
            cache._verified.clear()
        _verified_bytes[0] = 0
    table[key] = verified
    _verified_bytes[0] += size


def _noop() -> None:
    return None


class Cache:
    """One front door's cache: its options, its counters, and every step of a cached call."""

    def __init__(
        self, options: CacheOptions, owner: str, identity: list[Any], function: Optional[str] = None, shares_values: bool = False
    ) -> None:
        self.options = options
        #: The front door only reads the values it gets (the HTTP layer builds a response from
        #: one): hits may then share one decoded value, mutable or not. Else only what nothing
        #: can change is shared, and callers get fresh copies.
        self.shares_values = shares_values
        #: The one function this cache serves (a decorated function), or ``None`` for a front door
        #: that caches several (the HTTP transports): each then also gets counters of its own.
        self.function = function
        self.by_function: dict[str, Counters] = {}
        self.owner = owner  #: names the front door in messages ("cache_llm", "CachingTransport"...)
        self.identity = [KEY_FORMAT, *identity]  #: what keys are made of besides the request (recorded in entries)
        self.ttl = options.ttl
        self.mode = options.mode
        self.fixed_store = options.store
        self.allow_pickle = options.allow_pickle
        self.secret = options.secret
        self.realtime = options.realtime
        self.cache_if = options.cache_if
        self.record_request = options.record_request
        self.samples = options.samples
        self.cache_dir = options.cache_dir
        self.max_size = options.max_size
        self.counters = Counters()
        self.sampler = samples.Sampler(options.samples) if options.samples else None
        self._verified: dict[str, Verified] = _verified
        if options.secret is not None:  # entries verified under this secret only
            self._verified = {}
            _signed.add(self)
        otel.register(self)

    def current_mode(self) -> Mode:
        return current_mode(self.mode)

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

    def lookup(self, store: Store, function: str, key: str) -> Any:
        """The cached value (a ``Stream`` for a recorded stream), or ``MISSING`` (absent,
        expired, unreadable). A hit is counted here."""
        try:
            data = store.get(function, key)
        except Exception as exc:
            report(store, "read", f"memollm: cannot read the cache at {store.location} ({exc}); treating lookups as misses", exc)
            return MISSING
        if data is None:
            return MISSING
        try:
            verified = self._verified.get(key)
            if verified is None or (verified[0] is not data and verified[0] != data):
                verified = self._verify(key, data)  # else: the very bytes verified before (equal bytes: a
                # store handing out copies, e.g. Redis; a changed entry differs in length or early on)
            meta = verified[1]
            if (meta.expires is not None or self.ttl is not None) and self.expired(meta):
                return MISSING
            shared = verified[4]
            if shared is not None and shared is not MISSING:
                value = shared if verified[3] else Stream(*shared)
            else:
                value = decode(verified[2], self.allow_pickle) if verified[3] else decode_body(meta, verified[2], self.allow_pickle)
                if shared is None:
                    _share(self._verified, key, verified, value, self.allow_pickle, self.shares_values)
        except (CorruptEntry, UndecodableValue) as exc:
            warn_once(store.location, "corrupt", f"memollm: unreadable cache entry {key} in {store.location} ({exc}); recomputing it")
            return MISSING
        counters = self.counters  # lock-free, inlined: see Counters
        counters.hits += 1
        counters.seconds_saved += meta.duration
        counters.tokens_saved += meta.tokens
        usage = meta.usage
        if usage is not None:  # hits per entry, priced when dollars are asked for
            saved = counters.saved.get(key)
            if saved is None:
                counters.first_saved(key, usage)
            else:
                saved[1] += 1
        if function is not self.function:
            self.counters_of(function).hit(key, meta.duration, meta.tokens, usage)
        note_hit = getattr(store, "note_hit", None)
        if note_hit is not None:
            note_hit(meta)
        if observers.read_observers:  # observe() blocks and the pytest plugin
            observers.notify_read(store, meta)
        return value

    def counters_of(self, function: str) -> Counters:
        """The counters of one of the functions a multi-function front door caches."""
        counters = self.by_function.get(function)
        if counters is None:
            if len(self.by_function) >= FUNCTIONS_COUNTED_MAX:
                function = OTHER_FUNCTIONS
            counters = self.by_function.setdefault(function, Counters())
        return counters

    def _verify(self, key: str, data: bytes) -> Verified:
        """Check an entry's integrity (and signature); small entries are remembered by the
        identity of their bytes, within ``VERIFIED_BYTES_MAX`` per process."""
        meta, body = read_meta(data, self.secret)
        if meta.key != key:
            raise CorruptEntry(f"entry holds key {meta.key}, not {key}")
        size = len(data)
        verified = (data, meta, body, meta.kind == KIND_VALUE, None if size <= VERIFIED_ITEM_MAX else MISSING)
        if size <= VERIFIED_ITEM_MAX:
            remember(self._verified, key, verified, size)
        return verified

    def expired(self, meta: EntryMeta) -> bool:
        """Past the expiry written with the entry, or past a since-shortened ``ttl``."""
        now = time.time()
        return meta.expired(now) or (self.ttl is not None and now >= meta.created + self.ttl)

    # -- misses ---------------------------------------------------------------------------

    def note_miss(self, store: Optional[Store], function: str, key: str, outcome: str = observers.MISS, sample: Optional[int] = None) -> None:
        """Count a lookup that goes to the provider, or fails offline (``outcome`` then
        ``observers.OFFLINE_MISS``, which is what ``observe()`` records)."""
        self.counters.miss()
        if function is not self.function:
            self.counters_of(function).miss()
        note_miss = getattr(store, "note_miss", None)
        if note_miss is not None:
            note_miss(function)
        if observers.miss_observers:
            observers.notify_miss(store, function, key)
        if observers.watching:
            observers.record(function, key, outcome, sample)

    def bypass(self, function: str) -> None:
        """A call passed through uncached (mode off, arguments the function rejects): only
        ``observe()`` blocks hear of it."""
        if observers.watching:
            observers.record(function, None, observers.BYPASS)

    def miss_error(self, store: Optional[Store], function: str, key: str, what: str = "", detail: str = "") -> CacheMiss:
        """The offline ``CacheMiss``: what was asked (``what``, e.g. a method and URL), where it
        was looked for, why the cache dir could not be used, how to record it, and ``detail``
        (what the nearest entry differs in)."""
        where = store.location if store is not None else cache_dir_for(self.options.cache_dir)
        problem = ""
        if store is None and not os.path.isdir(where):
            problem = " (the cache dir does not exist)"
        elif store is None:
            try:
                disk_store(where, self.options.max_size)
            except Exception as exc:
                problem = f" (the cache dir cannot be used: {exc})"
        asked = f" ({what})" if what else ""
        message = (
            f"memollm: no cached entry for {function}{asked} (key {key}) in {where}{problem}, and the cache mode is "
            "'offline'. Record it by running this call once with the cache mode 'readwrite' "
            "(MEMOLLM_MODE=readwrite, or --memollm-mode=readwrite under pytest) and provider access, "
            "then commit or copy the cache dir."
        )
        if detail:
            message += "\n" + detail
        return CacheMiss(message, function=function, key=key, cache_dir=where)

    def offline_miss(
        self, store: Optional[Store], function: str, base: str, key: str, sample: Optional[int], request: Any, what: str = ""
    ) -> CacheMiss:
        """The offline ``CacheMiss`` of a call keyed ``base`` (``key`` its sample's entry), with
        how many samples are recorded and how it differs from the nearest recorded entries."""
        lines = []
        if sample is not None:
            recorded = self.recorded_samples(store, function, base)
            lines.append(f"samples={self.samples}: {recorded} of {self.samples} recorded for this request, not sample {sample}.")
        nearest = self.nearest_differences(store, function, key, request)
        if nearest:
            lines.append(nearest)
        return self.miss_error(store, function, key, what=what, detail="\n".join(lines))

    # -- single flight --------------------------------------------------------------------

    def acquire(self, mode: Mode, store: Optional[Store], function: str, key: str) -> tuple[Any, Callable[[], None]]:
        """Lead the computation of ``key`` (``(MISSING, release)``) or get what a leader stored."""
        if mode is not _READWRITE or store is None:
            return MISSING, _noop
        flight_key = f"{store.location}\0{key}"
        deadline = time.monotonic() + flight.DEFAULT_TIMEOUT
        while True:
            leader, event = flight.FLIGHTS.lead(flight_key)
            if leader:
                break
            event.wait(max(0.0, deadline - time.monotonic()))
            value = self.lookup(store, function, key)
            if value is not MISSING or time.monotonic() >= deadline:
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
        return self._after_lock(store, function, key, flight_key, event, lock)

    async def acquire_async(self, mode: Mode, store: Optional[Store], function: str, key: str) -> tuple[Any, Callable[[], None]]:
        """``acquire`` for coroutines: waiting never blocks the event loop."""
        if mode is not _READWRITE or store is None:
            return MISSING, _noop
        flight_key = f"{store.location}\0{key}"
        deadline = time.monotonic() + flight.DEFAULT_TIMEOUT
        while True:
            leader, event = flight.FLIGHTS.lead(flight_key)
            if leader:
                break
            await flight.wait_async(event, max(0.0, deadline - time.monotonic()))
            value = self.lookup(store, function, key)
            if value is not MISSING or time.monotonic() >= deadline:
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
        return self._after_lock(store, function, key, flight_key, event, lock)

    def _no_lock(self, store: Store, exc: Exception) -> None:
        # Reported as a write problem: a store that refuses locks (full, read-only) refuses the
        # write that follows as well, and that is one problem, reported once.
        report(store, "write", f"memollm: cannot lock entries in {store.location} ({exc}); results are returned, but may not be cached, and identical concurrent calls may each reach the provider", exc)

    def _after_lock(self, store: Store, function: str, key: str, flight_key: str, event: Any, lock: Any) -> tuple[Any, Callable[[], None]]:
        released: list[bool] = []

        def release() -> None:
            if not released:
                released.append(True)
                if lock is not None:
                    lock.release()
                flight.FLIGHTS.land(flight_key, event)

        try:
            value = self.lookup(store, function, key) if lock is not None else MISSING  # another process may have filled it
        except BaseException:
            release()
            raise
        if value is not MISSING:
            release()
            return value, _noop
        return MISSING, release

    # -- storing --------------------------------------------------------------------------

    def deserves(self, function: str, subject: Any) -> bool:
        """Whether ``cache_if`` lets a result be stored (a predicate that raises: warn, no)."""
        if self.cache_if is None:
            return True
        try:
            return bool(self.cache_if(subject))
        except Exception as exc:
            warn_once(function, "cache_if", f"memollm: the cache_if predicate of {function} raised {type(exc).__name__}: {exc}; the result was returned but not stored")
            return False

    def new_meta(
        self, function: str, key: str, duration: float, tokens: int, kind: str, request: Any = None, sample: Optional[int] = None, usage: Optional[Usage] = None
    ) -> EntryMeta:
        now = time.time()
        expires = None if self.ttl is None else now + self.ttl
        recorded = request if self.record_request else None
        return EntryMeta(function, key, now, expires, duration, kind, tokens, request=recorded, identity=self.identity, sample=sample, usage=usage)

    def save(
        self,
        store: Store,
        function: str,
        key: str,
        value: Any,
        duration: float,
        request: Any = None,
        sample: Optional[int] = None,
        subject: Any = MISSING,
        tokens: Optional[int] = None,
        usage: Any = MISSING,
    ) -> None:
        """Store a value (``subject``, default the value, is what ``cache_if`` judges; ``tokens``
        and ``usage``, default those the value reports, what a hit saves); unstorable values and
        failed writes warn, never raise."""
        if not self.deserves(function, value if subject is MISSING else subject):
            return
        used = tokens_of(value) if tokens is None else tokens
        meta = self.new_meta(function, key, duration, used, KIND_VALUE, request, sample, usage_of(value) if usage is MISSING else usage)
        try:
            data = encode_value(meta, value, self.secret, self.allow_pickle)
        except UnencodableValue as exc:
            kind = type(value).__qualname__
            warn_uncacheable(function, "unencodable:" + kind, f"memollm: {function} returned a value of type {kind} that was not cached: {exc}")
            return
        self.write(store, meta, data)

    def write(self, store: Store, meta: EntryMeta, data: "bytes | bytearray") -> None:
        try:
            store.set(meta, data)  # type: ignore[arg-type]  # a bytearray only for stores that accept one
        except Exception as exc:
            report(store, "write", f"memollm: cannot write to the cache at {store.location} ({exc}); results are returned but not cached", exc)

    def recorder(self) -> streams.Recorder:
        """What records a stream on a miss."""
        return streams.Recorder(self.options.max_stream_size, self.allow_pickle)

    def finisher(
        self,
        mode: Mode,
        store: Optional[Store],
        function: str,
        key: str,
        release: Callable[[], None],
        request: Any = None,
        sample: Optional[int] = None,
        subject: Optional[Callable[[streams.Recorder, Any], Any]] = None,
    ) -> streams.Finish:
        """The callback that stores a completed stream (once) and ends the flight.

        ``subject(recorder, result)`` gives what ``cache_if`` judges (default: the chunks).
        """
        done: list[bool] = []

        def finish(recorder: Optional[streams.Recorder], result: Any) -> None:
            if done:
                return
            done.append(True)
            try:
                if recorder is not None and store is not None and mode.writes:
                    self.save_stream(store, function, key, recorder, result, request, sample, subject)
            finally:
                release()

        return finish

    def save_stream(
        self,
        store: Store,
        function: str,
        key: str,
        recorder: streams.Recorder,
        result: Any,
        request: Any = None,
        sample: Optional[int] = None,
        subject: Optional[Callable[[streams.Recorder, Any], Any]] = None,
    ) -> None:
        if recorder.problem is not None:
            warn_uncacheable(function, "stream:" + recorder.problem[:40], f"memollm: a stream of {function} was passed through but not cached: {recorder.problem}")
            return
        meta = self.new_meta(function, key, recorder.duration, recorder.usage.tokens(), KIND_STREAM, request, sample, recorder.usage.usage())
        try:
            body = recorder.body(result)
        except UnencodableValue as exc:
            warn_uncacheable(function, "stream-result", f"memollm: the return value of a stream of {function} cannot be stored: {exc}")
            return
        if self.cache_if is not None:
            judged = subject(recorder, result) if subject is not None else _recorded_chunks(body)
            if not self.deserves(function, judged):
                return
        data: "bytes | bytearray" = pack_entry_in_place(meta, body, self.secret)  # the recorder's buffer becomes the entry: no copy
        if not getattr(store, "accepts_bytearray", False):  # other stores (a user's own) get the bytes type they expect
            data = bytes(data)
        self.write(store, meta, data)

    # -- samples ----------------------------------------------------------------------------

    def sample_key(self, key: str) -> tuple[str, Optional[int]]:
        """The entry key of this call's sample of ``key`` (``samples=N``), and its index."""
        if self.sampler is None:
            return key, None
        index = self.sampler.next_index(key)
        return samples.sample_key(key, index), index

    def recorded_samples(self, store: Optional[Store], function: str, key: str) -> int:
        """How many of the ``samples`` of the request keyed ``key`` are stored (offline messages)."""
        if store is None or self.samples is None:
            return 0
        count = 0
        for index in range(self.samples):
            try:
                if store.get(function, samples.sample_key(key, index)) is not None:
                    count += 1
            except Exception:
                pass
        return count

    # -- explaining ------------------------------------------------------------------------

    def nearest_differences(self, store: Optional[Store], function: str, key: str, request: Any) -> str:
        """How a missed request differs from the nearest recorded entries of ``function``, in a
        few lines for an offline ``CacheMiss`` ("" if nothing to say, or if that fails: the
        message is a courtesy and never hides the miss)."""
        try:
            return explaining.explain(store, function, key, "miss", self.identity, request, self.record_request).summary()
        except Exception:
            return ""

    def explain(self, function: str, key: str, request: Any, sample: Optional[int] = None) -> explaining.Explanation:
        """What a lookup of ``key`` would do now, and for a miss how ``request`` differs from
        the nearest recorded entries of ``function``."""
        mode = self.current_mode()
        store = self.store(create=False)
        outcome = explaining.outcome_of(store, function, key, self.secret, self.ttl)
        if not mode.reads:  # off or refresh: the call goes to the provider whatever is stored
            outcome = "miss"
        found = explaining.explain(store, function, key, outcome, self.identity, request, self.record_request)
        notes = [found.note] if found.note else []
        if not mode.reads:
            notes.append(f"the cache mode is {mode.value!r}: the call would not read the cache, it goes to the provider")
        if sample is not None:
            notes.append(f"sample {sample} of samples={self.samples}")
        if len(notes) != (1 if found.note else 0):
            found = dataclasses.replace(found, note="; ".join(notes))
        return found

    # -- management -----------------------------------------------------------------------

    def info(self, functions: Callable[[str], bool]) -> CacheInfo:
        """This front door's counters, and the entries of the functions ``functions`` accepts."""
        store = self.store(create=False)
        entries, size = 0, 0
        if store is not None:
            try:
                for meta in store.entries():
                    if functions(meta.function):
                        entries += 1
                        size += meta.size
            except Exception as exc:
                report(store, "list", f"memollm: cannot list the cache at {store.location} ({exc})", exc)
        c = self.counters
        return CacheInfo(c.hits, c.misses, entries, size, c.seconds_saved, c.tokens_saved, c.dollars())

    def clear(self, function: Optional[str]) -> None:
        """Remove the entries of ``function`` and reset the counters."""
        store = self.store(create=False)
        if store is not None:
            try:
                store.clear(function)
            except Exception as exc:
                report(store, "clear", f"memollm: cannot clear the cache at {store.location} ({exc})", exc)
        self.counters.reset()
        for name, counters in list(self.by_function.items()):
            if function is None or name == function:
                counters.reset()

    def delete(self, function: str, key: str) -> bool:
        """Remove one entry; True if it existed."""
        store = self.store(create=False)
        if store is None:
            return False
        try:
            return store.delete(function, key)
        except Exception as exc:
            report(store, "delete", f"memollm: cannot delete from the cache at {store.location} ({exc})", exc)
            return False


def report(store: Store, problem: str, message: str, exc: BaseException) -> None:
    """Report a store failure once; an unreachable store (Redis down) or a dir that became untrusted
    is one problem, whatever failed."""
    if isinstance(exc, ConnectionError):
        problem = getattr(exc, "problem", "unavailable")  # e.g. Redis refusing credentials: its own warning
    elif isinstance(exc, UntrustedCacheDir):
        problem = "untrusted"
    warn_once(store.location, problem, message)


def request_tree(packed: bytes) -> Any:
    """The request as recorded in entries, from the packed form that was hashed into the key."""
    return msgpack.unpackb(packed, raw=False, strict_map_key=False)


def _recorded_chunks(body: "bytes | bytearray") -> list[Any]:
    """The chunks of a recorded stream body, decoded (what ``cache_if`` judges for a stream)."""
    try:
        return list(decode(memoryview(body))[0])
    except UndecodableValue:  # classes that cannot be revived here: judge their data
        return list(decode_for_display(memoryview(body))[0])


def _no_lock_path(key: str) -> None:
    return None


def _weight(verified: Verified) -> int:
    """What a remembered entry counts against ``VERIFIED_BYTES_MAX``."""
    shared = verified[4]
    extra = _extra_weight(shared[0]) if not verified[3] and shared is not None and shared is not MISSING else 0
    return len(verified[0]) + extra


def _extra_weight(chunks: Any) -> int:
    """What the shared chunks of a stream count besides the entry's bytes."""
    if chunks is None:
        return 0
    return chunks.weight if isinstance(chunks, FreshChunks) else 64 * len(chunks)


def _immutable(value: Any) -> bool:
    """Whether nothing in ``value`` can be changed by whoever receives it (tuples of such included)."""
    t = type(value)
    if t in _IMMUTABLE:
        return True
    return t is tuple and all(_immutable(v) for v in value)


def _share(table: dict[str, Verified], key: str, verified: Verified, value: Any, allow_pickle: bool, anything: bool = False) -> None:
    """After the first decode of a remembered entry: keep the value to hand out again if it is
    immutable (the chunks of a stream of text, a str answer) or ``anything`` may be shared,
    else note that it is not."""
    shared: Any = MISSING
    if verified[3]:
        if anything or _immutable(value):
            shared = value
    elif len(value.chunks) <= SHARED_ITEMS_MAX and (anything or _immutable(value.result)):
        if anything or all(map(_immutable, value.chunks)):
            chunks: Any = tuple(value.chunks)
        else:  # each hit decodes fresh copies, a batch at a time
            try:
                chunks = FreshChunks(list(value.chunks), allow_pickle)
            except UnencodableValue:
                chunks = None
        shared = (chunks, value.result, tuple(value.offsets))
        extra = _extra_weight(chunks)  # the decoded objects outweigh their encoding: count them too
        if chunks is None or _verified_bytes[0] + extra > VERIFIED_BYTES_MAX:
            shared = MISSING
        else:
            _verified_bytes[0] += extra
    if table.get(key) is verified:
        table[key] = (*verified[:4], shared)
