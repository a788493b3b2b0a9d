"""``memollm show KEY``: one entry, the request it answers, then its response (a stream as its chunks)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from .common import EXIT_OK, CacheDir, CliError, Listed
from .entries import UnreadableEntry, read_entry, readable
from .ui import as_text, console, human_duration, human_expiry, human_size, human_time, indent, one_line, print_json, to_jsonable, type_name

HELP = "show one entry: the request, then the response (a stream as its chunks)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", metavar="KEY", help="the entry's key, or a unique prefix of it")


def run(args: argparse.Namespace) -> int:
    with CacheDir.open(args.cache_dir) as cache:
        row = cache.find(args.key)
        data = cache.read(row)
    try:
        shown = read_entry(data)
    except UnreadableEntry as exc:
        raise CliError(f"entry {row.key} cannot be read safely: {exc}") from None
    meta, value, now = shown.meta, shown.value, time.time()
    if args.json:
        doc = Listed(meta, row.hits, row.last_access).to_json(now)
        doc["request"] = shown.request
        if shown.is_stream:
            doc.update(chunks=[to_jsonable(c) for c in value.chunks], result=to_jsonable(value.result), offsets=list(value.offsets))
        else:
            doc.update(type=type_name(value), value=to_jsonable(value))
        print_json(sys.stdout, doc)
        return EXIT_OK
    from rich.text import Text

    out = console()

    def field(name: str, text: str) -> None:
        line = Text(f"{name + ':':<11}", style="bold")
        line.append(text)
        out.print(line)

    field("key", meta.key)
    field("function", meta.function)
    field("kind", meta.kind)
    if shown.sample is not None:
        field("sample", str(shown.sample))
    field("created", human_time(meta.created))
    field("expires", "never" if meta.expires is None else f"{human_time(meta.expires)} ({human_expiry(meta, now)})")
    field("size", human_size(meta.size))
    field("call time", human_duration(meta.duration))
    field("tokens", str(meta.tokens))
    field("hits", str(row.hits))
    request = shown.request
    if request is None:
        field("request", "(not recorded)")
    else:
        out.print(Text("request:", style="bold"))
        out.print(Text(indent(json.dumps(request, indent=2, ensure_ascii=False))))
    if shown.is_stream:
        span = value.offsets[-1] if value.offsets else 0.0
        field("response", f"a stream of {len(value.chunks)} chunks over {human_duration(span)}")
        for i, chunk in enumerate(value.chunks):
            at = f"+{value.offsets[i]:.3f}s " if i < len(value.offsets) else ""
            out.print(Text(f"  [{i:>4}] {at}{one_line(chunk)}"))
        field("returned", one_line(value.result))
    else:
        field("response", f"({type_name(value)})")
        out.print(Text(indent(as_text(readable(value)))))
    return EXIT_OK
