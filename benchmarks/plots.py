"""PNG plots of a results dict (matplotlib, Agg backend): hit, miss and Redis latency, streams, scale, savings."""

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
    for name, plot in (("hit", hit_plot), ("miss", miss_plot), ("redis", redis_plot), ("streams", streams_plot), ("scale", scale_plot), ("savings", savings_plot)):
        if name in sections and (sections[name].get("contenders") or name in ("streams", "savings")):
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
    return latency_plot(plt, section, f"Cache hit: ~4 KB chat request -> ~4 KB response ({mode})", "median latency per hit (µs, log scale)")


def miss_plot(plt: Any, section: dict[str, Any], mode: str) -> Any:
    return latency_plot(plt, section, f"Miss overhead: key + lookup + write of a ~4 KB value ({mode})", "median latency per miss (µs, log scale)")


def redis_plot(plt: Any, section: dict[str, Any], mode: str) -> Any:
    return latency_plot(plt, section, f"Redis hit, one local redis-server ({mode})", "median latency per hit (µs, log scale)")


def streams_plot(plt: Any, section: dict[str, Any], mode: str) -> Any:
    replay = section["replay"]
    pairs = [(label, replay[f"replay {label} chunks (memollm hit)"]["median_us"], replay[f"{label} chunks from the generator itself"]["median_us"]) for label in ("dict", "str")]
    memories = section["memory"] if isinstance(section["memory"], list) else [section["memory"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    xs = range(len(pairs))
    left.bar([x - 0.2 for x in xs], [p[2] for p in pairs], width=0.4, color=OTHER, label="the generator itself")
    left.bar([x + 0.2 for x in xs], [p[1] for p in pairs], width=0.4, color=MEMOLLM, label="memollm replay (hit)")
    for x, (_, hit, plain) in zip(xs, pairs):
        left.text(x + 0.2, hit, f"{hit / plain:.2f}x", ha="center", va="bottom", fontsize=8)
    left.set_xticks(list(xs))
    left.set_xticklabels([f"{p[0]} chunks" for p in pairs])
    left.set_ylabel("µs for 2,000 chunks")
    left.set_title("Replay vs the generator", fontsize=10)
    left.legend(fontsize=8)
    labels = [f"{m['stream_bytes'] // 2**20} MB" for m in memories]
    ratios = [m["recording_peak_bytes"] / m["stream_bytes"] for m in memories]
    right.bar(labels, ratios, color=MEMOLLM)
    for x, value in enumerate(ratios):
        right.text(x, value, f"{value:.2f}x", ha="center", va="bottom", fontsize=8)
    right.axhline(1.0, color="black", lw=0.8, ls=":")
    right.set_ylabel("peak memory / stream size")
    right.set_title("Recording a stream of 1 KB chunks", fontsize=10)
    fig.suptitle(f"Streams ({mode})")
    fig.tight_layout()
    return fig


def latency_plot(plt: Any, section: dict[str, Any], title: str, xlabel: str) -> Any:
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
    ax.set_xlabel(xlabel)
    ax.set_title(title)
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
