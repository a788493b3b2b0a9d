"""Markdown tables of a results.json, for docs/benchmarks.md: ``python benchmarks/report.py [results.json] [--images=img/]``."""

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


PLOTTED = {"hit": "Hit latency", "miss": "Miss overhead", "redis": "Redis hit", "streams": "Streams", "scale": "Scale", "savings": "Latency savings"}


def render(results: dict[str, Any], images: str = "") -> str:
    """The Markdown of every section; with ``images`` (a path prefix such as ``img/``), each
    plotted section shows its plot under its heading."""
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
        out += ["\n### Miss overhead\n", table(["contender", "median", "p90"], latency_rows(s["miss"]["contenders"])), "", verdicts(s["miss"])]
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
        memories = sec["memory"] if isinstance(sec["memory"], list) else [sec["memory"]]
        mem_rows = [
            [
                f"{m['stream_bytes'] / 2**20:.0f} MiB",
                f"{m['undecorated_peak_bytes'] / 2**20:.2f} MiB",
                f"{m['recording_peak_bytes'] / 2**20:.1f} MiB",
                f"{m['recording_peak_bytes'] / m['stream_bytes']:.2f}×",
            ]
            for m in memories
        ]
        out += [
            "\n### Streams\n",
            table(["operation", "median", "p90"], rows),
            "",
            "Peak traced memory while recording a stream of 1 KiB chunks:",
            "",
            table(["stream", "undecorated", "memollm (recording)", "× stream size"], mem_rows),
            "",
            verdicts(sec),
        ]
    if "redis" in s and s["redis"].get("contenders"):
        sec = s["redis"]
        out += ["\n### Redis hit\n", table(["contender", "median", "p90"], latency_rows(sec["contenders"])), "", verdicts(sec)]
    if "processes" in s:
        sec = s["processes"]
        rates = sec["hits_per_s"]
        rows = [[name, f"{value:,}", f"{value / int(name[0]):,.0f}"] for name, value in rates.items()]
        out += [
            "\n### Two processes, one cache dir\n",
            f"Median of {sec['rounds']} bursts of {sec['seconds_per_burst']:g} s, {sec['entries']} entries, {sec['cpu_count']} CPUs.\n",
            table(["processes", "total hits/s", "per process"], rows),
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
    if "observe" in s and "no_block" in s["observe"]:
        sec = s["observe"]
        rows = [[f"{name} (no block open)", us(v["median_us"]), us(v["p90_us"])] for name, v in sec["no_block"].items()]
        rows += [[f"{name} (blocks open)" if "block" not in name else name, us(v["median_us"]), us(v["p90_us"])] for name, v in sec["blocks_open"].items()]
        out += ["\n### observe\n", table(["contender", "median", "p90"], rows), "", verdicts(sec)]
    text = "\n".join(out) + "\n"
    if images:
        for name, title in PLOTTED.items():
            if name in s:
                text = text.replace(f"\n### {title}\n", f"\n### {title}\n\n![{title}]({images}{name}.png)\n", 1)
    return text


def main(argv: list[str]) -> int:
    args = [a for a in argv[1:] if not a.startswith("--images=")]
    images = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("--images=")), "")
    path = args[0] if args else DEFAULT
    with open(path) as f:
        print(render(json.load(f), images), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
