"""The disk store: entries through joblib's store backend, expiry in a SQLite sidecar index."""

from __future__ import annotations

import functools
import os
import re
import shutil
import sqlite3
import stat
import time
from typing import Any, Callable, Iterator, Optional, TypeVar

import joblib

from ..entry import CorruptEntry, EntryMeta, read_meta
from ..report import warn_once
from ..trust import check_trusted
from .backend import (
    ITEM_FILENAME,
    STAGING_DIRNAME,
    NotAnEntryFile,
    call_id,
    function_dirname,
    is_entry_file,
    make_private_dirs,
    read_item_file,
    remove_any,
)
from .base import PruneReport, Store
from .index import INDEX_FILENAME, Index, usage_from_row
from .usage import UsageLog

T = TypeVar("T")
_KEY_RE = re.compile(r"^[0-9a-f]{32}$")
LOCKS_DIRNAME = "locks"

GITIGNORE = (
    "# Written by memollm. Entries (joblib/) are meant to be committable and portable;\n"
    "# the index is rebuilt from them, temporary files are leftovers of interrupted writes and\n"
    "# lock files coordinate processes on this machine.\n"
    f"{INDEX_FILENAME}*\n"
    "*.corrupt-*\n"
    "output.msgpack.*\n"
    f"{STAGING_DIRNAME}/\n"
    f"{LOCKS_DIRNAME}/\n"
)
JOBLIB_GITIGNORE = "# Created by joblib automatically.\n*\n"
GITATTRIBUTES = (
    "# Written by memollm: git diffs show entry files as text once this repository has\n"
    '#   git config diff.memollm.textconv "memollm textconv"\n'
    "# (without it they stay binary files). Patterns are relative to this directory.\n"
    f"joblib/**/{ITEM_FILENAME} -text diff=memollm\n"
)
RECENT_BYTES_MAX = 32 * 2**20  # bytes of recently read entries kept per cache dir
RECENT_ITEM_MAX = 2**20
LEFTOVER_AGE = 600.0  # seconds before a temporary file counts as the leftover of a dead writer
DEAD_WRITER_AGE = 1.0  # ... or sooner, if its writer's pid is no longer running on this machine
ORPHAN_CHECK_BATCH = 10_000  # index rows checked for a missing file per prune (a rolling window)
INDEX_PAUSE = 30.0  # seconds the index is left alone after it stayed locked for a whole busy timeout
PENDING_MAX = 10_000  # index updates remembered while it is paused or failing
FUNCTION_DIRS_MAX = 10_000  # function dirs remembered (HTTP paths holding ids make a function each)
TRUST_RECHECK = 1.0  # seconds an entry held in memory is served before the dir's mode is checked again


