"""The benchmark suite runs in quick mode and writes its results (no timing assertions).

Marked ``bench``: deselect with ``-m "not bench"``; it runs by default.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = {"hit", "observe", "key", "miss", "scale", "streams", "redis", "processes", "http", "savings"}

pytestmark = pytest.mark.bench


def test_quick_benchmarks_run_and_write_results(tmp_path):
    out, scratch = tmp_path / "results", tmp_path / "scratch"
    scratch.mkdir()
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--quick", "--out", str(out), "--scratch", str(scratch)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["quick"] is True
    assert results["meta"]["scratch"] == str(scratch)
    assert list(scratch.iterdir()) == []  # every cache dir of the run was made there, and removed
    assert SECTIONS <= set(results["sections"])
    for section in results["sections"].values():
        assert {"ratios", "targets", "met"} <= set(section)


def test_a_scratch_dir_that_does_not_exist_is_refused_by_name(tmp_path):
    missing = tmp_path / "nowhere"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--quick", "--scratch", str(missing)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--scratch" in proc.stderr and "not a directory" in proc.stderr
    assert not missing.exists()
