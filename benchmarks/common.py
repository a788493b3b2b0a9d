"""Shared pieces of the benchmark suite: the workload, the timer, results and tables."""

from __future__ import annotations

import gc
import importlib
import os
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional

# -- settings -------------------------------------------------------------------------------


@dataclass
class Settings:
    """What a run of the suite does; ``--quick`` shrinks sizes and repetitions."""

    quick: bool = False
    time_scale: float = 0.05
    large: int = 1_000_000
    small: int = 1_000
    workers: int = max(1, os.cpu_count() or 1)
    populate_budget: Optional[float] = None  # seconds allowed for populating the large store
    scratch: str = ""  # root of every temporary cache dir of this run

    @property
    def reps(self) -> int:
        """Timed operations per contender in the latency sections."""
        return 600 if self.quick else 5_000

    @property
    def rounds(self) -> int:
        """Contenders take turns this many times, so drift hits them all alike."""
        return 6 if self.quick else 20

    @property
    def warmup(self) -> int:
        return 50 if self.quick else 300

    def scratch_dir(self, name: str) -> str:
        """A fresh, empty directory for one contender's cache."""
        path = tempfile.mkdtemp(prefix=name + "-", dir=self.scratch)
        return path


# -- the workload ---------------------------------------------------------------------------

_WORDS = (
    "the model cache request response token latency provider stream prompt answer question "
    "context system user assistant evaluate retry batch vector embedding summary function call "
    "result value error timeout budget cost document search index query chunk reply draft edit "
    "review test suite python library network second minute quick brown fox jumps over lazy dog"
).split()

MODEL = "gpt-4o-mini"


def text(rng: random.Random, size: int) -> str:
    """Pseudo-English of about ``size`` characters."""
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size]