class DiskStore(Store):
    """Entries under ``<cache_dir>/joblib/<function>/<xx>/<key>/output.msgpack``."""

    accepts_bytearray = True  # set() may be handed a recorded stream's buffer (written, never kept)

    def __init__(self, cache_dir: "str | os.PathLike[str]") -> None:
        if not os.fspath(cache_dir):  # abspath("") would be the current directory
            raise ValueError(f"DiskStore(cache_dir={os.fspath(cache_dir)!r}) is empty; pass a directory")
        self.location = os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))
        make_private_dirs(self.location)
        self._write_gitignore()
        self.memory = joblib.Memory(self.location, backend="memollm", verbose=0)
        self.backend = self.memory.store_backend
        self.index = Index(self.location)
        self._index_checked = -1  # index generation known to be built
        self._index_paused_until = 0.0
        self._pending: set[tuple[str, str]] = set()  # (function, key) whose index row may be stale
        self._strange: set[str] = set()  # entry paths found not to be regular files, not yet in the index
        self.usage = UsageLog(self.index)
        self.max_size: Optional[int] = None
        self._entries_root = self.backend.location
        # Entries read recently, by path: (inode, size, mtime) -> bytes. A hit re-validates with one
        # stat instead of re-reading; writers always replace files (new inode), never rewrite them.
        self._recent: dict[str, tuple[tuple[int, int, int], bytes]] = {}
        self._recent_bytes = 0
        self._function_dirs: dict[str, str] = {}
        self._trusted_until = 0.0  # see check_trusted
        self.last_used = 0  # kept by config.disk_store, which closes the least recently used stores
        self._rebuild_progress: Optional[Callable[[int, int], None]] = None  # see ensure_index

    def _write_gitignore(self) -> None:
        """The dir's ``.gitignore`` (what not to commit) and ``.gitattributes`` (entries diff as text)."""
        _write_ours(os.path.join(self.location, ".gitignore"), GITIGNORE, replaceable=(JOBLIB_GITIGNORE,))
        _write_ours(os.path.join(self.location, ".gitattributes"), GITATTRIBUTES)

    # -- the index, used defensively -------------------------------------------------------

    def _with_index(self, op: Callable[[], T], fallback: Callable[[], T]) -> T:
        """Run an index operation; on a corrupt index rebuild it, on other failures fall back."""
        if self._index_paused_until > time.monotonic():
            return fallback()
        for attempt in range(2):
            try:
                self._ensure_index()
                if self._pending:
                    self._replay_pending()
                return op()
            except sqlite3.DatabaseError as exc:
                if attempt == 0 and _is_corruption(exc):
                    self._quarantine_index(exc)
                    continue
                if "locked" in str(exc) or "busy" in str(exc):  # do not make every call wait for it
                    self._index_paused_until = time.monotonic() + INDEX_PAUSE
                warn_once(self.location, "index", f"memollm: the cache index {self.index.path} is unusable ({exc}); working without it")
                return fallback()
            except OSError as exc:
                warn_once(self.location, "index", f"memollm: the cache index {self.index.path} is unusable ({exc}); working without it")
                return fallback()
        return fallback()

    def _note_pending(self, function: str, key: str) -> None:
        if len(self._pending) < PENDING_MAX:
            self._pending.add((function, key))

    def _replay_pending(self) -> None:
        """Bring the rows of entries changed while the index was unusable in line with their files."""
        pending, self._pending = self._pending, set()
        for function, key in pending:
            path = self.item_path(function, key)
            try:
                found = read_item_file(path)
                if found is None:
                    raise FileNotFoundError(path)
                meta, _ = read_meta(found[0])
            except (OSError, CorruptEntry):
                self.index.remove_if_absent([(key, path)])
                continue
            self.index.put_if_present(meta, functools.partial(_size_of, path))

    def _quarantine_index(self, exc: Exception) -> None:
        warn_once(self.location, "index-corrupt", f"memollm: the cache index {self.index.path} was corrupt ({exc}); rebuilding it from the entries")
        self.index.close()
        self._index_checked = -1
        stamp = f"{int(time.time())}-{os.getpid()}"
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(self.index.path + suffix, f"{self.index.path}{suffix}.corrupt-{stamp}")
            except OSError:
                pass

    def _ensure_index(self) -> None:
        """Rebuild the index from the entries when its file is new (missing, deleted, replaced)."""
        generation = self.index.ensure_open()
        if generation == self._index_checked:
            return
        if self.index.get_info("built") is None:
            self.rebuild_index()
        self._index_checked = generation

    def ensure_index(self, progress: Optional[Callable[[int, int], None]] = None) -> None:
        """Open the index now, rebuilding it from the entries if it is new; a rebuild reports
        ``progress(files read, files in all)`` as it goes (``memollm`` draws a bar)."""
        self._rebuild_progress = progress
        try:
            self._with_index(lambda: None, lambda: None)
        finally:
            self._rebuild_progress = None

    def rebuild_index(self, progress: Optional[Callable[[int, int], None]] = None) -> int:
        """Re-create the index rows from the entries themselves; returns how many."""
        progress = progress or self._rebuild_progress
        paths = list(self.backend.iter_item_paths())
        metas = list(self._scan(paths=paths, progress=progress))
        self.index.put_many(metas)
        self._record_strange()
        self.index.set_info("built", time.time())
        return len(metas)

    def _scan(
        self, function: Optional[str] = None, paths: Optional[list[str]] = None, progress: Optional[Callable[[int, int], None]] = None
    ) -> Iterator[EntryMeta]:
        paths = list(self.backend.iter_item_paths(function)) if paths is None else paths
        for done, path in enumerate(paths, 1):
            if progress is not None and (done % 256 == 0 or done == len(paths)):
                progress(done, len(paths))
            try:
                found = read_item_file(path)
                if found is None:
                    continue
                meta, _ = read_meta(found[0])
            except NotAnEntryFile as exc:
                self._note_strange(exc)
                continue
            except (OSError, CorruptEntry):
                continue
            if os.path.basename(os.path.dirname(path)) == meta.key and (function is None or meta.function == function):
                yield meta

    # -- the Store interface -----------------------------------------------------------------

    def item_path(self, function: str, key: str) -> str:
        directory = self._function_dirs.get(function)
        if directory is None:
            if len(self._function_dirs) >= FUNCTION_DIRS_MAX:
                self._function_dirs.clear()
            directory = self._function_dirs[function] = os.path.join(self._entries_root, function_dirname(function))
        return f"{directory}{os.sep}{key[:2]}{os.sep}{key}{os.sep}{ITEM_FILENAME}"

    def get(self, function: str, key: str) -> Optional[bytes]:
        path = self.item_path(function, key)
        try:
            st = os.lstat(path)  # (a link is not followed: a new inode, so never a remembered entry)
        except (FileNotFoundError, NotADirectoryError):
            return None
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        recent = self._recent.get(path)
        if recent is not None and recent[0] == signature:
            if time.monotonic() >= self._trusted_until:
                self.check_trusted()
            return recent[1]
        self.check_trusted()
        try:
            found = read_item_file(path, st)  # the backend's load_item, minus rebuilding the path
        except NotAnEntryFile as exc:
            self._note_strange(exc)
            self._with_index(self._record_strange, lambda: None)
            return None
        if found is None:
            return None
        data, st = found
        if len(data) == st.st_size and len(data) <= RECENT_ITEM_MAX:
            self._remember(path, (st.st_ino, st.st_size, st.st_mtime_ns), data)
        return data

    def _note_strange(self, exc: NotAnEntryFile) -> None:
        """Report a non-regular file at an entry path once, and remember it for ``prune``."""
        warn_once(
            self.location,
            "not-a-file:" + exc.path,
            f"memollm: the cache entry {exc.path} is {exc.strerror}; it is not read (a miss), the next write "
            "replaces it and `memollm prune` removes it",
        )
        relative = os.path.relpath(exc.path, self.location)
        if len(self._strange) < PENDING_MAX and not relative.startswith(os.pardir):
            self._strange.add(relative)

    def _record_strange(self) -> None:
        strange, self._strange = self._strange, set()
        self.index.note_strange(strange)

    def check_trusted(self) -> None:
        """Raise ``UntrustedCacheDir`` if the dir's owner or mode changed to untrusted since it was
        opened. Every entry read from disk and every write checks (one ``stat``); entries already
        in memory re-check at most every ``TRUST_RECHECK`` seconds."""
        check_trusted(self.location)
        self._trusted_until = time.monotonic() + TRUST_RECHECK

    def _remember(self, path: str, signature: tuple[int, int, int], data: bytes) -> None:
        if self._recent_bytes + len(data) > RECENT_BYTES_MAX:
            self._recent.clear()
            self._recent_bytes = 0
        previous = self._recent.pop(path, None)
        if previous is not None:
            self._recent_bytes -= len(previous[1])
        self._recent[path] = (signature, data)
        self._recent_bytes += len(data)

    def set(self, meta: EntryMeta, data: bytes) -> None:
        if self.max_size is not None and len(data) > self.max_size:
            return  # it would evict everything else and still not fit
        self.check_trusted()
        if self.max_size is not None and not self._with_index(lambda: self._make_room(len(data), meta.key), lambda: True):
            return
        self.backend.dump_item(call_id(meta.function, meta.key), data)
        meta.size = len(data)
        self._with_index(lambda: self._index_and_evict(meta), lambda: self._note_pending(meta.function, meta.key))

    def used_bytes(self) -> int:
        """What the bound covers: the entries (from the index's running totals) and the index's
        own files (its write-ahead log included). O(1): three ``stat`` calls."""
        return self.index.totals()[0] + self.index.file_bytes()

    def _make_room(self, incoming: int, key: str) -> bool:
        """Evict before writing ``incoming`` bytes, so the dir never holds more than ``max_size``
        even for a moment; false if the entry cannot fit at all (the index takes the room)."""
        assert self.max_size is not None
        if self.used_bytes() + incoming <= self.max_size:
            return True
        self.evict(self.max_size - incoming, keep=key)
        if self.used_bytes() + incoming <= self.max_size:
            return True
        warn_once(
            self.location,
            "no-room",
            f"memollm: max_size={self.max_size} bytes leaves no room for an entry of {incoming} bytes in "
            f"{self.location} (its index takes {self.index.file_bytes()} bytes); results are returned but not cached",
        )
        return False

    def _index_and_evict(self, meta: EntryMeta) -> None:
        self.index.put_if_present(meta, lambda: _size_of(self.item_path(meta.function, meta.key)))
        if self.max_size is not None and self.used_bytes() > self.max_size:  # (another process wrote meanwhile)
            self.evict(self.max_size, keep=meta.key)

    def configure(self, max_size: Optional[int]) -> None:
        """Bound the cache dir to ``max_size`` bytes (remembered in the index for ``memollm prune``)."""
        if max_size is None or max_size == self.max_size:
            return
        self.max_size = max_size
        self.index.bound_log()
        self._with_index(lambda: self.index.set_info("max_size", max_size), lambda: None)

    def evict(self, max_size: int, keep: Optional[str] = None) -> PruneReport:
        """Remove least-recently-used entries until the dir holds at most ``max_size`` bytes.

        Costs one index range read per batch removed: proportional to what is evicted.
        """
        report = PruneReport()
        self.index.bound_log()  # a dir held to a bound (`prune --max-size` too) keeps its log short
        self.usage.flush()  # recent hits count as recent use
        total = self.used_bytes()
        while total > max_size:
            rows = [r for r in self.index.least_recently_used(64) if r[0] != keep]
            if not rows:
                break
            for key, function, size in rows:
                if total <= max_size:
                    break
                self.backend.clear_item(call_id(function, key))
                self.index.remove_if_absent([(key, self.item_path(function, key))])
                total -= size
                report.removed(size, expired=False)
            self.index.truncate_log()  # the removals' log pages count too
            total = self.used_bytes()
        return report

    def note_hit(self, meta: EntryMeta) -> None:
        self.usage.hit(meta)

    def note_miss(self, function: str) -> None:
        self.usage.miss(function)

    def delete(self, function: str, key: str) -> bool:
        self.usage.forget(key=key)
        cid = call_id(function, key)
        existed = self.backend.contains_item(cid)
        self.backend.clear_item(cid)
        self._with_index(lambda: self.index.remove_if_absent([(key, self.item_path(function, key))]), lambda: self._note_pending(function, key))
        return existed

    def clear(self, function: Optional[str] = None) -> int:
        self.usage.forget(function=function)
        self.usage.forget_history(function)
        removed = sum(1 for _ in self.backend.iter_item_paths(function))
        root = self.backend.location
        targets = [os.path.join(root, function_dirname(function))] if function else _children(root)
        for target in targets:
            shutil.rmtree(target, ignore_errors=True)
        self._with_index(lambda: self.index.remove_function(function), lambda: None)
        return removed

    def entries(self, function: Optional[str] = None) -> Iterator[EntryMeta]:
        def from_index() -> list[EntryMeta]:
            return [_meta_from_row(r) for r in self.index.rows(function)]

        return iter(self._with_index(from_index, lambda: list(self._scan(function))))

    def count(self, function: Optional[str] = None) -> int:
        return self._with_index(lambda: self.index.count(function), lambda: sum(1 for _ in self._scan(function)))

    def prune(self, max_size: Optional[int] = None) -> PruneReport:
        """Remove expired entries, least recently used ones beyond ``max_size`` (default: the
        last one configured for this dir), leftovers of interrupted writes and stale index rows."""
        report = PruneReport()
        now = time.time()

        def expire() -> None:
            while True:
                rows = self.index.expired(now)
                for key, function, size in rows:
                    self.backend.clear_item(call_id(function, key))
                    report.removed(size, expired=True)
                self.index.remove_if_absent([(key, self.item_path(function, key)) for key, function, _ in rows])
                if len(rows) < 1000:
                    return

        self._with_index(expire, lambda: None)
        limit = max_size or self.max_size or self._with_index(lambda: self.index.get_info("max_size"), lambda: None)
        if limit:
            report.add(self._with_index(lambda: self.evict(int(limit)), PruneReport))
        stale, not_files = self._with_index(self._drop_orphan_rows, lambda: (0, 0))
        report.stale_rows += stale
        report.not_files += not_files + self._with_index(self._remove_strange, lambda: 0)
        self._with_index(self.index.truncate_log, lambda: None)
        for path in self.backend.iter_leftovers(now - LEFTOVER_AGE, now - DEAD_WRITER_AGE):
            try:
                size = os.stat(path).st_size
                os.unlink(path)
            except OSError:
                continue
            report.leftovers += 1
            report.bytes += size
        return report

    def _drop_orphan_rows(self) -> tuple[int, int]:
        """Remove index rows whose entry file is gone (a process killed between the two steps,
        files deleted by hand), and what is not a regular file at an entry path (with its row).
        Each prune checks the next ``ORPHAN_CHECK_BATCH`` rows in key order, wrapping around, so
        its cost does not grow with the cache. Returns (stale rows, non-files removed)."""
        keys = self.index.keys_after(self.index.get_info("orphan_cursor") or "", ORPHAN_CHECK_BATCH)
        orphans, not_files = [], 0
        for key, function in keys:
            path = self.item_path(function, key)
            regular = is_entry_file(path)
            if regular:
                continue
            if regular is False and _KEY_RE.match(key) and _removed(path):
                not_files += 1
            orphans.append((key, path))
        if orphans:
            self.index.remove_if_absent(orphans)
        self.index.set_info("orphan_cursor", keys[-1][0] if len(keys) == ORPHAN_CHECK_BATCH else "")
        return len(orphans) - not_files, not_files

    def _remove_strange(self) -> int:
        """Remove the non-regular files found at entry paths by reads and index rebuilds."""
        self._record_strange()
        done, removed = [], 0
        for relative in self.index.strange(ORPHAN_CHECK_BATCH):
            done.append(relative)
            parts = relative.split(os.sep)
            if os.path.isabs(relative) or os.pardir in parts or parts[-1] != ITEM_FILENAME or len(parts) < 3 or not _KEY_RE.match(parts[-2]):
                continue  # not an entry path of this dir (the index is not trusted with paths)
            path = os.path.join(self.location, relative)
            if is_entry_file(path) is False and _removed(path):
                removed += 1
                self.index.remove_if_absent([(parts[-2], path)])
        self.index.forget_strange(done)
        return removed

    def lock_path(self, key: str) -> str:
        """The per-key lock file used for single flight across processes (``flight`` makes its directory)."""
        return os.path.join(self.location, LOCKS_DIRNAME, key + ".lock")  # flat: holders remove them

    def close(self) -> None:
        self.usage.flush()
        try:
            self.index.truncate_log()
        except (sqlite3.Error, OSError):
            pass
        self.index.close()


