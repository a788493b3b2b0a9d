"""The Redis store against a real redis-server (started here on a free loopback port).

Without redis-server (or the redis package) these tests skip, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings

import pytest
from redis_server import RedisServer, free_port, redis_server_path

import memollm.decorator
from memollm import CacheWarning, cache_llm
from memollm.stores.disk import DiskStore
from memollm.stores.redis import RedisStore
from memollm.stores.tiered import TieredStore

try:
    import redis
except ImportError:  # pragma: no cover
    redis = None  # type: ignore[assignment]

IN_CI = os.environ.get("CI", "").lower() == "true"
MISSING = "redis-server" if redis_server_path() is None else "the redis package (pip install 'memollm[redis]')" if redis is None else None
if MISSING and not IN_CI:
    pytestmark = pytest.mark.skip(reason=f"{MISSING} is not installed")

STORE_LOCKS = "acquire_lock" in inspect.getsource(memollm.decorator)

WORKER = """
import json, os, sys, time
from memollm import cache_llm

url, calls_path, delay, start = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])

@cache_llm(store=url)
def ask(prompt):
    fd = os.open(calls_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{os.getpid()}\\n".encode())
    finally:
        os.close(fd)
    time.sleep(delay)
    return {"answer": prompt.upper(), "pid": os.getpid()}

while time.time() < start:
    time.sleep(0.002)
print(json.dumps(ask("hello")))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if MISSING:
        pytest.fail(f"{MISSING} is missing, and CI=true: the Redis tests must run in CI (.ci/run installs redis-server)")
    with RedisServer(tmp_path_factory.mktemp("redis")) as running:
        yield running


@pytest.fixture
def client(server):
    c = redis.Redis.from_url(server.url)
    yield c
    c.close()


@pytest.fixture
def ns():
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def url(server, ns):
    return f"{server.url}?namespace={ns}"


def keys_of(client, pattern):
    return sorted(k.decode() for k in client.scan_iter(match=pattern))


def run_workers(tmp_path, url, n, delay):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    calls = tmp_path / "calls.txt"
    start = time.time() + 1.5 if n > 1 else 0.0
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), url, str(calls), str(delay), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outputs.append(json.loads(out))
    made = calls.read_text().split() if calls.exists() else []
    return outputs, made


def test_two_processes_share_entries(tmp_path, url):
    first, calls = run_workers(tmp_path, url, 1, 0.0)
    second, calls = run_workers(tmp_path, url, 1, 0.0)
    assert len(calls) == 1
    assert first == second == [{"answer": "HELLO", "pid": int(calls[0])}]


@pytest.mark.xfail(not STORE_LOCKS, reason="needs the decorator to use Store.acquire_lock (patch proposed with issue 7)", strict=False)
def test_cross_process_single_flight(tmp_path, url):
    outputs, calls = run_workers(tmp_path, url, 5, 1.0)
    assert len(calls) == 1, f"{len(calls)} provider calls"
    assert all(o == {"answer": "HELLO", "pid": int(calls[0])} for o in outputs)


def test_ttl_through_redis_expiry(url, client, ns):
    calls = []

    @cache_llm(store=url, ttl=1)
    def ask(prompt):
        calls.append(prompt)
        return prompt.upper()

    assert ask("a") == "A"
    [entry] = keys_of(client, f"{ns}:e:*")
    assert 0 < client.pttl(entry) <= 1000
    assert all(0 < client.pttl(k) <= 1000 for k in keys_of(client, f"{ns}:*"))
    assert ask("a") == "A" and len(calls) == 1
    time.sleep(1.1)
    assert not client.exists(entry)  # Redis expired it
    assert ask("a") == "A" and len(calls) == 2


def test_no_ttl_sets_no_expiry(url, client, ns):
    @cache_llm(store=url)
    def ask(prompt):
        return prompt.upper()

    ask("a")
    names = keys_of(client, f"{ns}:*")
    assert names and all(client.pttl(k) == -1 for k in names)


def make_streamer(store, calls):
    @cache_llm(store=store)
    def stream(prompt):
        calls.append(prompt)
        for word in prompt.split():
            yield {"delta": word}
        return "stop"

    return stream


def test_streams_recorded_and_replayed_from_redis(server, ns):
    calls = []
    first = make_streamer(RedisStore(server.url, namespace=ns), calls)
    assert list(first("a b c")) == [{"delta": "a"}, {"delta": "b"}, {"delta": "c"}]
    # A separate store object (as in another process): the replay comes from Redis.
    store = RedisStore(server.url, namespace=ns)
    second = make_streamer(store, calls)
    gen = second("a b c")
    chunks = []
    with pytest.raises(StopIteration) as stop:
        while True:
            chunks.append(next(gen))
    assert chunks == [{"delta": "a"}, {"delta": "b"}, {"delta": "c"}] and stop.value.value == "stop"
    assert calls == ["a b c"]
    assert [m.kind for m in store.entries()] == ["stream"]


