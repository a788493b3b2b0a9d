"""Single flight: N concurrent identical misses make one provider call (threads, tasks, processes, streams)."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

import memollm
from memollm import cache_llm

pytestmark = pytest.mark.timeout(60)

# One module, imported by this process and by subprocesses, so that its functions have the same
# identity (module, qualified name, source) everywhere, hence the same cache keys. Its providers
# note every real call in an O_APPEND file and are steered by environment variables read per call.
FLIGHTMOD = '''
import asyncio, os, time
from memollm import cache_llm


def note(tag):
    fd = os.open(os.environ["FLIGHT_COUNT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{tag} {os.getpid()}\\n".encode())
    finally:
        os.close(fd)


def calls():
    try:
        with open(os.environ["FLIGHT_COUNT"]) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


@cache_llm
def slow(prompt):
    first = not calls()
    note("call")
    time.sleep(float(os.environ.get("FLIGHT_DELAY", "0")))
    if first and os.environ.get("FLIGHT_FAIL_FIRST"):
        raise RuntimeError("the provider failed")
    return f"answer to {prompt} from {os.getpid()}"


@cache_llm
async def slow_async(prompt):
    note("call")
    await asyncio.sleep(float(os.environ.get("FLIGHT_DELAY", "0")))
    return f"answer to {prompt} from {os.getpid()}"
'''

# Runs flightmod.slow(prompt) (or slow_async) in a subprocess once the wall clock reaches START (so that several
# subprocesses call at the same moment) and prints the answer or the exception.
CALLER = """
import asyncio, os, sys, time
import flightmod
start = float(os.environ.get("FLIGHT_START", "0"))
while time.time() < start:
    time.sleep(0.001)
try:
    if sys.argv[2:] == ["async"]:
        print("OK", asyncio.run(flightmod.slow_async(sys.argv[1])), flush=True)
    else:
        print("OK", flightmod.slow(sys.argv[1]), flush=True)
except Exception as exc:
    print("ERR", type(exc).__name__, exc, flush=True)
"""


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flightmod")
    (root / "flightmod.py").write_text(FLIGHTMOD)
    return root


@pytest.fixture
def flight(module_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The shared module, with a fresh cache dir and call log for this test."""
    monkeypatch.syspath_prepend(str(module_dir))
    monkeypatch.setenv("MEMOLLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FLIGHT_COUNT", str(tmp_path / "calls.log"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(module_dir), os.environ.get("PYTHONPATH")])))
    return importlib.import_module("flightmod")


