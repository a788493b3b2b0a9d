"""A joblib store backend that keeps raw entry bytes instead of pickles.

joblib's ``FileSystemStoreBackend`` gives the location layout (``<cache_dir>/joblib/<function>/
<call id>/``), the concurrency-safe write (a uniquely named temporary file, then an atomic
rename) and item management. Its ``dump_item``/``load_item`` pickle; ours write and read bytes,
so nothing loaded from a cache dir is ever unpickled. Registered as joblib backend ``"memollm"``.

Temporary files are written in one staging dir, ``<cache_dir>/tmp/``, then renamed into place:
the leftovers of killed writers are all there, so ``prune`` finds them without walking every
entry.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
from typing import Any, Iterator, Optional

import xxhash
from joblib import register_store_backend
from joblib._store_backends import FileSystemStoreBackend, concurrency_safe_write

ITEM_FILENAME = "output.msgpack"
WRITE_ATTEMPTS = 10  # each lost to a concurrent invalidate removing the entry's dir; many processes invalidating at once take several
STAGING_DIRNAME = "tmp"  # beside joblib's location, in the cache dir
ENTRY_READ_MAX = 2**30
"""Bytes: a larger file at an entry path is not read (a sparse or runaway file would exhaust
memory), and no larger entry is written."""
# Never follow a symbolic link (to /dev/zero, say), never wait for a FIFO's writer.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_KEY_RE = re.compile(r"^[0-9a-f]{32}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class NotAnEntryFile(OSError):
    """Something other than a regular file of bounded size at an entry path: a FIFO, a
    symbolic link, a directory, a device. Never read; a miss, and ``prune`` removes it."""

    def __init__(self, path: str, what: str, regular: bool = False) -> None:
        super().__init__(errno.EINVAL, what if regular else f"{what}, not a regular file", path)
        self.path = path
        self.what = what


def describe_file(mode: int) -> str:
    """What a non-regular file is, for messages."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def read_item_file(path: str, lstat: Optional[os.stat_result] = None, limit: int = ENTRY_READ_MAX) -> Optional[tuple[bytes, os.stat_result]]:
    """The bytes of the regular file at ``path`` and its ``fstat``, or ``None`` if there is none.

    Opened without following a symbolic link and without blocking, checked to be a regular
    file, and read no further than its size (at most ``limit``): a FIFO, a link to /dev/zero or
    a directory can neither hang nor exhaust memory (``NotAnEntryFile``). ``lstat``: the caller's
    ``os.lstat`` of the path, when it has one (a non-regular file is then not even opened).
    """
    if lstat is not None and not stat.S_ISREG(lstat.st_mode):
        raise NotAnEntryFile(path, describe_file(lstat.st_mode))
    try:
        fd = os.open(path, _READ_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symbolic link
            raise NotAnEntryFile(path, "a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotAnEntryFile(path, describe_file(st.st_mode))
        if st.st_size > limit:
            raise NotAnEntryFile(path, f"a file of {st.st_size} bytes, larger than any entry ({limit} bytes)", regular=True)
        data = os.read(fd, st.st_size)
        if len(data) < st.st_size:  # (a short read: rare, for a regular file)
            parts = [data]
            got = len(data)
            while got < st.st_size:
                part = os.read(fd, st.st_size - got)
                if not part:
                    break  # truncated under us: shorter bytes fail their checksum
                parts.append(part)
                got += len(part)
            data = b"".join(parts)
        return data, st
    finally:
        os.close(fd)


def is_entry_file(path: str) -> Optional[bool]:
    """``True``: a regular file (a link is not followed) of at most ``ENTRY_READ_MAX`` bytes;
    ``False``: something else, never read; ``None``: nothing there."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return stat.S_ISREG(st.st_mode) and st.st_size <= ENTRY_READ_MAX


def remove_any(path: str) -> bool:
    """Remove whatever is at ``path`` (a file, a link itself, a FIFO, a directory tree); whether
    something was removed."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def function_dirname(function: str) -> str:
    """A portable directory name for a function identity (``module.qualname``)."""
    safe = _UNSAFE.sub("_", function)
    if safe != function or len(safe) > 120:
        safe = f"{safe[:100]}-{xxhash.xxh3_64_hexdigest(function.encode())[:8]}"
    return safe


def call_id(function: str, key: str) -> tuple[str, str, str]:
    """joblib call id of an entry: function dir, a two-character shard, the key."""
    return (function_dirname(function), key[:2], key)


def make_private_dirs(path: str) -> None:
    """``mkdir -p`` with mode 0700 for every directory created (intermediate ones included)."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        make_private_dirs(parent)
    for attempt in range(3):
        try:
            os.mkdir(path, 0o700)
            return
        except FileExistsError:
            if os.path.isdir(path):
                return
            if attempt == 2 or os.path.lexists(path):  # a file or link in the way: not ours to remove
                raise
            # else a concurrent delete removed the directory between the two calls: make it again


class MsgpackStoreBackend(FileSystemStoreBackend):
    """File-system store backend for opaque entry bytes (files 0600, directories 0700)."""

    def configure(self, location: str, verbose: int = 0, backend_options: Optional[dict[str, Any]] = None) -> None:
        # Unlike joblib's, writes no ``.gitignore`` of ``*``: cache dirs are meant to be committable.
        self.location = location
        self.staging = os.path.join(os.path.dirname(location), STAGING_DIRNAME)
        self.verbose = verbose
        self.compress = False
        self.mmap_mode = None
        make_private_dirs(location)

    def create_location(self, location: str) -> None:
        make_private_dirs(location)

    def item_path(self, call: tuple[str, ...]) -> str:
        return os.path.join(self.location, *call, ITEM_FILENAME)

    def dump_item(self, call_id: tuple[str, ...], item: bytes, verbose: int = 0) -> None:  # type: ignore[override]
        """Write ``item`` atomically; raises ``OSError`` on failure (the caller reports it)."""
        if len(item) > ENTRY_READ_MAX:
            raise ValueError(f"an entry of {len(item)} bytes is larger than memollm stores ({ENTRY_READ_MAX} bytes)")
        item_dir = os.path.join(self.location, *call_id)
        staging = self.staging
        for attempt in range(WRITE_ATTEMPTS):  # a concurrent delete or prune may remove a directory under us
            try:
                make_private_dirs(item_dir)
            except (FileExistsError, NotADirectoryError):  # a file where a directory belongs: repair
                if attempt == WRITE_ATTEMPTS - 1 or not self._clear_non_dirs(item_dir):
                    raise
                continue
            make_private_dirs(staging)
            try:
                temporary = concurrency_safe_write(item, os.path.join(staging, call_id[-1]), _write_new_file)
                try:
                    self._move_item(temporary, os.path.join(item_dir, ITEM_FILENAME))
                except BaseException:
                    _unlink(temporary)
                    raise
                return
            except FileNotFoundError:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
            except IsADirectoryError:  # a directory at the entry path: never readable, so replace it
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                shutil.rmtree(os.path.join(item_dir, ITEM_FILENAME), ignore_errors=True)
            except OSError as exc:  # the entries on another file system than the cache dir
                if exc.errno != errno.EXDEV:
                    raise
                staging = item_dir

    def _clear_non_dirs(self, item_dir: str) -> bool:
        """Remove what is not a directory on the way from the location to ``item_dir``."""
        relative = os.path.relpath(item_dir, self.location).split(os.sep)
        path = self.location
        for part in relative:
            path = os.path.join(path, part)
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                return True
            if not stat.S_ISDIR(mode):
                os.unlink(path)
                return True
        return False

    def load_item(self, call_id: tuple[str, ...], verbose: int = 0, timestamp: Any = None, metadata: Any = None) -> bytes:  # type: ignore[override]
        """Raw bytes of an item; ``FileNotFoundError`` if absent, ``NotAnEntryFile`` if not a regular file."""
        path = os.path.join(self.location, *call_id, ITEM_FILENAME)
        found = read_item_file(path)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, "no such entry", path)
        return found[0]

    def contains_item(self, call_id: tuple[str, ...]) -> bool:
        return os.path.exists(self.item_path(call_id))

    def clear_item(self, call_id: tuple[str, ...]) -> None:
        """Remove the item's file (not the temporary files of writers busy in its directory)."""
        item_dir = os.path.join(self.location, *call_id)
        try:
            os.unlink(os.path.join(item_dir, ITEM_FILENAME))
        except FileNotFoundError:
            pass
        except IsADirectoryError:  # not ours (a damaged cache dir)
            shutil.rmtree(os.path.join(item_dir, ITEM_FILENAME), ignore_errors=True)
        try:
            os.rmdir(item_dir)  # only if empty
        except OSError:
            pass

    def iter_item_paths(self, function: Optional[str] = None) -> Iterator[str]:
        """Paths of every stored item file (of one function if given)."""
        roots = [os.path.join(self.location, function_dirname(function))] if function else [self.location]
        for root in roots:
            for dirpath, dirs, files in os.walk(root):
                if ITEM_FILENAME in dirs:  # a directory at an entry path: listed, never entered
                    dirs.remove(ITEM_FILENAME)
                    files.append(ITEM_FILENAME)
                if ITEM_FILENAME in files and _KEY_RE.match(os.path.basename(dirpath)):
                    yield os.path.join(dirpath, ITEM_FILENAME)

    def iter_leftovers(self, older_than: float, dead_older_than: Optional[float] = None) -> Iterator[str]:
        """Temporary files of interrupted writes: last modified before ``older_than``, or before
        ``dead_older_than`` when the writer named in the file (joblib's ``<uuid>-<pid>-<thread>``
        suffix) is no longer a process on this machine. Lists the staging dir only."""
        try:
            names = os.listdir(self.staging)
        except OSError:
            return
        for name in names:
            path = os.path.join(self.staging, name)
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                continue
            if mtime < older_than:
                yield path
            elif dead_older_than is not None and mtime < dead_older_than and not _writer_alive(name.rpartition(".")[2]):
                yield path


def _write_new_file(data: bytes, path: str) -> None:
    """Write ``data`` to a new file (mode 0600); nothing is left behind if that fails."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        _unlink(path)
        raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _writer_alive(suffix: str) -> bool:
    """Whether the process that named a temporary file ``<uuid>-<pid>-<thread>`` still runs
    (unknown names count as alive: only the age rule removes them)."""
    parts = suffix.split("-")
    if len(parts) != 3 or not parts[1].isdigit():
        return True
    pid = int(parts[1])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    return True


register_store_backend("memollm", MsgpackStoreBackend)