def test_async_function(url):
    calls = []

    @cache_llm(store=url)
    async def ask(prompt):
        calls.append(prompt)
        await asyncio.sleep(0)
        return {"text": prompt}

    async def main():
        return [await ask("x"), await ask("x")]

    assert asyncio.run(main()) == [{"text": "x"}, {"text": "x"}] and calls == ["x"]


def test_clear_by_function_touches_nothing_else(server, url, client, ns):
    other_ns = RedisStore(server.url, namespace=ns + "-other")

    @cache_llm(store=url)
    def f(x):
        return x

    @cache_llm(store=url)
    def g(x):
        return x

    @cache_llm(store=other_ns)
    def f_elsewhere(x):
        return x

    for i in range(30):
        f(i), g(i), f_elsewhere(i)
    client.set("unrelated:key", b"keep")
    client.set(f"{ns}:not-an-entry", b"keep")
    before = client.info("commandstats")
    g_keys = keys_of(client, f"{ns}:e:*.g:*")
    other = keys_of(client, f"{ns}-other:*")
    assert len(g_keys) == 30 and len(other) == 31

    f.cache_clear()

    assert keys_of(client, f"{ns}:e:*.f:*") == [] and f.cache_info().entries == 0
    assert keys_of(client, f"{ns}:e:*.g:*") == g_keys and g.cache_info().entries == 30
    assert keys_of(client, f"{ns}-other:*") == other
    assert client.get("unrelated:key") == b"keep" and client.get(f"{ns}:not-an-entry") == b"keep"
    after = client.info("commandstats")
    for command in ("cmdstat_flushdb", "cmdstat_flushall", "cmdstat_keys"):
        assert after.get(command, {}).get("calls", 0) == before.get(command, {}).get("calls", 0), command
    client.delete("unrelated:key", f"{ns}:not-an-entry")


def test_invalidate_and_cache_info(url):
    calls = []

    @cache_llm(store=url)
    def ask(prompt):
        calls.append(prompt)
        return prompt * 2

    ask("a"), ask("b"), ask("a")
    info = ask.cache_info()
    assert (info.hits, info.misses, info.entries) == (1, 2, 2) and info.bytes > 0
    assert ask.invalidate("a") is True
    assert ask.invalidate("a") is False
    ask("a"), ask("b")
    assert calls == ["a", "b", "a"]


def test_namespaces_are_isolated(server, ns):
    calls = []

    def make(namespace):
        @cache_llm(store=RedisStore(server.url, namespace=namespace))
        def ask(prompt):
            calls.append(namespace)
            return prompt

        return ask

    one, two = make(ns + "-1"), make(ns + "-2")
    one("q"), two("q"), one("q"), two("q")
    assert calls == [ns + "-1", ns + "-2"]
    one.cache_clear()
    two("q")
    assert calls == [ns + "-1", ns + "-2"]
    assert RedisStore(f"{server.url}?namespace={ns}-2").count() == 1


def test_client_object_password_url_and_location(server, client, ns):
    client.execute_command("ACL", "SETUSER", "alice", "on", ">s3cret", "~*", "+@all")
    store = RedisStore(f"redis://alice:s3cret@127.0.0.1:{server.port}/0", namespace=ns)
    assert "s3cret" not in store.location and store.location.startswith(f"redis://alice@127.0.0.1:{server.port}/0")

    @cache_llm(store=store)
    def ask(prompt):
        return prompt

    ask("x")
    assert RedisStore(redis.Redis.from_url(server.url), namespace=ns).count() == 1
    with pytest.raises(ValueError, match="decode_responses"):
        RedisStore(redis.Redis.from_url(server.url, decode_responses=True))

    wrong = RedisStore(f"redis://alice:wrong@127.0.0.1:{server.port}/0", namespace=ns)

    @cache_llm(store=wrong)
    def ask_wrong(prompt):
        return prompt

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ask_wrong("y") == "y"
    assert len(caught) == 1 and "wrong" not in str(caught[0].message)


