"""Why did a call miss? Compare its request with the requests recorded in a function's entries.

Pure comparison of plain trees (``diff``, ``nearest``); the only I/O is reading entries through the
store, bounded by ``SCAN_MAX``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from ..entry import CorruptEntry, EntryMeta, read_meta
from ..keys import readable
from ..stores.base import Store

SCAN_MAX = 2000  # the most recent entries of a function compared with a call
NEAREST = 3
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ABSENT = "<absent>"
_CONTEXT = 20  # characters shown before the first difference of two long values


@dataclass(frozen=True)
class Difference:
    """One argument path whose value differs: ``temperature: 0.0 -> 0.2``."""

    path: str
    recorded: Any
    current: Any

    def __str__(self) -> str:
        recorded, current = _shown_pair(self.recorded, self.current)
        return f"{self.path}: {recorded} -> {current}"


@dataclass(frozen=True)
class Candidate:
    """A recorded entry near the call, and everything that differs from it."""

    key: str
    created: float
    differences: tuple[Difference, ...] = ()
    source_changed: bool = False
    version_changed: bool = False
    key_format_changed: bool = False
    request_recorded: bool = True
    sample: Optional[int] = None

    expired: bool = False

    @property
    def reasons(self) -> list[str]:
        """Each difference as one line."""
        lines = []
        if self.expired:
            lines.append("this entry has expired (past its TTL): the call would record it again")
        if self.key_format_changed:
            lines.append("a different key format (written by another memollm version)")
        if self.source_changed:
            lines.append("the function's source changed since this entry was recorded")
        if self.version_changed:
            lines.append("version= changed since this entry was recorded")
        if not self.request_recorded:
            lines.append("this entry has no recorded request to compare (record_request=False, or written before requests were recorded)")
        lines.extend(str(d) for d in self.differences)
        return lines

    def __str__(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created))
        sample = "" if self.sample is None else f", sample {self.sample}"
        reasons = self.reasons
        if not reasons:
            return f"entry {self.key} (recorded {when}{sample}) has the same request"
        head = f"entry {self.key} (recorded {when}{sample}) differs in:"
        return "\n".join([head, *("  " + line for line in reasons)])


@dataclass(frozen=True)
class Explanation:
    """What a call would do now (``outcome``: "hit", "expired" or "miss"), and for a miss the
    nearest recorded entries of the function with their differences."""

    function: str
    key: str
    outcome: str
    nearest: tuple[Candidate, ...] = ()
    comparable: bool = True
    note: str = ""
    request: Any = field(default=None, repr=False)

    def __str__(self) -> str:
        lines = [f"{self.function}: {self.outcome} (key {self.key})"]
        if self.note:
            lines.append(self.note)
        if self.outcome != "hit":
            if not self.nearest and self.comparable:
                lines.append("no recorded entry of this function to compare with")
            lines.extend(str(c) for c in self.nearest)
        return "\n".join(lines)

    def summary(self, limit: int = 6) -> str:
        """A few lines on the nearest entry (what an offline ``CacheMiss`` shows)."""
        if not self.nearest:
            return self.note
        nearest = self.nearest[0]
        reasons = nearest.reasons
        if not reasons:
            sample = "" if nearest.sample is None else f" as sample {nearest.sample}"
            return f"An entry with the same request is recorded{sample} ({nearest.key})."
        shown = reasons[:limit] + ([f"... and {len(reasons) - limit} more"] if len(reasons) > limit else [])
        return "\n".join([f"The nearest recorded entry ({nearest.key}) differs in:", *("  " + r for r in shown)])


def diff(recorded: Any, current: Any, path: str = "") -> Iterator[Difference]:
    """The leaf paths where two readable trees differ (``messages[2].content``)."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        for name in sorted(set(recorded) | set(current), key=repr):
            sub = _join(path, name)
            if name not in recorded:
                yield Difference(sub, _ABSENT, current[name])
            elif name not in current:
                yield Difference(sub, recorded[name], _ABSENT)
            else:
                yield from diff(recorded[name], current[name], sub)
    elif isinstance(recorded, list) and isinstance(current, list):
        for i in range(max(len(recorded), len(current))):
            sub = f"{path}[{i}]"
            if i >= len(recorded):
                yield Difference(sub, _ABSENT, current[i])
            elif i >= len(current):
                yield Difference(sub, recorded[i], _ABSENT)
            else:
                yield from diff(recorded[i], current[i], sub)
    elif recorded != current or type(recorded) is not type(current):
        yield Difference(path or "(the arguments)", recorded, current)


