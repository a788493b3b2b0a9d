"""``memollm textconv FILE``: one entry file as stable, readable text, for ``git diff``.

With ``git config diff.memollm.textconv "memollm textconv"`` (the cache dir's ``.gitattributes``
marks its entry files ``diff=memollm``), diffs and pull requests show the request, the response
or its chunks and the metadata instead of "binary files differ". The same bytes always give the
same text: times in UTC, fields in a fixed order, nothing looked up, nothing imported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Optional

import xxhash

from ..entry import Stream
from .common import EXIT_OK, CliError
from .entries import Shown, UnreadableEntry, read_entry
from .ui import to_jsonable, type_name

SHORT_CHUNK = 100  # characters of JSON: a chunk this short takes one line

HELP = "print one entry file as readable text (for git diff: see docs/testing.md)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="an entry file (joblib/.../output.msgpack in a cache dir)")


def utc(epoch: Optional[float]) -> str:
    if epoch is None:
        return "never"
    fraction = f"{epoch % 1:.3f}"[1:]
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + fraction + "Z"


def _json(value: Any) -> str:
    return json.dumps(to_jsonable(value), indent=2, ensure_ascii=False, default=str)


def _block(text: str) -> list[str]:
    return ["  " + line for line in text.splitlines() or [""]]


def render(shown: Shown) -> str:
    """The text of one entry: metadata, then the request, then the response (or chunks)."""
    m = shown.meta
    lines = [
        "memollm entry",
        f"function:  {m.function}",
        f"key:       {m.key}",
        f"kind:      {m.kind}",
    ]
    if shown.sample is not None:
        lines.append(f"sample:    {shown.sample}")
    lines += [
        f"created:   {utc(m.created)}",
        f"expires:   {utc(m.expires)}",
        f"call time: {m.duration:.3f} s",
        f"tokens:    {m.tokens}",
        "",
    ]
    request = shown.request
    if request is None:
        lines.append("request: (not recorded)")
    else:
        lines.append("request:")
        lines += _block(_json(request))
    lines.append("")
    value = shown.value
    if isinstance(value, Stream):
        lines.append(f"response: stream of {len(value.chunks)} chunks")
        for i, chunk in enumerate(value.chunks):
            at = f" +{value.offsets[i]:.3f}s" if i < len(value.offsets) else ""
            short = json.dumps(to_jsonable(chunk), ensure_ascii=False, default=str)
            if len(short) <= SHORT_CHUNK:
                lines.append(f"  [{i}]{at} {short}")
            else:  # an SDK chunk object: one field a line, so a diff points at the field
                lines.append(f"  [{i}]{at}")
                lines += ["  " + line for line in _block(_json(chunk))]
        lines.append("returned:")
        lines += _block(_json(value.result))
    else:
        lines.append(f"response: ({type_name(value)})")
        lines += _block(value if isinstance(value, str) else _json(value))
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    try:
        with open(args.file, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    if not data:  # git hands over an empty file for a side that does not exist
        return EXIT_OK
    try:
        text = render(read_entry(data, verify=False))
    except UnreadableEntry as exc:  # still a stable text: a diff must never fail on one file
        text = f"not a readable memollm entry ({exc}): {len(data)} bytes, xxh3-128 {xxhash.xxh3_128_hexdigest(data)}\n"
    sys.stdout.write(text)
    return EXIT_OK
