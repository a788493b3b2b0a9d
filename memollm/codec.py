"""Values to bytes and back with msgpack, typed for what LLM helpers return.

Supported: str, bytes, numbers, None, bool, dict, list, tuple, set, datetime types, UUID,
Decimal, enums, dataclasses and pydantic models (openai/anthropic responses included), each
restored as its own type. Decoding never executes code: classes are looked up (only in packages
the program has already imported) and rebuilt from their data. Pickle is used only when the user
opts in with ``allow_pickle=True``, for both writing and reading.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import decimal
import enum
import gc
import inspect
import itertools
import pickle
import re
import sys
import types
import typing
import uuid
import weakref
from typing import Any

import msgpack

try:
    import ormsgpack
except ImportError:  # pragma: no cover - msgpack alone decodes everything
    ormsgpack = None  # type: ignore[assignment]


class UnencodableValue(TypeError):
    """A value of an unsupported type (and pickling not allowed)."""


class UndecodableValue(ValueError):
    """Stored bytes that cannot be turned back into a value safely."""


EXT_TUPLE = 1
EXT_PYDANTIC = 2
EXT_DATACLASS = 3
EXT_DATETIME = 4
EXT_DATE = 5
EXT_TIME = 6
EXT_TIMEDELTA = 7
EXT_UUID = 8
EXT_DECIMAL = 9
EXT_SET = 10
EXT_FROZENSET = 11
EXT_BIGINT = 12
EXT_PICKLE = 13
EXT_ENUM = 14
EXT_COMPLEX = 15
EXT_MODEL = 16  # a pydantic model by the state pickle would keep (see _model_state)
EXT_ORDERED_DICT = 17
EXT_COUNTER = 18
EXT_DEFAULT_DICT = 19
EXT_BYTEARRAY = 20
EXT_SUBCLASS = 21  # a subclass of str, bytes, int, float, dict or list: [class, base, value, __dict__]
EXT_NUMPY = 22  # a numpy scalar: [dtype string, its bytes]

_SUBCLASS_BASES: dict[str, type] = {"str": str, "bytes": bytes, "int": int, "float": float, "dict": dict, "list": list}
# The base value of a subclass instance, without calling anything the subclass overrides.
_AS_BASE: dict[str, Any] = {
    "str": str.__str__,
    "bytes": lambda v: bytes.__add__(b"", v),
    "int": int.__int__,
    "float": float.__float__,
    "dict": dict.copy,
    "list": list.copy,
}
_NUMPY_KINDS = "biufcmMUS"  # booleans, numbers, dates and durations, fixed-size strings: never objects
_NUMPY_DTYPE_RE = re.compile(r"^[<>|=]?[biufcmMUS][0-9]{1,4}(\[[A-Za-z0-9]{1,8}\])?$")


_local_classes: weakref.WeakValueDictionary[tuple[str, str], type] = weakref.WeakValueDictionary()
"""Classes defined inside functions that this process has stored values of, by name: no
import can find them, so they are restored only while the program that defined them runs."""


def _class_ref(cls: type) -> list[Any]:
    """How a stored value names its class: ``[module, qualname]``; for a parametrized pydantic
    generic (``Box[Item]``, openai's ``ParsedChatCompletion[...]``) also its origin class and
    type arguments, from which it is rebuilt."""
    module, qualname = cls.__module__, cls.__qualname__
    generic = getattr(cls, "__pydantic_generic_metadata__", None)
    if isinstance(generic, dict) and generic.get("origin") is not None:
        return [module, qualname, _class_ref(generic["origin"]), [_type_ref(arg) for arg in generic.get("args", ())]]
    if "<locals>" in qualname:
        _local_classes[(module, qualname)] = cls  # the latest definition of that name wins
    return [module, qualname]


def _type_ref(arg: Any) -> list[Any]:
    """A type argument of a generic: a class, ``None``, a TypeVar, ``X[...]`` or a Literal value."""
    if arg is type(None) or arg is None:
        return ["none"]
    if isinstance(arg, typing.TypeVar):
        return ["typevar", arg.__module__, arg.__name__]
    origin, args = typing.get_origin(arg), typing.get_args(arg)
    if origin is None and isinstance(arg, type):  # (list[int] passes for a type on Python 3.9/3.10)
        return ["class", _class_ref(arg)]
    if origin is typing.Literal and all(isinstance(a, (str, int, bool, bytes)) or a is None for a in args):
        return ["literal", list(args)]
    if origin is typing.Union or (sys.version_info >= (3, 10) and isinstance(arg, types.UnionType)):
        return ["union", [_type_ref(a) for a in args]]
    if isinstance(origin, type) and args:
        return ["alias", _class_ref(origin), [_type_ref(a) for a in args]]
    raise UnencodableValue(f"memollm cannot store a value whose class is parametrized by {arg!r}")


def _encode_other(value: Any, pack: Any, allow_pickle: bool) -> Any:
    t = type(value)
    if t is tuple:
        return msgpack.ExtType(EXT_TUPLE, pack(list(value)))
    if isinstance(value, enum.Enum):
        return msgpack.ExtType(EXT_ENUM, pack([*_class_ref(t), value.value]))
    if t is int:  # outside msgpack's 64-bit range
        return msgpack.ExtType(EXT_BIGINT, str(value).encode())
    if t is collections.OrderedDict or t is collections.Counter:
        return msgpack.ExtType(EXT_ORDERED_DICT if t is collections.OrderedDict else EXT_COUNTER, pack([[k, v] for k, v in value.items()]))
    if t is collections.defaultdict:
        factory = value.default_factory
        if factory is not None and not isinstance(factory, type):
            raise UnencodableValue(f"memollm cannot store a defaultdict whose default_factory is {factory!r} (only a class such as list or int)")
        return msgpack.ExtType(EXT_DEFAULT_DICT, pack([None if factory is None else _class_ref(factory), [[k, v] for k, v in value.items()]]))
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.generic):  # numpy.float64, numpy.int64, ...
        dtype = value.dtype
        if dtype.kind not in _NUMPY_KINDS or not _NUMPY_DTYPE_RE.match(dtype.str):
            raise UnencodableValue(f"memollm cannot store a numpy value of dtype {dtype}")
        return msgpack.ExtType(EXT_NUMPY, pack([dtype.str, value.tobytes()]))
    for name, base in _SUBCLASS_BASES.items():  # restored as the subclass, like pickle does
        if isinstance(value, base) and not isinstance(value, bool):
            _check_rebuildable(t, name)
            return msgpack.ExtType(EXT_SUBCLASS, pack([_class_ref(t), name, _AS_BASE[name](value), _instance_dict(value)]))
    if hasattr(t, "model_fields") and hasattr(value, "model_dump"):
        state = _model_state(value)
        if state is not None:
            try:
                return msgpack.ExtType(EXT_MODEL, pack(_class_ref(t)) + pack(state))
            except UnencodableValue:
                pass  # a field of an unsupported type: store the model's (JSON) dump instead
        try:
            data = pack(value.model_dump(mode="python", by_alias=True, warnings=False))
        except UnencodableValue:
            data = pack(value.model_dump(mode="json", by_alias=True, warnings=False))
        fields_set = getattr(value, "__pydantic_fields_set__", None)
        tail = pack(sorted(fields_set)) if isinstance(fields_set, set) else b""
        return msgpack.ExtType(EXT_PYDANTIC, pack(_class_ref(t)) + data + tail)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return msgpack.ExtType(EXT_DATACLASS, pack(_class_ref(t)) + pack(fields))
    if t is _dt.datetime:
        return msgpack.ExtType(EXT_DATETIME, value.isoformat().encode())
    if t is _dt.date:
        return msgpack.ExtType(EXT_DATE, value.isoformat().encode())
    if t is _dt.time:
        return msgpack.ExtType(EXT_TIME, value.isoformat().encode())
    if t is _dt.timedelta:
        return msgpack.ExtType(EXT_TIMEDELTA, pack([value.days, value.seconds, value.microseconds]))
    if t is uuid.UUID:
        return msgpack.ExtType(EXT_UUID, value.bytes)
    if t is decimal.Decimal:
        return msgpack.ExtType(EXT_DECIMAL, str(value).encode())
    if t is set:
        return msgpack.ExtType(EXT_SET, pack(list(value)))
    if t is frozenset:
        return msgpack.ExtType(EXT_FROZENSET, pack(list(value)))
    if t is complex:
        return msgpack.ExtType(EXT_COMPLEX, pack([value.real, value.imag]))
    if allow_pickle:
        try:
            return msgpack.ExtType(EXT_PICKLE, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception as exc:
            raise UnencodableValue(f"cannot pickle a value of type {t.__module__}.{t.__qualname__}: {exc}") from exc
    raise UnencodableValue(
        f"memollm cannot store a value of type {t.__module__}.{t.__qualname__}; supported are str, bytes, "
        "numbers, None, dict, list, tuple, set, datetime/UUID/Decimal, enums, dataclasses and pydantic "
        "models. Return one of those, or opt in with cache_llm(allow_pickle=True)."
    )


_rebuildable: "weakref.WeakKeyDictionary[type, bool]" = weakref.WeakKeyDictionary()
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class defined by a class statement


def _check_rebuildable(cls: type, name: str) -> None:
    """Refuse (``UnencodableValue``) a subclass that the base type's ``__new__`` cannot make (a
    subclass of ``OrderedDict`` or of a C type other than the base): stored, it would never be read."""
    ok = _rebuildable.get(cls)
    if ok is None:
        base: Any = _SUBCLASS_BASES[name]
        # Only classes written in Python between it and the base: a C type in between
        # (OrderedDict, defaultdict) keeps state that the base's __new__ does not set up.
        between = cls.__mro__[: cls.__mro__.index(base)]
        ok = all(c.__flags__ & _HEAPTYPE for c in between)
        if ok:
            try:
                base.__new__(cls) if name in ("dict", "list") else base.__new__(cls, base())
            except Exception:
                ok = False
        _rebuildable[cls] = ok
    if not ok:
        raise UnencodableValue(f"memollm cannot store a {cls.__module__}.{cls.__qualname__}: it cannot be rebuilt from its {name} value")


def _instance_dict(value: Any) -> Any:
    """The attributes of a subclass instance beyond its base value (``None`` if none); a
    subclass keeping attributes in ``__slots__`` cannot be restored faithfully."""
    for cls in type(value).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot not in ("__dict__", "__weakref__") and hasattr(value, slot):
                raise UnencodableValue(f"memollm cannot store a {type(value).__qualname__}: it keeps attributes in __slots__")
    state = getattr(value, "__dict__", None)
    return dict(state) if state else None


def _model_state(value: Any) -> Any:
    """What pickle keeps of a pydantic v2 model: ``[__dict__, extra, fields set, private]``.

    Restoring exactly that (no validation, nothing re-run) makes the copy equal to the
    original in every way: ``model_dump(exclude_unset=True)``, SDK attributes such as
    openai's ``_request_id``, private attributes. ``None`` if not that kind of model.
    """
    state = getattr(value, "__dict__", None)
    extra = getattr(value, "__pydantic_extra__", None)
    fields_set = getattr(value, "__pydantic_fields_set__", None)
    private = getattr(value, "__pydantic_private__", None)
    if type(state) is not dict or not isinstance(fields_set, set):
        return None
    if not (extra is None or isinstance(extra, dict)) or not (private is None or isinstance(private, dict)):
        return None
    # Fields and underscore attributes; not e.g. functools.cached_property values (recomputable).
    fields = getattr(type(value), "model_fields", {})
    state = {k: v for k, v in state.items() if k in fields or k.startswith("_")}
    # Fields the instance itself removed (litellm's Message deletes its unset optional ones):
    # restored absent too, and the reader knows they are missing on purpose.
    absent = sorted(name for name in fields if name not in state)
    return [state, extra, sorted(fields_set), private, absent] if absent else [state, extra, sorted(fields_set), private]


def _tag_bytearrays(value: Any) -> Any:
    """``value`` with each ``bytearray`` in its dicts and lists tagged (msgpack would pack it as
    ``bytes`` without asking ``default``); containers are copied only on the way to one. Levels
    holding no container are passed over at C speed (``any(map(...))``)."""
    t = type(value)
    if t is bytearray:
        return msgpack.ExtType(EXT_BYTEARRAY, bytes(value))
    if t is dict:
        if not any(map(_is_container, map(type, value.values()))):
            return value
        copy = None
        for k, v in value.items():
            if type(v) in _CONTAINERS:
                tagged = _tag_bytearrays(v)
                if tagged is not v:
                    if copy is None:
                        copy = dict(value)
                    copy[k] = tagged
        return value if copy is None else copy
    if not any(map(_is_container, map(type, value))):
        return value
    items = None
    for i, v in enumerate(value):
        if type(v) in _CONTAINERS:
            tagged = _tag_bytearrays(v)
            if tagged is not v:
                if items is None:
                    items = list(value)
                items[i] = tagged
    return value if items is None else items


_CONTAINERS = frozenset((dict, list, bytearray))
_is_container = _CONTAINERS.__contains__


def _holds_bytearray(value: Any) -> bool:
    """Whether ``value`` is, or its dicts and lists hold, a ``bytearray``: level by level, each
    level's items listed and typed in C (``gc.get_referents``), so the cost in Python bytecode
    grows with the depth of the value, not with its size."""
    level = [value]
    for _ in range(_MAX_DEPTH):
        if not level:
            return False
        types = set(map(type, level))
        if bytearray in types:
            return True
        if dict not in types and list not in types:
            return False
        level = list(itertools.compress(level, map(_is_dict_or_list, map(type, level))))
        level = gc.get_referents(*level)
    return True  # deeper than msgpack packs anyway: let the walk decide


_is_dict_or_list = frozenset((dict, list)).__contains__
_MAX_DEPTH = 520  # (msgpack refuses values nested more than 512 deep)


def _make_packer(allow_pickle: bool) -> Any:
    def default(value: Any) -> Any:
        return _encode_other(value, pack, allow_pickle)

    def pack(value: Any) -> bytes:
        # A fresh Packer per call keeps this reentrant (default() packs nested values).
        data: bytes = msgpack.packb(value, default=default, use_bin_type=True, strict_types=True)
        # A bytearray is packed as bytes: tag it and pack again. Without a byte that could start
        # a bin (0xc4-0xc6) anywhere in the output, there is none: the usual case, found in C.
        if type(value) in _CONTAINERS and (b"\xc4" in data or b"\xc5" in data or b"\xc6" in data) and _holds_bytearray(value):
            data = msgpack.packb(_tag_bytearrays(value), default=default, use_bin_type=True, strict_types=True)
        return data

    return pack


_pack_safe = _make_packer(False)
_pack_pickle = _make_packer(True)


def encode(value: Any, allow_pickle: bool = False) -> bytes:
    """Serialize ``value``; ``UnencodableValue`` names the offending type."""
    try:
        return (_pack_pickle if allow_pickle else _pack_safe)(value)
    except UnencodableValue:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise UnencodableValue(f"memollm cannot store this value: {exc}") from exc


def resolve_class(module: str, qualname: str) -> type:
    """Find a class by name without importing anything.

    Only modules the program has already imported are looked up, so a crafted cache file
    cannot make memollm import (and run) any installed code. A class whose module is not
    loaded yet makes the entry a miss; the recomputed call usually imports it. A class defined
    inside a function is found only in the process that stored a value of it.
    """
    if "<locals>" in qualname:
        local = _local_classes.get((module, qualname))
        if local is None:
            raise UndecodableValue(
                f"class {module}.{qualname} is defined inside a function and this process has stored "
                "no value of it (define it at module level for other processes to read its values)"
            )
        return local
    obj: Any = sys.modules.get(module)
    if obj is None:
        raise UndecodableValue(f"class {module}.{qualname} is not available in this program")
    try:
        for part in qualname.split("."):
            obj = inspect.getattr_static(obj, part)
    except AttributeError as exc:
        raise UndecodableValue(f"class {module}.{qualname} cannot be found: {exc}") from exc
    if not isinstance(obj, type):
        raise UndecodableValue(f"{module}.{qualname} is not a class")
    return obj


def resolve_ref(ref: Any) -> type:
    """The class a ``_class_ref`` names (a parametrized generic is rebuilt from its parts)."""
    if not isinstance(ref, list) or len(ref) not in (2, 4) or not all(isinstance(part, str) for part in ref[:2]):
        raise UndecodableValue(f"malformed class reference {ref!r}")
    if len(ref) == 2:
        return resolve_class(ref[0], ref[1])
    origin = resolve_ref(ref[2])
    if not isinstance(getattr(origin, "__pydantic_generic_metadata__", None), dict) or not isinstance(ref[3], list):
        raise UndecodableValue(f"{origin!r} is not a generic pydantic model")
    cls = _parametrize(origin, ref[3])
    if not isinstance(cls, type):
        raise UndecodableValue(f"{ref[0]}.{ref[1]} is not a class")
    return cls


def _resolve_type(ref: Any) -> Any:
    kind = ref[0] if isinstance(ref, list) and ref else None
    if kind == "none" and len(ref) == 1:
        return type(None)
    if kind == "class" and len(ref) == 2:
        return resolve_ref(ref[1])
    if kind == "typevar" and len(ref) == 3:
        found = getattr(sys.modules.get(ref[1]), ref[2], None) if isinstance(ref[2], str) else None
        if not isinstance(found, typing.TypeVar):
            raise UndecodableValue(f"type variable {ref[1]}.{ref[2]} is not available in this program")
        return found
    if kind == "literal" and len(ref) == 2 and isinstance(ref[1], list):
        return typing.Literal[tuple(ref[1])]
    if kind == "union" and len(ref) == 2 and isinstance(ref[1], list):
        return typing.Union[tuple(_resolve_type(a) for a in ref[1])]
    if kind == "alias" and len(ref) == 3 and isinstance(ref[2], list):
        return _parametrize(resolve_ref(ref[1]), ref[2])
    raise UndecodableValue(f"malformed type reference {ref!r}")


def _parametrize(origin: Any, arg_refs: list[Any]) -> Any:
    """``origin[args]`` for the type arguments ``arg_refs`` name."""
    args = tuple(_resolve_type(arg) for arg in arg_refs)
    try:
        return origin[args if len(args) != 1 else args[0]]
    except TypeError as exc:
        raise UndecodableValue(f"cannot parametrize {origin!r} with {args!r}: {exc}") from exc


@dataclasses.dataclass
class Unresolved:
    """A value of a class that was not looked up, by the class's name and its stored data: what
    ``decode_for_display`` gives (``memollm show``), never an instance of the class."""

    class_name: str
    data: Any


_DISPLAY = "display"


def _decode_ext(code: int, data: bytes, how: Any) -> Any:
    """One tagged value; ``how``: ``False`` (safe), ``True`` (pickle allowed) or ``_DISPLAY``."""
    unpack = _unpackers[how]
    if code == EXT_TUPLE:
        return tuple(unpack(data))
    if code in (EXT_PYDANTIC, EXT_DATACLASS, EXT_ENUM, EXT_MODEL):
        unpacker = msgpack.Unpacker(None, ext_hook=_hooks[how], raw=False, strict_map_key=False)
        unpacker.feed(data)
        ref = next(unpacker)
        if how == _DISPLAY:
            name = f"{ref[0]}.{ref[1]}" if isinstance(ref, list) and len(ref) >= 2 else repr(ref)
            if code == EXT_ENUM:
                return Unresolved(name, ref[2] if len(ref) > 2 else None)
            fields = next(unpacker)
            return Unresolved(name, fields[0] if code == EXT_MODEL and isinstance(fields, list) and fields else fields)
        if code == EXT_ENUM:
            cls = resolve_class(ref[0], ref[1])
            if not issubclass(cls, enum.Enum):
                raise UndecodableValue(f"{cls!r} is not an enum")
            return cls(ref[2])
        cls = resolve_ref(ref)
        fields = next(unpacker)
        if code == EXT_MODEL:
            base = getattr(sys.modules.get("pydantic"), "BaseModel", None)
            if base is None or not issubclass(cls, base):
                raise UndecodableValue(f"{cls!r} is not a pydantic model")
            if not isinstance(fields, list) or len(fields) not in (4, 5):
                raise UndecodableValue(f"malformed state of {cls!r}")
            state, extra, fields_set, private = fields[:4]
            absent = fields[4] if len(fields) == 5 else []
            model: Any = cls
            names = set(model.model_fields)
            if not isinstance(state, dict) or not isinstance(absent, list) or not set(absent).issubset(names):
                raise UndecodableValue(f"the fields of {cls!r} changed since this entry was written")
            if not (names - set(absent)).issubset(state) or any(not k.startswith("_") for k in state if k not in names):
                raise UndecodableValue(f"the fields of {cls!r} changed since this entry was written")
            obj = model.__new__(model)
            # pydantic's own __setstate__ (what unpickling does), whatever the class overrides.
            base.__setstate__(
                obj,
                {
                    "__dict__": state,
                    "__pydantic_extra__": extra,
                    "__pydantic_fields_set__": set(fields_set),
                    "__pydantic_private__": private,
                },
            )
            return obj
        if code == EXT_PYDANTIC:
            base = getattr(sys.modules.get("pydantic"), "BaseModel", None)
            if base is None or not issubclass(cls, base):
                raise UndecodableValue(f"{cls!r} is not a pydantic model")
            obj = cls.model_validate(fields)  # type: ignore[attr-defined]
            set_names = next(unpacker, None)
            if isinstance(set_names, list):
                object.__setattr__(obj, "__pydantic_fields_set__", set(set_names))
            return obj
        if not dataclasses.is_dataclass(cls):
            raise UndecodableValue(f"{cls!r} is not a dataclass")
        field_names = [f.name for f in dataclasses.fields(cls)]
        if set(field_names) != set(fields):
            raise UndecodableValue(f"the fields of {cls!r} changed since this entry was written")
        # Restored field by field, like pickle does: __init__/__post_init__ would run (and could
        # transform) the stored values a second time.
        obj = cls.__new__(cls)
        for name in field_names:
            object.__setattr__(obj, name, fields[name])
        return obj
    if code == EXT_DATETIME:
        return _dt.datetime.fromisoformat(data.decode())
    if code == EXT_DATE:
        return _dt.date.fromisoformat(data.decode())
    if code == EXT_TIME:
        return _dt.time.fromisoformat(data.decode())
    if code == EXT_TIMEDELTA:
        return _dt.timedelta(*unpack(data))
    if code == EXT_UUID:
        return uuid.UUID(bytes=data)
    if code == EXT_DECIMAL:
        return decimal.Decimal(data.decode())
    if code == EXT_SET:
        return set(unpack(data))
    if code == EXT_FROZENSET:
        return frozenset(unpack(data))
    if code == EXT_BIGINT:
        return int(data.decode())
    if code == EXT_COMPLEX:
        return complex(*unpack(data))
    if code == EXT_ORDERED_DICT:
        return collections.OrderedDict(_pairs(unpack(data)))
    if code == EXT_COUNTER:
        return collections.Counter(dict(_pairs(unpack(data))))
    if code == EXT_DEFAULT_DICT:
        factory_ref, pairs = unpack(data)
        factory = None if factory_ref is None or how == _DISPLAY else resolve_ref(factory_ref)
        return collections.defaultdict(factory, _pairs(pairs))
    if code == EXT_BYTEARRAY:
        return bytearray(data)
    if code == EXT_SUBCLASS:
        return _decode_subclass(unpack(data), how)
    if code == EXT_NUMPY:
        return _decode_numpy(unpack(data), how)
    if code == EXT_PICKLE:
        if how == _DISPLAY:
            return Unresolved("pickle", f"{len(data)} bytes, not unpickled")
        if not how:
            raise UndecodableValue("entry holds a pickled value; it is loaded only with cache_llm(allow_pickle=True)")
        return pickle.loads(data)
    raise UndecodableValue(f"unknown value tag {code}")


def _decode_subclass(parts: Any, how: Any) -> Any:
    """An instance of a subclass of a builtin, made as pickle makes it: the base type's
    ``__new__`` and the instance's ``__dict__``; nothing the subclass defines is called."""
    if not isinstance(parts, list) or len(parts) != 4 or parts[1] not in _SUBCLASS_BASES:
        raise UndecodableValue("malformed subclass value")
    ref, name, value, state = parts
    base: Any = _SUBCLASS_BASES[name]
    if type(value) is not base or not (state is None or isinstance(state, dict)):
        raise UndecodableValue("malformed subclass value")
    if how == _DISPLAY:
        return value
    cls = resolve_ref(ref)
    if not issubclass(cls, base) or issubclass(cls, (enum.Enum, bool)):
        raise UndecodableValue(f"{cls!r} is not a subclass of {name}")
    try:
        subclass: Any = cls
        if base is dict:
            obj: Any = dict.__new__(subclass)
            dict.update(obj, value)
        elif base is list:
            obj = list.__new__(subclass)
            list.extend(obj, value)
        else:
            obj = base.__new__(subclass, value)
        if state:
            obj.__dict__.update(state)
    except Exception as exc:
        raise UndecodableValue(f"cannot rebuild a {cls.__qualname__}: {exc}") from exc
    return obj


