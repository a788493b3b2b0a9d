"""OpenTelemetry counters through the global meter provider, read with the SDK's InMemoryMetricReader.

Each test runs in a fresh interpreter: the global meter provider can be set once per process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("opentelemetry.sdk.metrics")
pytestmark = pytest.mark.timeout(120)

COUNTERS = ["memollm.hits", "memollm.misses", "memollm.tokens_saved", "memollm.seconds_saved", "memollm.dollars_saved"]

CALLS = textwrap.dedent(
    """
    import json, sys, time
    import memollm

    @memollm.cache_llm(cache_dir=sys.argv[1])
    def chat(prompt):
        time.sleep(0.01)
        return {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200}}

    @memollm.cache_llm(store="memory")
    def other(x):
        return x
    """
)

READ = textwrap.dedent(
    """
    def collected(reader):
        out = {}
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out[metric.name] = {
                        "monotonic": metric.data.is_monotonic,
                        "unit": metric.unit,
                        "scope": sm.scope.name,
                        "points": {p.attributes["memollm.function"]: p.value for p in metric.data.data_points},
                    }
        return out
    """
)


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=100)


def test_counters_per_function_through_a_provider_set_after_import(tmp_path):
    pytest.importorskip("genai_prices")  # the script prices a call (genai-prices installs on Python 3.11 or newer)
    script = CALLS + READ + textwrap.dedent(
        """
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))  # after memollm started
        for _ in range(3):
            chat("hello")
        other(1), other(1)
        with memollm.cache_mode("off"):
            chat("hello")  # a bypass is neither a hit nor a miss
        first = collected(reader)
        chat.cache_clear()  # resets cache_info(), not the counters: they never go down
        chat("hello")
        import genai_prices
        price = float(genai_prices.calc_price(genai_prices.Usage(input_tokens=1000, output_tokens=200), "gpt-4o-mini").total_price)
        print(json.dumps({"first": first, "second": collected(reader), "price": price,
                          "chat": chat.__module__ + "." + chat.__qualname__, "other": other.__module__ + "." + other.__qualname__}))
        """
    )
    proc = run(script, str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    first, chat, other = out["first"], out["chat"], out["other"]
    assert set(COUNTERS) <= set(first)
    assert all(first[name]["monotonic"] and first[name]["scope"] == "memollm" for name in COUNTERS)
    assert first["memollm.hits"]["points"] == {chat: 2, other: 1}
    assert first["memollm.misses"]["points"] == {chat: 1, other: 1}
    assert first["memollm.tokens_saved"]["points"][chat] == 2 * 1200
    assert first["memollm.seconds_saved"]["points"][chat] >= 2 * 0.01
    assert first["memollm.seconds_saved"]["unit"] == "s"
    assert first["memollm.dollars_saved"]["points"][chat] == pytest.approx(2 * out["price"])
    assert first["memollm.dollars_saved"]["points"][other] == 0
    second = out["second"]
    assert second["memollm.misses"]["points"][chat] == 2 and second["memollm.hits"]["points"][chat] == 2


def test_without_a_price_table_dollars_are_not_reported(tmp_path):
    script = "import sys\nsys.modules['genai_prices'] = None\n" + CALLS + READ + textwrap.dedent(
        """
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        chat("hello"), chat("hello")
        print(json.dumps({"metrics": collected(reader), "chat": chat.__module__ + "." + chat.__qualname__}))
        """
    )
    proc = run(script, str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["metrics"]["memollm.hits"]["points"][out["chat"]] == 1
    assert not out["metrics"].get("memollm.dollars_saved", {}).get("points")  # none rather than a false zero


BLOCKED = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoOpenTelemetry(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoOpenTelemetry())
    """
)


def test_without_opentelemetry_nothing_is_imported(tmp_path):
    script = BLOCKED + CALLS + textwrap.dedent(
        """
        chat("hello"), chat("hello"), other(1), other(1)
        assert chat.cache_info().hits == 1
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")))
        """
    )
    proc = run(script, str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_an_http_front_door_counts_a_bounded_number_of_functions_apart(tmp_path):
    """URL paths holding ids (``/v1/threads/<id>/runs``) make a function each: past the cap
    they share one set of counters, so memory stays bounded and no count is lost."""
    script = READ + textwrap.dedent(
        """
        import json, sys
        import httpx
        import memollm.core.cache
        import memollm.http
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        memollm.core.cache.FUNCTIONS_COUNTED_MAX = 3
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        inner = httpx.MockTransport(lambda request: httpx.Response(200, json={"path": request.url.path}))
        with httpx.Client(transport=memollm.http.CachingTransport(inner, cache_dir=sys.argv[1])) as client:
            for i in range(6):
                for _ in range(2):  # a miss, then a hit
                    assert client.post(f"http://api.test/v1/threads/t{i}/runs", json={"n": i}).json() == {"path": f"/v1/threads/t{i}/runs"}
        print(json.dumps(collected(reader)))
        """
    )
    proc = run(script, str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for counter in ("memollm.hits", "memollm.misses"):
        points = out[counter]["points"]
        assert points == {**{f"http:POST api.test/v1/threads/t{i}/runs": 1 for i in range(3)}, "(other functions)": 3}
