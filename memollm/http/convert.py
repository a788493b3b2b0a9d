"""Requests and responses of httpx/httpx2, to and from memollm's own small forms.

A request becomes the tree its key is made of: method, scheme, host, port, path, the query
sorted, the JSON body normalized as decorator arguments are (secret-looking fields dropped), and
the chosen ``key_headers``. Credentials never enter it, whatever ``key_headers`` says. A
response is stored as its status, its headers without cookies or credentials, and its body.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Optional

import msgpack
import xxhash

from .. import keys

CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "cookie", "proxy-authorization"})
"""Request headers that never reach a key or the disk."""
UNSTORED_HEADERS = CREDENTIAL_HEADERS | {"set-cookie", "set-cookie2"}
"""Response headers left out of stored entries."""
DEFAULT_KEY_HEADERS = ("anthropic-version", "anthropic-beta", "openai-beta")
_DEFAULT_PORTS = {"http": 80, "https": 443}
FUNCTION_PREFIX = "http:"
"""What the "function" of every HTTP entry starts with (``http:POST host/path``)."""


def is_json(content_type: Optional[str]) -> bool:
    """``application/json``, ``application/vnd.x+json``... (parameters ignored)."""
    if not content_type:
        return False
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def is_event_stream(content_type: Optional[str]) -> bool:
    return bool(content_type) and content_type.partition(";")[0].strip().lower() == "text/event-stream"  # type: ignore[union-attr]


def default_match(request: Any) -> bool:
    """What is cached unless ``match=`` says otherwise: POST requests with a JSON body."""
    return request.method == "POST" and is_json(request.headers.get("content-type"))


def json_post(method: str, content_type: Optional[str]) -> bool:
    """``default_match`` on what ``examine`` found."""
    return method == "POST" and is_json(content_type)


def parse_key_headers(names: Any, owner: str) -> tuple[str, ...]:
    """``key_headers=``: header names (any case); credentials refused with the reason."""
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise TypeError(f"{owner}(key_headers=...) must be a list of header names, not {type(names).__name__} {names!r}")
    parsed = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise TypeError(f"{owner}(key_headers=...) must hold header names (non-empty str), got {name!r}")
        lowered = name.strip().lower()
        if lowered in CREDENTIAL_HEADERS:
            raise ValueError(
                f"{owner}(key_headers=...) names {name!r}, a credential header: credentials never enter keys or the "
                "disk. Leave it out (requests with different keys but the same content share an entry)"
            )
        parsed.append(lowered)
    return tuple(sorted(set(parsed)))


def function_id(parts: dict[str, Any]) -> str:
    """The "function" HTTP entries are listed under: ``http:POST api.openai.com/v1/chat/completions``
    (from ``request_parts``; the port only when it is not the scheme's default)."""
    host, port = parts["host"], parts["port"]
    if port != _DEFAULT_PORTS.get(parts["scheme"]):
        host = f"{host}:{port}"
    return f"{FUNCTION_PREFIX}{parts['method']} {host}{parts['path']}"


def is_http_function(function: str) -> bool:
    """Whether ``function`` names entries of the HTTP layer."""
    return function.startswith(FUNCTION_PREFIX)


def body_tree(content: bytes, content_type: Optional[str]) -> Any:
    """The body as keyed: parsed JSON (secret fields dropped: at the top level all, deeper those
    holding a string), else the raw bytes."""
    if not content:
        return None
    if is_json(content_type):
        try:
            data = json.loads(content)
        except ValueError:
            return content
        return without_credentials(data)
    return content


def without_credentials(data: Any) -> Any:
    """A parsed JSON body as keyed: secret-named fields dropped (at the top level all, deeper
    those holding a string). Changes ``data`` in place."""
    if type(data) is dict:
        for name in [n for n in data if keys.is_secret_name(n)]:
            del data[name]
        _drop_nested_credentials(data)
    return data


def _drop_nested_credentials(tree: Any) -> None:
    """Deeper in a body, drop secret-named fields holding a string (``{"auth": {"api_key": "sk-..."}}``):
    credentials, never keyed or stored. Secret-named fields holding structure stay (a tool's JSON
    schema may well have a property called ``token``)."""
    if type(tree) is dict:
        for name in [n for n, v in tree.items() if isinstance(v, str) and keys.is_secret_name(n)]:
            del tree[name]
        for value in tree.values():
            _drop_nested_credentials(value)
    elif type(tree) is list:
        for value in tree:
            _drop_nested_credentials(value)


_KEY_PREFIX = msgpack.Packer().pack_array_header(3) + msgpack.packb(keys.KEY_FORMAT) + msgpack.packb("http")
_memo: dict[tuple[Any, ...], tuple[str, str, bytes, dict[str, Any]]] = {}  # request -> what keyed() made of it
_memo_bytes = [0]
MEMO_BYTES_MAX = 8 * 2**20
MEMO_ITEM_MAX = 256 * 2**10


def keyed(request: Any, content_type: Optional[str], chosen: Optional[dict[str, str]]) -> tuple[str, str, bytes, dict[str, Any]]:
    """``(function, key, packed request, parts)`` of a request (its body read). An identical
    request seen before (SDKs send identical bytes for identical calls) is not parsed again; the
    memo is bounded by bytes."""
    content = request.content
    memo_key = (request.method, str(request.url), content_type, tuple(chosen.items()) if chosen else None, content)
    found = _memo.get(memo_key)
    if found is not None:
        return found
    parts = request_parts(request, chosen)
    function, key, packed = key_of(parts, body_tree(content, content_type))
    found = (function, key, packed, parts)
    size = len(content) + len(packed)  # the body in the memo's key, its packed form in the value
    if len(content) <= MEMO_ITEM_MAX:
        if _memo_bytes[0] + size > MEMO_BYTES_MAX:
            _memo.clear()
            _memo_bytes[0] = 0
        _memo[memo_key] = found
        _memo_bytes[0] += size
    return found


def key_of(parts: dict[str, Any], body: Any) -> tuple[str, str, bytes]:
    """``(function, key, packed request)`` of a request given its parts (``request_parts``) and
    its body as keyed (``body_tree``)."""
    packed = pack_request(parts, keys.pack_normalized(body, "the request body"))
    return function_id(parts), xxhash.xxh3_128_hexdigest(_KEY_PREFIX + packed), packed


def examine(request: Any, key_headers: frozenset[bytes]) -> tuple[Optional[str], Optional[dict[str, str]]]:
    """The request's content type and its ``key_headers`` present, in one pass over its headers."""
    content_type = None
    chosen = None
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"content-type":
            content_type = value.decode("latin-1")
        elif lowered in key_headers:
            if chosen is None:
                chosen = {}
            header = lowered.decode("latin-1")
            chosen[header] = request.headers.get(header)  # decoded as the library decodes it
    return content_type, chosen


def is_secret_query(name: str) -> bool:
    """Query parameters that carry credentials (``?key=`` of Google's APIs, ``api_key``...)."""
    return name.lower() in ("key", "api-key") or keys.is_secret_name(name)


def request_parts(request: Any, chosen: Optional[dict[str, str]]) -> dict[str, Any]:
    """Everything the key is made of besides the body: method, URL parts, the key headers."""
    url = request.url
    parts: dict[str, Any] = {
        "method": request.method,
        "scheme": url.scheme,
        "host": url.host,
        "port": url.port or _DEFAULT_PORTS.get(url.scheme),
        "path": url.path,
        "query": sorted(item for item in url.params.multi_items() if not is_secret_query(item[0])) if url.query else [],
    }
    if chosen:
        parts["headers"] = chosen
    return parts


_BODY = msgpack.packb("body")


def pack_request(parts: dict[str, Any], body: bytes) -> bytes:
    """The normalized request, packed: the same bytes as ``keys.pack_normalized({**parts, "body":
    tree})`` for ``body`` the packed tree ("body" sorts before every other part, and the parts
    are fewer than 15: a one-byte map header)."""
    packed = keys.pack_normalized(parts, "the request")
    return bytes((packed[0] + 1,)) + _BODY + body + packed[1:]


def stored_headers(headers: Any) -> list[list[str]]:
    """A response's headers as stored: in order, without cookies or credentials."""
    return [[k, v] for k, v in headers.multi_items() if k.lower() not in UNSTORED_HEADERS]


def head(response: Any) -> dict[str, Any]:
    """A response's status and stored headers (what a recorded stream keeps besides its chunks)."""
    return {"status": response.status_code, "headers": stored_headers(response.headers)}


def usage_of(data: Any) -> Any:
    """The token usage a provider's JSON reports (Chat Completions, Messages, Responses and their
    stream events), in the shape ``stats.tokens_of`` reads; ``None`` if none."""
    if type(data) is not dict:
        return None
    usage = data.get("usage")
    if usage is None:
        inner = data.get("response") if isinstance(data.get("response"), dict) else data.get("message")
        if isinstance(inner, dict):
            usage = inner.get("usage")
    return usage if isinstance(usage, dict) else None


def reported(data: Any) -> Optional[dict[str, Any]]:
    """``{"model": ..., "usage": ...}`` of a provider's JSON (the model may be ``None``), the shape
    ``stats.usage_of`` and ``stats.UsageTally`` read (dollars need the model); ``None`` if no usage."""
    usage = usage_of(data)
    if usage is None:
        return None
    holder = data.get("response") if isinstance(data.get("response"), dict) else data.get("message")
    model = data.get("model") or (holder.get("model") if isinstance(holder, dict) else None)
    return {"model": model if isinstance(model, str) else None, "usage": usage}


def json_usage(body: bytes, content_type: Optional[str]) -> Optional[dict[str, Any]]:
    """What ``reported`` finds in a JSON body."""
    if not is_json(content_type) or b'"usage"' not in body:
        return None
    try:
        return reported(json.loads(body))
    except ValueError:
        return None
