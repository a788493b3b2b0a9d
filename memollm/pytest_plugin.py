"""pytest plugin (registered through the ``pytest11`` entry point ``memollm``).

* ``--memollm-mode=MODE``: the cache mode of the whole session, at the level of ``MEMOLLM_MODE``
  (it sets that variable for the session, subprocesses included): a ``cache_mode()`` block and
  the ``memollm`` marker still win, and it wins over a decorator's ``mode=``.
* ``@pytest.mark.memollm(mode=..., cache_dir=...)``: a mode and/or a cache dir for one test
  (its function-scoped fixtures included). A relative ``cache_dir`` is resolved against the
  directory of the test file.
* ``memollm_cache`` fixture: the cache dir and mode in effect, the store, and this test's hits
  and misses.
* ``memollm_http`` fixture: every httpx and httpx2 request of the test goes through the cache
  (``memollm.http.intercept()``), in the mode and cache dir in effect: code the test does not own
  (frameworks, SDK helpers) is recorded once and replayed offline.
* ``--memollm-report-unused``: at the end of the session, the entries of the cache dirs in use
  that no test read (under pytest-xdist, what every worker read).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import os
import sys
import time
from typing import Any, Iterator, Optional

import pytest

from . import config as memollm_config
from . import observers, prices
from .entry import EntryMeta
from .modes import MODE_ENV, Mode, cache_mode, current_mode, parse_mode
from .stats import CacheInfo, Usage
from .stores.backend import call_id
from .stores.base import Store
from .stores.disk import DiskStore

ENTRY_POINT_NAME = "memollm"
MARKER_HELP = (
    "memollm(mode=None, cache_dir=None): run this test in memollm cache mode `mode` "
    "(readwrite, readonly, refresh, offline, off) and/or with `cache_dir` as the cache dir "
    "of every disk-cached call (relative paths are resolved against the test file's directory)."
)
_MARKER_ARGS = ("mode", "cache_dir")


class _SessionState:
    """What the plugin keeps for one pytest session (one ``Config``)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.started = time.time()
        self.saved_env: Optional[str] = None
        self.env_set = False
        self.report_unused = bool(config.getoption("memollm_report_unused", False))
        self.reads: set[tuple[str, str, str]] = set()  # (cache dir, function, key) served from disk
        self.stores: dict[str, Any] = {}  # cache dir -> store that served or missed in this session
        self.marker_dirs: set[str] = set()
        self.worker_dirs: set[str] = set()  # cache dirs pytest-xdist workers used (on the controller)
        self.workers_lost: list[str] = []  # workers that went down without sending what they read
        self.stores_before: set[int] = set()
        self.observers: list[tuple[list[Any], Any]] = []

    def note_store(self, store: Any) -> None:
        if isinstance(store, DiskStore):
            self.stores.setdefault(store.location, store)

    def on_read(self, store: Any, meta: EntryMeta) -> None:
        self.note_store(store)
        self.reads.add((getattr(store, "location", ""), meta.function, meta.key))

    def on_miss(self, store: Any, function: str, key: str) -> None:
        self.note_store(store)


_STATE = pytest.StashKey[_SessionState]()
_ITEM_CONTEXT = pytest.StashKey[contextlib.ExitStack]()


# -- options and configuration ----------------------------------------------------------------


