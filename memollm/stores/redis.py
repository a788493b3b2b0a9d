"""The Redis store: one cache shared by a team or a CI fleet.

Keys (``ns`` is the namespace, ``memollm`` by default; several projects share a server by
using different namespaces)::

    {ns}:e:{function}:{key}   the entry bytes (``memollm.entry`` format), with a Redis expiry
                              (PX) when the entry has a TTL, none when ``ttl=None``
    {ns}:i:{function}         sorted set of the function's keys scored by expiry (+inf: never);
                              lists and counts a function's entries without scanning the db
    {ns}:l:{key}              the single-flight lock of a key (SET NX PX with a random token)

Values are opaque bytes, never unpickled here. Redis being down, slow or refusing connections
never fails a call: ``get`` returns ``None`` and ``set`` drops the write (reported once), and
for ``backoff`` seconds after a failure every operation short-circuits instead of waiting for
another timeout.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, TypeVar, Union
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit, urlunsplit

import msgpack

from ..entry import _PREFIX as ENTRY_PREFIX
from ..entry import FORMAT, MAGIC, EntryMeta, meta_from_header
from ..report import logger, warn_once
from . import tiered
from .base import PruneReport, Store

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:  # pragma: no cover - exercised only without the extra
    redis = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import redis as redis_types

T = TypeVar("T")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_NAMESPACE = "memollm"
DEFAULT_BACKOFF = 5.0
DEFAULT_LOCK_TTL = 10.0
_PEEK = 512  # bytes read to list an entry: its fixed prefix and (nearly always) its whole header
_BATCH = 500
_URL_OPTIONS = ("namespace", "prefix")

# Write an entry and index it; the index expires no earlier than its longest-lived entry.
_SET_SCRIPT = """
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
local fresh = redis.call('EXISTS', KEYS[2]) == 0
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
if ttl == 0 then
  redis.call('PERSIST', KEYS[2])
