"""``memollm report --html``: a self-contained page, read in a real headless Chromium.

Without chromium these tests skip, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import html
import json
import os
import re
import struct
import subprocess
import sys
import time
import urllib.parse

import pytest
from browser import chromium_path, dump_dom, screenshot

import memollm
from memollm import cli
from memollm.entry import KIND_STREAM, EntryMeta, Stream, encode_stream, encode_value
from memollm.stores.disk import DiskStore

IN_CI = os.environ.get("CI", "").lower() == "true"
needs_browser = pytest.mark.skipif(chromium_path() is None and not IN_CI, reason="chromium is not installed")

NASTY = '</script><script>document.title="owned"</script><!-- & <b>bold</b>'


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memollm", *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.fixture
def cache(tmp_path):
    """Two functions with hits and misses, a stream, and a response full of markup."""
    d = str(tmp_path / "cache")

    @memollm.cache_llm(cache_dir=d)
    def complete(prompt, api_key=None):
        return {"text": f"Answer to {prompt}", "usage": {"total_tokens": 11}}

    @memollm.cache_llm(cache_dir=d)
    def tricky(prompt):
        return NASTY

    for prompt in ("alpha question", "beta question", "alpha question", "alpha question", "gamma"):
        complete(prompt, api_key="sk-never-in-the-report")
    tricky("x")
    tricky("x")
    store = DiskStore(d)
    meta = EntryMeta("tests.fake.streamer", "ab" * 16, time.time(), None, duration=0.4, kind=KIND_STREAM)
    store.set(meta, encode_stream(meta, Stream(["Once ", "upon ", "a zebra"], "done", [0.1, 0.2, 0.3])))
    store.close()
    from memollm.stores import usage

    usage._flush_all()
    return d


def _report(cache_dir: str, tmp_path, *extra: str) -> str:
    page = str(tmp_path / "report.html")
    done = run_cli("report", "--cache-dir", cache_dir, "--html", page, *extra)
    assert done.returncode == 0, done.stderr
    assert "wrote " + page in done.stdout
    return page


def _totals(dom: str) -> dict[str, str]:
    return {m.group(1): html.unescape(m.group(2)) for m in re.finditer(r'data-total="(\w+)" data-value="([^"]*)"', dom)}


def _listed_keys(dom: str) -> list[str]:
    return re.findall(r'<details class="call" data-key="([0-9a-f]{32})"', dom)


def test_the_page_is_self_contained_and_safe(cache, tmp_path):
    text = open(_report(cache, tmp_path), encoding="utf-8").read()
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing fetched: no CDN, no font, no script
    assert "http://" not in text.replace("http-equiv", "") and "https://" not in text
    assert "sk-never-in-the-report" not in text
    assert NASTY not in text  # the markup in a response is escaped, not embedded as is
    assert text.count("</script>") == 2  # the data and the script, nothing injected


@needs_browser
def test_rendered_totals_equal_stats_json(cache, tmp_path):
    stats = json.loads(run_cli("stats", "--cache-dir", cache, "--json").stdout)
    page = _report(cache, tmp_path)
    dom = dump_dom("file://" + page)
    totals = _totals(dom)
    for name in ("hits", "misses", "entries", "bytes", "tokens_saved"):
        assert int(totals[name]) == stats[name], name
    assert float(totals["seconds_saved"]) == pytest.approx(stats["seconds_saved"])
    assert float(totals["hit_rate"]) == pytest.approx(stats["hits"] / (stats["hits"] + stats["misses"]))
    assert stats["hits"] == 3 and stats["misses"] == 4
    # per function, the table rows carry the same figures
    for function, figures in stats["functions"].items():
        row = re.search(rf'<tr data-function="{re.escape(html.escape(function))}">(.*?)</tr>', dom).group(1)
        cells = dict(re.findall(r'data-field="(\w+)" data-value="([^"]*)"', row))
        assert int(cells["hits"]) == figures["hits"] and int(cells["entries"]) == figures["entries"]
        assert int(cells["bytes"]) == figures["bytes"]
    # the script ran: every call is listed, the markup shows as text, the page kept its title
    assert len(_listed_keys(dom)) == 5
    assert re.search(r"<title>([^<]*)</title>", dom).group(1).startswith("memollm report:")  # no injected script ran
    assert html.escape(NASTY, quote=False) in dom
    assert "a zebra" in dom and "Answer to alpha question" in dom


@needs_browser
def test_search_box_filters_the_calls(cache, tmp_path):
    page = _report(cache, tmp_path)
    every = _listed_keys(dump_dom("file://" + page))
    assert len(every) == 5
    found = _listed_keys(dump_dom("file://" + page + "#q=" + urllib.parse.quote("ALPHA Question")))
    assert len(found) == 1 and found[0] in every
    found = _listed_keys(dump_dom("file://" + page + "#q=zebra"))  # in a stream's chunks
    assert found == ["ab" * 16]
    dom = dump_dom("file://" + page + "#q=" + urllib.parse.quote("answer to"))
    assert len(_listed_keys(dom)) == 3 and "3 of 5 calls match" in dom
    dom = dump_dom("file://" + page + "#q=nothing-like-this")
    assert _listed_keys(dom) == [] and "0 of 5 calls match" in dom


@needs_browser
def test_screenshot(cache, tmp_path):
    page = _report(cache, tmp_path)
    png = str(tmp_path / "report.png")
    screenshot("file://" + page, png, width=1280, height=2000)
    with open(png, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert (width, height) == (1280, 2000)
    assert os.path.getsize(png) > 20_000  # a page was drawn, not a blank


@needs_browser
def test_many_entries_are_paginated_and_truncated_with_a_note(tmp_path):
    d = str(tmp_path / "cache")
    store = DiskStore(d)
    now = time.time()
    for i in range(300):
        meta = EntryMeta("app.bulk", f"{i:032x}", now - 300 + i, None, duration=0.01)
        store.set(meta, encode_value(meta, {"text": f"reply number {i}"}))
    store.close()
    page = _report(d, tmp_path, "--calls", "120")
    dom = dump_dom("file://" + page)
    assert "the 120 most recent of the 300 entries" in dom
    keys = _listed_keys(dom)
    assert len(keys) == 25 and keys[0] == f"{299:032x}"  # first page, newest first
    assert "page 1 of 5" in dom
    assert _listed_keys(dump_dom("file://" + page + "#q=" + urllib.parse.quote('reply number 250"'))) == [f"{250:032x}"]
    assert _listed_keys(dump_dom("file://" + page + "#q=" + urllib.parse.quote('reply number 100"'))) == []  # not listed


def test_report_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["report", "--cache-dir", str(tmp_path / "missing"), "--html", str(tmp_path / "r.html")]) == 1
    assert "no cache dir" in capsys.readouterr().err
    assert cli.main(["report", "--cache-dir", str(tmp_path), "--html", str(tmp_path / "no" / "r.html")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("memollm: error: cannot write") and err.count("\n") == 1
    assert cli.main(["report", "--cache-dir", str(tmp_path)]) == 2  # --html is required
    assert cli.main(["report", "--cache-dir", str(tmp_path), "--html", "x.html", "--calls", "-1"]) == 2


def test_usage_history_per_hour(tmp_path):
    d = str(tmp_path / "cache")

    @memollm.cache_llm(cache_dir=d)
    def complete(prompt):
        return {"text": prompt, "usage": {"total_tokens": 4}}

    complete("a")
    complete("a")
    complete("a")
    complete("b")
    from memollm.stores import usage

    usage._flush_all()  # what the usage thread does within a tenth of a second
    store = DiskStore(d)
    try:
        rows = store.usage.history()
    finally:
        store.close()
    (row,) = rows
    assert row["function"].endswith(".complete")
    assert (row["hits"], row["misses"], row["tokens_saved"]) == (2, 2, 8)
    assert row["hour"] % 3600 == 0 and row["hour"] <= time.time() < row["hour"] + 3600
