"""``memollm demo``: a simulated provider called twice through ``@cache_llm``."""

from __future__ import annotations

import argparse
import sys

from .common import CliError

HELP = "run a simulated provider through @cache_llm and show the speed-up"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="keep the demo's entries in DIR (default: a temporary dir, removed afterwards; $MEMOLLM_CACHE_DIR is not used)",
    )
    parser.add_argument(
        "--latency-scale",
        type=float,
        metavar="X",
        default=None,
        help="multiply the simulated latency (default: $MEMOLLM_DEMO_LATENCY or 1)",
    )


def run(args: argparse.Namespace) -> int:
    from .. import demo

    try:
        scale = demo.latency_scale(args.latency_scale)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return demo.run(sys.stdout, scale, args.cache_dir)