else
  local left = redis.call('PTTL', KEYS[2])
  if fresh or (left >= 0 and left < ttl) then
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end
return 1
"""
# Locks are released and extended only by their holder (the one that knows the token).
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_EXTEND_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class RedisUnavailable(ConnectionError):
    """Redis did not answer (or did recently, and the store is backing off)."""

    problem = "unavailable"  # the kind of failure: warnings are de-duplicated per kind


class RedisCredentialsRefused(RedisUnavailable):
    """Redis answered but refused the credentials (a wrong or missing password, an ACL user
    without the permissions memollm needs)."""

    problem = "credentials"


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    if redis is None:  # pragma: no cover
        return (OSError,)
    return (redis.ConnectionError, redis.TimeoutError, OSError, *_refused_errors())


def _refused_errors() -> tuple[type[BaseException], ...]:
    if redis is None:  # pragma: no cover
        return ()
    exceptions = redis.exceptions
    return (redis.AuthenticationError, exceptions.AuthorizationError, exceptions.NoPermissionError)


class RedisStore(Store):
    """Entries in Redis, shared by every process and machine that uses the same server and namespace.

    ``url_or_client`` is a ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL (password and
    options inside it, e.g. ``redis://:pw@host:6379/0?namespace=proj``) or an existing
    ``redis.Redis`` client (used as is: its own timeouts apply). ``local`` puts a disk store
    (a cache dir or a ``Store``) in front of Redis, read-through and write-through.
    """

    accepts_bytearray = True  # set() sends a recorded stream's buffer as a memoryview (never kept)

    def __init__(
        self,
        url_or_client: Union[str, "redis_types.Redis", None] = None,
        *,
        namespace: Optional[str] = None,
        prefix: Optional[str] = None,
        socket_timeout: float = 1.0,
        connect_timeout: float = 1.0,
        backoff: float = DEFAULT_BACKOFF,
        lock_ttl: float = DEFAULT_LOCK_TTL,
        local: Union[str, "os.PathLike[str]", Store, None] = None,
    ) -> None:
        if redis is None:
            raise ImportError("memollm: the Redis store needs the redis package: pip install 'memollm[redis]'")
        if namespace is not None and prefix is not None and namespace != prefix:
            raise ValueError("RedisStore: pass namespace= or prefix= (the same option), not both")
        namespace = namespace if namespace is not None else prefix
        if url_or_client is None:
            url_or_client = DEFAULT_URL
        if isinstance(url_or_client, str):
            url, options = _split_options(url_or_client)
            namespace = namespace if namespace is not None else options.get("namespace", options.get("prefix"))
            self.client: Any = redis.Redis.from_url(
                url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            )
            base_location = _public_url(url)
        elif isinstance(url_or_client, redis.Redis):
            self.client = url_or_client
            base_location = _client_location(url_or_client)
        else:
            raise TypeError(f"RedisStore() takes a redis:// URL or a redis.Redis client, not {type(url_or_client).__name__}")
        if self.client.get_connection_kwargs().get("decode_responses"):
            raise ValueError(
                "RedisStore: the client decodes responses to str; memollm stores bytes, so pass a client made with decode_responses=False"
            )
        self.namespace = DEFAULT_NAMESPACE if namespace is None else str(namespace)
        if not self.namespace:
            raise ValueError("RedisStore(namespace=...) must not be empty")
        self.location = base_location if self.namespace == DEFAULT_NAMESPACE else _with_query(base_location, namespace=self.namespace)
        self.backoff = float(backoff)
        self.lock_ttl = float(lock_ttl)
        self.local: Optional[Store] = tiered.as_local_store(local)
        self._down_until = 0.0
        self._down_reason = ""
        self._down_refused = False
        self._set_script = self.client.register_script(_SET_SCRIPT)
        self._release_script = self.client.register_script(_RELEASE_SCRIPT)
        self._extend_script = self.client.register_script(_EXTEND_SCRIPT)
        self._held: dict[str, str] = {}  # lock key -> token, kept alive by the renewer thread
        self._held_lock = threading.Lock()
        self._renewer: Optional[threading.Thread] = None
        self._pid = os.getpid()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> "RedisStore":
        """A store for a ``redis://``/``rediss://``/``unix://`` URL."""
        return cls(url, **options)

    @classmethod
    def from_client(cls, client: "redis_types.Redis", **options: Any) -> "RedisStore":
        """A store using an existing ``redis.Redis`` client (``decode_responses=False``)."""
        return cls(client, **options)

    def __repr__(self) -> str:
        return f"RedisStore({self.location!r})"

    # -- keys -----------------------------------------------------------------------------

    def entry_key(self, function: str, key: str) -> str:
        """The Redis key holding the entry of ``(function, key)``."""
        return f"{self.namespace}:e:{function}:{key}"

    def index_key(self, function: str) -> str:
        """The sorted set listing a function's keys, scored by expiry."""
        return f"{self.namespace}:i:{function}"

    def lock_key(self, key: str) -> str:
        """The single-flight lock of a cache key."""
        return f"{self.namespace}:l:{key}"

    # -- availability ---------------------------------------------------------------------

    def _call(self, op: Callable[[], T]) -> T:
        """Run a Redis operation; after a connection failure, fail at once for ``backoff`` seconds."""
        if self._down_until:
            if time.monotonic() < self._down_until:
                raise self._unavailable("; retrying later")
        try:
            result = op()
        except _unavailable_errors() as exc:
            self._down_reason = str(exc) or type(exc).__name__
            self._down_refused = isinstance(exc, _refused_errors())
            self._down_until = time.monotonic() + self.backoff
            raise self._unavailable("") from exc
        if self._down_until:
            self._down_until = 0.0
            logger.info("memollm: Redis at %s is reachable again", self.location)
        return result

    def _unavailable(self, then: str) -> RedisUnavailable:
        """The error of the last failure: credentials refused, or unreachable."""
        if self._down_refused:
            return RedisCredentialsRefused(
                f"Redis at {self.location} refused the credentials ({self._down_reason}); check the user name and "
                f"password (redis://USER:PASSWORD@host:port/db, or those of the redis.Redis client){then}"
            )
        return RedisUnavailable(f"Redis at {self.location} is unreachable ({self._down_reason}){then}")

    def _report(self, exc: RedisUnavailable) -> None:
        hint = "" if exc.problem == "credentials" else " (connect/read timeouts: pass socket_timeout=, connect_timeout= to RedisStore)"
        warn_once(
            self.location,
            exc.problem,
            f"memollm: {exc}; calls go to the provider uncached, and memollm tries Redis again every {self.backoff:g} s{hint}",
        )

    @property
    def available(self) -> bool:
        """False during the back-off that follows a connection failure."""
        return not self._down_until or time.monotonic() >= self._down_until

    # -- the Store interface --------------------------------------------------------------

    def get(self, function: str, key: str) -> Optional[bytes]:
        if self.local is not None:
            return tiered.read_through(self.local, self._remote_get, function, key)
        return self._remote_get(function, key)

    def _remote_get(self, function: str, key: str) -> Optional[bytes]:
        try:
            data = self._call(lambda: self.client.get(self.entry_key(function, key)))
        except RedisUnavailable as exc:
            self._report(exc)
            return None
        return None if data is None else bytes(data)

    def set(self, meta: EntryMeta, data: bytes) -> None:
        if self.local is not None:
            if not isinstance(data, bytes) and not getattr(self.local, "accepts_bytearray", False):
                data = bytes(data)
            tiered.write_through(self.local, self._remote_set, meta, data)
        else:
            self._remote_set(meta, data)

    def _remote_set(self, meta: EntryMeta, data: bytes) -> None:
        meta.size = len(data)
        if meta.expires is None:
            ttl_ms, score = 0, "+inf"
        else:
            ttl_ms = int((meta.expires - time.time()) * 1000)
            if ttl_ms <= 0:
                return  # already expired: nothing worth storing
            score = repr(float(meta.expires))
        keys = [self.entry_key(meta.function, meta.key), self.index_key(meta.function)]
        try:
            value = data if isinstance(data, bytes) else memoryview(data)  # redis-py refuses bytearray (a recorded stream)
            self._call(lambda: self._set_script(keys=keys, args=[value, meta.key, ttl_ms, score]))
        except RedisUnavailable as exc:
            self._report(exc)

    def delete(self, function: str, key: str) -> bool:
        local_existed = False
        if self.local is not None:
            local_existed = tiered.delete_local(self.local, function, key)

        def op() -> Any:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.entry_key(function, key))
            pipe.zrem(self.index_key(function), key)
            return pipe.execute()

        deleted, _ = self._call(op)
        return bool(deleted) or local_existed

    def clear(self, function: Optional[str] = None) -> int:
        if self.local is not None:
            tiered.clear_local(self.local, function)
        if function is None:
            patterns = [f"{_glob_escape(self.namespace)}:e:*"]
            index_patterns = [f"{_glob_escape(self.namespace)}:i:*"]
        else:
            # The key part is exactly 32 characters, so function "a" never matches "a:b"'s entries.
            patterns = [f"{_glob_escape(self.entry_key(function, ''))}{'?' * 32}"]
            index_patterns = []
        removed = 0
        for pattern in patterns:
            removed += self._unlink_matching(pattern)
        for pattern in index_patterns:
            self._unlink_matching(pattern)
        if function is not None:
            self._call(lambda: self.client.delete(self.index_key(function)))
        return removed

    def _unlink_matching(self, pattern: str) -> int:
        """UNLINK every key matching ``pattern``, found with SCAN (never KEYS or FLUSHDB)."""

        def op() -> int:
            removed = 0
            batch: list[bytes] = []
            for name in self.client.scan_iter(match=pattern, count=1000):
                batch.append(name)
                if len(batch) >= _BATCH:
                    removed += self.client.unlink(*batch)
                    batch = []
            if batch:
                removed += self.client.unlink(*batch)
            return removed

        return self._call(op)

    def _functions(self) -> list[str]:
        """Functions with an index, found with SCAN."""
        start = len(self.index_key(""))
        pattern = f"{_glob_escape(self.index_key(''))}*"
        names = self._call(lambda: list(self.client.scan_iter(match=pattern, count=1000)))
        return sorted(n.decode("utf-8", "replace")[start:] for n in names)

    def entries(self, function: Optional[str] = None) -> Iterator[EntryMeta]:
        functions = [function] if function is not None else self._functions()
        return iter([meta for f in functions for meta in self._function_entries(f)])

    def _function_entries(self, function: str) -> list[EntryMeta]:
        """Metadata of one function's live entries: its index, then each entry's header (GETRANGE)."""
        index = self.index_key(function)
        now = time.time()
        members = self._call(lambda: self.client.zrangebyscore(index, f"({now!r}", "+inf"))
        metas: list[EntryMeta] = []
        gone: list[bytes] = []
        for start in range(0, len(members), _BATCH):
            chunk = members[start : start + _BATCH]
            names = [self.entry_key(function, m.decode("ascii", "replace")) for m in chunk]
            heads = self._peek(names, _PEEK)
            for member, name, (head, size) in zip(chunk, names, heads):
                if size == 0:
                    gone.append(member)  # evicted or deleted behind the index's back
                    continue
                need = _header_end(head)
                if need is not None and need > len(head) and need <= size:
                    head, size = self._peek([name], need)[0]
                meta = _meta_from_head(head, size)
                if meta is not None and meta.function == function and not meta.expired(now):
                    metas.append(meta)
        if gone:
            self._call(lambda: self.client.zrem(index, *gone))
        return metas

    def _peek(self, names: list[str], length: int) -> list[tuple[bytes, int]]:
        def op() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.getrange(name, 0, length - 1)
                pipe.strlen(name)
            return pipe.execute()  # type: ignore[no-any-return]

        replies = self._call(op)
        return [(bytes(replies[i]), int(replies[i + 1])) for i in range(0, len(replies), 2)]

    def count(self, function: Optional[str] = None) -> int:
        functions = [function] if function is not None else self._functions()
        now = f"({time.time()!r}"

        def op() -> int:
            return sum(int(self.client.zcount(self.index_key(f), now, "+inf")) for f in functions)

        return self._call(op)

    def prune(self) -> PruneReport:
        """Redis expires entries itself; this drops expired keys from the indexes (and prunes ``local``)."""
        report = self.local.prune() if self.local is not None else PruneReport()
        now = repr(time.time())
        functions = self._functions()

        def op() -> int:
            return sum(int(self.client.zremrangebyscore(self.index_key(f), "-inf", now)) for f in functions)

        report.leftovers += self._call(op)
        return report

    def note_hit(self, meta: EntryMeta) -> None:
        note_hit = getattr(self.local, "note_hit", None)
        if note_hit is not None:
            note_hit(meta)

    def note_miss(self, function: str) -> None:
        note_miss = getattr(self.local, "note_miss", None)
        if note_miss is not None:
            note_miss(function)

    def close(self) -> None:
        with self._held_lock:
            self._held.clear()
        self.client.close()

    # -- single flight across machines ----------------------------------------------------

    def try_lock(self, key: str) -> Optional["RedisLock"]:
        """Take the lock of ``key`` now, or ``None`` if another holds it (raises ``RedisUnavailable``)."""
        lock = RedisLock(self, self.lock_key(key), secrets.token_hex(16))
        ttl_ms = max(1, int(self.lock_ttl * 1000))
        if not self._call(lambda: self.client.set(lock.name, lock.token, nx=True, px=ttl_ms)):
            return None
        if self._pid != os.getpid():  # a forked child: the parent's locks and renewer thread are not ours
            self._held_lock, self._held, self._renewer, self._pid = threading.Lock(), {}, None, os.getpid()
        with self._held_lock:
            self._held[lock.name] = lock.token
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._keep_alive, name="memollm-redis-locks", daemon=True)
                self._renewer.start()
        return lock

    def acquire_lock(self, key: str, deadline: float) -> Optional["RedisLock"]:
        """Wait for the lock of ``key`` until ``deadline`` (``time.monotonic()``); ``None`` if not acquired.

        ``None`` also when Redis is unavailable: the caller then computes without the lock.
        """
        delay = 0.002
        while True:
            try:
                lock = self.try_lock(key)
            except RedisUnavailable as exc:
                self._report(exc)
                return None
            if lock is not None:
                return lock
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)

    async def acquire_lock_async(self, key: str, deadline: float) -> Optional["RedisLock"]:
        """``acquire_lock`` for coroutines: waits with ``asyncio.sleep``."""
        delay = 0.002
        while True:
            try:
                lock = self.try_lock(key)
            except RedisUnavailable as exc:
                self._report(exc)
                return None
            if lock is not None:
                return lock
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)

    def _release(self, lock: "RedisLock") -> None:
        with self._held_lock:
            if self._held.get(lock.name) == lock.token:
                del self._held[lock.name]
        try:
            self._call(lambda: self._release_script(keys=[lock.name], args=[lock.token]))
        except Exception as exc:  # the lock expires on its own
            logger.debug("memollm: could not release the Redis lock %s (%s)", lock.name, exc)

    def _keep_alive(self) -> None:
        """Extend held locks every third of their TTL; exit when none is held.

        A holder that dies stops extending its locks, which then expire within ``lock_ttl``.
        """
        period = self.lock_ttl / 3
        ttl_ms = max(1, int(self.lock_ttl * 1000))
        while True:
            time.sleep(period)
            with self._held_lock:
                held = list(self._held.items())
                if not held:
                    self._renewer = None
                    return
            for name, token in held:
                try:
                    kept = self._call(lambda name=name, token=token: self._extend_script(keys=[name], args=[token, ttl_ms]))  # type: ignore[misc]
                except Exception as exc:
                    logger.debug("memollm: could not extend the Redis lock %s (%s)", name, exc)
                    continue
                if not kept:  # expired and possibly taken by another: stop extending it
                    with self._held_lock:
                        if self._held.get(name) == token:
                            del self._held[name]