def _mode_option(value: str) -> str:
    """argparse ``type`` of ``--memollm-mode``: a usage error listing the valid modes."""
    try:
        return parse_mode(value, "--memollm-mode").value
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    group = parser.getgroup("memollm", "memollm (LLM call cache)")
    group.addoption(
        "--memollm-mode",
        action="store",
        dest="memollm_mode",
        default=None,
        type=_mode_option,
        metavar="MODE",
        help="memollm cache mode for the whole session: readwrite, readonly, refresh, offline or off "
        "(sets MEMOLLM_MODE; a cache_mode() block or the memollm marker still wins).",
    )
    group.addoption(
        "--memollm-report-unused",
        action="store_true",
        dest="memollm_report_unused",
        default=False,
        help="at the end of the session, list the entries of the memollm cache dirs in use that no test read.",
    )
    # Loaded with ``-p memollm.pytest_plugin`` (before entry points): keep the ``memollm`` entry
    # point from registering this module a second time under its own name.
    name = pluginmanager.get_name(sys.modules[__name__])
    if name is not None and name != ENTRY_POINT_NAME and pluginmanager.get_plugin(ENTRY_POINT_NAME) is None:
        pluginmanager.set_blocked(ENTRY_POINT_NAME)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    if _STATE in config.stash:
        return
    state = config.stash[_STATE] = _SessionState(config)
    mode = config.getoption("memollm_mode", None)
    if mode:
        state.saved_env, state.env_set = os.environ.get(MODE_ENV), True
        os.environ[MODE_ENV] = mode
    elif os.environ.get(MODE_ENV):
        try:
            parse_mode(os.environ[MODE_ENV], MODE_ENV)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
    if state.report_unused:
        state.stores_before = {id(s) for s in list(memollm_config._disk_stores.values())}
        state.observers.append((observers.read_observers, state.on_read))
        misses = getattr(observers, "miss_observers", None)
        if misses is not None:
            state.observers.append((misses, state.on_miss))
        for registry, observer in state.observers:
            registry.append(observer)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None:
        return
    for registry, observer in state.observers:
        with contextlib.suppress(ValueError):
            registry.remove(observer)
    state.observers.clear()
    if state.env_set:
        if state.saved_env is None:
            os.environ.pop(MODE_ENV, None)
        else:
            os.environ[MODE_ENV] = state.saved_env
        state.env_set = False
    del config.stash[_STATE]


def pytest_report_header(config: pytest.Config) -> Optional[str]:
    mode = config.getoption("memollm_mode", None)
    if mode:
        return f"memollm: cache mode {mode} (--memollm-mode)"
    if os.environ.get(MODE_ENV):
        return f"memollm: cache mode {os.environ[MODE_ENV]} ({MODE_ENV})"
    return None


# -- the marker ---------------------------------------------------------------------------------


def _marker_options(item: pytest.Item) -> dict[str, Any]:
    """``mode``/``cache_dir`` of the closest ``memollm`` markers (function over class over module)."""
    options: dict[str, Any] = {}
    for mark in item.iter_markers("memollm"):
        unknown = sorted(set(mark.kwargs) - set(_MARKER_ARGS))
        if unknown or len(mark.args) > 1:
            raise TypeError(
                f"{item.nodeid}: @pytest.mark.memollm takes mode=... and cache_dir=... "
                f"(got args {mark.args!r}, kwargs {sorted(mark.kwargs)!r})"
            )
        given = dict(mark.kwargs)
        if mark.args:
            given.setdefault("mode", mark.args[0])
        for name, value in given.items():
            if value is not None:
                options.setdefault(name, value)
    return options