def spawn(prompt: str, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CALLER, prompt, *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def run_threads(n: int, target: Callable[[], Any]) -> list[Any]:
    """Call ``target`` from ``n`` threads released together; returns values or exceptions."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    return results


def in_thread(fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Run ``fn`` in a daemon thread; fail (instead of hanging the suite) if it does not finish."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "deadlocked"
    return out[0]


# -- threads ---------------------------------------------------------------------------------


def test_threads_identical_misses_make_one_call(flight: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLIGHT_DELAY", "0.3")
    results = run_threads(8, lambda: flight.slow("q"))
    assert len(flight.calls()) == 1
    assert results == [f"answer to q from {os.getpid()}"] * 8


def test_threads_different_keys_do_not_wait_for_each_other(flight: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLIGHT_DELAY", "0.3")
    prompts = iter(range(100))
    lock = threading.Lock()

    def call() -> str:
        with lock:
            prompt = f"q{next(prompts)}"
        return flight.slow(prompt)

    start = time.monotonic()
    run_threads(6, call)
    assert len(flight.calls()) == 6
    assert time.monotonic() - start < 1.5  # in parallel, not one after another (6 x 0.3 s)


def test_threads_leader_fails_next_one_tries(flight: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLIGHT_DELAY", "0.3")
    monkeypatch.setenv("FLIGHT_FAIL_FIRST", "1")
    results = run_threads(8, lambda: flight.slow("q"))
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(flight.calls()) == 2
    assert [str(e) for e in errors] == ["the provider failed"]
    assert results.count(f"answer to q from {os.getpid()}") == 7


# -- asyncio ---------------------------------------------------------------------------------


async def with_ticker(work: Any) -> tuple[Any, float, int]:
    """Run ``work`` beside a task ticking every 5 ms; returns its result, the longest gap, the ticks."""
    ticks: list[float] = []
    done = False

    async def ticker() -> None:
        while not done:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    task = asyncio.ensure_future(ticker())
    try:
        result = await work
    finally:
        done = True
        await task
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    return result, max(gaps, default=0.0), len(ticks)


def test_asyncio_tasks_make_one_call_and_waiting_never_blocks_the_loop(flight: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLIGHT_DELAY", "0.4")

    async def main() -> Any:
        return await with_ticker(asyncio.gather(*(flight.slow_async("q") for _ in range(20))))

    results, longest_gap, ticks = asyncio.run(main())
    assert len(flight.calls()) == 1
    assert results == [f"answer to q from {os.getpid()}"] * 20
    assert ticks >= 20
    assert longest_gap < 0.25


def test_asyncio_leader_fails_next_one_tries(tmp_path: Path) -> None:
    calls: list[int] = []

    @cache_llm(cache_dir=tmp_path / "cache")
    async def provider(prompt: str) -> str:
        calls.append(1)
        await asyncio.sleep(0.2)
        if len(calls) == 1:
            raise RuntimeError("the provider failed")
        return "answer"

    async def main() -> list[Any]:
        return await asyncio.gather(*(provider("q") for _ in range(20)), return_exceptions=True)

    results = asyncio.run(main())
    assert len(calls) == 2
    assert sum(isinstance(r, RuntimeError) for r in results) == 1
    assert results.count("answer") == 19


def test_asyncio_waiting_for_another_process_never_blocks_the_loop(flight: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    holder = spawn("q", "async", FLIGHT_DELAY="1.0")
    try:
        wait_for(lambda: len(flight.calls()) == 1)
        result, longest_gap, _ = asyncio.run(with_ticker(flight.slow_async("q")))
    finally:
        out, err = holder.communicate(timeout=30)
    assert out.startswith("OK answer to q from "), err
    assert result == out.split(" ", 1)[1].strip()  # the other process's answer, read from the cache
    assert len(flight.calls()) == 1
    assert longest_gap < 0.25


# -- processes -------------------------------------------------------------------------------


def test_cancelled_waiter_does_not_hold_up_later_calls(flight: Any) -> None:
    holder = spawn("q", "async", FLIGHT_DELAY="1.5")
    try:
        wait_for(lambda: len(flight.calls()) == 1)

        async def main() -> str:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(flight.slow_async("q"), 0.2)  # gives up while the other process computes
            return await asyncio.wait_for(flight.slow_async("q"), 4.0)  # must not wait for the abandoned flight

        result = asyncio.run(main())
    finally:
        out, err = holder.communicate(timeout=30)
    assert out == f"OK {result}\n", err
    assert len(flight.calls()) == 1


@pytest.mark.slow
def test_processes_identical_misses_make_one_call(flight: Any) -> None:
    start = str(time.time() + 1.5)  # every subprocess has imported memollm by then
    procs = [spawn("q", FLIGHT_DELAY="1.0", FLIGHT_START=start) for _ in range(4)]
    outs = [p.communicate(timeout=40) for p in procs]
    answers = [out for out, _err in outs]
    assert all(a.startswith("OK answer to q from ") for a in answers), outs
    assert len(set(answers)) == 1  # the leader's answer, everywhere
    assert len(flight.calls()) == 1


@pytest.mark.slow
def test_processes_leader_fails_next_one_tries(flight: Any) -> None:
    start = str(time.time() + 1.5)
    procs = [spawn("q", FLIGHT_DELAY="0.5", FLIGHT_FAIL_FIRST="1", FLIGHT_START=start) for _ in range(4)]
    answers = [p.communicate(timeout=40)[0] for p in procs]
    assert len(flight.calls()) == 2
    assert sum(a.startswith("ERR RuntimeError the provider failed") for a in answers) == 1, answers
    assert sum(a.startswith("OK answer to q from ") for a in answers) == 3, answers


def test_dead_lock_holder_does_not_block_others(flight: Any) -> None:
    holder = spawn("q", FLIGHT_DELAY="60")
    try:
        wait_for(lambda: len(flight.calls()) == 1)  # the holder is inside the provider, holding the lock
        waiter: list[Any] = []
        t = threading.Thread(target=lambda: waiter.append(flight.slow("q")))
        t.start()
        time.sleep(0.3)
        assert not waiter  # waiting for the live holder
        holder.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        t.join(10)
        assert waiter == [f"answer to q from {os.getpid()}"]
        assert time.monotonic() - killed < 2.0
    finally:
        holder.kill()
        holder.wait()
    assert len(flight.calls()) == 2
    start = time.monotonic()
    assert flight.slow("q") == f"answer to q from {os.getpid()}"  # and the lock is free for later callers
    assert time.monotonic() - start < 1.0


def test_stuck_leader_delays_others_only_until_the_timeout(flight: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memollm.flight, "DEFAULT_TIMEOUT", 1.0)
    holder = spawn("q", FLIGHT_DELAY="60")
    try:
        wait_for(lambda: len(flight.calls()) == 1)
        start = time.monotonic()
        assert flight.slow("q") == f"answer to q from {os.getpid()}"
        assert 0.9 < time.monotonic() - start < 5.0
    finally:
        holder.kill()
        holder.wait()


FORK_CHILD = """
import os, sys, threading, time
import flightmod
os.environ["FLIGHT_DELAY"] = "1.0"
leader = threading.Thread(target=flightmod.slow, args=("q",))
leader.start()
while not flightmod.calls():
    time.sleep(0.005)
pid = os.fork()
if pid == 0:  # the child sees a copy of the parent's in-flight table, but not its leader thread
    start = time.monotonic()
    value = flightmod.slow("q")
    print("CHILD", value, round(time.monotonic() - start, 2), flush=True)
    os._exit(0)
leader.join()
deadline = time.monotonic() + 15
while time.monotonic() < deadline:
    if os.waitpid(pid, os.WNOHANG)[0]:
        break
    time.sleep(0.05)
else:
    os.kill(pid, 9)
    print("CHILD STUCK", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_does_not_wait_for_the_parents_threads(flight: Any) -> None:
    out = subprocess.run([sys.executable, "-c", FORK_CHILD], env=dict(os.environ), capture_output=True, text=True, timeout=40)
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert words[:4] == ["CHILD", "answer", "to", "q"], out.stdout
    assert float(words[-1]) < 5.0  # it waited for the parent's lock (about 1 s), not for the flight timeout
    assert len(flight.calls()) == 1  # and got the parent's answer


# -- streams ---------------------------------------------------------------------------------


CHUNKS = ["Hel", "lo", ", ", "wor", "ld"]


def test_second_identical_stream_waits_then_replays(tmp_path: Path) -> None:
    calls: list[int] = []
    first_chunk = threading.Event()

    @cache_llm(cache_dir=tmp_path / "cache")
    def tokens(prompt: str) -> Any:
        calls.append(1)
        for chunk in CHUNKS:
            yield chunk
            first_chunk.set()
            time.sleep(0.05)

    out: dict[str, Any] = {}
    first = threading.Thread(target=lambda: out.update(first=list(tokens("q"))))
    first.start()
    assert first_chunk.wait(5)
    second_started = time.monotonic()
    out["second"] = in_thread(lambda: list(tokens("q")))
    first.join(5)
    assert out == {"first": CHUNKS, "second": CHUNKS}
    assert len(calls) == 1
    assert time.monotonic() - second_started > 0.1  # it waited for the first stream to finish


def test_second_identical_async_stream_waits_then_replays(tmp_path: Path) -> None:
    calls: list[int] = []

    @cache_llm(cache_dir=tmp_path / "cache")
    async def tokens(prompt: str) -> Any:
        calls.append(1)
        for chunk in CHUNKS:
            yield chunk
            await asyncio.sleep(0.05)

    async def consume(delay: float) -> list[str]:
        await asyncio.sleep(delay)
        return [c async for c in tokens("q")]

    async def main() -> Any:
        return await with_ticker(asyncio.gather(consume(0), consume(0.06), consume(0.12)))

    results, longest_gap, _ = asyncio.run(main())
    assert results == [CHUNKS] * 3
    assert len(calls) == 1
    assert longest_gap < 0.25


def test_interleaved_identical_streams_in_one_thread_do_not_deadlock(tmp_path: Path) -> None:
    calls: list[int] = []

    @cache_llm(cache_dir=tmp_path / "cache")
    def tokens(prompt: str) -> Any:
        calls.append(1)
        yield from CHUNKS

    pairs = in_thread(lambda: list(zip(tokens("q"), tokens("q"))))
    assert pairs == list(zip(CHUNKS, CHUNKS))
    assert len(calls) == 2  # the second could not wait for the first (it is the same thread): it ran too
    assert list(tokens("q")) == CHUNKS and len(calls) == 2


def test_interleaved_identical_async_streams_in_one_task_do_not_deadlock(tmp_path: Path) -> None:
    @cache_llm(cache_dir=tmp_path / "cache")
    async def tokens(prompt: str) -> Any:
        for chunk in CHUNKS:
            yield chunk

    async def main() -> list[tuple[str, str]]:
        a, b = tokens("q"), tokens("q")
        pairs = []
        for _ in CHUNKS:
            pairs.append((await a.__anext__(), await b.__anext__()))
        await a.aclose()
        await b.aclose()
        return pairs

    pairs = asyncio.run(asyncio.wait_for(main(), 10))
    assert pairs == list(zip(CHUNKS, CHUNKS))


def test_waiting_on_another_thread_is_unaffected_by_the_deadlock_guard(tmp_path: Path) -> None:
    """The guard against waiting for oneself does not turn real waiters into extra calls."""
    calls: list[int] = []

    @cache_llm(cache_dir=tmp_path / "cache")
    def provider(prompt: str) -> str:
        calls.append(1)
        time.sleep(0.2)
        return "answer"

    @cache_llm(cache_dir=tmp_path / "cache")
    def outer(prompt: str) -> str:  # a cached function calling another: different keys, no waiting on itself
        return provider(prompt) + "!"

    assert run_threads(6, lambda: outer("q")) == ["answer!"] * 6
    assert len(calls) == 1



# -- the cross-process lock primitives ---------------------------------------------------------


@pytest.fixture(params=["ofd", "flock"])
def lock_kind(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    from memollm import flight as flightlib

    if request.param == "ofd" and not flightlib._OFD_SETLK:
        pytest.skip("no OFD locks on this platform")
    if request.param == "flock":
        monkeypatch.setattr(flightlib, "_OFD_SETLK", 0)
    return str(request.param)


def test_a_held_lock_excludes_other_threads_until_released(tmp_path: Path, lock_kind: str) -> None:
    from memollm import flight as flightlib

    path = str(tmp_path / "locks" / ("cd" * 16 + ".lock"))
    held = flightlib.lock_file(path, time.monotonic() + 1)
    assert held is not None
    assert type(held).__name__ == ("RangeLock" if lock_kind == "ofd" else "FileLock")
    other: list[Any] = []
    t = threading.Thread(target=lambda: other.append(flightlib.lock_file(path, time.monotonic() + 0.3)))
    t.start()
    t.join(5)
    assert other == [None]  # another thread timed out waiting: the lock excludes threads, not only processes
    other_key = flightlib.lock_file(str(tmp_path / "locks" / ("ef" * 16 + ".lock")), time.monotonic() + 1)
    assert other_key is not None  # other keys are independent (OFD: another byte, maybe of the same stripe file)
    other_key.release()
    held.release()
    t = threading.Thread(target=lambda: other.append(flightlib.lock_file(path, time.monotonic() + 1)))
    t.start()
    t.join(5)
    assert other[-1] is not None
    other[-1].release()


def test_a_file_system_refusing_ofd_locks_falls_back_to_lock_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from memollm import flight as flightlib

    if not flightlib._OFD_SETLK:
        pytest.skip("no OFD locks on this platform")

    def refuse(self: Any) -> bool:
        raise flightlib._Unsupported("Invalid argument")

    monkeypatch.setattr(flightlib.RangeLock, "try_acquire", refuse)
    monkeypatch.setattr(flightlib, "_ofd_refused", set())
    path = str(tmp_path / "locks" / ("ab" * 16 + ".lock"))
    lock = flightlib.lock_file(path, time.monotonic() + 1)
    assert type(lock).__name__ == "FileLock" and os.path.exists(path)
    assert flightlib.lock_file(path, time.monotonic() + 0.2) is None  # in _held: a private flight, no second lock
    lock.release()
    assert not os.path.exists(path)
    assert flightlib._ofd_refused == {str(tmp_path / "locks")}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_cannot_take_its_parents_lock(tmp_path: Path, lock_kind: str) -> None:
    code = f"""
import os, sys, time
from memollm import flight
if {lock_kind == "flock"!r}:
    flight._OFD_SETLK = 0
path = {str(tmp_path / "locks" / ("12" * 16 + ".lock"))!r}
lock = flight.lock_file(path, time.monotonic() + 1)
assert lock is not None
pid = os.fork()
if pid == 0:
    got = flight.lock_file(path, time.monotonic() + 0.5)
    print("CHILD", got is not None, flush=True)
    os._exit(0)
os.waitpid(pid, 0)
lock.release()
pid = os.fork()
if pid == 0:
    got = flight.lock_file(path, time.monotonic() + 0.5)
    print("CHILD", got is not None, flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["CHILD", "False", "CHILD", "True"]
