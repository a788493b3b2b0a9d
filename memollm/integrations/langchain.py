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
from typing import Any, Callable, Optional, Union

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
from ..config import TTL, cache_dir_for
from ..core import MISSING, Cache, resolve
from ..modes import Mode
from ..report import warn_once
from ..stores.base import Store
from ..stores.memory import MemoryStore

__all__ = ["FUNCTION_ID", "MemollmCache"]

#: The function identity of every LangChain entry (what ``clear()`` and ``memollm ls`` go by).
FUNCTION_ID = "memollm.integrations.langchain.MemollmCache"
_KEY_IDENTITY = [FUNCTION_ID, 1]
_MAX_PENDING = 10_000
_MAX_WAITING = 64  # lookups of one request awaiting their update (a model call that failed never updates)

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
    instead of the disk store. ``mode``, ``secret``, ``max_size``, ``record_request``, ``samples``
    and ``cache_if`` (which receives the list of generations) mean what they mean for ``cache_llm``.
    """

    def __init__(
        self,
        cache_dir: Union[str, "os.PathLike[str]", None] = None,
        ttl: TTL = None,
        store: Union[str, Store, None] = None,
        *,
        mode: Union[str, Mode, None] = None,
        secret: Union[str, bytes, None] = None,
        max_size: Union[int, str, None] = None,
        record_request: bool = True,
        samples: Optional[int] = None,
        cache_if: Optional[Callable[[Any], Any]] = None,
    ) -> None:
        options = resolve(
            "MemollmCache",
            cache_dir=cache_dir,
            ttl=ttl,
            store=store,
            mode=mode,
            secret=secret,
            max_size=max_size,
            record_request=record_request,
            samples=samples,
            cache_if=cache_if,
        )
        self.core = Cache(options, "MemollmCache", _KEY_IDENTITY, FUNCTION_ID)
        # request key -> (entry key, sample, when its lookup missed) of each lookup awaiting its update
        self._pending: dict[str, list[tuple[str, Optional[int], float]]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        store = self.core.fixed_store
        where = store.location if store is not None else cache_dir_for(self.core.options.cache_dir)
        return f"MemollmCache({where!r}, ttl={self.core.ttl})"

    def key(self, prompt: str, llm_string: str) -> str:
        """The memollm key of a (prompt, llm_string) pair: an xxh3-128 hex digest."""
        return keys.make_key(_KEY_IDENTITY, _request(prompt, llm_string))

    def store(self) -> Optional[Store]:
        """The store in use (the disk store of the cache dir in effect), or ``None`` if unusable."""
        return self.core.store()

    # -- BaseCache --------------------------------------------------------------------------

    def lookup(self, prompt: str, llm_string: str) -> Optional[Sequence[Generation]]:
        """The cached generations, or ``None`` (``CacheMiss`` in offline mode)."""
        core = self.core
        mode = core.current_mode()
        if mode is Mode.OFF:
            core.bypass(FUNCTION_ID)
            return None
        base = self.key(prompt, llm_string)
        key, sample = core.sample_key(base)
        store = core.store(create=mode.writes)
        value = core.lookup(store, FUNCTION_ID, key) if store is not None and mode.reads else MISSING
        if value is not MISSING:
            try:
                return _revive(value)
            except (ValueError, TypeError, KeyError) as exc:
                where = store.location if store is not None else "?"
                warn_once(where, "corrupt", f"memollm: unreadable LangChain cache entry {key} in {where} ({exc}); calling the model")
        core.note_miss(store, FUNCTION_ID, key, observers.OFFLINE_MISS if mode is Mode.OFFLINE else observers.MISS, sample)
        if mode is Mode.OFFLINE:
            shown = prompt if len(prompt) <= 80 else prompt[:77] + "..."
            raise core.offline_miss(store, FUNCTION_ID, base, key, sample, _request(prompt, llm_string), what=f"prompt {shown!r}")
        with self._lock:
            if len(self._pending) >= _MAX_PENDING:
                self._pending.clear()
            waiting = self._pending.setdefault(base, [])
            if len(waiting) >= _MAX_WAITING:
                del waiting[0]
            waiting.append((key, sample, time.perf_counter()))
        return None

    def update(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        """Store the generations (not in the readonly, offline and off modes)."""
        core = self.core
        if not core.current_mode().writes:
            return
        base = self.key(prompt, llm_string)
        key, sample, started = base, (None if core.sampler is None else 0), None
        with self._lock:
            waiting = self._pending.get(base)
            if waiting:  # the latest lookup of this request that missed: its sample is the one answered
                key, sample, started = waiting.pop()
                if not waiting:
                    del self._pending[base]
        store = core.store()
        if store is None:
            return
        duration = 0.0 if started is None else time.perf_counter() - started
        generations = list(return_val)
        request = _request(prompt, llm_string)
        core.save(store, FUNCTION_ID, key, dumpd(generations), duration, request, sample, subject=generations, tokens=_tokens(return_val))

    def clear(self, **kwargs: Any) -> None:
        """Remove this adapter's entries (and only those) from the store in use."""
        self.core.clear(FUNCTION_ID)
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
        if isinstance(self.core.fixed_store, MemoryStore):
            return func(*args)
        return await asyncio.to_thread(func, *args)  # copies the context: cache_mode() applies


def _request(prompt: str, llm_string: str) -> Any:
    """What an entry is keyed on, and records as its request."""
    return keys.normalize({"prompt": prompt, "llm_string": llm_string}, "the prompt")


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