class RedisLock:
    """A held single-flight lock; ``release()`` deletes it only if this holder still owns it."""

    def __init__(self, store: RedisStore, name: str, token: str) -> None:
        self.store = store
        self.name = name
        self.token = token
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.store._release(self)


_shared: dict[str, RedisStore] = {}
_shared_lock = threading.Lock()


def redis_store(url: str) -> RedisStore:
    """The process-wide ``RedisStore`` for a URL (one connection pool and back-off state per URL)."""
    store = _shared.get(url)
    if store is None:
        with _shared_lock:
            store = _shared.get(url)
            if store is None:
                store = _shared[url] = RedisStore(url)
    return store


# -- helpers -------------------------------------------------------------------------------


def _split_options(url: str) -> tuple[str, dict[str, str]]:
    """Take memollm's own query options (``namespace``, ``prefix``) out of a URL for redis-py."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = {k: v for k, v in query if k in _URL_OPTIONS}
    rest = [(k, v) for k, v in query if k not in _URL_OPTIONS]
    return _unsplit(parts._replace(query=urlencode(rest))), options


def _public_url(url: str) -> str:
    """The URL without its password (in the netloc or a ``password=`` query option)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hostport = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"]
    return _unsplit(parts._replace(netloc=netloc, query=urlencode(query)))


