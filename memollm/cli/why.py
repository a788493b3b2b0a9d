"""``memollm why --function NAME --args-json JSON``: what a call would do now, and why it misses."""

from __future__ import annotations

import argparse
import json
import sys

from ..why import WhyError, as_data, why
from .common import EXIT_OK, EXIT_USAGE, CliError
from .ui import print_json

HELP = "explain a call: hit, expired or miss, and how it differs from the nearest recorded entries"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--args-json", metavar="JSON", required=True, help='the call\'s arguments: a JSON object of keyword arguments (\'{"prompt": "hi"}\') or an array of positional ones')


def run(args: argparse.Namespace) -> int:
    if not args.function:
        print("memollm why: --function NAME is required (module.qualname of the cached function)", file=sys.stderr)
        return EXIT_USAGE
    try:
        arguments = json.loads(args.args_json)
    except json.JSONDecodeError as exc:
        print(f"memollm why: --args-json is not valid JSON ({exc})", file=sys.stderr)
        return EXIT_USAGE
    try:
        explanation = why(args.function, arguments, args.cache_dir)
    except WhyError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json(sys.stdout, as_data(explanation))
    else:
        print(explanation)
    return EXIT_OK