def test_signed_entries_and_no_unpickling(tmp_path, url, client, ns):
    calls = []

    def make(secret):
        @cache_llm(store=url, secret=secret)
        def ask(prompt):
            calls.append(secret)
            return prompt

        return ask

    make("k1")("p"), make("k1")("p")
    assert calls == ["k1"]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        make("k2")("p")  # altered or foreign entries are rejected
    assert calls == ["k1", "k2"]

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name in keys_of(client, f"{ns}:e:*"):
        client.set(name, pickle.dumps(Evil()))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert make("k1")("p") == "p"
    assert not marker.exists()


def test_redis_down_fails_open_quickly():
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    calls = []

    @cache_llm(store=url)
    def ask(prompt):
        calls.append(prompt)
        return f"answer {prompt}"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.monotonic()
        answers = [ask(i) for i in range(20)]
        elapsed = time.monotonic() - start
        ask.cache_info(), ask.invalidate(1), ask.cache_clear()  # the same problem: not reported again
    assert answers == [f"answer {i}" for i in range(20)] and len(calls) == 20
    assert elapsed < 2.0, elapsed
    problems = [w for w in caught if issubclass(w.category, CacheWarning)]
    assert len(problems) == 1 and "unreachable" in str(problems[0].message)


def test_redis_refusing_writes_is_reported_once(url, client):
    calls = []

    @cache_llm(store=url)
    def ask(prompt):
        calls.append(prompt)
        return f"answer {prompt}"

    client.config_set("maxmemory", "1")  # every write is refused (OOM), reads still work
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            answers = [ask(i % 3) for i in range(9)]
    finally:
        client.config_set("maxmemory", "0")
    assert answers == [f"answer {i % 3}" for i in range(9)] and len(calls) == 9
    problems = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
    assert len(problems) == 1 and "maxmemory" in problems[0], problems
    assert ask(0) == ask(0) and len(calls) == 10  # writes work again


