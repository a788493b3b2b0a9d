"""The self-describing entry: one value or one recorded stream, with its metadata.

Layout of the bytes (the same on disk, in memory and in Redis)::

    b"MLLM" | format (1 byte) | flags (1 byte) | header length (4 bytes, big endian)
    | header (msgpack map) | body (codec bytes) | xxh3-128 of all the above (16 bytes)
    | HMAC-SHA256 of all the above (32 bytes, only when signed)

The header carries the function, key, created/expires times, the original call's duration,
the kind ("value" or "stream") and the token usage (``"u"``: model, input, output, cache read,
cache write; absent when the result reported none), so an entry can be listed, expired, indexed
and priced on its own.
A checksum mismatch, a bad signature or any malformed byte makes the entry unreadable: a miss.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import itertools
import marshal
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import msgpack
import xxhash

from . import codec
from .stats import Usage

try:
    import ormsgpack
except ImportError:  # pragma: no cover - msgpack reads every header
    ormsgpack = None  # type: ignore[assignment]

MAGIC = b"MLLM"
FORMAT = 1
FLAG_SIGNED = 1
_PREFIX = struct.Struct(">4sBBI")
_CHECKSUM_LEN = 16
_MAC_LEN = 32

KIND_VALUE = "value"
KIND_STREAM = "stream"


class CorruptEntry(ValueError):
    """The bytes are not a valid (or not a trusted) entry."""


@dataclass
class EntryMeta:
    """What an entry says about itself (and what the index stores)."""

    function: str
    key: str
    created: float
    expires: Optional[float]
    duration: float = 0.0
    kind: str = KIND_VALUE
    tokens: int = 0
    size: int = 0
    #: The request the entry answers, as keyed: the normalized arguments of a decorated call,
    #: or an HTTP request's method, URL, body and key headers (``None``: not recorded).
    request: Any = None
    #: What the key was made of besides the request: ``[key format, *identity]`` (``None`` for
    #: entries written before it was recorded).
    identity: Optional[list[Any]] = None
    #: The sample index under ``cache_llm(samples=N)`` (``None`` otherwise).
    sample: Optional[int] = None
    #: The tokens the result used, by model (``None``: it reported none, or the entry predates it).
    usage: Optional[Usage] = None

    def expired(self, now: Optional[float] = None) -> bool:
        return self.expires is not None and (time.time() if now is None else now) >= self.expires

    def header(self) -> dict[str, Any]:
        header = {
            "fn": self.function,
            "key": self.key,
            "created": self.created,
            "expires": self.expires,
            "duration": self.duration,
            "kind": self.kind,
            "tokens": self.tokens,
        }
        if self.request is not None:
            header["request"] = self.request
        if self.identity is not None:
            header["identity"] = self.identity
        if self.sample is not None:
            header["sample"] = self.sample
        if self.usage is not None:
            header["u"] = list(self.usage.as_row())
        return header


def meta_from_header(h: dict[str, Any], size: int) -> EntryMeta:
    """The metadata an entry header describes (raises on a malformed one); entries written before
    a field existed read with its default."""
    u = h.get("u")
    usage = None
    if u is not None:
        model, counts = u[0], [int(n) for n in u[1:5]]
        usage = Usage(None if model is None else str(model), *counts)
    return EntryMeta(
        function=h["fn"],
        key=h["key"],
        created=float(h["created"]),
        expires=None if h["expires"] is None else float(h["expires"]),
        duration=float(h.get("duration", 0.0)),
        kind=h.get("kind", KIND_VALUE),
        tokens=int(h.get("tokens", 0) or 0),
        size=size,
        request=h.get("request"),
        identity=h.get("identity"),
        sample=h.get("sample"),
        usage=usage,
    )


@dataclass
class Stream:
    """A recorded stream: chunks in order, the generator's return value, chunk arrival offsets."""

    chunks: "list[Any] | FreshChunks"
    result: Any = None
    offsets: list[float] = field(default_factory=list)


class FreshChunks:
    """Chunks that can be changed by whoever receives them, kept encoded in small batches: each
    iteration decodes fresh copies a batch at a time, so a replay touches little memory at once
    and runs about as fast as the generator that made them (decoding all at once took twice as
    long). Plain data (dicts, lists, str, numbers...) is kept with ``marshal``, its equal strings
    shared: only ever this process's own bytes, never read from a file."""

    BATCH = 32

    def __init__(self, chunks: list[Any], allow_pickle: bool = False) -> None:
        step = self.BATCH
        self.count = len(chunks)
        self.allow_pickle = allow_pickle
        try:
            strings: dict[str, str] = {}
            plain = [_plain_copy(chunk, strings) for chunk in chunks]
            self.batches = tuple(marshal.dumps(plain[i : i + step]) for i in range(0, len(plain), step))
            self.marshalled = True
        except (_NotPlain, RecursionError, ValueError):
            self.batches = tuple(codec.encode(chunks[i : i + step], allow_pickle) for i in range(0, len(chunks), step))
            self.marshalled = False
        self.weight = sum(map(len, self.batches))  #: bytes held

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Any]:
        decode = marshal.loads if self.marshalled else functools.partial(codec.decode, allow_pickle=self.allow_pickle)
        return itertools.chain.from_iterable(map(decode, self.batches))  # lazily, batch by batch


class _NotPlain(Exception):
    pass


