"""PNG plots of a results dict (matplotlib, Agg backend): hit latency, scale, latency savings."""

from __future__ import annotations

import os
from typing import Any

MEMOLLM = "#1f77b4"
FLOOR = "#2ca02c"
OTHER = "#9e9e9e"


def draw(results: dict[str, Any], out: str) -> list[str]:
    """Draw the plots for the sections present; returns the paths written (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install -e '.[bench]')")
        return []
    sections = results["sections"]
    mode = "quick run" if results["meta"].get("quick") else "full run"
    written = []
    for name, plot in (("hit", hit_plot), ("scale", scale_plot), ("savings", savings_plot)):
        if name in sections:
            fig = plot(plt, sections[name], mode)
            path = os.path.join(out, f"{name}.png")
            fig.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(fig)
            written.append(path)
    return written


def _color(name: str) -> str:
    return MEMOLLM if name.startswith("memollm") else FLOOR if name == "floor" else OTHER


def _us(value: float) -> str:
    return f"{value / 1e3:.2f} ms" if value >= 1e3 else f"{value:.1f} µs" if value < 100 else f"{value:.0f} µs"


def hit_plot(plt: Any, section: dict[str, Any], mode: str) -> Any:
    items = sorted(section["contenders"].items(), key=lambda kv: kv[1]["median_us"], reverse=True)
    names = [n for n, _ in items]
    medians = [s["median_us"] for _, s in items]
    p90s = [s["p90_us"] for _, s in items]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    ax.barh(names, medians, color=[_color(n) for n in names])
    ax.scatter(p90s, names, marker="|", color="black", s=80, label="p90", zorder=3)
    ax.set_xscale("log")
    ax.set_xlim(min(medians) / 2, max(p90s) * 4)
    for y, (value, p90) in enumerate(zip(medians, p90s)):
        ax.text(max(value, p90) * 1.12, y, _us(value), va="center", fontsize=8)
    ax.set_xlabel("median latency per hit (µs, log scale)")
    ax.set_title(f"Cache hit: ~4 KB chat request -> ~4 KB response ({mode})")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.25)
    return fig


def scale_plot(plt: Any, section: dict[str, Any], mode: str) -> Any:
    stats = section["contenders"]
    ops = list(dict.fromkeys(name.split("@", 1)[0] for name in stats))
    fig, axes = plt.subplots(1, len(ops), figsize=(3.6 * len(ops), 3.6))
    for ax, op in zip(axes, ops):
        names = [n for n in stats if n.split("@", 1)[0] == op]
        medians = [stats[n]["median_us"] for n in names]
        p90s = [stats[n]["p90_us"] for n in names]
        labels = [n.split("@", 1)[1] + " entries" for n in names]
        ax.bar(labels, medians, color=[MEMOLLM, "#6baed6"])
        ax.scatter(labels, p90s, marker="_", color="black", s=200, label="p90", zorder=3)
        for x, value in enumerate(medians):
            ax.text(x, value, _us(value), ha="center", va="bottom", fontsize=8)
        ratio = section["ratios"].get(f"{op} large/small")
        title = op.replace(" in a new process", "\nin a new process")
        ax.set_title(f"{title}\n(large/small = {ratio:.2f}x)" if ratio is not None else title, fontsize=10)
        ax.set_ylabel("median latency (µs)")
        ax.set_ylim(0, max(p90s) * 1.2)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"memollm disk store at scale, small values ({mode})")
    fig.tight_layout()
    return fig


def savings_plot(plt: Any, section: dict[str, Any], mode: str) -> Any:
    workloads = section["workloads"]
    names = list(workloads)
    without = [workloads[n]["without"]["projected_s"] for n in names]
    with_cache = [workloads[n]["with_memollm"]["projected_s"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], without, width=0.4, color=OTHER, label="without cache")
    ax.bar([x + 0.2 for x in xs], with_cache, width=0.4, color=MEMOLLM, label="with memollm")
    for x, n in zip(xs, names):
        ax.text(x + 0.2, with_cache[x], f"{workloads[n]['speedup']:,.1f}x faster", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{n}\n({workloads[n]['calls']} calls)" for n in names], fontsize=8)
    ax.set_ylabel("total wall time (s, projected to real latency)")
    scale = section.get("time_scale")
    ax.set_title(f"Latency savings with a simulated provider (sleeps x{scale}, scaled back up; {mode})")
    ax.legend(fontsize=8)
    return fig