def test_redis_slow_fails_open_quickly():
    """A server that accepts connections and never answers: one short timeout, then the back-off."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        store = RedisStore(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", socket_timeout=0.2, connect_timeout=0.2)

        @cache_llm(store=store)
        def ask(prompt):
            return prompt

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.monotonic()
            assert [ask(i) for i in range(20)] == list(range(20))
            elapsed = time.monotonic() - start
        assert elapsed < 1.5, elapsed
        assert len([w for w in caught if issubclass(w.category, CacheWarning)]) == 1
        assert not store.available
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


def test_backoff_ends():
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", backoff=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert store.get("f", "0" * 32) is None
    assert not store.available
    time.sleep(0.25)
    assert store.available


def test_lock_released_only_by_its_holder(server, ns):
    a, b = RedisStore(server.url, namespace=ns), RedisStore(server.url, namespace=ns)
    key = "k" * 32
    lock = a.try_lock(key)
    assert lock is not None and b.try_lock(key) is None
    assert b.acquire_lock(key, time.monotonic() + 0.1) is None
    a.client.set(a.lock_key(key), "someone-else")  # as if the lock had expired and been taken
    lock.release()
    assert a.client.get(a.lock_key(key)) == b"someone-else"
    a.client.delete(a.lock_key(key))
    lock = b.try_lock(key)
    assert lock is not None
    lock.release()
    assert not a.client.exists(a.lock_key(key))


def test_lock_kept_alive_while_held_and_freed_when_holder_dies(server, ns):
    key = "d" * 32
    holder = RedisStore(server.url, namespace=ns, lock_ttl=0.5)
    lock = holder.try_lock(key)
    time.sleep(1.0)  # twice the TTL: the holder extends it
    assert RedisStore(server.url, namespace=ns).try_lock(key) is None
    lock.release()

    code = (
        "import os, sys; from memollm.stores.redis import RedisStore; "
        f"s = RedisStore({server.url!r}, namespace={ns!r}, lock_ttl=0.3); "
        f"assert s.try_lock({key!r}); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    start = time.monotonic()
    lock = RedisStore(server.url, namespace=ns).acquire_lock(key, time.monotonic() + 5)
    assert lock is not None and time.monotonic() - start < 1.0
    lock.release()


def test_local_tier(tmp_path, server, ns):
    calls = []

    def make(store):
        @cache_llm(store=store)
        def ask(prompt):
            calls.append(prompt)
            return {"text": prompt}

        return ask

    make(TieredStore(str(tmp_path / "a"), RedisStore(server.url, namespace=ns)))("q")
    # Another machine: its local tier is empty, Redis answers and fills it.
    assert make(TieredStore(str(tmp_path / "b"), RedisStore(server.url, namespace=ns)))("q") == {"text": "q"}
    assert DiskStore(str(tmp_path / "b")).count() == 1
    # Redis gone: the local tier still answers, silently.
    down = f"redis://127.0.0.1:{free_port()}/0?namespace={ns}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert make(RedisStore(down, local=str(tmp_path / "b")))("q") == {"text": "q"}
    # (only memollm's own warnings count: the garbage collector may report other tests' sockets here)
    assert calls == ["q"] and not [w for w in caught if issubclass(w.category, CacheWarning)]
    # The local= form writes through to both tiers.
    make(RedisStore(server.url, namespace=ns, local=str(tmp_path / "c")))("r")
    assert DiskStore(str(tmp_path / "c")).count() == 1 and RedisStore(server.url, namespace=ns).count() == 2


def test_offline_mode_still_raises_cache_miss_when_redis_is_down():
    from memollm import CacheMiss

    @cache_llm(store=f"redis://127.0.0.1:{free_port()}/0", mode="offline")
    def ask(prompt):
        return prompt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CacheMiss):
            ask("x")


def test_async_lock_wait_does_not_block_the_loop(server, ns):
    a, b = RedisStore(server.url, namespace=ns), RedisStore(server.url, namespace=ns)
    key = "a" * 32
    held = a.try_lock(key)
    threading.Timer(0.3, held.release).start()

    async def main():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.ensure_future(tick())
        lock = await b.acquire_lock_async(key, time.monotonic() + 5)
        ticker.cancel()
        return lock, ticks

    lock, ticks = asyncio.run(main())
    assert lock is not None and ticks >= 10
    lock.release()


def test_urls_locations_and_options():
    # Building a store does not connect.
    assert RedisStore("rediss://bob:pw@cache.example:6380/2").location == "rediss://bob@cache.example:6380/2"
    assert RedisStore("redis://:pw@cache.example:6379/0").location == "redis://cache.example:6379/0"
    assert "pw" not in RedisStore("unix:///run/redis.sock?db=1&password=pw").location
    store = RedisStore("redis://cache.example:6379/0?namespace=proj")
    assert store.namespace == "proj" and store.location == "redis://cache.example:6379/0?namespace=proj"
    assert RedisStore("redis://cache.example/0", prefix="p2").namespace == "p2"
    assert RedisStore(redis.Redis(host="cache.example", port=7000, db=3)).location == "redis://cache.example:7000/3"


@pytest.fixture
def password_server(tmp_path):
    if MISSING:
        pytest.fail(f"{MISSING} is missing, and CI=true: the Redis tests must run in CI (.ci/run installs redis-server)")
    with RedisServer(tmp_path, "--requirepass", "right-password") as running:
        yield running


def _cache_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]


@pytest.mark.parametrize("password", ["wrong-password", None])
def test_a_refused_password_is_reported_as_such(password_server, password):
    auth = f":{password}@" if password else ""
    url = f"redis://{auth}127.0.0.1:{password_server.port}/0"
    calls = []

    @cache_llm(store=url)
    def ask(prompt):
        calls.append(prompt)
        return f"answer {prompt}"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [ask(1), ask(1)] == ["answer 1", "answer 1"]
        ask.cache_info(), ask.invalidate(1), ask.cache_clear()  # the same problem: not reported again
    assert len(calls) == 2
    problems = _cache_warnings(caught)
    assert len(problems) == 1, problems
    assert "refused the credentials" in problems[0] and "unreachable" not in problems[0]
    assert "wrong-password" not in problems[0] and "right-password" not in problems[0]

    @cache_llm(store="redis://:right-password@127.0.0.1:%d/0" % password_server.port)
    def ask_right(prompt):
        calls.append(prompt)
        return f"answer {prompt}"

    assert [ask_right(2), ask_right(2)] == ["answer 2", "answer 2"]
    assert calls == [1, 1, 2]


def test_credentials_refused_after_unreachable_is_reported_too(tmp_path, monkeypatch):
    import redis_server

    port = free_port()
    store = RedisStore(f"redis://:wrong-password@127.0.0.1:{port}/0", backoff=0.05)

    @cache_llm(store=store)
    def ask(prompt):
        return f"answer {prompt}"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ask(1) == "answer 1"  # nothing listens on the port yet
        monkeypatch.setattr(redis_server, "free_port", lambda: port)
        with RedisServer(tmp_path, "--requirepass", "right-password"):
            time.sleep(0.1)  # past the back-off
            assert ask(1) == "answer 1"
            time.sleep(0.1)
            assert ask(1) == "answer 1"
    problems = _cache_warnings(caught)
    assert len(problems) == 2, problems
    assert "unreachable" in problems[0]
    assert "refused the credentials" in problems[1]