def _resolve_dir(item: pytest.Item, cache_dir: Any) -> str:
    if not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"{item.nodeid}: @pytest.mark.memollm(cache_dir=...) must be a path, not {type(cache_dir).__name__}")
    if not os.fspath(cache_dir):
        raise ValueError(f"{item.nodeid}: @pytest.mark.memollm(cache_dir={os.fspath(cache_dir)!r}) is empty; pass a directory, or leave cache_dir out")
    path = os.path.expanduser(os.fspath(cache_dir))
    if not os.path.isabs(path):
        path = os.path.join(os.path.dirname(str(item.path)), path)
    return os.path.abspath(path)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Enter the marker's mode and cache dir before any fixture is set up."""
    if item.get_closest_marker("memollm") is None:
        return
    options = _marker_options(item)
    stack = item.stash[_ITEM_CONTEXT] = contextlib.ExitStack()  # closed at teardown, even after an error here
    if "mode" in options:
        mode = parse_mode(options["mode"], "@pytest.mark.memollm(mode=...)")
        stack.enter_context(cache_mode(mode))
    if "cache_dir" in options:
        path = _resolve_dir(item, options["cache_dir"])
        state = item.config.stash.get(_STATE, None)
        if state is not None:
            state.marker_dirs.add(path)
        stack.enter_context(memollm_config.use_cache_dir(path))


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Leave the marker's mode and cache dir after the test's fixtures are torn down."""
    yield
    stack = item.stash.get(_ITEM_CONTEXT, None)
    if stack is not None:
        del item.stash[_ITEM_CONTEXT]
        with contextlib.suppress(ValueError):  # a context variable reset from another context
            stack.close()


# -- the fixture --------------------------------------------------------------------------------


class MemollmCacheFixture:
    """What the ``memollm_cache`` fixture gives a test: where the cache is and what it did.

    ``cache_dir`` and ``mode`` are those in effect for a cached call made by the test (with no
    ``cache_dir=``/``mode=`` of its own); ``hits`` and ``misses`` count every cached call made
    since the fixture was set up.
    """

    def __init__(self) -> None:
        self.cache_dir: str = os.path.abspath(memollm_config.cache_dir_for(None))
        self.reads: list[EntryMeta] = []  #: entries served from the cache during this test
        self.missed: list[tuple[str, str]] = []  #: (function, key) of the misses during this test

    @property
    def mode(self) -> Mode:
        """The cache mode in effect (context, then ``MEMOLLM_MODE``/``--memollm-mode``, then readwrite)."""
        return current_mode()

    @property
    def store(self) -> Store:
        """The disk store of ``cache_dir`` (``memollm.stores.disk.DiskStore``)."""
        return memollm_config.disk_store(self.cache_dir)

    @property
    def hits(self) -> int:
        return len(self.reads)

    @property
    def misses(self) -> int:
        return len(self.missed)

    def stats(self) -> CacheInfo:
        """Hits, misses, seconds, tokens and dollars saved during this test; entries and bytes of ``cache_dir``."""
        entries = size = 0
        if os.path.isdir(self.cache_dir):
            for meta in self.store.entries():
                entries += 1
                size += meta.size
        return CacheInfo(
            hits=self.hits,
            misses=self.misses,
            entries=entries,
            bytes=size,
            seconds_saved=sum(m.duration for m in self.reads),
            tokens_saved=sum(m.tokens for m in self.reads),
            dollars_saved=prices.total(self._usage_read()),
        )

    def _usage_read(self) -> dict[Usage, int]:
        per: dict[Usage, int] = {}
        for meta in self.reads:
            if meta.usage is not None:
                per[meta.usage] = per.get(meta.usage, 0) + 1
        return per

    @property
    def info(self) -> CacheInfo:
        """Same as ``stats()``."""
        return self.stats()

    def _on_read(self, store: Any, meta: EntryMeta) -> None:
        self.reads.append(meta)

    def _on_miss(self, store: Any, function: str, key: str) -> None:
        self.missed.append((function, key))

    def __repr__(self) -> str:
        return f"<memollm_cache {self.cache_dir} mode={self.mode.value} hits={self.hits} misses={self.misses}>"


@pytest.fixture
def memollm_cache() -> Iterator[MemollmCacheFixture]:
    """The memollm cache dir and mode in effect for this test, its store, and this test's hits and misses."""
    cache = MemollmCacheFixture()
    registries: list[tuple[list[Any], Any]] = [(observers.read_observers, cache._on_read)]
    misses = getattr(observers, "miss_observers", None)
    if misses is not None:
        registries.append((misses, cache._on_miss))
    for registry, observer in registries:
        registry.append(observer)
    try:
        yield cache
    finally:
        for registry, observer in registries:
            with contextlib.suppress(ValueError):
                registry.remove(observer)


