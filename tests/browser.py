"""Headless Chromium for tests: read a page's DOM after its script ran, take a screenshot.

``chromium_path()`` finds the browser (Debian's ``chromium`` package; ``.ci/run`` installs it).
Every run gets a fresh profile dir, no network services, and a timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Optional

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)
TIMEOUT = 120.0


def chromium_path() -> Optional[str]:
    """The Chromium executable, or ``None``."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    executable = chromium_path()
    if executable is None:
        raise FileNotFoundError("chromium is not installed (Debian package chromium)")
    with tempfile.TemporaryDirectory(prefix="memollm-chromium-") as profile:
        return subprocess.run(
            [executable, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
        )


def dump_dom(url: str, budget_ms: int = 5000) -> str:
    """The page's DOM (serialized HTML) once its scripts ran."""
    done = _run(f"--virtual-time-budget={budget_ms}", "--dump-dom", url)
    if done.returncode != 0 or "<html" not in done.stdout:
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def screenshot(url: str, path: str, width: int = 1280, height: int = 2000, budget_ms: int = 5000) -> None:
    """A PNG of the page at ``width`` x ``height`` CSS pixels."""
    done = _run(f"--virtual-time-budget={budget_ms}", f"--window-size={width},{height}", f"--screenshot={path}", url)
    if done.returncode != 0 or not os.path.exists(path):
        raise RuntimeError(f"chromium made no screenshot ({done.returncode}): {done.stderr[-2000:]}")
