"""Output of the ``memollm`` command: ``rich`` tables and progress bars for people, JSON for scripts.

Colour and progress bars only on a terminal: not when the output is piped or redirected, not
when ``NO_COLOR`` is set (https://no-color.org), not on a ``TERM=dumb`` terminal. Off a
terminal, tables are as wide as their content (never wrapped or cut to 80 columns), so scripts
reading them see whole keys and names.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import decimal
import enum
import json
import os
import pathlib
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence, TextIO

from ..codec import Unresolved
from ..entry import EntryMeta

if TYPE_CHECKING:  # rich is imported when something is drawn: `--json` and `textconv` start faster
    from rich.console import Console
    from rich.progress import Progress as RichProgress

PROGRESS_MIN = 1000  # entries; smaller jobs finish before a progress bar would help
UNBOUNDED_WIDTH = 100_000  # off a terminal: lines as long as their content


def isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def plain_requested() -> bool:
    """``NO_COLOR`` (any non-empty value) or a dumb terminal: no colour, no bars."""
    return bool(os.environ.get("NO_COLOR")) or os.environ.get("TERM") == "dumb"


def console(stream: Optional[TextIO] = None) -> Console:
    """A console on ``stream`` (default: the current ``sys.stdout``)."""
    from rich.console import Console

    stream = sys.stdout if stream is None else stream
    terminal = isatty(stream)
    return Console(
        file=stream,
        highlight=False,
        no_color=plain_requested() or None,
        width=None if terminal else UNBOUNDED_WIDTH,
        color_system="auto" if terminal and not plain_requested() else None,
        force_terminal=terminal,
        soft_wrap=not terminal,
    )


def print_table(
    out: Console,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Iterable[int] = (),
    total: Optional[Sequence[str]] = None,
    styles: Optional[dict[int, str]] = None,
) -> None:
    """Aligned columns, bold headers; ``right`` columns right-aligned, ``total`` a last bold row,
    ``styles`` a style per column (on a terminal).

    A table is as wide as its content, even on a narrower terminal (whose lines then wrap):
    cells are never cut or folded, since keys and names are copied from these tables.
    """
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    right_set, styles = set(right), styles or {}
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", padding=(0, 1))
    for i, header in enumerate(headers):
        table.add_column(header, justify="right" if i in right_set else "left", no_wrap=True, style=styles.get(i))
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    if total is not None:
        table.add_row(*(Text(cell) for cell in total), style="bold")
    natural = Measurement.get(out, out.options.update_width(UNBOUNDED_WIDTH), table).maximum
    if natural > out.width:
        out.width = natural
    if out.is_terminal:
        out.print(table)
        return
    with out.capture() as captured:
        out.print(table)
    out.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def print_json(out: TextIO, value: Any) -> None:
    json.dump(value, out, indent=2, ensure_ascii=False, default=str)
    out.write("\n")


def wants_progress(count: int) -> bool:
    """Whether a job of ``count`` items draws a bar on stderr (then it may go item by item)."""
    return count >= PROGRESS_MIN and isatty(sys.stderr) and not plain_requested()


class Progress:
    """A progress bar on stderr (``rich``), drawn only on a terminal, for jobs of at least
    ``minimum`` items (``PROGRESS_MIN``), without ``NO_COLOR``. A context manager; ``advance``
    counts items done, ``update(done, total)`` sets both (for a job whose size is learnt late)."""

    def __init__(
        self,
        label: str,
        total: int,
        stream: Optional[TextIO] = None,
        minimum: Optional[int] = None,
        transient: bool = False,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.minimum = PROGRESS_MIN if minimum is None else minimum
        self.transient = transient
        self.allowed = isatty(self.stream) and not plain_requested()
        self._bar: Optional[RichProgress] = None
        self._task: Any = None
        self._maybe_start()

    @property
    def enabled(self) -> bool:
        return self._bar is not None

    def _maybe_start(self) -> None:
        if self._bar is not None or not self.allowed or self.total < max(1, self.minimum):
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TaskProgressColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(file=self.stream, force_terminal=True, highlight=False),
            transient=self.transient,
            refresh_per_second=10,
        )
        self._task = self._bar.add_task(self.label, total=self.total, completed=self.done)
        self._bar.start()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)

    def update(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self._bar is None:
            self._maybe_start()
        elif self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Figures and values as text


def plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def human_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.001 or seconds == 0 else f"{seconds * 1e6:.0f} us"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def human_time(epoch: Optional[float]) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def human_expiry(meta: EntryMeta, now: float) -> str:
    if meta.expires is None:
        return "never"
    if meta.expires <= now:
        return "expired"
    return "in " + human_duration(meta.expires - now)


def human_dollars(dollars: Optional[float]) -> str:
    """``$1.23``; ``—`` when no price is known (never a guess)."""
    if dollars is None:
        return "\u2014"
    return f"${dollars:,.2f}" if dollars >= 0.01 or dollars == 0 else f"${dollars:.4f}"


def to_jsonable(value: Any) -> Any:
    """A JSON-friendly view of a cached value (for display only; the cache keeps the real types)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_jsonable(v) for v in value), key=repr)
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(data).decode("ascii")}
    if isinstance(value, Unresolved):
        return {
            "__class__": value.class_name,
            **(to_jsonable(value.data) if isinstance(value.data, dict) else {"value": to_jsonable(value.data)}),
        }
    if hasattr(value, "model_dump") and callable(value.model_dump):
        try:
            return to_jsonable(value.model_dump(mode="json"))
        except Exception:
            pass
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal, pathlib.PurePath, _dt.timedelta, complex)):
        return str(value)
    return repr(value)


def type_name(value: Any) -> str:
    if isinstance(value, Unresolved):
        return value.class_name
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def one_line(value: Any) -> str:
    if value is None or isinstance(value, (str, bool, int, float)):
        return repr(value)
    return json.dumps(to_jsonable(value), ensure_ascii=False)


def as_text(value: Any) -> str:
    """A string as is, anything else as indented JSON."""
    return value if isinstance(value, str) else json.dumps(to_jsonable(value), indent=2, ensure_ascii=False)


def indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines() or [""])


def confirm(question: str) -> bool:
    """Ask on stderr, read a line from stdin: only y/yes agrees (no input at all means no)."""
    sys.stderr.write(question)
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline() if sys.stdin is not None else ""
    except (OSError, ValueError):  # stdin closed or unreadable
        answer = ""
    if not isatty(sys.stdin):
        sys.stderr.write(answer if answer.endswith("\n") else answer + "\n")  # echo what was read
    return answer.strip().lower() in ("y", "yes")
