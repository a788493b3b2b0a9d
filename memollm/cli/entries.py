"""Reading one entry for display: its metadata, the request it answers and its response, decoded
without looking up a single class (``codec.decode_for_display``: nothing is imported, nothing
unpickled), and the text ``ls --grep`` and the report search."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from ..codec import UndecodableValue, Unresolved
from ..config import secret_bytes
from ..entry import CorruptEntry, EntryMeta, Stream, decode_body, read_meta
from ..keys import SECRET_HEADER_NAMES, is_secret_name
from .common import entry_request, entry_sample
from .ui import to_jsonable

REDACTED = "[redacted]"


@dataclass
class Shown:
    """One entry, decoded for display. ``value`` is the response, or a ``Stream`` of chunks."""

    meta: EntryMeta
    value: Any

    @property
    def request(self) -> Any:
        """The request as JSON-friendly data (secret-named fields masked), or ``None``."""
        request = entry_request(self.meta)
        return None if request is None else redact(to_jsonable(request))

    @property
    def sample(self) -> Optional[int]:
        return entry_sample(self.meta)

    @property
    def is_stream(self) -> bool:
        return isinstance(self.value, Stream)

    def response(self) -> Any:
        """The response as JSON-friendly data; a stream as ``{"chunks": [...], "result": ...}``."""
        if isinstance(self.value, Stream):
            return {"chunks": [to_jsonable(c) for c in self.value.chunks], "result": to_jsonable(self.value.result)}
        return to_jsonable(self.value)


def readable(value: Any) -> Any:
    """For people (``show``, ``textconv``, the report): an HTTP response's JSON ``body`` text
    shown as the JSON it holds, under ``"body (JSON)"``, one field a line. ``--json`` output
    keeps the text as stored."""
    body = value.get("body") if isinstance(value, dict) else None
    if isinstance(body, (bytes, bytearray, str)) and body[:1] in ("{", "[", b"{", b"["):
        try:
            parsed = json.loads(body)
        except ValueError:  # not JSON after all (or not UTF-8): shown as stored
            return value
        return {("body (JSON)" if k == "body" else k): (parsed if k == "body" else v) for k, v in value.items()}
    return value


def read_entry(data: bytes, verify: bool = True) -> Shown:
    """Decode entry bytes for display; ``UnreadableEntry`` if they are not a valid entry.

    ``verify``: check the signature against ``$MEMOLLM_SECRET`` when the entry is signed (as
    a lookup would); ``textconv`` reads files of any cache dir and only checks their checksum.
    """
    try:
        secret = secret_bytes(None) if verify else None
        meta, body = read_meta(data, secret)
        return Shown(meta, decode_body(meta, body, display=True))
    except (CorruptEntry, UndecodableValue) as exc:
        raise UnreadableEntry(str(exc)) from None
    except (TypeError, ValueError) as exc:  # a stream body of the wrong shape
        raise UnreadableEntry(f"malformed entry: {exc}") from None


class UnreadableEntry(ValueError):
    """Bytes that are not a valid entry (torn, altered, signed with another secret)."""


def redact(tree: Any) -> Any:
    """``tree`` with the values of secret-named fields (``api_key``, ``authorization``...)
    replaced: they are never stored, and never shown even if an old entry held one."""
    if isinstance(tree, dict):
        return {k: REDACTED if _secret_field(k) else redact(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [redact(v) for v in tree]
    return tree


def _secret_field(name: Any) -> bool:
    return isinstance(name, str) and (is_secret_name(name) or name.lower() in SECRET_HEADER_NAMES)


def leaves(tree: Any) -> Iterator[str]:
    """Every string, number and dict key of a JSON-friendly tree, as text."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                yield str(k)
                stack.append(v)
        elif isinstance(node, list):
            stack.extend(reversed(node))
        elif isinstance(node, Unresolved):  # pragma: no cover - to_jsonable turned these into dicts
            stack.append(to_jsonable(node))
        elif node is not None:
            yield str(node)


def search_text(shown: Shown) -> str:
    """The casefolded text ``--grep`` looks in: the request's and the response's fields, and a
    stream's text as one piece (what its chunks say, joined: a phrase split across chunks is found)."""
    parts = [*leaves(shown.request), *leaves(shown.response())]
    if shown.is_stream:
        parts.append("".join(stream_text(chunk) for chunk in shown.value.chunks))
    return "\n".join(parts).casefold()


_TEXT_FIELDS = ("content", "text", "delta", "partial_json", "refusal")


def stream_text(chunk: Any) -> str:
    """The text a chunk carries: a str chunk itself; in a model's chunk (or a server-sent event's
    JSON data) the strings of its text fields (``content``, ``text``, ``delta``...)."""
    if isinstance(chunk, (bytes, bytearray)):
        chunk = bytes(chunk).decode("utf-8", "replace")
    if isinstance(chunk, str):
        if not chunk.startswith(("data:", "event:", ":")) and "\ndata:" not in chunk:
            return chunk
        found = []
        for line in chunk.splitlines():
            if line.startswith("data:"):
                try:
                    found.append(_text_fields(json.loads(line[5:])))
                except ValueError:
                    continue
        return "".join(found)
    return _text_fields(to_jsonable(chunk))


def _text_fields(tree: Any) -> str:
    if isinstance(tree, dict):
        return "".join(v if k in _TEXT_FIELDS and isinstance(v, str) else _text_fields(v) for k, v in tree.items())
    if isinstance(tree, list):
        return "".join(_text_fields(v) for v in tree)
    return ""


def matches(shown: Shown, needle: str) -> bool:
    return needle.casefold() in search_text(shown)
