"""Single flight: concurrent identical misses make one provider call; the others wait for it.

Within a process, the first caller of a key becomes the leader and the others wait on an
event (threads block on it; asyncio tasks poll it with ``asyncio.sleep``, never blocking the
loop). Across processes, the leader also holds a per-key ``flock`` in the cache dir, which the
OS releases if the holder dies. Every wait has a timeout, after which the caller proceeds on its
own: a stuck leader delays others, it never blocks them for good.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Optional

from .stores.backend import make_private_dirs

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: in-process single flight only
    fcntl = None  # type: ignore[assignment]

DEFAULT_TIMEOUT = 300.0


class _Flights:
    """The in-process table of keys being computed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}

    def lead(self, key: str) -> tuple[bool, threading.Event]:
        """``(True, event)`` if the caller leads ``key``; else ``(False, the leader's event)``."""
        with self._lock:
            event = self._events.get(key)
            if event is not None:
                return False, event
            event = self._events[key] = threading.Event()
            return True, event

    def land(self, key: str, event: threading.Event) -> None:
        """The leader is done (stored, failed or abandoned): wake the waiters."""
        with self._lock:
            if self._events.get(key) is event:
                del self._events[key]
        event.set()


FLIGHTS = _Flights()


async def wait_async(event: threading.Event, timeout: float) -> bool:
    """Wait for a ``threading.Event`` without blocking the event loop."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not event.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.02)
    return True


class FileLock:
    """An exclusive ``flock`` on ``path``; released on ``release()`` or when the process dies."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: Optional[int] = None

    def try_acquire(self) -> bool:
        if fcntl is None:
            return True
        if self._fd is None:
            make_private_dirs(os.path.dirname(self.path))
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def release(self) -> None:
        if self._fd is not None:
            try:
                if fcntl is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None


def lock_file(path: str, deadline: float) -> Optional[FileLock]:
    """Acquire the lock at ``path``, or ``None`` if ``deadline`` (monotonic) passes first."""
    lock = FileLock(path)
    delay = 0.001
    while not lock.try_acquire():
        if time.monotonic() >= deadline:
            lock.release()
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return lock


async def lock_file_async(path: str, deadline: float) -> Optional[FileLock]:
    """``lock_file`` for coroutines: polls with ``asyncio.sleep``."""
    lock = FileLock(path)
    delay = 0.001
    while not lock.try_acquire():
        if time.monotonic() >= deadline:
            lock.release()
            return None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
    return lock