def _decode_numpy(parts: Any, how: Any) -> Any:
    """A numpy scalar from its dtype and bytes (numpy must already be imported)."""
    if not isinstance(parts, list) or len(parts) != 2 or not isinstance(parts[0], str) or not isinstance(parts[1], bytes):
        raise UndecodableValue("malformed numpy value")
    dtype_str, raw = parts
    if not _NUMPY_DTYPE_RE.match(dtype_str):
        raise UndecodableValue(f"unsupported numpy dtype {dtype_str!r}")
    numpy = sys.modules.get("numpy")
    if numpy is None:
        if how == _DISPLAY:
            return Unresolved(f"numpy scalar {dtype_str}", raw.hex())
        raise UndecodableValue("the entry holds a numpy value, and numpy is not imported in this program")
    try:
        dtype = numpy.dtype(dtype_str)
        if dtype.kind not in _NUMPY_KINDS or dtype.hasobject or dtype.itemsize != len(raw):
            raise ValueError(f"dtype {dtype_str} does not match {len(raw)} bytes")
        return numpy.frombuffer(raw, dtype=dtype, count=1)[0]
    except Exception as exc:
        raise UndecodableValue(f"malformed numpy value: {exc}") from exc


def _pairs(items: Any) -> list[tuple[Any, Any]]:
    if not isinstance(items, list) or not all(isinstance(pair, list) and len(pair) == 2 for pair in items):
        raise UndecodableValue("malformed mapping")
    return [(key, value) for key, value in items]


