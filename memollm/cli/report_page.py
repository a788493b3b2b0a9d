"""The HTML page of ``memollm report``: one self-contained file (inline CSS, script and SVG charts,
no network), readable without its script; the script adds the search box and pages of the
recorded calls (``#q=TEXT`` in the address fills the search box).

Every text from the cache dir goes through ``html.escape`` or, for the embedded calls, through
JSON with ``<``, ``>`` and ``&`` escaped, so no entry can inject markup into the page.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any, Iterable, Optional, Sequence

from .common import FunctionStats, Listed, entry_sample
from .report import Call, Report
from .ui import human_dollars, human_duration, human_size

HISTORY_BUCKETS = 60  # bars in a chart of savings over time (the most recent ones)
SIZE_BARS = 12  # functions in the chart of size by function (the others summed up)
PAGE_SIZE = 25  # recorded calls per page


def render(report: Report) -> str:
    """The whole page."""
    t = report.total
    rate = _hit_rate(t)
    cards = [
        ("hit_rate", "Hit rate", "\u2014" if rate is None else f"{rate:.0%}", "" if rate is None else repr(rate)),
        ("hits", "Hits", f"{t.hits:,}", str(t.hits)),
        ("misses", "Misses", "\u2014" if t.misses is None else f"{t.misses:,}", "" if t.misses is None else str(t.misses)),
        ("seconds_saved", "Time saved", human_duration(t.seconds_saved), repr(t.seconds_saved)),
        ("tokens_saved", "Tokens saved", f"{t.tokens_saved:,}", str(t.tokens_saved)),
        ("dollars_saved", "Dollars saved", human_dollars(t.dollars_saved), "" if t.dollars_saved is None else repr(t.dollars_saved)),
        ("entries", "Entries", f"{t.entries:,}", str(t.entries)),
        ("bytes", "Size", human_size(t.bytes), str(t.bytes)),
    ]
    card_html = "".join(
        f'<div class="card" data-total="{name}" data-value="{_e(value)}"><div class="label">{label}</div><div class="value">{_e(text)}</div></div>'
        for name, label, text, value in cards
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # No request leaves the page: not even for an image, a font or a script.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">",
        f"<title>memollm report: {_e(report.cache_dir)}</title>",
        f"<style>{CSS}</style></head><body>",
        "<header><h1>memollm cache report</h1>",
        f'<p class="sub"><code>{_e(report.cache_dir)}</code> &middot; generated {_e(_local(report.generated))}</p></header>',
        f'<section class="cards" id="totals">{card_html}</section>',
        '<section class="grid">',
        f'<div class="panel"><h2>Savings over time</h2>{_history_charts(report.history)}</div>',
        f'<div class="panel"><h2>Size by function</h2>{_size_chart(report.functions)}</div>',
        "</section>",
        f'<section class="panel"><h2>Per function</h2>{_functions_table(report)}</section>',
        '<section class="grid">',
        f'<div class="panel"><h2>Largest entries</h2>{_entries_table(report.largest, "size")}</div>',
        f'<div class="panel"><h2>Most-hit entries</h2>{_entries_table(report.most_hit, "hits")}</div>',
        "</section>",
        _calls_section(report),
        f'<footer>Dollars: {_dollars_note(report)} Time saved is the original call time of the hits served. '
        "Secrets (API keys, tokens, auth headers) are never stored, so never shown.</footer>",
        f'<script type="application/json" id="calls-data">{_json_for_script([_call_json(c) for c in report.calls])}</script>',
        f"<script>const PAGE_SIZE = {PAGE_SIZE};\n{SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# Pieces


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _local(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch))


def _hit_rate(s: FunctionStats) -> Optional[float]:
    if s.misses is None or s.hits + s.misses == 0:
        return None
    return s.hits / (s.hits + s.misses)


def _dollars_note(report: Report) -> str:
    table = _price_table()
    if report.total.dollars_saved is None:
        return "\u2014 where no price is known for the models used (never a guess)" + (f"; prices from {_e(table)}." if table else ".")
    return f"the hits' tokens at today's prices{f' ({_e(table)})' if table else ''}; models without a known price add nothing."


def _price_table() -> Optional[str]:
    """The price table's name and version (``memollm.prices.source()``), if there is one."""
    try:
        import importlib

        source = getattr(importlib.import_module("memollm.prices"), "source", None)
        found = source() if callable(source) else None
    except Exception:  # no price table: dollars show as unknown
        return None
    return found if isinstance(found, str) else None


