"""Section "http": a cache hit at the HTTP layer, through the openai SDK, against the floor and vcrpy.

Every contender makes the same SDK call, ``client.chat.completions.create(...)`` with the
benchmark's ~4 KB request, answered with the same ~4 KB chat completion:

* ``floor``: the SDK over an httpx2 client whose ``MockTransport`` hands back a response built
  from prebuilt bytes: the least any transport-level cache can cost (the SDK's own work).
* ``memollm-http``: the SDK over ``memollm.http.client()`` (httpx2), a warm disk cache.
* ``memollm-http-memory``: the same with ``store="memory"``.
* ``memollm-http-httpx``: the same over httpx, as vcrpy below.
* ``vcrpy``: the SDK over an httpx client, inside a vcrpy cassette replaying the recorded call.

The SDK's own work (building the request from typed parameters, parsing the response into
models) costs far more than any cache, so these figures show what a user sees: a hit through
memollm costs about what a canned answer costs. What the caches themselves cost shows in the
second table: the transports alone (``transport-*``), each handed the request the SDK sends
(built once) and its response read; that is where memollm is compared with vcrpy.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from .common import REQUEST, RESPONSE, Section, Settings, fmt_us, measure, optional, print_ratios, print_table, stats_figures

NAME = "http"
BASE_URL = "https://api.openai.example/v1"
BODY = json.dumps(RESPONSE).encode()
HEADERS = [("content-type", "application/json"), ("content-length", str(len(BODY))), ("x-request-id", "req_0123456789")]


def counting_mock(module: Any, calls: list[int]) -> Any:
    """A MockTransport of ``module`` answering every request with the prebuilt response."""

    def handler(request: Any) -> Any:
        calls.append(1)
        return module.Response(200, headers=HEADERS, stream=module.ByteStream(BODY))

    return module.MockTransport(handler)


def sdk_call(http_client: Any) -> Callable[[], Any]:
    """The timed operation: one chat completion through the openai SDK over ``http_client``."""
    import openai

    client = openai.OpenAI(api_key="sk-bench-not-a-key", base_url=BASE_URL, http_client=http_client, max_retries=0)
    create = client.chat.completions.create

    def op() -> Any:
        return create(**REQUEST)

    return op


REQUEST_BODY = json.dumps(REQUEST).encode()
REQUEST_HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench-not-a-key", "user-agent": "OpenAI/Python"}


def transport_call(http_client: Any) -> Callable[[], Any]:
    """The timed operation without the SDK or the client: the client's transport answers the
    request (built once, as the SDK builds it) and the response body is read (parsing it is the
    caller's work, the same for every contender)."""
    module = optional(type(http_client).__module__.partition(".")[0])
    transport = http_client._transport  # the transport the client was given
    request = module.Request("POST", BASE_URL + "/chat/completions", content=REQUEST_BODY, headers=REQUEST_HEADERS)
    handle = transport.handle_request

    def op() -> Any:
        response = handle(request)
        response.read()
        return response

    return op


def answer_text(answer: Any) -> str:
    if hasattr(answer, "status_code"):  # a response (the transport contenders)
        return str(answer.json()["choices"][0]["message"]["content"])
    return str(answer.choices[0].message.content)


def checked(op: Callable[[], Any], calls: list[int], expected: int, name: str) -> Callable[[], Any]:
    """Run ``op`` a few times; fail if it reached the transport more than ``expected`` times."""
    for _ in range(3):
        if answer_text(op()) != RESPONSE["choices"][0]["message"]["content"]:
            raise RuntimeError(f"{name} answered something else")
    if len(calls) > expected:
        raise RuntimeError(f"{name} did not hit its cache ({len(calls)} transport calls)")
    return op


def memollm_op(settings: Settings, library: str, name: str, call: Callable[[Any], Callable[[], Any]], **options: Any) -> Callable[[], Any]:
    import memollm.http

    module = optional(library)
    calls: list[int] = []
    if "store" not in options:
        options["cache_dir"] = settings.scratch_dir(name)
    op = call(memollm.http.client(library=library, transport=counting_mock(module, calls), **options))
    op()  # the miss that fills the cache
    return checked(op, calls, 1, name)


def vcrpy_ops(settings: Settings, section: Section) -> Any:
    """Record the calls once into a cassette (over an httpx MockTransport), then replay them:
    ``(SDK op, transport op, the open cassette)``."""
    vcr = optional("vcr")
    httpx = optional("httpx")
    if vcr is None or httpx is None:
        section.skipped["vcrpy"] = "vcrpy or httpx is not installed (pip install -e '.[bench]')"
        return None
    import logging

    logging.getLogger("vcr").setLevel(logging.WARNING)  # vcrpy logs every replayed request at INFO
    cassette = os.path.join(settings.scratch_dir("vcrpy"), "chat.yaml")
    calls: list[int] = []
    recorder = vcr.VCR(record_mode="once", filter_headers=["authorization"])
    with recorder.use_cassette(cassette):
        sdk_call(httpx.Client(transport=counting_mock(httpx, calls)))()
        transport_call(httpx.Client(transport=counting_mock(httpx, calls)))()
    context = vcr.VCR(record_mode="none").use_cassette(cassette, allow_playback_repeats=True)
    context.__enter__()  # left open for the whole run: a replay per call, as in a test suite
    section.notes.append("vcrpy: record_mode='none', allow_playback_repeats=True, default matching (method, URI)")
    sdk_op = checked(sdk_call(httpx.Client(transport=counting_mock(httpx, calls))), calls, 2, "vcrpy")
    return sdk_op, checked(transport_call(httpx.Client(transport=counting_mock(httpx, calls))), calls, 2, "transport-vcrpy"), context


TARGETS = [
    ("memollm-http/floor", "memollm-http", "floor", "<= 1.3"),
    ("transport-vcrpy/transport-memollm-httpx", "transport-vcrpy", "transport-memollm-httpx", ">= 5"),
    ("transport-vcrpy/transport-memollm", "transport-vcrpy", "transport-memollm", None),
    ("transport-memollm/transport-floor", "transport-memollm", "transport-floor", None),
    ("memollm-http-memory/floor", "memollm-http-memory", "floor", None),
    ("vcrpy/memollm-http", "vcrpy", "memollm-http", None),
]


def run(settings: Settings) -> Section:
    section = Section(NAME)
    if optional("openai") is None or optional("httpx2") is None:
        section.skipped["all"] = "the openai SDK or httpx2 is not installed (pip install -e '.[http,test]')"
        print_ratios(section)
        return section
    import httpx2

    floor_calls: list[int] = []
    sdk_ops: dict[str, Callable[[], Any]] = {"floor": sdk_call(httpx2.Client(transport=counting_mock(httpx2, floor_calls)))}
    transport_ops: dict[str, Callable[[], Any]] = {
        "transport-floor": transport_call(httpx2.Client(transport=counting_mock(httpx2, floor_calls)))
    }
    sdk_ops["memollm-http"] = memollm_op(settings, "httpx2", "memollm-http", sdk_call)
    sdk_ops["memollm-http-memory"] = memollm_op(settings, "httpx2", "memollm-http-memory", sdk_call, store="memory")
    transport_ops["transport-memollm"] = memollm_op(settings, "httpx2", "transport-memollm", transport_call)
    cassette = None
    if optional("httpx") is not None:
        sdk_ops["memollm-http-httpx"] = memollm_op(settings, "httpx", "memollm-http-httpx", sdk_call)
        transport_ops["transport-memollm-httpx"] = memollm_op(settings, "httpx", "transport-memollm-httpx", transport_call)
        replay = vcrpy_ops(settings, section)
        if replay is not None:
            sdk_ops["vcrpy"], transport_ops["transport-vcrpy"], cassette = replay
    try:
        sdk_stats = measure(
            sdk_ops, reps=max(300, settings.reps // 5), rounds=settings.rounds, warmup=settings.warmup // 5
        )  # an SDK call costs ~100x a decorator hit
        transport_stats = measure(transport_ops, reps=settings.reps, rounds=settings.rounds, warmup=settings.warmup)
    finally:
        if cassette is not None:
            cassette.__exit__(None, None, None)
    stats = {**sdk_stats, **transport_stats}
    section.figures["request_bytes"] = len(REQUEST_BODY)
    section.figures["response_bytes"] = len(BODY)
    section.figures["contenders"] = stats_figures(stats)
    for name, num, den, target in TARGETS:
        if num in stats and den in stats:
            section.ratio(name, stats[num].median_us / stats[den].median_us, target)
    for title, group, floor in (
        ("http hit latency through the openai SDK (chat.completions.create, ~4 KB request -> ~4 KB response)", sdk_stats, "floor"),
        ("http hit latency of the transport alone (handle_request of the SDK's request, body read)", transport_stats, "transport-floor"),
    ):
        base = group[floor].median_us
        rows = [
            [name, fmt_us(s.median_us), fmt_us(s.p90_us), f"{s.median_us / base:.2f}x"]
            for name, s in sorted(group.items(), key=lambda kv: kv[1].median_us)
        ]
        print_table(title, ["contender", "median", "p90", "vs floor"], rows)
    print_ratios(section)
    return section
