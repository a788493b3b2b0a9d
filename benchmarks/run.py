"""Run memollm's benchmark suite: ``python benchmarks/run.py [--quick] [--out DIR] [--only SECTION]``.

Prints a table per section, writes ``results.json`` and PNG plots to ``--out``
(default ``benchmarks/results/``). See docs/benchmarks.md for what each section measures.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Run as a script, Python puts benchmarks/ first on sys.path, where http.py would shadow the
# standard library's ``http`` package; the sections are imported as ``benchmarks.<name>``.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(os.path.abspath(__file__))]
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # make the ``benchmarks`` package importable

from benchmarks import common  # noqa: E402

SECTIONS = ["hit", "observe", "key", "miss", "streams", "redis", "processes", "http", "savings", "scale"]  # scale last: its heavy disk I/O would disturb the others
MODULES = {"redis": "redis_hit"}  # a module named redis.py would shadow redis-py (benchmarks/ is on sys.path)
DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and repetitions, as CI runs it (< 60 s)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="directory for results.json and the plots (default: %(default)s)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="SECTION",
        help=f"run only this section (repeatable, or comma-separated): {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help="factor applied to the simulated provider's sleeps in 'savings' (default 0.01 with --quick, else 0.05)",
    )
    parser.add_argument("--large", type=int, default=None, help="entries in the large store of 'scale' (default 1,000,000; 20,000 with --quick)")
    parser.add_argument(
        "--populate-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop populating the large store of 'scale' after about this long and use the entries written so far "
        "(default 600 in a full run, none with --quick; 0 for none)",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes that populate the large store (default: CPU count)")
    parser.add_argument(
        "--scratch",
        default=None,
        metavar="DIR",
        help="existing directory in which the contenders' cache dirs are made, removed at the end "
        "(default: the system temp dir; a cache is only as fast as the file system it is on)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)
    if args.scratch is not None and not os.path.isdir(args.scratch):
        parser.error(f"--scratch {args.scratch!r} is not a directory: create it first, or leave --scratch out to use the system temp dir")
    chosen: list[str] = []
    for item in args.only or []:
        chosen.extend(s.strip() for s in item.split(",") if s.strip())
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in chosen] if chosen else SECTIONS
    return args


def settings_from(args: argparse.Namespace, scratch: str) -> common.Settings:
    settings = common.Settings(quick=args.quick, scratch=scratch)
    settings.time_scale = args.time_scale if args.time_scale is not None else (0.01 if args.quick else 0.05)
    settings.large = args.large if args.large is not None else (20_000 if args.quick else 1_000_000)
    budget = args.populate_budget if args.populate_budget is not None else (None if args.quick else 600.0)
    settings.populate_budget = budget or None
    if args.workers is not None:
        settings.workers = max(1, args.workers)
    return settings


def meta(settings: common.Settings) -> dict[str, Any]:
    versions = {}
    for dist in ("memollm", "joblib", "diskcache", "msgpack", "ormsgpack", "xxhash", "langchain-core", "langchain-community", "matplotlib"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": settings.quick,
        "time_scale": settings.time_scale,
        "scale_sizes": [settings.small, settings.large],
        "scratch": os.path.dirname(os.path.abspath(settings.scratch)),
        "populate_budget_s": settings.populate_budget,
        "timer_overhead_ns": common.timer_overhead_ns(),
        "versions": versions,
    }


def isolate_environment(scratch: str) -> None:
    """No benchmark reads the user's cache or inherits a cache mode from the environment."""
    os.environ["MEMOLLM_CACHE_DIR"] = os.path.join(scratch, "default-cache")
    for name in ("MEMOLLM_MODE", "MEMOLLM_SECRET"):
        os.environ.pop(name, None)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="memollm-bench-", dir=args.scratch)
    # Registered before memollm is imported, so this runs after memollm's own exit handlers
    # (which flush buffered usage into the cache dirs) and nothing is left behind.
    atexit.register(common.remove_tree, scratch)
    isolate_environment(scratch)
    settings = settings_from(args, scratch)
    results: dict[str, Any] = {"meta": meta(settings), "sections": {}}
    started = time.perf_counter()
    print(f"memollm benchmarks ({'quick' if settings.quick else 'full'}): {', '.join(args.sections)}", flush=True)
    for name in args.sections:
        module = importlib.import_module(f"benchmarks.{MODULES.get(name, name)}")
        section_start = time.perf_counter()
        section = module.run(settings)
        section.figures["seconds"] = round(time.perf_counter() - section_start, 2)
        results["sections"][name] = section.as_dict()
    results["meta"]["seconds"] = round(time.perf_counter() - started, 2)
    path = os.path.join(args.out, "results.json")
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=2)
    os.replace(path + ".tmp", path)
    print(f"\nwrote {path}")
    if not args.no_plots:
        from benchmarks import plots

        for written in plots.draw(results, args.out):
            print(f"wrote {written}")
    missed = [f"{s}: {r}" for s, sec in results["sections"].items() for r, ok in sec["met"].items() if not ok]
    print(f"\ntargets missed: {', '.join(missed)}" if missed else "\nall targets met")
    print(f"done in {results['meta']['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
