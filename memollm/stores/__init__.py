"""Stores: where entries live. ``DiskStore`` (default), ``MemoryStore``, ``RedisStore``, ``TieredStore``."""

from __future__ import annotations

from typing import Any

from .base import PruneReport, Store
from .disk import DiskStore
from .memory import MemoryStore

__all__ = ["DiskStore", "MemoryStore", "PruneReport", "RedisStore", "Store", "TieredStore"]


def __getattr__(name: str) -> Any:
    # RedisStore needs the optional ``redis`` package: imported on first use only.
    if name == "RedisStore":
        from .redis import RedisStore

        return RedisStore
    if name == "TieredStore":
        from .tiered import TieredStore

        return TieredStore
    raise AttributeError(f"module 'memollm.stores' has no attribute {name!r}")
