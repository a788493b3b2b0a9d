"""Exceptions and warning categories raised by memollm."""

from __future__ import annotations


class CacheMiss(LookupError):
    """Raised in ``offline`` mode when a call has no recorded entry."""

    def __init__(self, message: str, *, function: str = "", key: str = "", cache_dir: str = "") -> None:
        super().__init__(message)
        self.function = function
        self.key = key
        self.cache_dir = cache_dir


class CacheWarning(UserWarning):
    """A cache problem that memollm worked around (the call still returned)."""


class UncacheableValueWarning(CacheWarning):
    """A result could not be stored; it was returned but not cached."""
