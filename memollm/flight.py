"""Single flight: concurrent identical misses make one provider call; the others wait for it.

Within a process, the first caller of a key becomes the leader and the others wait on an
event (threads block on it; asyncio tasks poll it with ``asyncio.sleep``, never blocking the
loop). Across processes, the leader also holds a lock in the cache dir, which the OS releases
if the holder dies (``kill -9`` included). On Linux that is an open-file-description byte-range
lock (``F_OFD_SETLK``) on one byte of one of a few stripe files, the byte chosen by the key's
hash: no file is created or removed per miss (creating a file costs a few hundred µs on common
file systems). Elsewhere, or where the file system refuses such locks, it is a ``flock`` on a
per-key file its holder removes. Every wait has a timeout, after which the caller proceeds on its
own: a stuck leader delays others, it never blocks them for good.

A caller never waits for itself: the same thread (and asyncio task) asking again for a key it
leads — two interleaved identical streams, a provider that recurses — leads a private flight.
A lock file that cannot be created (read-only or full disk) is reported once and skipped.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import sys
import threading
import time
from typing import Any, Optional, Union

import xxhash

from .report import warn_once
from .stores.backend import make_private_dirs

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: in-process single flight only
    fcntl = None  # type: ignore[assignment]

DEFAULT_TIMEOUT = 300.0
STRIPES = 16  # stripe files per lock dir (OFD locks)
_OFD_SETLK: int = getattr(fcntl, "F_OFD_SETLK", 0) if fcntl is not None and sys.platform.startswith("linux") else 0
_ofd_refused: set[str] = set()  # lock dirs whose file system refused OFD locks: flock files there


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


_held: dict[str, Any] = {}  # lock files this process holds, by path
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


class _Flock(ctypes.Structure):
    """``struct flock`` (ctypes lays it out as the platform's C compiler does)."""

    _fields_ = [
        ("l_type", ctypes.c_short),
        ("l_whence", ctypes.c_short),
        ("l_start", ctypes.c_int64),
        ("l_len", ctypes.c_int64),
        ("l_pid", ctypes.c_int),
    ]


class RangeLock:
    """An exclusive OFD lock on one byte of a stripe file beside ``path``, standing for ``path``.

    Every acquisition opens its own descriptor, so the lock excludes other threads of this
    process as well as other processes; closing it (or the process dying) releases it. The
    stripe files stay (``STRIPES`` of them per dir): nothing is created or removed per key.
    """

    def __init__(self, path: str) -> None:
        self.path = path  # the lock's name, as FileLock's
        directory, name = os.path.split(path)
        h = xxhash.xxh3_64_intdigest(name.encode())
        self.file = os.path.join(directory, f"stripe-{h % STRIPES:02d}.lock")
        self._offset = (h >> 8) & (2**62 - 1)  # fcntl offsets are signed 64-bit
        self._fd: Optional[int] = None
        self._locked = False

    def _request(self, kind: int) -> bytes:
        return bytes(_Flock(kind, os.SEEK_SET, self._offset, 1, 0))

    def try_acquire(self) -> bool:
        """True once locked; False while another holds it. ``OSError`` if the file cannot be made;
        ``_Unsupported`` if the file system refuses OFD locks."""
        if self._fd is None:
            try:
                self._fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            except FileNotFoundError:
                make_private_dirs(os.path.dirname(self.file))
                self._fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.fcntl(self._fd, _OFD_SETLK, self._request(fcntl.F_WRLCK))
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            if exc.errno in (errno.EINVAL, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise _Unsupported(str(exc)) from exc
            raise
        self._locked = True
        with _held_lock:
            _held[self.path] = self
        return True

    def release(self) -> None:
        """Unlock and close (closing alone would release it too)."""
        with _held_lock:
            if _held.get(self.path) is self:
                del _held[self.path]
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._locked:
                self._locked = False
                fcntl.fcntl(fd, _OFD_SETLK, self._request(fcntl.F_UNLCK))
        except OSError:
            pass
        finally:
            os.close(fd)

    def _forget(self) -> None:
        """In a forked child: close the inherited descriptor. The parent's descriptor keeps the
        open file description, so its lock stays (OFD locks belong to the description)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


class _Unsupported(OSError):
    """The file system refuses OFD locks (some network file systems): use flock files there."""


Lock = Union[FileLock, RangeLock]


def _new_lock(path: str) -> Lock:
    if _OFD_SETLK and os.path.dirname(path) not in _ofd_refused:
        return RangeLock(path)
    return FileLock(path)


def _try(lock: Lock) -> tuple[Lock, bool]:
    """``lock.try_acquire()``; a refused OFD lock turns into a flock file for that dir, for good."""
    try:
        return lock, lock.try_acquire()
    except _Unsupported:
        lock.release()
        _ofd_refused.add(os.path.dirname(lock.path))
        fallback = FileLock(lock.path)
        try:
            return fallback, fallback.try_acquire()
        except OSError:
            fallback.release()
            raise


def _start(path: str) -> tuple[Optional[Lock], bool]:
    """``(lock, done)``: a lock to poll, or ``done`` with no lock (held here already, or unusable)."""
    if path in _held:  # this process leads the key already (a private flight): the lock is ours
        return None, True
    lock = _new_lock(path)
    try:
        lock, got = _try(lock)
        if got:
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


def _poll(lock: Lock, deadline: float) -> tuple[Lock, Optional[bool]]:
    """``(lock, True)`` once acquired, ``(lock, False)`` to try again, ``(lock, None)``: give up
    (deadline passed, or the lock file became unusable; the lock is released)."""
    try:
        lock, got = _try(lock)
        if got:
            return lock, True
    except OSError:
        lock.release()
        return lock, None
    if time.monotonic() >= deadline:
        lock.release()
        return lock, None
    return lock, False


def lock_file(path: str, deadline: float) -> Optional[Lock]:
    """Acquire the lock at ``path``, or ``None`` if ``deadline`` (monotonic) passes first.

    Also ``None`` (proceed unlocked) when the lock file cannot be created, or when this process
    holds it already.
    """
    lock, done = _start(path)
    if done or lock is None:
        return lock
    delay = 0.001
    while True:
        lock, got = _poll(lock, deadline)
        if got is not False:
            return lock if got else None
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.05)


async def lock_file_async(path: str, deadline: float) -> Optional[Lock]:
    """``lock_file`` for coroutines: polls with ``asyncio.sleep``."""
    lock, done = _start(path)
    if done or lock is None:
        return lock
    delay = 0.001
    while True:
        lock, got = _poll(lock, deadline)
        if got is not False:
            return lock if got else None
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
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
