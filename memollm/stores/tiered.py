"""A local store in front of a shared one: read-through, write-through.

Reads try the local store first (an unexpired, intact entry is served from it); on a local
miss the remote store answers and its entry is copied locally. Writes go to both. A member of
a team who repeats their own calls then pays neither the provider nor the network.

The local copy is a cache of the remote one: an entry invalidated or cleared on another machine
stays in this machine's local tier until it expires or is cleared here. A failing local tier is
reported once and bypassed; it never hides the remote store.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterator, Optional, Union

from ..entry import CorruptEntry, EntryMeta, read_meta
from ..report import warn_once
from .base import PruneReport, Store


def as_local_store(local: Union[str, "os.PathLike[str]", Store, None]) -> Optional[Store]:
    """A cache dir becomes the process-wide disk store of that dir; a ``Store`` is used as is."""
    if local is None or isinstance(local, Store):
        return local
    if isinstance(local, (str, os.PathLike)):
        from ..config import disk_store

        return disk_store(os.path.abspath(os.path.expanduser(os.fspath(local))))
    raise TypeError(f"local= must be a cache dir or a memollm Store, not {type(local).__name__}")


def read_through(local: Store, remote_get: Callable[[str, str], Optional[bytes]], function: str, key: str) -> Optional[bytes]:
    """The local entry if fresh, else the remote one (copied into ``local``)."""
    try:
        data = local.get(function, key)
    except Exception as exc:
        warn_once(
            local.location, "local-read", f"memollm: cannot read the local tier at {local.location} ({exc}); using the shared store only"
        )
        data = None
    if data is not None and _fresh_meta(data) is not None:
        return data
    data = remote_get(function, key)
    if data is not None:
        meta = _fresh_meta(data)
        if meta is not None:
            _local_set(local, meta, data)
    return data


def write_through(local: Store, remote_set: Callable[[EntryMeta, bytes], None], meta: EntryMeta, data: bytes) -> None:
    """Write to ``local`` (failures reported once) and to the remote store (failures raise)."""
    _local_set(local, meta, data)
    remote_set(meta, data)


def delete_local(local: Store, function: str, key: str) -> bool:
    try:
        return local.delete(function, key)
    except Exception as exc:
        warn_once(local.location, "local-delete", f"memollm: cannot delete from the local tier at {local.location} ({exc})")
        return False


def clear_local(local: Store, function: Optional[str]) -> None:
    try:
        local.clear(function)
    except Exception as exc:
        warn_once(local.location, "local-clear", f"memollm: cannot clear the local tier at {local.location} ({exc})")


def _local_set(local: Store, meta: EntryMeta, data: bytes) -> None:
    try:
        local.set(meta, data)
    except Exception as exc:
        warn_once(
            local.location,
            "local-write",
            f"memollm: cannot write to the local tier at {local.location} ({exc}); using the shared store only",
        )


def _fresh_meta(data: bytes) -> Optional[EntryMeta]:
    """The metadata of an intact, unexpired entry (signatures are checked later, by the reader)."""
    try:
        meta, _ = read_meta(data)
    except CorruptEntry:
        return None
    return None if meta.expired(time.time()) else meta


class TieredStore(Store):
    """``local`` (a cache dir or a ``Store``) in front of ``remote`` (a ``Store`` or a redis:// URL).

    Lists, counts and single-flight locks come from the remote store, the shared truth.
    """

    def __init__(self, local: Union[str, "os.PathLike[str]", Store], remote: Union[str, Store]) -> None:
        local_store = as_local_store(local)
        if local_store is None:
            raise TypeError("TieredStore(local, remote): local must be a cache dir or a Store")
        self.local: Store = local_store
        if isinstance(remote, str):
            from .redis import RedisStore

            remote = RedisStore(remote)
        if not isinstance(remote, Store):
            raise TypeError(f"TieredStore(local, remote): remote must be a Store or a redis:// URL, not {type(remote).__name__}")
        self.remote: Store = remote
        self.location = remote.location

    def __repr__(self) -> str:
        return f"TieredStore(local={self.local.location!r}, remote={self.remote.location!r})"

    def get(self, function: str, key: str) -> Optional[bytes]:
        return read_through(self.local, self.remote.get, function, key)

    def set(self, meta: EntryMeta, data: bytes) -> None:
        write_through(self.local, self.remote.set, meta, data)

    def delete(self, function: str, key: str) -> bool:
        local_existed = delete_local(self.local, function, key)
        return self.remote.delete(function, key) or local_existed

    def clear(self, function: Optional[str] = None) -> int:
        clear_local(self.local, function)
        return self.remote.clear(function)

    def entries(self, function: Optional[str] = None) -> Iterator[EntryMeta]:
        return self.remote.entries(function)

    def count(self, function: Optional[str] = None) -> int:
        return self.remote.count(function)

    def prune(self) -> PruneReport:
        return PruneReport().add(self.local.prune()).add(self.remote.prune())

    def close(self) -> None:
        self.remote.close()

    def note_hit(self, meta: EntryMeta) -> None:
        for store in (self.local, self.remote):
            note_hit = getattr(store, "note_hit", None)
            if note_hit is not None:
                note_hit(meta)

    def note_miss(self, function: str) -> None:
        for store in (self.local, self.remote):
            note_miss = getattr(store, "note_miss", None)
            if note_miss is not None:
                note_miss(function)

    def acquire_lock(self, key: str, deadline: float) -> Any:
        """The remote store's cross-machine lock, else the local store's file lock."""
        acquire = getattr(self.remote, "acquire_lock", None)
        if acquire is not None:
            return acquire(key, deadline)
        lock_path = getattr(self.local, "lock_path", None)
        if lock_path is None:
            return None
        from .. import flight

        return flight.lock_file(lock_path(key), deadline)

    async def acquire_lock_async(self, key: str, deadline: float) -> Any:
        acquire = getattr(self.remote, "acquire_lock_async", None)
        if acquire is not None:
            return await acquire(key, deadline)
        lock_path = getattr(self.local, "lock_path", None)
        if lock_path is None:
            return None
        from .. import flight

        return await flight.lock_file_async(lock_path(key), deadline)


__all__ = ["TieredStore", "as_local_store", "read_through", "write_through"]