def _client_location(client: "redis_types.Redis") -> str:
    kw = client.get_connection_kwargs()
    user = f"{quote(kw['username'])}@" if kw.get("username") else ""
    if kw.get("path"):
        return f"unix://{user}{kw['path']}?db={kw.get('db', 0)}"
    scheme = "rediss" if "SSL" in client.connection_pool.connection_class.__name__ else "redis"
    host = str(kw.get("host", "localhost"))
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{user}{host}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def _with_query(url: str, **options: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(options.items())
    return _unsplit(parts._replace(query=urlencode(query)))


def _unsplit(parts: SplitResult) -> str:
    """``urlunsplit`` that keeps the ``//`` of ``unix:///path`` (whose host part is empty)."""
    url = urlunsplit(parts)
    if not parts.netloc and parts.scheme and not url.startswith(parts.scheme + "://"):
        url = parts.scheme + "://" + url[len(parts.scheme) + 1 :]
    return url


def _glob_escape(text: str) -> str:
    """Escape Redis MATCH pattern characters."""
    return "".join("\\" + c if c in "*?[]\\^" else c for c in text)


def _header_end(head: bytes) -> Optional[int]:
    """Bytes up to the end of an entry's header, from its fixed prefix (``None`` if not an entry)."""
    if len(head) < ENTRY_PREFIX.size:
        return None
    magic, fmt, _flags, header_len = ENTRY_PREFIX.unpack_from(head)
    if magic != MAGIC or fmt != FORMAT:
        return None
    return int(ENTRY_PREFIX.size + header_len)


def _meta_from_head(head: bytes, size: int) -> Optional[EntryMeta]:
    """An entry's metadata from its first bytes (unverified: for listing only, never for reading)."""
    end = _header_end(head)
    if end is None or end > len(head):
        return None
    try:
        return meta_from_header(msgpack.unpackb(head[ENTRY_PREFIX.size : end], raw=False), size)
    except Exception:
        return None