_hooks = {
    False: lambda code, data: _decode_ext(code, data, False),
    True: lambda code, data: _decode_ext(code, data, True),
    _DISPLAY: lambda code, data: _decode_ext(code, data, _DISPLAY),
}


def _unpack_safe(data: "bytes | memoryview") -> Any:
    return msgpack.unpackb(data, ext_hook=_hooks[False], raw=False, strict_map_key=False)


def _unpack_pickle(data: "bytes | memoryview") -> Any:
    return msgpack.unpackb(data, ext_hook=_hooks[True], raw=False, strict_map_key=False)


def _unpack_display(data: "bytes | memoryview") -> Any:
    return msgpack.unpackb(data, ext_hook=_hooks[_DISPLAY], raw=False, strict_map_key=False)


_unpackers = {False: _unpack_safe, True: _unpack_pickle, _DISPLAY: _unpack_display}


def decode_for_display(data: "bytes | memoryview") -> Any:
    """Like ``decode``, but values of classes are not looked up: each is an ``Unresolved`` with
    its class name and data (for showing an entry whose classes this program has not imported)."""
    try:
        return _unpack_display(data)
    except UndecodableValue:
        raise
    except Exception as exc:
        raise UndecodableValue(f"malformed value: {exc}") from exc


def decode(data: "bytes | memoryview", allow_pickle: bool = False) -> Any:
    """Rebuild a value from ``encode``'s bytes; ``UndecodableValue`` on anything wrong."""
    if ormsgpack is not None:
        # The native decoder is ~2x faster on typical responses; it only takes str map keys,
        # so anything else (and any error) goes the pure msgpack way, which decides.
        try:
            return ormsgpack.unpackb(data, ext_hook=_hooks[allow_pickle])
        except Exception:
            pass
    try:
        return (_unpack_pickle if allow_pickle else _unpack_safe)(data)
    except UndecodableValue:
        raise
    except Exception as exc:
        raise UndecodableValue(f"corrupt or unsupported value: {exc}") from exc
