"""Cache keys: bind the arguments, drop secrets, normalize to msgpack, hash with xxh3-128.

Everything here is pure (no I/O) and deterministic across processes, machines,
``PYTHONHASHSEED`` and Python versions. The golden test in ``tests/test_keys_golden.py``
pins the format: a change that alters keys must be deliberate.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as _dt
import decimal
import enum
import inspect
import pathlib
import re
import textwrap
import uuid
from collections.abc import Mapping
from typing import Any, Callable, Iterable, Optional

import msgpack
import xxhash

try:  # a native sorted-keys encoder producing the very same bytes, ~25x faster (see KeyMaker)
    import ormsgpack
except ImportError:  # pragma: no cover - the pure-Python path gives identical keys
    ormsgpack = None  # type: ignore[assignment]

KEY_FORMAT = "memollm-key/1"

# Parameters whose *names* mark them as secrets: left out of the key, never written.
SECRET_PARAMETER_NAMES = frozenset(
    {
        "api_key",
        "apikey",
        "secret",
        "password",
        "passwd",
        "authorization",
        "token",
        "access_token",
        "auth_token",
        "bearer_token",
    }
)
SECRET_PARAMETER_SUFFIXES = ("_api_key", "_secret")
HEADER_PARAMETER_NAMES = frozenset({"headers", "extra_headers"})
SECRET_HEADER_NAMES = frozenset({"authorization", "api-key", "x-api-key"})

# Extension type codes of tagged values in the key tree.
TAG_SET = 1
TAG_DATETIME = 2
TAG_DATE = 3
TAG_TIME = 4
TAG_UUID = 5
TAG_DECIMAL = 6
TAG_PATH = 7
TAG_CLASS = 8
TAG_OBJECT = 9
TAG_BIGINT = 10
TAG_TIMEDELTA = 11
TAG_COMPLEX = 12

_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def is_secret_name(name: str) -> bool:
    """True if a parameter called ``name`` holds a secret (see ``SECRET_PARAMETER_NAMES``)."""
    lowered = name.lower()
    return lowered in SECRET_PARAMETER_NAMES or lowered.endswith(SECRET_PARAMETER_SUFFIXES)


def _strip_secret_headers(headers: Any) -> Any:
    if isinstance(headers, Mapping):
        return {k: v for k, v in headers.items() if not (isinstance(k, str) and k.lower() in SECRET_HEADER_NAMES)}
    return headers


def qualified_name(obj: Any) -> str:
    """``module.qualname`` of a class or function."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


class Unkeyable(TypeError):
    """Raised when an argument cannot be turned into a key."""


_ARGUMENT_RE = re.compile(r"^argument '([^']+)'")


def _fail(value: Any, where: str) -> Unkeyable:
    kind = qualified_name(type(value))
    match = _ARGUMENT_RE.match(where)
    param = f'"{match.group(1)}"' if match else "<parameter name>"
    return Unkeyable(
        f"memollm cannot build a cache key from {where} of type {kind}: it has no stable, "
        f"value-based representation. Fix it in one of these ways: leave the parameter out of the key "
        f"with cache_llm(ignore=({param},)); pass key=callable to cache_llm to choose what the key is "
        f"made of; or give {type(value).__name__} a __cache_key__(self) method returning plain data."
    )


