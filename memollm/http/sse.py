"""Watching a server-sent event stream go by: has it completed, did it fail, what did it use?

SDKs stop reading a stream at its terminal event (the openai SDK closes the body at
``data: [DONE]``), so "complete" cannot mean "read to the end": a stream is complete once its
terminal event arrived — ``[DONE]``, Anthropic's ``message_stop``, the Responses API's
``response.completed`` or ``response.incomplete`` — or its body ended. An ``error`` event or
``response.failed`` marks it failed: such a stream is never stored.

The watcher sees raw chunks as they arrive, whatever their boundaries (an event may be split
across chunks, a chunk may hold many events), and only keeps the current unfinished line.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from .convert import reported

TERMINAL_EVENTS = frozenset({"message_stop", "response.completed", "response.incomplete"})
FAILED_EVENTS = frozenset({"error", "response.failed"})
_LINE_MAX = 1 << 20  # a line longer than this is not an event line worth parsing


class EventWatcher:
    """Parses the lines of an event stream incrementally; see the module docstring."""

    def __init__(self) -> None:
        self.complete = False
        self.failed = False
        self.usage: list[dict[str, Any]] = []  #: ``{"model", "usage"}`` reported along the stream
        self._partial = b""
        self._event: Optional[str] = None

    def feed(self, chunk: bytes) -> None:
        data = self._partial + chunk if self._partial else chunk
        lines = data.splitlines(keepends=True)
        last = lines[-1] if lines else b""
        if last and not last.endswith((b"\n", b"\r")):
            lines.pop()
            self._partial = last if len(last) <= _LINE_MAX else b""
        else:
            self._partial = b""
        for line in lines:
            self._line(line.rstrip(b"\r\n"))

    def _line(self, line: bytes) -> None:
        if not line:  # the blank line that ends an event
            self._event = None
            return
        if line.startswith(b"event:"):
            self._event = line[6:].strip().decode("utf-8", "replace")
            self._note(self._event)
        elif line.startswith(b"data:"):
            self._data(line[5:].strip())

    def _data(self, data: bytes) -> None:
        if data.startswith(b"[DONE]"):
            self.complete = True
            return
        kind = None
        if b'"type"' in data or b'"usage"' in data:
            try:
                parsed = json.loads(data)
            except ValueError:
                return
            if type(parsed) is dict:
                kind = parsed.get("type")
                usage = reported(parsed)
                if usage is not None:
                    self.usage.append(usage)
                if parsed.get("error") is not None and kind is None:
                    self.failed = True
        if isinstance(kind, str) and kind != self._event:
            self._note(kind)

    def _note(self, kind: str) -> None:
        if kind in TERMINAL_EVENTS:
            self.complete = True
        elif kind in FAILED_EVENTS:
            self.failed = True