def _write_ours(path: str, text: str, replaceable: tuple[str, ...] = ()) -> None:
    """Write ``text`` to ``path`` if it is missing, one of ``replaceable`` or an older version of
    ours (same first line); a file someone edited is left alone."""
    try:
        found = read_item_file(path, limit=2**16)
    except OSError:  # a FIFO, a link, a huge file...: not ours, left alone
        return
    current = None if found is None else found[0]
    ours = text.encode()
    older = current is not None and current.startswith(ours[:20]) and current != ours
    if current is None or current in (r.encode() for r in replaceable) or older:
        try:
            fd = os.open(path + f".tmp-{os.getpid()}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(path + f".tmp-{os.getpid()}", path)
        except OSError:
            pass


def _size_of(path: str) -> Optional[int]:
    """The size of the regular file at ``path``; ``None`` if there is none (links not followed)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _removed(path: str) -> bool:
    """Remove a non-regular file at an entry path, and its entry dir if that is then empty."""
    try:
        removed = remove_any(path)
    except OSError:
        return False
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass
    return removed


def _children(root: str) -> list[str]:
    try:
        return [os.path.join(root, name) for name in os.listdir(root)]
    except OSError:
        return []


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or "file is encrypted" in text


def _meta_from_row(row: dict[str, Any]) -> EntryMeta:
    return EntryMeta(
        function=row["function"],
        key=row["key"],
        created=row["created"],
        expires=row["expires"],
        duration=row["duration"],
        kind=row["kind"],
        tokens=row["tokens"],
        size=row["size"],
        sample=row.get("sample"),
        usage=usage_from_row(row),
    )