_PLAIN_LEAVES = frozenset({int, float, bool, bytes, type(None)})


def _plain_copy(value: Any, strings: dict[str, str]) -> Any:
    """``value`` rebuilt with equal strings as one object; ``_NotPlain`` for any other type
    than dict, list, tuple, str, bytes, numbers and None (exact types only)."""
    t = type(value)
    if t is str:
        return strings.setdefault(value, value)
    if t in _PLAIN_LEAVES:
        return value
    if t is dict:
        return {_plain_copy(k, strings): _plain_copy(v, strings) for k, v in value.items()}
    if t is list:
        return [_plain_copy(v, strings) for v in value]
    if t is tuple:
        return tuple(_plain_copy(v, strings) for v in value)
    raise _NotPlain(t)


def _head(meta: EntryMeta, secret: Optional[bytes]) -> bytes:
    header = _pack_header(meta.header())
    return _PREFIX.pack(MAGIC, FORMAT, FLAG_SIGNED if secret else 0, len(header)) + header


def pack_entry(meta: EntryMeta, body: "bytes | bytearray", secret: Optional[bytes] = None) -> bytes:
    """Assemble an entry from its metadata and already-encoded body (copied once).

    The checksum (and signature) are computed incrementally over the parts.
    """
    head = _head(meta, secret)
    checksum = xxhash.xxh3_128()
    checksum.update(head)
    checksum.update(body)
    parts = [head, body, checksum.digest()]
    if secret:
        mac = hmac.new(secret, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(part)
        parts.append(mac.digest())
    return b"".join(parts)


def pack_entry_in_place(meta: EntryMeta, body: bytearray, secret: Optional[bytes] = None) -> bytearray:
    """``pack_entry`` that turns ``body`` itself into the entry (no copy of the body: a recorded
    stream of N bytes peaks at about N while it is packed). ``body`` must not be used after."""
    body[0:0] = _head(meta, secret)  # moved within the buffer, which usually has room to spare
    body += xxhash.xxh3_128_digest(body)
    if secret:
        body += hmac.new(secret, body, hashlib.sha256).digest()
    return body


def encode_value(meta: EntryMeta, value: Any, secret: Optional[bytes] = None, allow_pickle: bool = False) -> bytes:
    """An entry holding one value (raises ``codec.UnencodableValue``)."""
    return pack_entry(meta, codec.encode(value, allow_pickle), secret)


def encode_stream(meta: EntryMeta, stream: Stream, secret: Optional[bytes] = None, allow_pickle: bool = False) -> bytes:
    """An entry holding a recorded stream."""
    body = codec.encode([stream.chunks, stream.result, stream.offsets], allow_pickle)
    return pack_entry(meta, body, secret)


def read_meta(data: bytes, secret: Optional[bytes] = None) -> tuple[EntryMeta, memoryview]:
    """Verify ``data`` and return its metadata and body; ``CorruptEntry`` if anything is off."""
    if len(data) < _PREFIX.size + _CHECKSUM_LEN:
        raise CorruptEntry("entry too short")
    magic, fmt, flags, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC or fmt != FORMAT:
        raise CorruptEntry("not a memollm entry")
    end = len(data)
    if flags & FLAG_SIGNED:
        end -= _MAC_LEN
        if secret is not None:
            mac = hmac.new(secret, memoryview(data)[:end], hashlib.sha256).digest()
            if not hmac.compare_digest(mac, data[end:]):
                raise CorruptEntry("entry signature does not match the secret")
    elif secret is not None:
        raise CorruptEntry("entry is not signed, and a secret is set")
    body_end = end - _CHECKSUM_LEN
    if body_end < _PREFIX.size + header_len:
        raise CorruptEntry("entry truncated")
    view = memoryview(data)
    if xxhash.xxh3_128_digest(view[:body_end]) != data[body_end:end]:
        raise CorruptEntry("entry checksum mismatch (torn or altered)")
    start = _PREFIX.size
    try:
        meta = meta_from_header(_unpack_header(view[start : start + header_len]), len(data))
    except Exception as exc:
        raise CorruptEntry(f"bad entry header: {exc}") from exc
    return meta, view[start + header_len : body_end]


def _pack_header(header: dict[str, Any]) -> bytes:
    # Natively when it can (a recorded request makes headers kilobytes long); tagged values
    # (msgpack ExtType) and non-str keys in a request go the msgpack way. Any encoding reads back.
    if ormsgpack is not None:
        try:
            return ormsgpack.packb(header)  # type: ignore[no-any-return]
        except Exception:
            pass
    return msgpack.packb(header, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack_header(raw: memoryview) -> Any:
    # The native decoder is ~2x faster on a header that records a request; it takes only str
    # map keys (a request may hold others): msgpack decides whatever it refuses.
    if ormsgpack is not None:
        try:
            return ormsgpack.unpackb(raw)
        except Exception:
            pass
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


def decode_body(meta: EntryMeta, body: memoryview, allow_pickle: bool = False, display: bool = False) -> Any:
    """The value, or a ``Stream``, held by an entry (``codec.UndecodableValue`` on failure).

    ``display``: classes are not looked up (``codec.decode_for_display``), for showing an entry.
    """
    value = codec.decode_for_display(body) if display else codec.decode(body, allow_pickle)
    if meta.kind == KIND_STREAM:
        chunks, result, offsets = value
        return Stream(chunks, result, offsets)
    return value