def _functions_table(report: Report) -> str:
    if not report.functions:
        return '<p class="empty">No entries and no recorded use yet.</p>'
    head = ["Function", "Hit rate", "Hits", "Misses", "Time saved", "Tokens saved", "Dollars saved", "Entries", "Size"]
    rows = []
    for s in [*report.functions, *([report.total] if len(report.functions) > 1 else [])]:
        rate = _hit_rate(s)
        cells = [
            ("function", s.function, s.function),
            ("hit_rate", "\u2014" if rate is None else f"{rate:.0%}", "" if rate is None else repr(rate)),
            ("hits", f"{s.hits:,}", s.hits),
            ("misses", "\u2014" if s.misses is None else f"{s.misses:,}", "" if s.misses is None else s.misses),
            ("seconds_saved", human_duration(s.seconds_saved), repr(s.seconds_saved)),
            ("tokens_saved", f"{s.tokens_saved:,}", s.tokens_saved),
            ("dollars_saved", human_dollars(s.dollars_saved), "" if s.dollars_saved is None else repr(s.dollars_saved)),
            ("entries", f"{s.entries:,}", s.entries),
            ("bytes", human_size(s.bytes), s.bytes),
        ]
        tds = "".join(f'<td data-field="{n}" data-value="{_e(v)}"{"" if n == "function" else " class=num"}>{_e(t)}</td>' for n, t, v in cells)
        total = ' class="total"' if s is report.total else ""
        rows.append(f'<tr data-function="{_e(s.function)}"{total}>{tds}</tr>')
    ths = "".join(f"<th{'' if i == 0 else ' class=num'}>{h}</th>" for i, h in enumerate(head))
    return f'<table id="functions"><thead><tr>{ths}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _entries_table(rows: Sequence[Listed], what: str) -> str:
    if not rows:
        return '<p class="empty">' + ("No entries." if what == "size" else "No hits recorded yet.") + "</p>"
    body = "".join(
        f'<tr><td><code title="{_e(r.key)}">{_e(r.key[:12])}</code></td><td class="fn">{_e(r.function)}</td>'
        f'<td class="num">{_e(human_size(r.meta.size))}</td><td class="num">{r.hits:,}</td></tr>'
        for r in rows
    )
    return f'<table class="entries" data-list="{what}"><thead><tr><th>Key</th><th>Function</th><th class="num">Size</th><th class="num">Hits</th></tr></thead><tbody>{body}</tbody></table>'


