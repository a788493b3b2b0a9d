"""Make the screenshot of ``memollm report`` the docs show (docs/img/report.png).

A week of simulated use of three cached helpers (the clock the usage log sees is moved back day
by day), then ``memollm report --html`` and headless Chromium. Run from the repository root:
``python tests/report_screenshot.py docs/img/report.png``.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
import types
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import browser  # noqa: E402

import memollm  # noqa: E402
from memollm.stores import usage  # noqa: E402

DAY = 86400.0


def named(module: str):
    """Decorate as if the function were ``module.<its name>`` (as in an application)."""

    def rename(fn):
        fn.__module__, fn.__qualname__ = module, fn.__name__
        return fn

    return rename


def record(cache_dir: str) -> None:
    @memollm.cache_llm(cache_dir=cache_dir)
    @named("myapp.reports")
    def summarize(text: str, model: str = "gpt-4o-mini") -> dict:
        time.sleep(0.12)  # a provider's latency
        words = text.split()
        return {
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words[:8]) + "..."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 40 * len(words), "completion_tokens": 60, "total_tokens": 40 * len(words) + 60},
        }

    @memollm.cache_llm(cache_dir=cache_dir)
    @named("myapp.support")
    def classify(ticket: str, labels: tuple = ("bug", "question", "feature")) -> dict:
        time.sleep(0.03)
        return {"label": labels[len(ticket) % len(labels)], "usage": {"input_tokens": 120, "output_tokens": 3}}

    @memollm.cache_llm(cache_dir=cache_dir)
    @named("myapp.chat")
    def answer_stream(question: str):
        for word in f"Here is what I found about {question}: it depends on the data.".split():
            time.sleep(0.02)
            yield {"delta": word + " "}

    tickets = [f"Ticket {i}: the export button {'crashes' if i % 3 else 'is slow'} on page {i}" for i in range(40)]
    documents = [f"Quarterly report {i} " + "revenue grew while costs fell " * (3 + i % 5) for i in range(25)]
    questions = ["caching", "rate limits", "streaming", "token usage", "retries"]
    rng = random.Random(7)
    start = time.time() - 6 * DAY
    for day in range(7):
        clock = types.SimpleNamespace(time=lambda day=day: start + day * DAY + rng.uniform(0, 8 * 3600), sleep=time.sleep)
        with mock.patch.object(usage, "time", clock):
            for _ in range(20 + day * 12):
                summarize(rng.choice(documents))
                classify(rng.choice(tickets))
                list(answer_stream(rng.choice(questions)))
            usage._flush_all()


def main(out: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = os.path.join(tmp, "llm-cache")
        record(cache_dir)
        page = os.path.join(tmp, "report.html")
        done = subprocess.run([sys.executable, "-m", "memollm", "report", "--cache-dir", cache_dir, "--html", page], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        browser.screenshot("file://" + page, os.path.abspath(out), width=1280, height=2000)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img/report.png")
