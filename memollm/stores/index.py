"""The sidecar expiry index: one SQLite row per entry (WAL mode, safe for many processes).

The index accelerates listing, expiry, pruning and size accounting; it is never the only copy
of the truth. Entries describe themselves, so a missing or corrupt index is rebuilt from them.
Every operation costs O(log n) in the number of entries (B-tree lookups), never a rewrite.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Optional

from ..entry import EntryMeta
from ..stats import Usage

INDEX_FILENAME = "index.sqlite3"
# The write-ahead log is copied into the index every so many pages, and cut back to a size limit
# when it restarts: it never keeps growing. Under a size bound (``max_size``) the log is kept to
# 64 KiB; without one, SQLite's default of 1,000 pages (4 MiB) spares a miss the fsync of a
# checkpoint every few writes.
WAL_CHECKPOINT_PAGES = 16
WAL_SIZE_LIMIT = 64 * 2**10
WAL_CHECKPOINT_PAGES_UNBOUNDED = 1000
WAL_SIZE_LIMIT_UNBOUNDED = 4 * 2**20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL,
    size INTEGER NOT NULL,
    duration REAL NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL DEFAULT 'value',
    hits INTEGER NOT NULL DEFAULT 0,
    last_access REAL NOT NULL,
    sample INTEGER,
    model TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cache_read_tokens INTEGER,
    cache_write_tokens INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_function ON entries(function);
CREATE INDEX IF NOT EXISTS entries_expires ON entries(expires) WHERE expires IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_last_access ON entries(last_access);
CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL, entries INTEGER NOT NULL);
INSERT OR IGNORE INTO totals SELECT 0, COALESCE(SUM(size), 0), COUNT(*) FROM entries;
CREATE TRIGGER IF NOT EXISTS entries_added AFTER INSERT ON entries BEGIN
    UPDATE totals SET bytes = bytes + NEW.size, entries = entries + 1 WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS entries_removed AFTER DELETE ON entries BEGIN
    UPDATE totals SET bytes = bytes - OLD.size, entries = entries - 1 WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS entries_resized AFTER UPDATE OF size ON entries BEGIN
    UPDATE totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 0;
END;
CREATE TABLE IF NOT EXISTS strange (path TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stats (
    function TEXT PRIMARY KEY,
    hits INTEGER NOT NULL DEFAULT 0,
    misses INTEGER NOT NULL DEFAULT 0,
    seconds_saved REAL NOT NULL DEFAULT 0,
    tokens_saved INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    function TEXT NOT NULL,
    hour INTEGER NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    misses INTEGER NOT NULL DEFAULT 0,
    seconds_saved REAL NOT NULL DEFAULT 0,
    tokens_saved INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (function, hour)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS saved (
    function TEXT NOT NULL,
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (function, model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens)
) WITHOUT ROWID;
"""

#: Columns added since the first release, with their types: an older index gains them when opened
#: (its rows read as NULL: no sample, no usage recorded), and older versions keep writing to it unharmed.
_ADDED_COLUMNS = (
    ("sample", "INTEGER"),
    ("model", "TEXT"),
    ("input_tokens", "INTEGER"),
    ("output_tokens", "INTEGER"),
    ("cache_read_tokens", "INTEGER"),
    ("cache_write_tokens", "INTEGER"),
)
USAGE_COLUMNS = "model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens"
_COLUMNS = "key, function, created, expires, size, duration, tokens, kind, hits, last_access, sample, " + USAGE_COLUMNS