def _buckets(history: Iterable[dict[str, Any]]) -> tuple[str, list[tuple[float, dict[str, float]]]]:
    """History summed per hour (when it spans two days at most) or per day (UTC)."""
    rows = list(history)
    if not rows:
        return "hour", []
    span = max(r["hour"] for r in rows) - min(r["hour"] for r in rows)
    step = 3600 if span <= 2 * 86400 else 86400
    sums: dict[float, dict[str, float]] = {}
    for r in rows:
        bucket = sums.setdefault(r["hour"] // step * step, {"hits": 0, "misses": 0, "seconds_saved": 0.0, "tokens_saved": 0})
        for name in bucket:
            bucket[name] += r.get(name) or 0
    return ("hour" if step == 3600 else "day"), sorted(sums.items())[-HISTORY_BUCKETS:]


def _history_charts(history: list[dict[str, Any]]) -> str:
    unit, buckets = _buckets(history)
    if not buckets:
        return '<p class="empty">No hits recorded yet: the history starts with the first hit.</p>'

    def label(start: float) -> str:
        return time.strftime("%Y-%m-%d %H:00" if unit == "hour" else "%Y-%m-%d", time.gmtime(start)) + (" UTC" if unit == "hour" else "")

    charts = []
    for name, title, fmt in (
        ("seconds_saved", "Time saved", human_duration),
        ("tokens_saved", "Tokens saved", lambda v: f"{int(v):,}"),
        ("hits", "Hits", lambda v: f"{int(v):,}"),
    ):
        values = [(label(start), b[name], f"{fmt(b[name])} ({int(b['hits']):,} hits, {int(b['misses']):,} misses)") for start, b in buckets]
        charts.append(f'<div class="chart" data-chart="{name}"><h3>{title} per {unit}</h3>{_column_chart(values, fmt)}</div>')
    return "".join(charts)


def _column_chart(values: list[tuple[str, float, str]], fmt: Any) -> str:
    width, height, pad = 560, 120, 18
    top = max((v for _, v, _ in values), default=0) or 1
    slot = (width - 2) / max(len(values), 1)
    bars = []
    for i, (label, value, tip) in enumerate(values):
        h = (height - pad) * value / top
        bar = min(slot * 0.76, 28)
        x = 1 + i * slot + (slot - bar) / 2
        bars.append(
            f'<rect x="{x:.1f}" y="{height - pad - h:.1f}" width="{bar:.1f}" height="{max(h, 0.5):.1f}" rx="2">'
            f"<title>{_e(label)}: {_e(tip)}</title></rect>"
        )
    axis = (
        f'<line x1="0" y1="{height - pad}" x2="{width}" y2="{height - pad}" class="axis"/>'
        f'<text x="2" y="{height - 4}" class="tick">{_e(values[0][0])}</text>'
        f'<text x="{width - 2}" y="{height - 4}" class="tick" text-anchor="end">{_e(values[-1][0])}</text>'
        f'<text x="2" y="10" class="tick">max {_e(fmt(top))}</text>'
    )
    return f'<svg viewBox="0 0 {width} {height}" role="img" class="columns">{axis}{"".join(bars)}</svg>'


def _size_chart(functions: list[FunctionStats]) -> str:
    ranked = sorted((s for s in functions if s.bytes > 0), key=lambda s: -s.bytes)
    if not ranked:
        return '<p class="empty">No entries.</p>'
    shown = [(s.function, s.bytes, s.entries) for s in ranked[:SIZE_BARS]]
    rest = ranked[SIZE_BARS:]
    if rest:
        shown.append((f"{len(rest)} other functions", sum(s.bytes for s in rest), sum(s.entries for s in rest)))
    width, row = 560, 32
    top = shown[0][1]
    bars = []
    for i, (name, size, entries) in enumerate(shown):
        y = i * row
        w = max((width - 90) * size / top, 1)
        bars.append(
            f'<g><rect x="0" y="{y + 15}" width="{w:.1f}" height="11" rx="2"><title>{_e(name)}: {_e(human_size(size))}, {entries:,} entries</title></rect>'
            f'<text x="0" y="{y + 11}" class="name">{_e(_shorten(name, 80))}</text>'
            f'<text x="{w + 6:.1f}" y="{y + 24}" class="tick">{_e(human_size(size))}</text></g>'
        )
    return f'<svg viewBox="0 0 {width} {len(shown) * row + 4}" role="img" class="bars">{"".join(bars)}</svg>'


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else "\u2026" + text[-(limit - 1) :]


def _calls_section(report: Report) -> str:
    listed, entries = len(report.calls), report.entries
    if listed < entries:
        note = (
            f"The page lists the {listed:,} most recent of the {entries:,} entries (<code>memollm report --calls N</code> "
            "lists more; <code>memollm ls --grep TEXT</code> searches them all)."
        )
    else:
        note = f"All {entries:,} entries are listed."
    return (
        '<section class="panel" id="calls-section"><h2>Recorded calls</h2>'
        '<div class="toolbar"><input id="search" type="search" placeholder="Search function, key, request and response" '
        'aria-label="Search the recorded calls" autocomplete="off">'
        f'<span id="match-count" class="sub"></span></div><p class="note" id="calls-note">{note}</p>'
        '<noscript><p class="note">The list of calls needs JavaScript.</p></noscript>'
        '<div id="calls"></div><nav id="pager"></nav></section>'
    )


def _call_json(call: Call) -> dict[str, Any]:
    m = call.row.meta
    sample = call.sample if call.sample is not None else entry_sample(m)
    return {
        "function": m.function,
        "key": m.key,
        "created": _local(m.created),
        "kind": m.kind,
        "type": call.type,
        "hits": call.row.hits,
        "size": human_size(m.size),
        "duration": human_duration(m.duration),
        "tokens": m.tokens,
        "sample": sample,
        "request": call.request,
        "response": call.response,
        "chunks": call.chunks,
        "returned": call.returned,
        "cut": call.cut,
        "error": call.error,
    }


def _json_for_script(value: Any) -> str:
    """JSON safe inside ``<script>``: no ``</script>``, no ``<!--``, no line separators."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


CSS = """
:root { --fg: #1d2430; --muted: #5b6575; --line: #e3e7ee; --bg: #f6f8fb; --card: #fff; --accent: #2f6fed; --good: #138a52; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 0 0 12px; } h3 { font-size: 12px; margin: 10px 0 4px;
  color: var(--muted); font-weight: 600; text-transform: uppercase; letter-spacing: .04em; }
.sub { color: var(--muted); margin: 0; } code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
header { margin-bottom: 20px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(130px, 1fr)); gap: 12px; margin-bottom: 16px; }
.card, .panel { background: var(--card); border: 1px solid var(--line); border-radius: 10px; }
.card { padding: 12px 14px; } .card .label { color: var(--muted); font-size: 12px; }
.card .value { font-size: 22px; font-weight: 650; margin-top: 2px; }
.card[data-total$="saved"] .value, .card[data-total="hit_rate"] .value { color: var(--good); }
.panel { padding: 16px 18px; margin-bottom: 16px; overflow-x: auto; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 16px; }
.grid .panel { margin-bottom: 0; } .grid { margin-bottom: 16px; }
table { border-collapse: collapse; width: 100%; } th, td { padding: 6px 8px; border-bottom: 1px solid var(--line); text-align: left; }
th { font-size: 12px; color: var(--muted); font-weight: 600; } .num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 650; border-top: 2px solid var(--line); } td.fn { word-break: break-all; }
svg { width: 100%; height: auto; display: block; } svg rect { fill: var(--accent); } svg rect:hover { fill: #174bb5; }
svg .axis { stroke: var(--line); } svg .tick { font-size: 10px; fill: var(--muted); } svg .name { font-size: 11px; fill: var(--fg); }
.empty, .note { color: var(--muted); } .note { font-size: 12px; margin: 6px 0 10px; }
.toolbar { display: flex; gap: 12px; align-items: center; }
#search { flex: 1; max-width: 520px; padding: 8px 10px; border: 1px solid var(--line); border-radius: 8px; font: inherit; }
.call { border: 1px solid var(--line); border-radius: 8px; margin: 8px 0; background: #fbfcfe; }
.call summary { cursor: pointer; padding: 8px 10px; display: flex; gap: 12px; flex-wrap: wrap; align-items: baseline; }
.call summary .fn { font-weight: 600; } .call summary .meta { color: var(--muted); font-size: 12px; }
.call .body { padding: 0 10px 10px; display: grid; grid-template-columns: 1fr 1fr; gap: 10px; }
.call pre { margin: 0; padding: 8px; background: #fff; border: 1px solid var(--line); border-radius: 6px; max-height: 360px;
  overflow: auto; white-space: pre-wrap; word-break: break-word; font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.call .label { font-size: 11px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; margin: 4px 0; }
.call ol { margin: 0; padding-left: 28px; font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; max-height: 360px; overflow: auto; }
.badge { font-size: 11px; padding: 1px 6px; border-radius: 10px; background: #e8effd; color: #174bb5; }
#pager { display: flex; gap: 8px; align-items: center; margin-top: 10px; }
#pager button { font: inherit; padding: 4px 10px; border: 1px solid var(--line); border-radius: 6px; background: #fff; cursor: pointer; }
#pager button[disabled] { opacity: .4; cursor: default; }
footer { color: var(--muted); font-size: 12px; margin-top: 20px; }
"""

SCRIPT = """
(function () {
  "use strict";
  const calls = JSON.parse(document.getElementById("calls-data").textContent);
  const list = document.getElementById("calls"), pager = document.getElementById("pager");
  const search = document.getElementById("search"), count = document.getElementById("match-count");
  let page = 0, matching = calls;
  const haystack = (c) => c._text || (c._text = [c.function, c.key, c.request || "", c.response || "",
    (c.chunks || []).join("\\n"), c.returned || ""].join("\\n").toLowerCase());
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const child of children) node.append(child);
    return node;
  }
  function pre(label, text) { return el("div", {}, el("div", {class: "label"}, label), el("pre", {}, text)); }
  function render() {
    list.replaceChildren();
    const pages = Math.max(1, Math.ceil(matching.length / PAGE_SIZE));
    page = Math.min(page, pages - 1);
    for (const c of matching.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE)) {
      const summary = el("summary", {}, el("span", {class: "fn"}, c.function), el("code", {}, c.key),
        el("span", {class: "meta"}, c.created + " \\u00b7 " + c.size + " \\u00b7 " + c.hits + " hits \\u00b7 " + c.duration));
      if (c.kind === "stream") summary.append(el("span", {class: "badge"}, "stream"));
      if (c.sample !== null) summary.append(el("span", {class: "badge"}, "sample " + c.sample));
      const body = el("div", {class: "body"});
      if (c.error) body.append(pre("error", "This entry is not shown: " + c.error));
      else {
        body.append(pre("request", c.request === null ? "(not recorded)" : c.request));
        if (c.chunks) {
          const chunks = el("ol", {start: "0"});
          for (const chunk of c.chunks) chunks.append(el("li", {}, chunk));
          body.append(el("div", {}, el("div", {class: "label"}, "response: " + c.type), chunks,
            el("div", {class: "label"}, "returned"), el("pre", {}, c.returned)));
        } else body.append(pre("response: " + c.type, c.response));
      }
      const details = el("details", {class: "call", "data-key": c.key}, summary, body);
      if (list.childElementCount === 0) details.open = true;  // the first call of a page, opened
      list.append(details);
    }
    count.textContent = matching.length === calls.length ? calls.length + " calls"
      : matching.length + " of " + calls.length + " calls match";
    pager.replaceChildren();
    if (pages > 1) {
      const prev = el("button", {type: "button"}, "\\u2190 Previous"), next = el("button", {type: "button"}, "Next \\u2192");
      prev.disabled = page === 0; next.disabled = page >= pages - 1;
      prev.onclick = () => { page--; render(); }; next.onclick = () => { page++; render(); };
      pager.append(prev, el("span", {class: "sub"}, "page " + (page + 1) + " of " + pages), next);
    }
  }
  function filter() {
    const q = search.value.trim().toLowerCase();
    matching = q ? calls.filter((c) => haystack(c).includes(q)) : calls;
    page = 0;
    render();
  }
  const fromHash = () => { const m = /^#q=(.*)$/.exec(location.hash); return m ? decodeURIComponent(m[1].replace(/\\+/g, " ")) : ""; };
  search.value = fromHash();
  search.addEventListener("input", () => {
    history.replaceState(null, "", search.value ? "#q=" + encodeURIComponent(search.value) : location.pathname);
    filter();
  });
  window.addEventListener("hashchange", () => { search.value = fromHash(); filter(); });
  filter();
})();
"""
