"""``memollm why``: explain a call from the command line, given the function's name and its arguments.

The function is imported by name when it can be (``module.qualname``, from the current
directory), so the answer is exactly ``fn.explain(**arguments)``. When it cannot be imported, the
arguments are compared with the requests recorded in the cache dir (defaults the call would fill
in are not known then, which the answer says). For the HTTP layer's functions
(``http:POST api.openai.com/v1/chat/completions``) the arguments are the request's JSON body.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from typing import Any, Optional

from . import keys
from .config import cache_dir_for, disk_store, use_cache_dir
from .core import explain as explaining
from .core import request_tree
from .decorator import CachedFunction
from .stores.base import Store


class WhyError(ValueError):
    """The function or the arguments cannot be used (the message says why)."""


def why(function: str, arguments: Any, cache_dir: Optional[str] = None) -> explaining.Explanation:
    """Explain a call of ``function`` with ``arguments`` (a dict of keyword arguments, or a list
    of positional ones; for an ``http:`` function, the JSON body) against the cache dir
    ``cache_dir`` (default: the one in effect)."""
    from .http import convert  # (imports no HTTP library)

    if convert.is_http_function(function):
        return _http_request(function, arguments, cache_dir)
    args, kwargs = _split(arguments)
    found = _import(function)
    if found is None:  # a short name (``complete``, ``MemollmCache``): the recorded function's full name
        full = _full_name(function, cache_dir)
        if full is not None and full != function:
            found = _import(full)
    if isinstance(found, CachedFunction):
        if cache_dir is None:
            return found.explain(*args, **kwargs)
        with use_cache_dir(cache_dir):
            return found.explain(*args, **kwargs)
    return _from_recorded(function, args, kwargs, cache_dir, imported=found is not None)


def _split(arguments: Any) -> tuple[list[Any], dict[str, Any]]:
    if isinstance(arguments, dict):
        return [], dict(arguments)
    if isinstance(arguments, list):
        return list(arguments), {}
    raise WhyError("--args-json must be a JSON object of keyword arguments or a JSON array of positional arguments")


def _import(function: str) -> Any:
    """What ``module.qualname`` names, if it can be imported from here (``None`` if not)."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    parts = function.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name, attributes = ".".join(parts[:split]), parts[split:]
        try:
            target: Any = importlib.import_module(module_name)
        except Exception:
            continue
        try:
            for name in attributes:
                target = getattr(target, name)
        except AttributeError:
            return None
        return target
    return None


def _full_name(function: str, cache_dir: Optional[str]) -> Optional[str]:
    """The full name of the recorded function ``function`` names, if there is exactly one."""
    try:
        return _recorded_function(function, cache_dir)[1]
    except WhyError:
        return None


def _recorded_function(function: str, cache_dir: Optional[str]) -> tuple[Store, str]:
    """The store of the cache dir and the full name of the recorded function ``function`` names."""
    where = cache_dir_for(cache_dir)
    if not os.path.isdir(where):
        raise WhyError(f"no cache dir at {where}")
    store = disk_store(where)
    names = sorted({m.function for m in store.entries()})
    matches = [n for n in names if n == function or n.endswith("." + function)]
    if not matches:
        raise WhyError(f"no recorded entries of a function named {function!r} in {where}; known: {', '.join(names) or 'none'}")
    if len(matches) > 1:
        raise WhyError(f"{function!r} names several functions in {where}: {', '.join(matches)}; give the full module.qualname")
    return store, matches[0]


def _http_request(function: str, body: Any, cache_dir: Optional[str]) -> explaining.Explanation:
    """A request of the HTTP layer with ``body`` as its JSON body, sent as the most recent recorded
    request of ``function`` was (its method, URL and key headers)."""
    from .http import convert

    store, name = _recorded_function(function, cache_dir)
    latest = next((m for m in explaining._recent_entries(store, name) if isinstance(m.request, dict) and "body" in m.request), None)
    if latest is None:
        raise WhyError(f"the entries of {name} hold no recorded request (record_request=False, or written before requests were recorded): nothing to compare with")
    parts = {k: v for k, v in latest.request.items() if k != "body"}
    _, key, packed = convert.key_of(parts, convert.without_credentials(keys.normalize(body, "--args-json")))
    outcome = explaining.outcome_of(store, name, key, None, None)
    found = explaining.explain(store, name, key, outcome, latest.identity or [], request_tree(packed))
    note = f"{name}: --args-json is the request's JSON body, sent with the method, URL and key headers of the most recent recorded request ({latest.key})"
    return dataclasses.replace(found, note=note)


def _from_recorded(function: str, args: list[Any], kwargs: dict[str, Any], cache_dir: Optional[str], imported: bool = False) -> explaining.Explanation:
    store, name = _recorded_function(function, cache_dir)
    if args:
        what = "is not a decorated function" if imported else "cannot be imported here"
        raise WhyError(f"{name} {what}, so positional arguments cannot be matched to parameters: pass --args-json as a JSON object")
    recent = list(explaining._recent_entries(store, name))
    identity = next((m.identity for m in recent if m.identity), None)
    request = keys.normalize(dict(sorted(kwargs.items())), "--args-json")
    key = keys.make_key(identity[1:], request) if identity else "?"
    outcome = explaining.outcome_of(store, name, key, None, None) if identity else "miss"
    found = explaining.explain(store, name, key, outcome, identity or [], request)
    if imported:  # e.g. the LangChain adapter, whose requests are exactly its arguments
        note = f"{name} is not a decorated function: --args-json is compared with the recorded requests as given"
    else:
        note = f"{name} could not be imported here: compared with the recorded requests only (defaults the function would fill in are not known)"
    return dataclasses.replace(found, note=note)


def as_data(explanation: explaining.Explanation) -> dict[str, Any]:
    """An explanation as JSON-ready data (``--json``)."""
    return {
        "function": explanation.function,
        "key": explanation.key,
        "outcome": explanation.outcome,
        "comparable": explanation.comparable,
        "note": explanation.note,
        "nearest": [
            {
                "key": c.key,
                "created": c.created,
                "sample": c.sample,
                "source_changed": c.source_changed,
                "version_changed": c.version_changed,
                "key_format_changed": c.key_format_changed,
                "request_recorded": c.request_recorded,
                "differences": [{"path": d.path, "recorded": d.recorded, "current": d.current} for d in c.differences],
            }
            for c in explanation.nearest
        ],
    }
