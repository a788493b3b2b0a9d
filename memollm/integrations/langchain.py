"""LangChain's LLM cache on memollm's stores: ``set_llm_cache(MemollmCache())``.

Entries are ordinary memollm entries of the function ``memollm.integrations.langchain.MemollmCache``
(listed by ``memollm ls``, expired by their TTL, signed with ``MEMOLLM_SECRET``). Generations are
stored as LangChain's JSON-safe ``dumpd`` form in msgpack, and revived with ``load`` restricted to
generation and message classes: nothing is unpickled. Lookups and updates follow the cache modes
(``cache_mode()``, ``MEMOLLM_MODE``, ``--memollm-mode``); in ``offline`` mode a miss raises
``memollm.CacheMiss``.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any, Optional, Union

try:
    from langchain_core import messages as _lc_messages
    from langchain_core.caches import BaseCache
    from langchain_core.load import dumpd, load
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "memollm.integrations.langchain needs langchain-core, which is not installed; "
        "install it with: pip install 'memollm[langchain]'"
    ) from exc

from .. import keys, observers
from ..codec import UndecodableValue, UnencodableValue
from ..config import TTL, cache_dir_for, disk_store, parse_ttl, secret_bytes
from ..decorator import _resolve_store
from ..entry import KIND_VALUE, CorruptEntry, EntryMeta, decode_body, encode_value, read_meta
from ..errors import CacheMiss
from ..modes import Mode, current_mode
from ..report import warn_once
from ..stores.base import Store
from ..stores.memory import MemoryStore

__all__ = ["FUNCTION_ID", "MemollmCache"]

#: The function identity of every LangChain entry (what ``clear()`` and ``memollm ls`` go by).
FUNCTION_ID = "memollm.integrations.langchain.MemollmCache"
_KEY_IDENTITY = [FUNCTION_ID, 1]
_MAX_PENDING = 10_000

#: Classes ``load`` may revive from an entry: generations and chat messages, nothing else.
ALLOWED_CLASSES: tuple[type, ...] = (
    Generation,
    GenerationChunk,
    ChatGeneration,
    ChatGenerationChunk,
    *(cls for cls in vars(_lc_messages).values() if isinstance(cls, type) and issubclass(cls, _lc_messages.BaseMessage)),
)
_LOAD_TAKES_ALLOWLIST = "allowed_objects" in inspect.signature(load).parameters


class MemollmCache(BaseCache):
    """A LangChain LLM cache in a memollm store (``set_llm_cache(MemollmCache())``).

    ``cache_dir``: the disk store's directory (default: ``MEMOLLM_CACHE_DIR``, else the user cache
    dir; the pytest marker's ``cache_dir`` overrides it). ``ttl``: seconds or a ``timedelta``
    (``None``: never expire). ``store``: ``"memory"``, a ``redis://`` URL or a memollm ``Store``
    instead of the disk store.
    """

    def __init__(
        self,
        cache_dir: Union[str, "os.PathLike[str]", None] = None,
        ttl: TTL = None,
        store: Union[str, Store, None] = None,
    ) -> None:
        if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(f"MemollmCache(cache_dir=...) must be a path (str or os.PathLike), not {type(cache_dir).__name__}")
        self.ttl = parse_ttl(ttl)
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self.fixed_store = _resolve_store(store, cache_dir)
        self.secret = secret_bytes(None)
        self._pending: dict[str, float] = {}  # key -> when its lookup missed (the call's duration)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = self.fixed_store.location if self.fixed_store is not None else cache_dir_for(self.cache_dir)
        return f"MemollmCache({where!r}, ttl={self.ttl})"

    # -- helpers ----------------------------------------------------------------------------

    def key(self, prompt: str, llm_string: str) -> str:
        """The memollm key of a (prompt, llm_string) pair: an xxh3-128 hex digest."""
        return keys.make_key(_KEY_IDENTITY, keys.normalize({"prompt": prompt, "llm_string": llm_string}, "the prompt"))

    def store(self) -> Optional[Store]:
        """The store in use (the disk store of the cache dir in effect), or ``None`` if unusable."""
        if self.fixed_store is not None:
            return self.fixed_store
        path = cache_dir_for(self.cache_dir)
        try:
            return disk_store(path)
        except Exception as exc:
            warn_once(path, "open", f"memollm: cannot use the cache dir {path} ({exc}); LangChain calls go to the provider uncached")
            return None

    def _read(self, store: Store, key: str) -> Optional[list[Generation]]:
        try:
            data = store.get(FUNCTION_ID, key)
        except Exception as exc:
            warn_once(store.location, "read", f"memollm: cannot read the cache at {store.location} ({exc}); treating lookups as misses")
            return None
        if data is None:
            return None
        try:
            meta, body = read_meta(data, self.secret)
            if meta.key != key or meta.expired():
                return None
            generations = _revive(decode_body(meta, body))
        except (CorruptEntry, UndecodableValue, ValueError, TypeError, KeyError) as exc:
            warn_once(store.location, "corrupt", f"memollm: unreadable LangChain cache entry {key} in {store.location} ({exc}); calling the model")
            return None
        note_hit = getattr(store, "note_hit", None)
        if note_hit is not None:
            note_hit(meta)
        if observers.read_observers:
            observers.notify_read(store, meta)
        return generations

    def _miss(self, store: Optional[Store], key: str, mode: Mode, prompt: str) -> None:
        note_miss = getattr(store, "note_miss", None)
        if note_miss is not None:
            note_miss(FUNCTION_ID)
        notify_miss = getattr(observers, "notify_miss", None)
        if notify_miss is not None and getattr(observers, "miss_observers", None):
            notify_miss(store, FUNCTION_ID, key)
        if mode is Mode.OFFLINE:
            where = store.location if store is not None else cache_dir_for(self.cache_dir)
            shown = prompt if len(prompt) <= 80 else prompt[:77] + "..."
            raise CacheMiss(
                f"memollm: no cached entry for {FUNCTION_ID} (key {key}, prompt {shown!r}) in {where}, and the "
                "cache mode is 'offline'. Record it by running this call once with the cache mode 'readwrite' "
                "(MEMOLLM_MODE=readwrite, or --memollm-mode=readwrite under pytest) and provider access, "
                "then commit or copy the cache dir.",
                function=FUNCTION_ID,
                key=key,
                cache_dir=where,
            )
        with self._lock:
            if len(self._pending) >= _MAX_PENDING:
                self._pending.clear()
            self._pending[key] = time.perf_counter()

    # -- BaseCache --------------------------------------------------------------------------

    def lookup(self, prompt: str, llm_string: str) -> Optional[Sequence[Generation]]:
        """The cached generations, or ``None`` (``CacheMiss`` in offline mode)."""
        mode = current_mode()
        if mode is Mode.OFF:
            return None
        key = self.key(prompt, llm_string)
        store = self.store()
        generations = self._read(store, key) if store is not None and mode.reads else None
        if generations is None:
            self._miss(store, key, mode, prompt)
        return generations

    def update(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        """Store the generations (not in the readonly, offline and off modes)."""
        if not current_mode().writes:
            return
        key = self.key(prompt, llm_string)
        with self._lock:
            started = self._pending.pop(key, None)
        store = self.store()
        if store is None:
            return
        now = time.time()
        duration = 0.0 if started is None else time.perf_counter() - started
        meta = EntryMeta(FUNCTION_ID, key, now, None if self.ttl is None else now + self.ttl, duration, KIND_VALUE, _tokens(return_val))
        try:
            data = encode_value(meta, dumpd(list(return_val)), self.secret)
        except UnencodableValue as exc:
            warn_once(FUNCTION_ID, "unencodable", f"memollm: LangChain generations could not be cached: {exc}")
            return
        try:
            store.set(meta, data)
        except Exception as exc:
            warn_once(store.location, "write", f"memollm: cannot write to the cache at {store.location} ({exc}); results are returned but not cached")

    def clear(self, **kwargs: Any) -> None:
        """Remove this adapter's entries (and only those) from the store in use."""
        store = self.store()
        if store is not None:
            store.clear(FUNCTION_ID)
        with self._lock:
            self._pending.clear()

    async def alookup(self, prompt: str, llm_string: str) -> Optional[Sequence[Generation]]:
        return await self._run(self.lookup, prompt, llm_string)  # type: ignore[no-any-return]

    async def aupdate(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        await self._run(self.update, prompt, llm_string, return_val)

    async def aclear(self, **kwargs: Any) -> None:
        await self._run(self.clear)

    async def _run(self, func: Any, *args: Any) -> Any:
        """Run a store operation off the event loop (the memory store is fast enough to run inline)."""
        if isinstance(self.fixed_store, MemoryStore):
            return func(*args)
        return await asyncio.to_thread(func, *args)  # copies the context: cache_mode() applies


def _revive(value: Any) -> list[Generation]:
    if not isinstance(value, list):
        raise ValueError("not a list of generations")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The function `load` is in beta")
        revived = load(value, allowed_objects=ALLOWED_CLASSES) if _LOAD_TAKES_ALLOWLIST else load(value)
    if not all(isinstance(g, Generation) for g in revived):
        raise ValueError("not a list of generations")
    return revived  # type: ignore[no-any-return]


def _tokens(generations: Sequence[Generation]) -> int:
    """Tokens reported by chat generations (``message.usage_metadata``)."""
    total = 0
    for generation in generations:
        usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
        if isinstance(usage, dict):
            count = usage.get("total_tokens") or (usage.get("input_tokens") or 0) + (usage.get("output_tokens") or 0)
            total += count if isinstance(count, int) else 0
    return total