@pytest.fixture
def memollm_http() -> Iterator[Any]:
    """Send every httpx/httpx2 request of this test through the memollm cache; gives the
    ``memollm.http.Interceptor`` (``cache_info()``). The mode and cache dir are those in effect
    (the ``memollm`` marker, ``--memollm-mode``, ``MEMOLLM_CACHE_DIR``)."""
    from .http import intercept

    with intercept() as interceptor:
        yield interceptor


# -- --memollm-report-unused --------------------------------------------------------------------


def _stores_in_use(state: _SessionState) -> dict[str, Any]:
    """Cache dir -> store: opened, read or missed in this session, or named by a marker."""
    for store in list(memollm_config._disk_stores.values()):
        if id(store) not in state.stores_before:
            state.note_store(store)
    stores = dict(state.stores)
    for path in state.marker_dirs | state.worker_dirs:
        if path not in stores and os.path.isdir(os.path.join(path, "joblib")):
            stores[path] = memollm_config.disk_store(path)
    return stores


def _entry_dir(store: Any, meta: EntryMeta) -> str:
    """The entry's directory relative to its cache dir (what to delete to drop it)."""
    try:
        path = os.path.dirname(store.backend.item_path(call_id(meta.function, meta.key)))
        return os.path.relpath(path, store.location)
    except Exception:
        return ""


def unused_entries(state: _SessionState) -> list[tuple[Any, int, list[EntryMeta]]]:
    """Per cache dir in use: (store, its number of entries, the entries no test read).

    Entries recorded during the session count as used.
    """
    report = []
    for location, store in sorted(_stores_in_use(state).items()):
        try:
            metas = list(store.entries())
        except Exception:
            continue
        unused = [m for m in metas if (location, m.function, m.key) not in state.reads and m.created < state.started]
        unused.sort(key=lambda m: (m.function, m.created, m.key))
        report.append((store, len(metas), unused))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker: hand what this worker read, and where, to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    state = session.config.stash.get(_STATE, None)
    if workeroutput is None or state is None or not state.report_unused:
        return
    workeroutput["memollm_reads"] = [list(read) for read in sorted(state.reads)]
    workeroutput["memollm_dirs"] = sorted(_stores_in_use(state))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """On the pytest-xdist controller: gather a finished worker's reads and cache dirs."""
    state = node.config.stash.get(_STATE, None)
    if state is None or not state.report_unused:
        return
    output = getattr(node, "workeroutput", None)
    if error is not None or not output or "memollm_reads" not in output:
        state.workers_lost.append(str(getattr(node.gateway, "id", node)))
        return
    state.reads.update((location, function, key) for location, function, key in output["memollm_reads"])
    state.worker_dirs.update(output["memollm_dirs"])


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None or not state.report_unused or hasattr(config, "workeroutput"):
        return
    write = terminalreporter.write_line
    terminalreporter.write_sep("=", "memollm: unused cache entries")
    report = unused_entries(state)
    if state.workers_lost:
        write(
            f"pytest-xdist worker(s) {', '.join(state.workers_lost)} went down before reporting what they read: "
            "entries only they read are listed as unused"
        )
    if not report:
        write("no memollm cache dir was used in this session")
        return
    for store, total, unused in report:
        if not unused:
            write(f"{store.location}: all {total} entries were read (or recorded) in this session")
            continue
        write(f"{store.location}: {len(unused)} of {total} entries were not read by any test")
        for meta in unused:
            created = _dt.datetime.fromtimestamp(meta.created).strftime("%Y-%m-%d %H:%M:%S")
            expired = "  (expired)" if meta.expired() else ""
            write(f"  {meta.function}  {meta.key}  created {created}  {_entry_dir(store, meta)}{expired}")
    write("To drop an unused entry, delete its directory (shown relative to its cache dir).")