def make_messages(seed: int = 0, count: int = 10, total: int = 4_000) -> list[dict[str, str]]:
    """A chat of ``count`` messages, ``total`` characters of content in all."""
    rng = random.Random(seed)
    roles = ["system"] + ["user" if i % 2 else "assistant" for i in range(1, count)]
    roles[-1] = "user"
    return [{"role": role, "content": text(rng, total // count)} for role in roles]


def make_request(seed: int = 0, suffix: str = "") -> dict[str, Any]:
    """The benchmark request: 10 messages (~4 KB), model, temperature, max_tokens.

    ``suffix`` is appended to the last message, to make distinct requests of the same size.
    """
    messages = make_messages(seed)
    if suffix:
        messages[-1]["content"] += suffix
    return {"messages": messages, "model": MODEL, "temperature": 0.2, "max_tokens": 512}


def make_response(seed: int = 1, size: int = 3_700) -> dict[str, Any]:
    """A chat completion shaped like OpenAI's, about 4 KB in all."""
    rng = random.Random(seed)
    return {
        "id": "chatcmpl-" + "%030x" % rng.getrandbits(120),
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text(rng, size)},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 912, "completion_tokens": 788, "total_tokens": 1700},
        "system_fingerprint": "fp_0123456789",
    }


REQUEST = make_request()
RESPONSE = make_response()


def stub_chat() -> Callable[..., dict[str, Any]]:
    """A fresh provider stub that answers instantly (each contender decorates its own)."""

    def chat(messages: list[dict[str, str]], model: str, temperature: float, max_tokens: int) -> dict[str, Any]:
        return RESPONSE

    return chat


def distinct_requests(count: int, tag: str) -> Iterator[dict[str, Any]]:
    """``count`` requests of the benchmark's size that differ from each other (and across tags)."""
    last = REQUEST["messages"][-1]
    for i in range(count):
        messages = list(REQUEST["messages"])
        messages[-1] = {"role": last["role"], "content": f"{last['content']} [{tag} {i}]"}
        yield {**REQUEST, "messages": messages}


# -- optional dependencies ------------------------------------------------------------------


def optional(module: str) -> Optional[Any]:
    """The module, or ``None`` if it is not installed (its contender is then skipped)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


# -- timing ---------------------------------------------------------------------------------


@dataclass
class Stats:
    """Per-operation latency figures, in microseconds."""

    median_us: float
    p90_us: float
    min_us: float
    n: int

    @classmethod
    def of(cls, samples_ns: list[int]) -> "Stats":
        ordered = sorted(samples_ns)
        p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
        return cls(statistics.median(ordered) / 1e3, p90 / 1e3, ordered[0] / 1e3, len(ordered))

    def as_dict(self) -> dict[str, Any]:
        return {"median_us": round(self.median_us, 3), "p90_us": round(self.p90_us, 3), "min_us": round(self.min_us, 3), "n": self.n}


def _sample(op: Callable[[], Any], count: int, out: list[int]) -> None:
    clock = time.perf_counter_ns
    for _ in range(count):
        start = clock()
        op()
        out.append(clock() - start)


class GcPaused:
    """Collect once, then keep the cyclic GC out of the timed region (as ``timeit`` does)."""

    def __enter__(self) -> None:
        gc.collect()
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: Any) -> None:
        if self.was_enabled:
            gc.enable()


def measure(ops: dict[str, Callable[[], Any]], *, reps: int, rounds: int, warmup: int) -> dict[str, Stats]:
    """Time each op ``reps`` times, the contenders taking turns over ``rounds`` rounds.

    Interleaving means slow drift (frequency scaling, other load) affects every contender alike,
    so the ratios between them are steadier than the absolute figures.
    """
    names = list(ops)
    for name in names:
        for _ in range(warmup):
            ops[name]()
    samples: dict[str, list[int]] = {name: [] for name in names}
    per_round = max(1, reps // rounds)
    with GcPaused():
        for r in range(rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                _sample(ops[name], per_round, samples[name])
    return {name: Stats.of(samples[name]) for name in names}


def timer_overhead_ns() -> float:
    """Median cost of timing an empty operation (reported, not subtracted)."""
    out: list[int] = []
    _sample(lambda: None, 10_000, out)
    return statistics.median(out)


# -- results --------------------------------------------------------------------------------

_COMPARE = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b}


@dataclass
class Section:
    """The figures of one section, with its ratios checked against the issue's targets."""

    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)
    met: dict[str, bool] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def ratio(self, name: str, value: Optional[float], target: Optional[str] = None) -> None:
        """Record a ratio (or figure) and, with a target such as ``">= 20"``, whether it is met."""
        if value is None:
            return
        self.ratios[name] = round(value, 3)
        if target is not None:
            op, bound = target.split()
            self.targets[name] = target
            self.met[name] = bool(_COMPARE[op](value, float(bound)))

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.figures)
        out.update(ratios=self.ratios, targets=self.targets, met=self.met)
        if self.skipped:
            out["skipped"] = self.skipped
        if self.notes:
            out["notes"] = self.notes
        return out


def stats_figures(stats: dict[str, Stats]) -> dict[str, dict[str, Any]]:
    return {name: s.as_dict() for name, s in stats.items()}


# -- output ---------------------------------------------------------------------------------


def fmt_us(us: float) -> str:
    """A latency for humans: ns, µs or ms as fits."""
    if us < 1:
        return f"{us * 1e3:.0f} ns"
    if us < 1_000:
        return f"{us:.1f} µs" if us < 100 else f"{us:.0f} µs"
    return f"{us / 1e3:.2f} ms"


def fmt_s(seconds: float) -> str:
    """A duration for humans: ms below a second."""
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.1f} s"


def print_table(title: str, headers: list[str], rows: Iterable[Iterable[Any]]) -> None:
    """A plain aligned table on stdout."""
    body = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  " + "  ".join("-" * w for w in widths))
    for row in body:
        print("  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))


def print_ratios(section: Section) -> None:
    """The section's ratios with their targets and a verdict."""
    if not section.ratios:
        for reason in section.skipped.items():
            print(f"\n{section.name}: skipped {reason[0]}: {reason[1]}")
        return
    rows = []
    for name, value in section.ratios.items():
        target = section.targets.get(name, "")
        verdict = "" if name not in section.met else ("met" if section.met[name] else "MISSED")
        rows.append([name, f"{value:.2f}", target, verdict])
    print_table(f"{section.name}: ratios", ["ratio", "value", "target", ""], rows)
    for reason in section.skipped.items():
        print(f"  skipped {reason[0]}: {reason[1]}")


def progress(message: str) -> None:
    print(message, flush=True)


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