def explain(
    store: Optional[Store], function: str, key: str, outcome: str, identity: list[Any], request: Any, record_request: bool = True
) -> Explanation:
    """Compare ``request`` (a keyed request tree) with the entries of ``function`` in ``store``."""
    current = readable(request)
    if outcome == "hit":
        return Explanation(function, key, outcome, request=current)
    if not record_request:
        note = "record_request=False: requests are not recorded, so explain cannot compare this call with the entries"
        return Explanation(function, key, outcome, comparable=False, note=note, request=current)
    if store is None:
        return Explanation(function, key, outcome, note="the cache dir does not exist or cannot be used", request=current)
    candidates = [_compare(meta, identity, current) for meta in _recent_entries(store, function)]
    if outcome == "expired":  # the entry of this very key is there, past its TTL
        candidates = [dataclasses.replace(c, expired=True) if c.key == key else c for c in candidates]
    candidates.sort(key=_distance)
    return Explanation(function, key, outcome, tuple(candidates[:NEAREST]), request=current)


def outcome_of(store: Optional[Store], function: str, key: str, secret: Optional[bytes], ttl: Optional[float]) -> str:
    """"hit", "expired" or "miss": what a lookup of ``key`` would find (counts nothing)."""
    if store is None:
        return "miss"
    try:
        data = store.get(function, key)
        if data is None:
            return "miss"
        meta, _ = read_meta(data, secret)
    except (CorruptEntry, Exception):
        return "miss"
    now = time.time()
    if meta.expired(now) or (ttl is not None and now >= meta.created + ttl):
        return "expired"
    return "hit"


def _recent_entries(store: Store, function: str) -> Iterator[EntryMeta]:
    try:
        metas = sorted(store.entries(function), key=lambda m: m.created, reverse=True)[:SCAN_MAX]
    except Exception:
        return
    for listed in metas:
        try:
            data = store.get(function, listed.key)
            if data is not None:
                yield read_meta(data)[0]  # the signature is not needed to compare requests
        except Exception:  # unreadable entries are not candidates
            continue


def _compare(meta: EntryMeta, identity: list[Any], current: Any) -> Candidate:
    recorded_identity = meta.identity or []
    ident = readable(identity)
    recorded = readable(recorded_identity)

    def changed(i: int) -> bool:
        if not recorded or (len(recorded) <= i and len(ident) <= i):
            return False
        return len(recorded) <= i or len(ident) <= i or recorded[i] != ident[i]

    differences: tuple[Difference, ...] = ()
    if meta.request is not None:
        differences = tuple(diff(readable(meta.request), current))
    return Candidate(
        key=meta.key,
        created=meta.created,
        differences=differences,
        key_format_changed=changed(0),
        source_changed=changed(3),
        version_changed=changed(4),
        request_recorded=meta.request is not None,
        sample=meta.sample,
    )


def _distance(candidate: Candidate) -> tuple[int, float]:
    unknown = 0 if candidate.request_recorded else 1000
    changes = len(candidate.differences) + candidate.source_changed + candidate.version_changed + 2 * candidate.key_format_changed
    return unknown + changes, -candidate.created


def _join(path: str, name: Any) -> str:
    if isinstance(name, str) and _IDENTIFIER.match(name):
        return f"{path}.{name}" if path else name
    return f"{path}[{name!r}]"


def _shown_pair(recorded: Any, current: Any, limit: int = 60) -> tuple[str, str]:
    """Both values as shown in a difference, at most ``limit`` characters each. Long values that
    begin alike (an edited prompt) are shown from a little before where they first differ, so
    the change itself is in view: ``'...capital of France?' -> '...capital of Spain?'``."""
    texts = [repr(v) if v != _ABSENT else _ABSENT for v in (recorded, current)]
    start = 0
    if max(map(len, texts)) > limit:
        alike = len(os.path.commonprefix(texts))
        if alike > _CONTEXT:
            start = alike - _CONTEXT
    shown = []
    for text in texts:
        if start:
            text = "..." + text[start:]
        shown.append(text if len(text) <= limit else text[: limit - 3] + "...")
    return shown[0], shown[1]
