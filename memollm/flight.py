"""Single flight: concurrent identical misses make one provider call; the others wait for it.

Within a process, the first caller of a key becomes the leader and the others wait on an
event (threads block on it; asyncio tasks poll it with ``asyncio.sleep``, never blocking the
loop). Across processes, the leader also holds a per-key ``flock`` in the cache dir, which the
OS releases if the holder dies. Every wait has a timeout, after which the caller proceeds on its
own: a stuck leader delays others, it never blocks them for good.

A caller never waits for itself: the same thread (and asyncio task) asking again for a key it
leads — two interleaved identical streams, a provider that recurses — leads a private flight.
A lock file that cannot be created (read-only or full disk) is reported once and skipped.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any, Optional

from .report import warn_once
from .stores.backend import make_private_dirs

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: in-process single flight only
    fcntl = None  # type: ignore[assignment]

DEFAULT_TIMEOUT = 300.0


def _caller() -> tuple[int, Any]:
    """Who is asking: the thread, and the asyncio task if one is running in it."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return threading.get_ident(), task


class Flight(threading.Event):
    """The event waiters wait on, remembering who leads."""

    def __init__(self, owner: tuple[int, Any]) -> None:
        super().__init__()
        self.owner = owner


class _Flights:
    """The in-process table of keys being computed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, Flight] = {}

    def lead(self, key: str) -> tuple[bool, threading.Event]:
        """``(True, event)`` if the caller leads ``key``; else ``(False, the leader's event)``."""
        caller = _caller()
        with self._lock:
            event = self._events.get(key)
            if event is None:
                event = self._events[key] = Flight(caller)
                return True, event
        if event.owner[0] == caller[0] and event.owner[1] is caller[1]:
            return True, Flight(caller)  # waiting for ourselves would deadlock: lead privately
        return False, event

    def land(self, key: str, event: threading.Event) -> None:
        """The leader is done (stored, failed or abandoned): wake the waiters."""
        with self._lock:
            if self._events.get(key) is event:
                del self._events[key]
        event.set()

    def _reset(self) -> None:
        """In a forked child: the parent's leaders do not exist here, nobody would wake us."""
        self._lock = threading.Lock()
        self._events = {}


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


_held: dict[str, "FileLock"] = {}  # lock files this process holds, by path
_held_lock = threading.Lock()


class FileLock:
    """An exclusive ``flock`` on ``path``; released on ``release()`` or when the process dies."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: Optional[int] = None
        self._locked = False

    def try_acquire(self) -> bool:
        """True once locked; False while another holds it. ``OSError`` if the file cannot be made."""
        if fcntl is None:
            return True
        if self._fd is None:
            make_private_dirs(os.path.dirname(self.path))
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            current: Optional[int] = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(self._fd).st_ino:
            # The holder removed the file after we opened it: this lock is on a file nobody else
            # will ever lock. Drop it; the next try opens (or creates) the file at the path.
            os.close(self._fd)
            self._fd = None
            return False
        self._locked = True
        with _held_lock:
            _held[self.path] = self
        return True

    def release(self) -> None:
        """Unlock; the holder also removes the file so lock files do not pile up, one per key.

        A process that opened the file before it was removed notices when it gets the lock
        (the path no longer names that file) and tries again on the path, so one process leads
        at a time; like every lock holder it looks the entry up first.
        """
        with _held_lock:
            if _held.get(self.path) is self:
                del _held[self.path]
        if self._fd is not None:
            if self._locked:
                self._locked = False
                try:
                    if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                        os.unlink(self.path)
                except OSError:
                    pass
            try:
                if fcntl is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def _forget(self) -> None:
        """In a forked child: close the inherited descriptor without unlocking the parent's lock."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


def _start(path: str) -> tuple[Optional[FileLock], bool]:
    """``(lock, done)``: a lock to poll, or ``done`` with no lock (held here already, or unusable)."""
    if path in _held:  # this process leads the key already (a private flight): the flock is ours
        return None, True
    lock = FileLock(path)
    try:
        if lock.try_acquire():
            return lock, True
    except OSError as exc:
        lock.release()
        location = os.path.dirname(os.path.dirname(path))  # <cache dir>/locks/<key>.lock
        warn_once(
            location,
            "write",
            f"memollm: cannot write to the cache at {location} ({exc}); calls still return, "
            "but are not cached or coordinated with other processes",
        )
        return None, True
    return lock, False


def _poll(lock: FileLock, deadline: float) -> tuple[Optional[FileLock], bool, float]:
    try:
        if lock.try_acquire():
            return lock, True, 0.0
    except OSError:
        lock.release()
        return None, True, 0.0
    if time.monotonic() >= deadline:
        lock.release()
        return None, True, 0.0
    return None, False, max(0.0, deadline - time.monotonic())


def lock_file(path: str, deadline: float) -> Optional[FileLock]:
    """Acquire the lock at ``path``, or ``None`` if ``deadline`` (monotonic) passes first.

    Also ``None`` (proceed unlocked) when the lock file cannot be created, or when this process
    holds it already.
    """
    lock, done = _start(path)
    if done or lock is None:
        return lock
    delay = 0.001
    while True:
        got, done, remaining = _poll(lock, deadline)
        if done:
            return got
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)


async def lock_file_async(path: str, deadline: float) -> Optional[FileLock]:
    """``lock_file`` for coroutines: polls with ``asyncio.sleep``."""
    lock, done = _start(path)
    if done or lock is None:
        return lock
    delay = 0.001
    while True:
        got, done, remaining = _poll(lock, deadline)
        if done:
            return got
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)


def _after_fork_in_child() -> None:
    FLIGHTS._reset()
    global _held_lock
    _held_lock = threading.Lock()
    for lock in list(_held.values()):
        lock._forget()
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
