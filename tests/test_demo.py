"""``memollm demo``: runs without network or key, shows the speed-up, leaves nothing behind."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest

from memollm import cli, demo


def test_demo_command_shows_speedup_and_cleans_up(tmp_path):
    tmp, home = tmp_path / "tmp", tmp_path / "home"
    tmp.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MEMOLLM_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(MEMOLLM_DEMO_LATENCY="0.02", TMPDIR=str(tmp), HOME=str(home), MEMOLLM_MODE="offline")
    result = subprocess.run(
        [sys.executable, "-m", "memollm", "demo"], capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"call 1\s+miss\s+[\d.,]+ ms", out)
    assert re.search(r"call 2\s+hit\s+[\d.,]+ ms", out)
    assert re.search(r"speed-up: [\d,]+x faster", out)
    assert "Traceback" not in result.stderr
    assert list(tmp.iterdir()) == [], "the temporary cache dir must be removed"
    assert list(home.iterdir()) == [], "the demo must not touch the default cache dir"


def test_demo_streams_then_replays(capsys):
    out = io.StringIO()
    assert demo.run(out, scale=0.0) == 0
    text = out.getvalue()
    counts = re.findall(r"(\d+) chunks in", text)
    assert len(counts) == 2 and counts[0] == counts[1] and int(counts[0]) > 5
    assert "chunks replayed in order" in text, text


def test_demo_keeps_entries_in_an_explicit_cache_dir(tmp_path, capsys):
    d = str(tmp_path / "demo-cache")
    for _ in range(2):  # a second run still starts with a miss
        code = cli.main(["demo", "--cache-dir", d, "--latency-scale", "0"])
        out = capsys.readouterr().out
        assert code == 0
        assert re.search(r"call 1\s+miss", out) and re.search(r"call 2\s+hit", out)
    assert cli.main(["ls", "--cache-dir", d, "--json"]) == 0
    functions = {e["function"] for e in json.loads(capsys.readouterr().out)}
    assert "memollm.demo.complete" in functions


def test_latency_scale():
    assert demo.latency_scale(0.5) == 0.5
    with pytest.raises(ValueError):
        demo.latency_scale(-1)


def test_bad_latency_scale_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setenv(demo.LATENCY_ENV, "fast")
    assert cli.main(["demo"]) == 1
    err = capsys.readouterr().err
    assert demo.LATENCY_ENV in err and err.count("\n") == 1


def test_simulated_provider_is_slow_like_a_real_one():
    provider = demo.SimulatedProvider(scale=0.01)
    reply = provider.chat([{"role": "user", "content": demo.PROMPT}], model="sim-1", temperature=0.0)
    assert reply["choices"][0]["message"]["content"] and reply["usage"]["total_tokens"] > 0
    assert provider.calls == 1