def _sorted_items(items: Iterable[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    items = list(items)
    if all(type(k) is str for k, _ in items):
        items.sort(key=lambda kv: kv[0])
    else:
        items.sort(key=lambda kv: _pack(kv[0]))
    return items


def normalize(value: Any, where: str = "the argument") -> Any:
    """Turn ``value`` into a canonical msgpack-able tree (sorted dict keys, tagged types)."""
    t = type(value)
    if t is str or t is bool or t is float or value is None or t is bytes:
        return value
    if t is int:
        return value if -(2**63) <= value < 2**64 else msgpack.ExtType(TAG_BIGINT, str(value).encode())
    if t is dict:
        return dict(_sorted_items((normalize(k, where), normalize(v, f"{where}[{k!r}]")) for k, v in value.items()))
    if t is list or t is tuple:
        return [normalize(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return _normalize_other(value, where)


def _normalize_other(value: Any, where: str) -> Any:
    cache_key = getattr(type(value), "__cache_key__", None)
    if cache_key is not None and not isinstance(value, type):
        inner = normalize(value.__cache_key__(), f"{where}.__cache_key__()")
        return msgpack.ExtType(TAG_OBJECT, _pack([qualified_name(type(value)), inner]))
    if isinstance(value, enum.Enum):
        return normalize(value.value, f"{where}.value")
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return normalize(int(value), where)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, type):
        return msgpack.ExtType(TAG_CLASS, _pack(_class_identity(value)))
    if isinstance(value, Mapping):
        return normalize(dict(value.items()), where)
    if isinstance(value, (list, tuple)):
        return [normalize(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        members = sorted(_pack(normalize(v, f"{where}{{...}}")) for v in value)
        return msgpack.ExtType(TAG_SET, b"".join(members))
    if isinstance(value, _dt.datetime):
        return msgpack.ExtType(TAG_DATETIME, value.isoformat().encode())
    if isinstance(value, _dt.date):
        return msgpack.ExtType(TAG_DATE, value.isoformat().encode())
    if isinstance(value, _dt.time):
        return msgpack.ExtType(TAG_TIME, value.isoformat().encode())
    if isinstance(value, _dt.timedelta):
        return msgpack.ExtType(TAG_TIMEDELTA, _pack([value.days, value.seconds, value.microseconds]))
    if isinstance(value, uuid.UUID):
        return msgpack.ExtType(TAG_UUID, value.bytes)
    if isinstance(value, decimal.Decimal):
        return msgpack.ExtType(TAG_DECIMAL, str(value).encode())
    if isinstance(value, pathlib.PurePath):
        return msgpack.ExtType(TAG_PATH, value.as_posix().encode())
    if isinstance(value, complex):
        return msgpack.ExtType(TAG_COMPLEX, _pack([value.real, value.imag]))
    if dataclasses.is_dataclass(value):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return msgpack.ExtType(TAG_OBJECT, _pack([qualified_name(type(value)), normalize(fields, where)]))
    model_dump = getattr(value, "model_dump", None)
    if model_dump is not None and hasattr(type(value), "model_fields"):
        data = normalize(model_dump(mode="python"), where)
        return msgpack.ExtType(TAG_OBJECT, _pack([qualified_name(type(value)), data]))
    raise _fail(value, where)


def _class_identity(cls: type) -> list[Any]:
    identity: list[Any] = [qualified_name(cls)]
    schema = getattr(cls, "model_json_schema", None)
    if schema is not None:
        try:
            identity.append(normalize(schema()))
        except Exception:  # a model whose schema cannot be generated is keyed by name only
            pass
    return identity


def digest(tree: Any) -> str:
    """xxh3-128 hex digest (32 characters) of the msgpack form of a normalized tree."""
    return xxhash.xxh3_128_hexdigest(_pack(tree))


# ---------------------------------------------------------------------------------------------
# Function identity


def source_digest(func: Callable[..., Any]) -> str:
    """Digest of the function's source (decorators excluded), or of its code object.

    Source text is normalized (dedented, ``\\n`` line endings) so keys agree across machines.
    Without source (REPL, ``python -c``) the code object is digested: such keys are tied to
    the Python version.
    """
    func = inspect.unwrap(func)
    try:
        text = _source_without_decorators(inspect.getsource(func))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return "code:" + xxhash.xxh3_128_hexdigest(_pack(_code_tree(func.__code__)))
    return "src:" + xxhash.xxh3_128_hexdigest(text.encode("utf-8"))


def _source_without_decorators(source: str) -> str:
    source = textwrap.dedent(source.replace("\r\n", "\n").replace("\r", "\n"))
    lines = source.split("\n")
    tree = ast.parse(source)
    node = tree.body[0]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        lines = lines[node.lineno - 1 :]
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def _code_tree(code: Any) -> list[Any]:
    return [code.co_code, [_const_tree(c) for c in code.co_consts], list(code.co_names), list(code.co_varnames)]


def _const_tree(const: Any) -> Any:
    # frozenset constants (``x in {"a", "b"}``) are sorted: their repr follows PYTHONHASHSEED.
    if hasattr(const, "co_code"):
        return _code_tree(const)
    if isinstance(const, tuple):
        return ["tuple", [_const_tree(c) for c in const]]
    if isinstance(const, frozenset):
        return ["frozenset", sorted((_const_tree(c) for c in const), key=_pack)]
    return repr(const)


# ---------------------------------------------------------------------------------------------
# Binding


class ArgumentBinder:
    """Binds call arguments to a signature with defaults applied, quickly for simple signatures."""

    def __init__(self, signature: inspect.Signature) -> None:
        self.signature = signature
        params = list(signature.parameters.values())
        P = inspect.Parameter
        self._simple = all(p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY) for p in params)
        self._positional = [p.name for p in params if p.kind is P.POSITIONAL_OR_KEYWORD]
        self._names = [p.name for p in params]
        self._nameset = frozenset(self._names)
        self._default_values = {p.name: p.default for p in params if p.default is not P.empty}
        self.var_keyword = next((p.name for p in params if p.kind is P.VAR_KEYWORD), None)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Return ``{parameter: value}``; ``TypeError`` if the call does not fit the signature."""
        if self._simple and len(args) <= len(self._positional):
            bound = self._default_values.copy()
            bound.update(zip(self._positional, args))
            if kwargs:
                for name in kwargs:
                    if name not in self._nameset or name in self._positional[: len(args)]:
                        return self._slow_bind(args, kwargs)
                bound.update(kwargs)
            if len(bound) == len(self._names):
                return bound
        return self._slow_bind(args, kwargs)

    def _slow_bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        ba = self.signature.bind(*args, **kwargs)
        ba.apply_defaults()
        bound = dict(ba.arguments)
        if self.var_keyword is not None:
            # **kwargs entries are keyed (and scrubbed) like named parameters.
            extra = bound.pop(self.var_keyword, {})
            for name, value in extra.items():
                bound["**" + name] = value
        return bound


def arguments_tree(bound: Mapping[str, Any], ignore: frozenset[str]) -> dict[str, Any]:
    """The normalized, secret-free argument map of one call."""
    tree: dict[str, Any] = {}
    for name, value in bound.items():
        plain = name[2:] if name.startswith("**") else name
        if plain in ignore or is_secret_name(plain):
            continue
        if plain.lower() in HEADER_PARAMETER_NAMES:
            value = _strip_secret_headers(value)
        tree[name] = normalize(value, f"argument {plain!r}")
    return dict(sorted(tree.items()))


def make_key(identity: list[Any], arguments: Any) -> str:
    """Final key: digest of ``[format, identity..., arguments]``."""
    return digest([KEY_FORMAT, *identity, arguments])


if ormsgpack is not None:
    # Every type whose key form is tagged (or differs from ormsgpack's native encoding) is
    # passed through to ``_refuse``, so the fast path only encodes plain JSON-like data, for
    # which its bytes equal ``msgpack.packb(normalize(value))`` (tests/test_keys.py checks this).
    _FAST_OPTIONS = (
        ormsgpack.OPT_SORT_KEYS
        | ormsgpack.OPT_PASSTHROUGH_BIG_INT
        | ormsgpack.OPT_PASSTHROUGH_DATACLASS
        | ormsgpack.OPT_PASSTHROUGH_DATETIME
        | ormsgpack.OPT_PASSTHROUGH_ENUM
        | ormsgpack.OPT_PASSTHROUGH_SUBCLASS
        | ormsgpack.OPT_PASSTHROUGH_UUID
    )


_hexdigest = xxhash.xxh3_128_hexdigest


def _refuse(value: Any) -> Any:
    raise TypeError("needs normalization")


def _native_pack(value: Any) -> bytes:
    return ormsgpack.packb(value, default=_refuse, option=_FAST_OPTIONS)  # type: ignore[no-any-return]


def pack_normalized(value: Any, where: str = "the argument") -> bytes:
    """``msgpack.packb(normalize(value))``, through the native encoder when the data is plain."""
    if ormsgpack is not None:
        try:
            return ormsgpack.packb(value, default=_refuse, option=_FAST_OPTIONS)
        except Exception:
            pass
    return _pack(normalize(value, where))


class KeyMaker:
    """Computes a function's keys; everything fixed per function is prepared once.

    The key is ``digest([KEY_FORMAT, *identity, arguments])``: the constant prefix is packed
    here, so a call only binds, filters and packs its arguments.
    """

    def __init__(self, identity: list[Any], signature: inspect.Signature, ignore: frozenset[str]) -> None:
        self.binder = ArgumentBinder(signature)
        self.ignore = ignore
        self.prefix = msgpack.Packer().pack_array_header(2 + len(identity)) + b"".join(_pack(x) for x in [KEY_FORMAT, *identity])
        # The native encoder packs the whole ``[format, *identity, arguments]`` list in one call
        # (no copy of the packed arguments behind the prefix) where that gives the same bytes.
        self._head: Optional[list[Any]] = [KEY_FORMAT, *identity]
        try:
            if ormsgpack is None or _native_pack([*self._head, {}]) != self.prefix + _native_pack({}):
                self._head = None
        except TypeError:
            self._head = None
        names = list(signature.parameters)
        self._filtered = not self.binder._simple or any(
            n in ignore or is_secret_name(n) or n.lower() in HEADER_PARAMETER_NAMES for n in names
        )
        # The common call shapes, bound without a copy: every parameter by keyword, or every
        # parameter by position (-1: the signature has no such shape).
        simple = self.binder._simple
        self._all_keywords = len(names) if simple else -1
        self._all_positional = len(names) if simple and len(self.binder._positional) == len(names) else -1

    def arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """The packed, secret-free argument map of a call (``TypeError`` if it does not fit)."""
        bound = self.binder.bind(args, kwargs)
        if self._filtered:
            bound = self._filter(bound)
        if ormsgpack is not None:
            try:
                return ormsgpack.packb(bound, default=_refuse, option=_FAST_OPTIONS)
            except Exception:
                pass
        return _pack(arguments_tree(bound, frozenset()))

    def _filter(self, bound: dict[str, Any]) -> dict[str, Any]:
        tree: dict[str, Any] = {}
        for name, value in bound.items():
            plain = name[2:] if name.startswith("**") else name
            if plain in self.ignore or is_secret_name(plain):
                continue
            if plain.lower() in HEADER_PARAMETER_NAMES:
                value = _strip_secret_headers(value)
            tree[name] = value
        return tree

    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The 32-hex key of a call."""
        # With every keyword given, counting suffices: a misspelt name makes the function itself
        # raise, so nothing is ever stored under such a key.
        if not args and len(kwargs) == self._all_keywords:
            bound = kwargs
        elif not kwargs and len(args) == self._all_positional:
            bound = dict(zip(self.binder._positional, args))
        else:
            return _hexdigest(self.prefix + self.arguments(args, kwargs))
        if self._filtered:
            bound = self._filter(bound)
        head = self._head
        if head is not None:
            try:
                return _hexdigest(ormsgpack.packb([*head, bound], default=_refuse, option=_FAST_OPTIONS))
            except Exception:
                pass
        elif ormsgpack is not None:
            try:
                return _hexdigest(self.prefix + ormsgpack.packb(bound, default=_refuse, option=_FAST_OPTIONS))
            except Exception:
                pass
        return _hexdigest(self.prefix + _pack(arguments_tree(bound, frozenset())))

    def key_of(self, value: Any) -> str:
        """The key when ``key=`` chose what to key on."""
        return xxhash.xxh3_128_hexdigest(self.prefix + pack_normalized(["key=", value], "the value returned by key="))


# ---------------------------------------------------------------------------------------------
# Reading keyed requests back (entries record them: ``memollm show``, ``explain``)


def readable(tree: Any) -> Any:
    """A normalized tree as plain, printable data: tagged values become strings or
    ``{"__class__": name, ...}`` maps, bytes become text where they are UTF-8."""
    if isinstance(tree, msgpack.ExtType):  # (a namedtuple: before tuples)
        return _readable_ext(tree.code, tree.data)
    if isinstance(tree, dict):
        return {_readable_key(k): readable(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [readable(v) for v in tree]
    if isinstance(tree, bytes):
        try:
            return tree.decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + tree.hex()
    return tree


def _readable_key(key: Any) -> Any:
    value = readable(key)
    return value if isinstance(value, (str, int, float, bool)) or value is None else repr(value)


def _readable_ext(code: int, data: bytes) -> Any:
    try:
        if code == TAG_OBJECT:
            name, inner = msgpack.unpackb(data, raw=False, strict_map_key=False)
            inner = readable(inner)
            return {"__class__": name, **inner} if isinstance(inner, dict) else {"__class__": name, "value": inner}
        if code == TAG_SET:
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
            unpacker.feed(data)
            return {"__set__": [readable(v) for v in unpacker]}
        if code == TAG_CLASS:
            return {"__type__": readable(msgpack.unpackb(data, raw=False, strict_map_key=False))[0]}
        if code == TAG_UUID:
            return str(uuid.UUID(bytes=data))
        if code in (TAG_TIMEDELTA, TAG_COMPLEX):
            parts = msgpack.unpackb(data, raw=False)
            return str(_dt.timedelta(*parts)) if code == TAG_TIMEDELTA else str(complex(*parts))
        if code == TAG_BIGINT:
            return int(data.decode())
        return data.decode()  # datetime, date, time, decimal, path: their text form
    except Exception:
        return f"<ext {code}: 0x{data.hex()}>"
