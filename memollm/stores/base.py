"""The store interface: a mapping from (function, key) to entry bytes, with expiry."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from ..entry import EntryMeta


@dataclass
class PruneReport:
    """What ``Store.prune`` removed."""

    entries: int = 0  #: entries removed: ``expired + evicted``
    bytes: int = 0
    leftovers: int = 0  #: temporary files of interrupted writes
    stale_rows: int = 0  #: index rows whose entry file was gone
    expired: int = 0  #: entries removed because they had expired
    evicted: int = 0  #: least recently used entries evicted to respect max_size

    def removed(self, size: int, expired: bool) -> None:
        """Count one entry of ``size`` bytes removed (expired, or else evicted)."""
        self.entries += 1
        self.bytes += size
        if expired:
            self.expired += 1
        else:
            self.evicted += 1

    def add(self, other: "PruneReport") -> "PruneReport":
        """Add ``other``'s counts to this report; returns it."""
        for name in ("entries", "bytes", "leftovers", "stale_rows", "expired", "evicted"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


class Store(abc.ABC):
    """A place to keep entries. Implementations: ``DiskStore``, ``MemoryStore``, ``RedisStore``.

    ``function`` is the decorated function's identity (``module.qualname``); ``key`` the
    32-hex-character cache key. Values are opaque entry bytes (see ``memollm.entry``), which
    carry their own expiry; a store may also expire them itself.
    """

    #: Shown in messages (a path or URL).
    location: str = ""

    @abc.abstractmethod
    def get(self, function: str, key: str) -> Optional[bytes]:
        """Entry bytes, or ``None`` if absent."""

    @abc.abstractmethod
    def set(self, meta: EntryMeta, data: bytes) -> None:
        """Store ``data`` for ``(meta.function, meta.key)``; ``meta.expires`` is absolute epoch seconds."""

    @abc.abstractmethod
    def delete(self, function: str, key: str) -> bool:
        """Remove one entry; True if it existed."""

    @abc.abstractmethod
    def clear(self, function: Optional[str] = None) -> int:
        """Remove every entry (of ``function`` if given); returns how many."""

    @abc.abstractmethod
    def entries(self, function: Optional[str] = None) -> Iterator[EntryMeta]:
        """Metadata of the stored entries (of ``function`` if given)."""

    def count(self, function: Optional[str] = None) -> int:
        """Number of entries (of ``function`` if given)."""
        return sum(1 for _ in self.entries(function))

    def prune(self) -> PruneReport:
        """Remove expired entries and leftovers."""
        return PruneReport()

    #: Optional hooks, ``None`` when a store has no use for them (callers check, so a hit
    #: does not pay for a no-op call). Stores that keep usage define them as methods:
    #: ``note_hit(meta)`` on every hit (it is on the fast path: keep it cheap) and
    #: ``note_miss(function)`` on every miss that goes to the provider.
    note_hit: Optional[Callable[[EntryMeta], None]] = None
    note_miss: Optional[Callable[[str], None]] = None

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections and files."""