class Index:
    """Thread- and process-safe access to ``<cache_dir>/index.sqlite3``."""

    def __init__(self, cache_dir: str) -> None:
        self.path = os.path.join(cache_dir, INDEX_FILENAME)
        self._local = threading.local()
        #: Bumped on every new connection, so callers notice a replaced (e.g. deleted) index file.
        self.generation = 0
        self.log_limits = (WAL_CHECKPOINT_PAGES_UNBOUNDED, WAL_SIZE_LIMIT_UNBOUNDED)

    def bound_log(self) -> None:
        """Keep the write-ahead log short (the dir has a size bound that counts it); every
        thread's connection applies it at its next operation."""
        self.log_limits = (WAL_CHECKPOINT_PAGES, WAL_SIZE_LIMIT)

    def _apply_log_limits(self, conn: sqlite3.Connection) -> None:
        pages, limit = self._local.log_limits = self.log_limits
        conn.execute(f"PRAGMA wal_autocheckpoint={pages}")
        conn.execute(f"PRAGMA journal_size_limit={limit}")

    def _file_id(self) -> Optional[tuple[int, int]]:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _connect(self, create: bool = True) -> sqlite3.Connection:
        """This thread's connection; ``create=False`` raises ``FileNotFoundError`` for a missing index
        (background bookkeeping must not resurrect a cache dir someone deleted)."""
        conn: Optional[sqlite3.Connection] = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            # One stat per operation notices an index deleted or replaced under us.
            if self._file_id() == self._local.file_id:
                if self._local.log_limits is not self.log_limits:
                    self._apply_log_limits(conn)
                return conn
            self.close()
        try:
            mode: Optional[int] = os.lstat(self.path).st_mode
        except FileNotFoundError:
            mode = None
        if mode is None:
            if not create:
                raise FileNotFoundError(self.path)
            self._create()
        elif not stat.S_ISREG(mode):  # a FIFO would hang SQLite's first read: moved aside like a corrupt index
            raise sqlite3.DatabaseError(f"{self.path} is not a regular file (file is not a database)")
        conn = sqlite3.connect(self.path, timeout=5, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._apply_log_limits(conn)
            conn.executescript(_SCHEMA)
            _add_columns(conn)
        except BaseException:
            conn.close()
            raise
        self._local.conn, self._local.pid, self._local.file_id = conn, os.getpid(), self._file_id()
        self._local.closer = _Closer(conn)  # closes it when the thread ends and drops its locals
        self.generation += 1
        return conn

    def _create(self) -> None:
        """Build a new index in a private file, then link it into place.

        Processes opening a brand-new index at once must never see it half made (SQLite then
        reports a short read or a malformed file): the first link wins, the others use it.
        """
        tmp = f"{self.path}.new-{os.getpid()}-{threading.get_ident()}"
        os.close(os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600))
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
            finally:
                conn.close()
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another process made it first
            except OSError:  # no hard links here: create it in place, as a last resort
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        finally:
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(tmp + suffix)
                except FileNotFoundError:
                    pass

    def execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self._connect().execute(sql, tuple(params))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local.conn = self._local.closer = None

    def file_bytes(self) -> int:
        """Bytes of the index's files: the database, its write-ahead log and shared-memory file."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.lstat(self.path + suffix).st_size
            except OSError:
                pass
        return total

    def truncate_log(self) -> None:
        """Copy the write-ahead log into the index and empty it, unless a reader (in any
        process) still needs it: then nothing waits, and the next checkpoint does it."""
        conn = self._connect(create=False)
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.OperationalError:  # busy or locked: not worth waiting for
            pass
        finally:
            conn.execute("PRAGMA busy_timeout=5000")

    def ensure_open(self) -> int:
        """Connect (or reconnect if the file was replaced); returns ``generation``."""
        self._connect()
        return self.generation

    # -- entries --------------------------------------------------------------------------

    def put(self, meta: EntryMeta) -> None:
        self.put_many([meta])

    def put_many(self, metas: Iterable[EntryMeta]) -> None:
        rows = [_row(m) for m in metas]
        conn = self._connect()
        with _transaction(conn):
            conn.executemany(_UPSERT, rows)

    def put_if_present(self, meta: EntryMeta, size_now: Callable[[], Optional[int]]) -> None:
        """Upsert ``meta`` if its file exists, else drop its row: checked under the write lock.

        Every change of an entry file is followed by one of these (or ``remove_if_absent``), so
        the last one to commit has seen the final state of the file, whatever the interleaving.
        """
        conn = self._connect()
        with _transaction(conn):
            size = size_now()
            if size is None:
                conn.execute("DELETE FROM entries WHERE key = ?", (meta.key,))
                return
            meta.size = size
            conn.execute(_UPSERT, _row(meta))

    def remove_if_absent(self, keys_and_paths: Iterable[tuple[str, str]]) -> None:
        """Drop the rows of keys whose entry file is gone, or is not a regular file (checked under the write lock)."""
        conn = self._connect()
        with _transaction(conn):
            conn.executemany("DELETE FROM entries WHERE key = ?", [(k,) for k, path in keys_and_paths if not _is_file(path)])

    def keys_after(self, start: str, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` (key, function) rows with keys after ``start``, in key order."""
        cur = self.execute("SELECT key, function FROM entries WHERE key > ? ORDER BY key LIMIT ?", (start, limit))
        return [tuple(r) for r in cur]  # type: ignore[misc]

    def remove(self, keys: Iterable[str]) -> None:
        conn = self._connect()
        with _transaction(conn):
            conn.executemany("DELETE FROM entries WHERE key = ?", [(k,) for k in keys])

    def remove_function(self, function: Optional[str]) -> None:
        """Drop the rows of a function's entries (all if ``None``) and its usage counters: a
        cleared function is gone from ``memollm stats``, as ``functools``' ``cache_clear()``
        resets its statistics."""
        conn = self._connect()
        with _transaction(conn):
            if function is None:
                conn.execute("DELETE FROM entries")
                conn.execute("DELETE FROM stats")
                conn.execute("DELETE FROM saved")
            else:
                conn.execute("DELETE FROM entries WHERE function = ?", (function,))
                conn.execute("DELETE FROM stats WHERE function = ?", (function,))
                conn.execute("DELETE FROM saved WHERE function = ?", (function,))

    def rows(self, function: Optional[str] = None) -> Iterator[dict[str, Any]]:
        sql = f"SELECT {_COLUMNS} FROM entries"
        cursor = self.execute(sql + " WHERE function = ?", (function,)) if function else self.execute(sql)
        names = [d[0] for d in cursor.description]
        for row in cursor:
            yield dict(zip(names, row))

    def totals(self) -> tuple[int, int]:
        """``(bytes, entries)`` of the whole cache dir, kept by triggers: O(1)."""
        row = self.execute("SELECT bytes, entries FROM totals WHERE id = 0").fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def least_recently_used(self, limit: int) -> list[tuple[str, str, int]]:
        """Up to ``limit`` (key, function, size) rows, least recently used first."""
        cur = self.execute("SELECT key, function, size FROM entries ORDER BY last_access LIMIT ?", (limit,))
        return [tuple(r) for r in cur]  # type: ignore[misc]

    def count(self, function: Optional[str] = None) -> int:
        if function is None:
            return self.totals()[1]
        return int(self.execute("SELECT COUNT(*) FROM entries WHERE function = ?", (function,)).fetchone()[0])

    def expired(self, now: Optional[float] = None, limit: int = 1000) -> list[tuple[str, str, int]]:
        """Up to ``limit`` (key, function, size) rows past their expiry."""
        now = time.time() if now is None else now
        cur = self.execute(
            "SELECT key, function, size FROM entries WHERE expires IS NOT NULL AND expires <= ? LIMIT ?",
            (now, limit),
        )
        return [tuple(r) for r in cur]  # type: ignore[misc]

    # -- entry paths holding something other than a regular file ---------------------------

    def note_strange(self, paths: Iterable[str]) -> None:
        """Remember entry paths (relative to the cache dir) found not to be regular files, for ``prune``."""
        rows = [(p,) for p in paths]
        if rows:
            conn = self._connect()
            with _transaction(conn):
                conn.executemany("INSERT OR IGNORE INTO strange (path) VALUES (?)", rows)

    def strange(self, limit: int) -> list[str]:
        return [row[0] for row in self.execute("SELECT path FROM strange LIMIT ?", (limit,))]

    def forget_strange(self, paths: Iterable[str]) -> None:
        rows = [(p,) for p in paths]
        if rows:
            conn = self._connect()
            with _transaction(conn):
                conn.executemany("DELETE FROM strange WHERE path = ?", rows)

    # -- bookkeeping ----------------------------------------------------------------------

    def get_info(self, name: str) -> Any:
        row = self.execute("SELECT value FROM info WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def set_info(self, name: str, value: Any) -> None:
        self.execute("INSERT OR REPLACE INTO info (name, value) VALUES (?, ?)", (name, value))


_UPSERT = (
    f"INSERT INTO entries ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(key) DO UPDATE SET function=excluded.function, created=excluded.created, "
    "expires=excluded.expires, size=excluded.size, duration=excluded.duration, "
    "tokens=excluded.tokens, kind=excluded.kind, last_access=excluded.last_access, sample=excluded.sample, "
    "model=excluded.model, input_tokens=excluded.input_tokens, output_tokens=excluded.output_tokens, "
    "cache_read_tokens=excluded.cache_read_tokens, cache_write_tokens=excluded.cache_write_tokens"
)


def _add_columns(conn: sqlite3.Connection) -> None:
    """Migrate an index made by an older version: add the columns it lacks."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
    for name, kind in _ADDED_COLUMNS:
        if name not in present:
            try:
                conn.execute(f"ALTER TABLE entries ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc).lower():  # another process added it first
                    raise


class _Closer:
    """Closes a thread's connection when the thread's locals are dropped (it ends): Python 3.13
    warns (``ResourceWarning``) about a connection that is garbage-collected open."""

    __slots__ = ("conn", "pid")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn, self.pid = conn, os.getpid()

    def __del__(self) -> None:
        if self.pid == os.getpid():  # not in a forked child: the parent still uses it
            try:
                self.conn.close()
            except Exception:
                pass


def _is_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _row(m: EntryMeta) -> tuple[Any, ...]:
    usage = m.usage.as_row() if m.usage is not None else (None, None, None, None, None)
    return (m.key, m.function, m.created, m.expires, m.size, m.duration, m.tokens, m.kind, 0, m.created, m.sample, *usage)


def usage_from_row(row: dict[str, Any]) -> Optional[Usage]:
    """The ``Usage`` of an index row (``None``: the entry recorded none, or predates usage)."""
    if row.get("input_tokens") is None:
        return None
    model = row.get("model")
    return Usage(model, *(int(row.get(n) or 0) for n in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")))


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
