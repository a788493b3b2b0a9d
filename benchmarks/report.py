"""Markdown tables of a results.json, for docs/benchmarks.md: ``python benchmarks/report.py [results.json]``."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "results.json")


def us(value: float) -> str:
    if value < 1:
        return f"{value * 1e3:.0f} ns"
    if value < 1_000:
        return f"{value:.1f} µs" if value < 100 else f"{value:.0f} µs"
    return f"{value / 1e3:.2f} ms"


def seconds(value: float) -> str:
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.1f} s"


def table(headers: list[str], rows: list[list[Any]], align: str = "") -> str:
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdicts(section: dict[str, Any]) -> str:
    rows = []
    for name, value in section["ratios"].items():
        target = section["targets"].get(name, "")
        met = section["met"].get(name)
        rows.append([name, f"{value:,.2f}", target, "" if met is None else ("met" if met else "**missed**")])
    return table(["ratio", "value", "target", ""], rows, "lrll")


def latency_rows(contenders: dict[str, Any]) -> list[list[Any]]:
    ordered = sorted(contenders.items(), key=lambda kv: kv[1]["median_us"])
    return [[name, us(s["median_us"]), us(s["p90_us"])] for name, s in ordered]


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    out = [
        f"Run of {meta['date']}: {'quick' if meta['quick'] else 'full'} mode, Python {meta['python']} on {meta['platform']}, "
        f"{meta['cpu_count']} CPUs; median and p90 per operation."
    ]
    s = results["sections"]
    if "hit" in s:
        out += ["\n### Hit latency\n", table(["contender", "median", "p90"], latency_rows(s["hit"]["contenders"])), "", verdicts(s["hit"])]
    if "key" in s:
        out += ["\n### Key\n", table(["method", "median", "p90"], latency_rows(s["key"]["contenders"])), "", verdicts(s["key"])]
    if "miss" in s:
        out += ["\n### Miss overhead\n", table(["contender", "median", "p90"], latency_rows(s["miss"]["contenders"]))]
    if "scale" in s:
        sec = s["scale"]
        rows = [[name, us(v["median_us"]), us(v["p90_us"])] for name, v in sec["contenders"].items()]
        pop = sec["populate_large"]
        out += [
            "\n### Scale\n",
            table(["operation", "median", "p90"], rows),
            "",
            verdicts(sec),
            "",
            f"The large store was populated through the decorator with {pop['entries']:,} entries in {pop['seconds']:,.0f} s "
            f"({pop['entries_per_s']:,}/s).",
        ]
        out += [f"Note: {note}." for note in sec.get("notes", [])]
    if "streams" in s:
        sec = s["streams"]
        rows = [[f"first chunk, {name}", us(v["median_us"]), us(v["p90_us"])] for name, v in sec["ttft"].items()]
        rows += [[name, us(v["median_us"]), us(v["p90_us"])] for name, v in sec["replay"].items()]
        mem = sec["memory"]
        out += [
            "\n### Streams\n",
            table(["operation", "median", "p90"], rows),
            "",
            f"Peak traced memory while recording a {mem['stream_bytes'] / 2**20:.0f} MiB stream: "
            f"{mem['recording_peak_bytes'] / 2**20:.1f} MiB (undecorated: {mem['undecorated_peak_bytes'] / 2**20:.2f} MiB).",
            "",
            verdicts(sec),
        ]
    if "http" in s and "contenders" in s["http"]:
        sec = s["http"]
        out += [
            "\n### HTTP layer\n",
            "A hit through the openai SDK over `memollm.http.client()`, against the same call answered by a `MockTransport` "
            "(the floor) and replayed by vcrpy; then the transports alone.\n",
            table(["contender", "median", "p90"], latency_rows(sec["contenders"])),
            "",
            verdicts(sec),
        ]
    if "savings" in s:
        sec = s["savings"]
        lat = sec["provider"]["latency_s"]
        rows = [
            [
                name,
                w["calls"],
                f"{w['without']['provider_calls']} / {w['with_memollm']['provider_calls']}",
                seconds(w["without"]["projected_s"]),
                seconds(w["with_memollm"]["projected_s"]),
                f"{w['speedup']:,.1f}×",
            ]
            for name, w in sec["workloads"].items()
        ]
        out += [
            "\n### Latency savings\n",
            f"Simulated provider latency per call: min {lat['min']} s, median {lat['median']} s, p90 {lat['p90']} s, max {lat['max']} s; "
            f"sleeps scaled by {sec['time_scale']} while measuring, figures projected back to real latency.\n",
            table(["workload", "calls", "provider calls without / with", "without cache", "with memollm", "speed-up"], rows),
        ]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else DEFAULT
    with open(path) as f:
        print(render(json.load(f)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
