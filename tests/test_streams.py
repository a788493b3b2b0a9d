"""Streams: generators, async generators and SDK-like stream objects, recorded and replayed.

Everything goes through the public API (``cache_llm``, ``cache_mode``); each test has its own
cache dir under ``tmp_path``. The "providers" here are plain (async) generators and stream
objects that count their calls and record whether they were closed.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import tracemalloc
import warnings
from typing import Any, Optional

import pytest
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import Choice, ChoiceDelta
from pydantic import BaseModel

import memollm
from memollm import CacheMiss, CacheWarning, UncacheableValueWarning, cache_llm, cache_mode
from memollm.streams import AsyncReplayStream, ReplayStream

pytestmark = pytest.mark.timeout(30)

CHUNKS = ["Hel", "lo", ", ", "wor", "ld"]


class Token(BaseModel):
    """A module-level pydantic chunk type (local classes are not restorable by design)."""

    text: str
    index: int
    logprob: Optional[float] = None


class Boom(RuntimeError):
    pass


class Probe:
    """Counts provider calls and records the provider's ``finally`` (i.e. that it was closed)."""

    def __init__(self) -> None:
        self.calls = 0
        self.closed = 0
        self.lock = threading.Lock()

    def call(self) -> None:
        with self.lock:
            self.calls += 1


def warm(cache_dir: Any) -> None:
    """One unrelated call, so the store (directory, index) is open before timing anything."""

    @cache_llm(cache_dir=cache_dir)
    def unrelated(x: int) -> int:
        return x

    unrelated(0)


def chat_chunk(i: int, text: Optional[str], finish: Optional[str] = None) -> ChatCompletionChunk:
    return ChatCompletionChunk(
        id="chatcmpl-1",
        object="chat.completion.chunk",
        created=1700000000,
        model="gpt-test",
        choices=[Choice(index=0, delta=ChoiceDelta(content=text, role="assistant" if i == 0 else None), finish_reason=finish)],
    )


# -- sync generators --------------------------------------------------------------------------


def test_generator_replay_equality_and_return_value(tmp_path):
    probe = Probe()

    @cache_llm(cache_dir=tmp_path)
    def tokens(prompt: str):
        probe.call()
        for c in CHUNKS:
            yield c
        return {"finish_reason": "stop", "prompt": prompt}

    assert inspect.isgeneratorfunction(tokens)

    def drain(gen):
        out = []
        while True:
            try:
                out.append(next(gen))
            except StopIteration as stop:
                return out, stop.value

    miss = drain(tokens("hi"))
    hit = drain(tokens("hi"))
    assert miss == hit == (CHUNKS, {"finish_reason": "stop", "prompt": "hi"})
    assert probe.calls == 1

    # ``yield from`` sees the return value too.
    def outer():
        return (yield from tokens("hi"))

    assert drain(outer()) == miss
    assert probe.calls == 1
    info = tokens.cache_info()
    assert (info.hits, info.misses, info.entries) == (2, 1, 1)
    # Other arguments are another entry.
    assert list(tokens("other")) == CHUNKS and probe.calls == 2


def test_generator_pass_through_timing(tmp_path):
    warm(tmp_path)

    def provider(prompt: str):
        yield "first"
        time.sleep(0.2)
        yield "second"

    cached = cache_llm(cache_dir=tmp_path)(provider)

    def first_chunk_time(fn: Any, prompt: str) -> float:
        gen = fn(prompt)
        start = time.perf_counter()
        assert next(gen) == "first"
        elapsed = time.perf_counter() - start
        gen.close()
        return elapsed

    raw = min(first_chunk_time(provider, f"p{i}") for i in range(3))
    decorated = min(first_chunk_time(cached, f"p{i}") for i in range(3))  # three misses
    assert decorated < 0.1  # long before the provider's first sleep ends
    assert decorated - raw < 0.02

    # And the whole stream is not delayed beyond the provider's own pace.
    start = time.perf_counter()
    assert list(cached("full")) == ["first", "second"]
    assert time.perf_counter() - start < 0.2 + 0.1


def test_generator_break_stores_nothing_and_closes_provider(tmp_path):
    probe = Probe()

    @cache_llm(cache_dir=tmp_path)
    def tokens(prompt: str):
        probe.call()
        try:
            yield from CHUNKS
        finally:
            probe.closed += 1

    for chunk in tokens("hi"):
        assert chunk == CHUNKS[0]
        break
    assert probe.closed == 1
    assert tokens.cache_info().entries == 0

    gen = tokens("hi")
    assert next(gen) == CHUNKS[0] and next(gen) == CHUNKS[1]
    gen.close()
    assert probe.closed == 2
    assert tokens.cache_info().entries == 0

    # A generator created but never started never calls the provider.
    tokens("hi").close()
    assert probe.calls == 2

    assert list(tokens("hi")) == CHUNKS  # a complete run is stored...
    assert list(tokens("hi")) == CHUNKS  # ...and replayed
    assert probe.calls == 3 and tokens.cache_info().entries == 1


def test_generator_failure_propagates_unchanged_and_stores_nothing(tmp_path):
    probe = Probe()
    error = Boom("provider died")

    @cache_llm(cache_dir=tmp_path)
    def tokens(prompt: str):
        probe.call()
        try:
            yield "a"
            yield "b"
            raise error
        finally:
            probe.closed += 1

    got = []
    with pytest.raises(Boom) as info:
        for chunk in tokens("hi"):
            got.append(chunk)
    assert info.value is error
    assert got == ["a", "b"]
    assert probe.closed == 1
    assert tokens.cache_info().entries == 0

    with pytest.raises(Boom):
        list(tokens("hi"))
    assert probe.calls == 2  # the failure was not cached either


def test_generator_throw_closes_the_provider_and_stores_nothing(tmp_path):
    probe = Probe()

    @cache_llm(cache_dir=tmp_path)
    def tokens(prompt: str):
        probe.call()
        try:
            yield from CHUNKS
        finally:
            probe.closed += 1

    gen = tokens("hi")
    next(gen)
    error = Boom("caller gave up")
    with pytest.raises(Boom) as info:
        gen.throw(error)
    assert info.value is error
    assert probe.closed == 1 and tokens.cache_info().entries == 0


def test_unstorable_chunk_passes_through_with_a_warning(tmp_path):
    probe = Probe()
    marker = object()

    @cache_llm(cache_dir=tmp_path)
    def tokens(prompt: str):
        probe.call()
        yield "a"
        yield marker
        yield "b"

    with pytest.warns(UncacheableValueWarning):
        assert list(tokens("q")) == ["a", marker, "b"]
    assert tokens.cache_info().entries == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert list(tokens("q"))[1] is marker
    assert probe.calls == 2


def test_pydantic_chunks_replayed_as_their_classes(tmp_path):
    chunks = [chat_chunk(0, "")] + [chat_chunk(i + 1, t) for i, t in enumerate(CHUNKS)] + [chat_chunk(9, None, "stop")]
    tokens = [Token(text=t, index=i) for i, t in enumerate(CHUNKS)]

    @cache_llm(cache_dir=tmp_path)
    def openai_like(prompt: str):
        yield from chunks

    @cache_llm(cache_dir=tmp_path)
    def own_models(prompt: str):
        yield from tokens
        return Token(text="", index=-1, logprob=0.5)

    assert list(openai_like("q")) == chunks
    replayed = list(openai_like("q"))
    assert replayed == chunks
    assert all(type(c) is ChatCompletionChunk for c in replayed)
    assert type(replayed[1].choices[0].delta) is ChoiceDelta
    assert "".join(c.choices[0].delta.content or "" for c in replayed) == "".join(CHUNKS)
    assert replayed[1].model_dump(exclude_unset=True) == chunks[1].model_dump(exclude_unset=True)

    assert list(own_models("q")) == tokens
    gen = own_models("q")
    assert [type(t) for t in gen] == [Token] * len(CHUNKS)
    with pytest.raises(StopIteration):
        next(gen)

    def result_of(gen):
        return (yield from gen)

    outer = result_of(own_models("q"))
    try:
        while True:
            next(outer)
    except StopIteration as stop:
        assert stop.value == Token(text="", index=-1, logprob=0.5)


def test_every_replay_hands_out_fresh_chunks_in_order(tmp_path):
    """Mutable chunks (dicts, lists, models), across several decode batches: a caller changing the
    chunks of one replay changes nothing the next replay gets; types and order hold."""
    plain = [{"i": i, "delta": {"content": f"w{i % 7}", "tags": ["a", (i, "t")]}, "n": None, "f": i / 3, "ok": i % 2 == 0} for i in range(75)]
    models = [chat_chunk(i, f"w{i}") for i in range(70)]

    @cache_llm(cache_dir=tmp_path)
    def dicts(prompt: str):
        yield from plain

    @cache_llm(cache_dir=tmp_path)
    def chunks(prompt: str):
        yield from models

    @cache_llm(cache_dir=tmp_path)
    async def async_dicts(prompt: str):
        for chunk in plain:
            yield chunk

    async def drain(stream):
        return [chunk async for chunk in stream]

    for fn, recorded in ((dicts, plain), (chunks, models)):
        assert list(fn("q")) == recorded  # the miss
        for _ in range(3):
            replayed = list(fn("q"))
            assert replayed == recorded
            assert [type(c) for c in replayed] == [type(c) for c in recorded]
            if fn is dicts:
                assert type(replayed[40]["delta"]["tags"][1]) is tuple
                replayed[40]["delta"]["content"] = "changed"
                replayed[0]["delta"]["tags"].append("x")
            else:
                replayed[40].choices[0].delta.content = "changed"
    assert asyncio.run(drain(async_dicts("q"))) == plain
    again = asyncio.run(drain(async_dicts("q")))
    again[3]["i"] = -1
    assert asyncio.run(drain(async_dicts("q"))) == plain


def test_realtime_replay_reproduces_timing_and_instant_is_default(tmp_path):
    def slow(prompt: str):
        for i in range(5):
            if i:
                time.sleep(0.05)
            yield i

    instant = cache_llm(cache_dir=tmp_path)(slow)
    realtime = cache_llm(cache_dir=tmp_path, replay="realtime")(slow)

    start = time.perf_counter()
    assert list(instant("q")) == [0, 1, 2, 3, 4]  # the recording run
    assert time.perf_counter() - start >= 0.2

    start = time.perf_counter()
    assert list(instant("q")) == [0, 1, 2, 3, 4]
    assert time.perf_counter() - start < 0.05

    arrivals = []
    start = time.perf_counter()
    for _ in realtime("q"):
        arrivals.append(time.perf_counter() - start)
    assert arrivals[-1] >= 0.2
    assert arrivals[-1] < 1.0
    assert all(b - a >= 0.03 for a, b in zip(arrivals, arrivals[1:]))
    assert instant.cache_info().misses == 1

    with pytest.raises(ValueError, match="realtime"):
        cache_llm(replay="slow")


def test_max_stream_size_passes_through_but_does_not_store(tmp_path):
    probe = Probe()
    chunks = [f"chunk {i:03d} " + "x" * 20 for i in range(20)]

    @cache_llm(cache_dir=tmp_path, max_stream_size=100)
    def big(prompt: str):
        probe.call()
        yield from chunks

    with pytest.warns(UncacheableValueWarning, match="max_stream_size"):
        assert list(big("q")) == chunks
    assert big.cache_info().entries == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert list(big("q")) == chunks
    assert probe.calls == 2

    @cache_llm(cache_dir=tmp_path, max_stream_size="1KiB")
    def small(prompt: str):
        yield from ["tiny", "stream"]

    assert list(small("q")) == ["tiny", "stream"]
    assert small.cache_info().entries == 1


def test_recording_memory_is_bounded(tmp_path):
    warm(tmp_path)
    n, size = 5000, 1024  # ~5 MB of 1 KB str chunks

    @cache_llm(cache_dir=tmp_path)
    def large(prompt: str):
        for i in range(n):
            yield "%08d" % i + "x" * (size - 8)

    tracemalloc.start()
    try:
        count = 0
        for _ in large("q"):
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n and large.cache_info().entries == 1
    # The recorder's buffer becomes the entry in place (no joined copy): about 1.2x, 2x at most.
    assert peak < 2 * n * size, f"peak {peak / 1e6:.1f} MB while recording a {n * size / 1e6:.1f} MB stream"
    replayed = list(large("q"))
    assert len(replayed) == n and replayed[123] == "%08d" % 123 + "x" * (size - 8)


def test_signed_streams_round_trip_and_other_stores_get_bytes(tmp_path: Any) -> None:
    from memollm.entry import EntryMeta
    from memollm.stores.base import Store

    class ListStore(Store):
        location = "list-store"

        def __init__(self) -> None:
            self.items: dict[str, bytes] = {}

        def get(self, function: str, key: str) -> Optional[bytes]:
            return self.items.get(key)

        def set(self, meta: EntryMeta, data: bytes) -> None:
            assert type(data) is bytes  # a user's store is handed bytes, whatever memollm builds internally
            self.items[meta.key] = data

        def delete(self, function: str, key: str) -> bool:
            return self.items.pop(key, None) is not None

        def clear(self, function: Optional[str] = None) -> int:
            count = len(self.items)
            self.items.clear()
            return count

        def entries(self, function: Optional[str] = None) -> Any:
            return iter([])

    store = ListStore()
    calls: list[int] = []
    for options in ({"cache_dir": str(tmp_path / "signed"), "secret": "s3cret"}, {"store": store}, {"store": store, "secret": "s3cret"}):
        calls.clear()

        @cache_llm(**options)
        def words(prompt: str) -> Any:
            calls.append(1)
            yield from CHUNKS
            return "done"

        def drain(gen: Any) -> tuple[list[Any], Any]:
            out: list[Any] = []
            while True:
                try:
                    out.append(next(gen))
                except StopIteration as stop:
                    return out, stop.value

        assert drain(words("q")) == (CHUNKS, "done")
        assert drain(words("q")) == (CHUNKS, "done")
        assert calls == [1], options
        store.items.clear()


# -- async generators -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_generator_replay_equality(tmp_path):
    probe = Probe()

    @cache_llm(cache_dir=tmp_path)
    async def tokens(prompt: str):
        probe.call()
        for c in CHUNKS:
            await asyncio.sleep(0)
            yield Token(text=c, index=len(prompt))

    assert inspect.isasyncgenfunction(tokens)
    miss = [t async for t in tokens("hi")]
    hit = [t async for t in tokens("hi")]
    assert miss == hit == [Token(text=c, index=2) for c in CHUNKS]
    assert all(type(t) is Token for t in hit)
    assert probe.calls == 1
    assert [t async for t in tokens("other")] != hit and probe.calls == 2


@pytest.mark.asyncio
async def test_async_generator_pass_through_timing(tmp_path):
    warm(tmp_path)

    async def provider(prompt: str):
        yield "first"
        await asyncio.sleep(0.2)
        yield "second"

    cached = cache_llm(cache_dir=tmp_path)(provider)

    async def first_chunk_time(fn: Any, prompt: str) -> float:
        gen = fn(prompt)
        start = time.perf_counter()
        assert await gen.__anext__() == "first"
        elapsed = time.perf_counter() - start
        await gen.aclose()
        return elapsed

    raw = min([await first_chunk_time(provider, f"p{i}") for i in range(3)])
    decorated = min([await first_chunk_time(cached, f"p{i}") for i in range(3)])
    assert decorated < 0.1
    assert decorated - raw < 0.02


@pytest.mark.asyncio
async def test_async_generator_partial_consumption_stores_nothing(tmp_path):
    probe = Probe()

    @cache_llm(cache_dir=tmp_path)
    async def tokens(prompt: str):
        probe.call()
        try:
            for c in CHUNKS:
                yield c
        finally:
            probe.closed += 1

    gen = tokens("hi")
    assert await gen.__anext__() == CHUNKS[0]
    await gen.aclose()
    assert probe.closed == 1
    assert tokens.cache_info().entries == 0

    # break: the event loop finalizes the abandoned generator (aclose) soon after.
    async for chunk in tokens("hi"):
        assert chunk == CHUNKS[0]
        break
    for _ in range(20):
        if probe.closed == 2:
            break
        await asyncio.sleep(0.01)
    assert probe.closed == 2
    assert tokens.cache_info().entries == 0

    assert [c async for c in tokens("hi")] == CHUNKS
    assert [c async for c in tokens("hi")] == CHUNKS
    assert probe.calls == 3 and tokens.cache_info().entries == 1


@pytest.mark.asyncio
async def test_async_generator_failure_propagates_unchanged(tmp_path):
    probe = Probe()
    error = Boom("provider died")

    @cache_llm(cache_dir=tmp_path)
    async def tokens(prompt: str):
        probe.call()
        try:
            yield "a"
            raise error
        finally:
            probe.closed += 1

    got = []
    with pytest.raises(Boom) as info:
        async for chunk in tokens("hi"):
            got.append(chunk)
    assert info.value is error and got == ["a"]
    assert probe.closed == 1 and tokens.cache_info().entries == 0
    with pytest.raises(Boom):
        [c async for c in tokens("hi")]
    assert probe.calls == 2


@pytest.mark.asyncio
async def test_async_realtime_replay(tmp_path):
    async def slow(prompt: str):
        for i in range(5):
            if i:
                await asyncio.sleep(0.05)
            yield i

    instant = cache_llm(cache_dir=tmp_path)(slow)
    realtime = cache_llm(cache_dir=tmp_path, replay="realtime")(slow)
    assert [c async for c in instant("q")] == list(range(5))
    start = time.perf_counter()
    assert [c async for c in instant("q")] == list(range(5))
    assert time.perf_counter() - start < 0.05
    start = time.perf_counter()
    assert [c async for c in realtime("q")] == list(range(5))
    assert 0.2 <= time.perf_counter() - start < 1.0


# -- functions returning SDK-like stream objects ------------------------------------------------


class FakeResponse:
    status_code = 200
    headers = {"x-request-id": "req-1"}


class FakeStream:
    """Shaped like ``openai.Stream``: an iterator with ``.response``, ``close()`` and ``with``."""

    def __init__(self, chunks: list[Any], fail: Optional[BaseException] = None, delay: float = 0.0) -> None:
        self.response = FakeResponse()
        self.model = "gpt-test"
        self._chunks = iter(chunks)
        self._fail = fail
        self._delay = delay
        self._started = False
        self.closed = False

    def __iter__(self):
        return self

    def __next__(self) -> Any:
        if self.closed:
            raise StopIteration
        if self._started and self._delay:
            time.sleep(self._delay)
        self._started = True
        try:
            return next(self._chunks)
        except StopIteration:
            if self._fail is not None:
                raise self._fail from None
            self.close()
            raise

    def __enter__(self) -> "FakeStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True


class FakeAsyncStream:
    """Shaped like ``openai.AsyncStream``."""

    def __init__(self, chunks: list[Any], fail: Optional[BaseException] = None, delay: float = 0.0) -> None:
        self.response = FakeResponse()
        self._chunks = iter(chunks)
        self._fail = fail
        self._delay = delay
        self._started = False
        self.closed = False

    def __aiter__(self):
        return self

    async def __anext__(self) -> Any:
        await asyncio.sleep(self._delay if self._started else 0)
        self._started = True
        if self.closed:
            raise StopAsyncIteration
        try:
            return next(self._chunks)
        except StopIteration:
            if self._fail is not None:
                raise self._fail from None
            await self.close()
            raise StopAsyncIteration from None

    async def __aenter__(self) -> "FakeAsyncStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        self.closed = True


def test_stream_object_miss_is_a_proxy_hit_is_a_replay(tmp_path):
    made: list[FakeStream] = []

    @cache_llm(cache_dir=tmp_path)
    def open_stream(prompt: str):
        made.append(FakeStream([Token(text=c, index=i) for i, c in enumerate(CHUNKS)]))
        return made[-1]

    expected = [Token(text=c, index=i) for i, c in enumerate(CHUNKS)]
    stream = open_stream("q")
    assert stream.response.status_code == 200 and stream.model == "gpt-test"  # attributes reach the original
    with stream as s:
        assert s is stream
        assert list(s) == expected
    assert made[0].closed
    assert open_stream.cache_info().entries == 1

    hit = open_stream("q")
    assert len(made) == 1
    assert isinstance(hit, ReplayStream)
    with hit as s:
        assert [type(c) for c in s] == [Token] * len(CHUNKS)
    again = open_stream("q")
    assert next(again) == expected[0]
    again.close()
    assert list(again) == []
    assert list(iter(open_stream("q"))) == expected


def test_stream_object_partial_or_failed_is_not_stored_and_is_closed(tmp_path):
    made: list[FakeStream] = []
    error = Boom("connection reset")
    fail = {"on": True}

    @cache_llm(cache_dir=tmp_path)
    def open_stream(prompt: str):
        made.append(FakeStream(list(CHUNKS), fail=error if fail["on"] and prompt == "fail" else None))
        return made[-1]

    # Closed after one chunk: not stored, the original closed.
    stream = open_stream("q")
    assert next(stream) == CHUNKS[0]
    stream.close()
    assert made[-1].closed and open_stream.cache_info().entries == 0

    # A with-block left early.
    with open_stream("q") as s:
        for _ in s:
            break
    assert made[-1].closed and open_stream.cache_info().entries == 0

    # Never iterated, only closed.
    open_stream("q").close()
    assert made[-1].closed and open_stream.cache_info().entries == 0

    # The provider fails midway: the same exception, nothing stored, the original closed.
    with pytest.raises(Boom) as info:
        list(open_stream("fail"))
    assert info.value is error
    assert made[-1].closed and open_stream.cache_info().entries == 0

    assert list(open_stream("q")) == CHUNKS
    assert open_stream.cache_info().entries == 1
    assert list(open_stream("q")) == CHUNKS
    assert len(made) == 5


def test_stream_object_isinstance_is_not_preserved_on_a_hit(tmp_path):
    @cache_llm(cache_dir=tmp_path)
    def open_stream(prompt: str):
        return FakeStream(list(CHUNKS))

    first = open_stream("q")
    assert list(first) == CHUNKS
    hit = open_stream("q")
    assert not isinstance(hit, FakeStream)
    assert isinstance(hit, ReplayStream)


def test_function_returning_a_generator_is_recorded_too(tmp_path):
    probe = Probe()

    def provider():
        probe.call()
        yield from CHUNKS

    @cache_llm(cache_dir=tmp_path)
    def helper(prompt: str):
        return provider()

    assert not inspect.isgeneratorfunction(helper)
    assert list(helper("q")) == CHUNKS
    assert list(helper("q")) == CHUNKS
    assert probe.calls == 1

    @cache_llm(cache_dir=tmp_path)
    def plain_list(prompt: str):
        probe.call()
        return list(CHUNKS)  # a list is a value, not a stream

    assert plain_list("q") == CHUNKS and plain_list("q") == CHUNKS
    assert type(plain_list("q")) is list
    assert probe.calls == 2


def test_stream_object_realtime_replay(tmp_path):
    def open_stream(prompt: str):
        return FakeStream(list(range(5)), delay=0.05)

    instant = cache_llm(cache_dir=tmp_path)(open_stream)
    realtime = cache_llm(cache_dir=tmp_path, replay="realtime")(open_stream)
    assert list(instant("q")) == list(range(5))
    start = time.perf_counter()
    assert list(instant("q")) == list(range(5))
    assert time.perf_counter() - start < 0.05
    start = time.perf_counter()
    with realtime("q") as stream:
        assert list(stream) == list(range(5))
    assert 0.2 <= time.perf_counter() - start < 1.0


@pytest.mark.asyncio
async def test_async_stream_object_realtime_replay(tmp_path):
    async def open_stream(prompt: str):
        return FakeAsyncStream(list(range(5)), delay=0.05)

    instant = cache_llm(cache_dir=tmp_path)(open_stream)
    realtime = cache_llm(cache_dir=tmp_path, replay="realtime")(open_stream)
    assert [c async for c in await instant("q")] == list(range(5))
    start = time.perf_counter()
    assert [c async for c in await instant("q")] == list(range(5))
    assert time.perf_counter() - start < 0.05
    start = time.perf_counter()
    async with await realtime("q") as stream:
        assert [c async for c in stream] == list(range(5))
    assert 0.2 <= time.perf_counter() - start < 1.0


def test_unstorable_return_value_passes_through_with_a_warning(tmp_path):
    probe = Probe()
    marker = object()

    @cache_llm(cache_dir=tmp_path)
    def tokens(prompt: str):
        probe.call()
        yield from CHUNKS
        return marker

    def drain(gen):
        return (yield from gen)

    for _ in range(2):
        outer = drain(tokens("q"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = []
            try:
                while True:
                    got.append(next(outer))
            except StopIteration as stop:
                assert stop.value is marker
        assert got == CHUNKS
    assert any(issubclass(w.category, UncacheableValueWarning) for w in caught) or probe.calls == 2
    assert tokens.cache_info().entries == 0 and probe.calls == 2


@pytest.mark.asyncio
async def test_async_function_returning_a_sync_iterator(tmp_path):
    probe = Probe()

    @cache_llm(cache_dir=tmp_path)
    async def open_stream(prompt: str):
        probe.call()
        await asyncio.sleep(0)
        return FakeStream(list(CHUNKS))

    with await open_stream("q") as stream:
        assert stream.response.status_code == 200
        assert list(stream) == CHUNKS
    hit = await open_stream("q")
    assert isinstance(hit, AsyncReplayStream)
    with hit as stream:  # consumed like the original (a sync stream)...
        assert list(stream) == CHUNKS
    assert [c async for c in await open_stream("q")] == CHUNKS  # ...or with async for
    assert probe.calls == 1

    with cache_mode("off"):
        raw = await open_stream("q")
        assert type(raw) is FakeStream and list(raw) == CHUNKS
    assert probe.calls == 2


@pytest.mark.asyncio
async def test_plain_function_returning_an_async_iterator(tmp_path):
    probe = Probe()

    async def provider(prompt: str):
        probe.call()
        try:
            for c in CHUNKS:
                yield c
        finally:
            probe.closed += 1

    @cache_llm(cache_dir=tmp_path)
    def helper(prompt: str):
        return provider(prompt)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        partial = helper("q")
        assert await partial.__anext__() == CHUNKS[0]
        await partial.aclose()
        assert probe.closed == 1 and helper.cache_info().entries == 0
        assert [c async for c in helper("q")] == CHUNKS
        assert helper.cache_info().entries == 1
        async with helper("q") as hit:
            assert [c async for c in hit] == CHUNKS
    assert probe.calls == 2


@pytest.mark.asyncio
async def test_async_stream_object_miss_is_a_proxy_hit_is_a_replay(tmp_path):
    made: list[FakeAsyncStream] = []

    @cache_llm(cache_dir=tmp_path)
    async def open_stream(prompt: str):
        await asyncio.sleep(0)
        made.append(FakeAsyncStream([Token(text=c, index=i) for i, c in enumerate(CHUNKS)]))
        return made[-1]

    expected = [Token(text=c, index=i) for i, c in enumerate(CHUNKS)]
    stream = await open_stream("q")
    assert stream.response.status_code == 200
    async with stream as s:
        assert [c async for c in s] == expected
    assert made[0].closed and open_stream.cache_info().entries == 1

    hit = await open_stream("q")
    assert isinstance(hit, AsyncReplayStream) and len(made) == 1
    async with hit as s:
        got = [c async for c in s]
    assert got == expected and all(type(c) is Token for c in got)

    partial = await open_stream("q")
    assert await partial.__anext__() == expected[0]
    await partial.close()
    assert [c async for c in partial] == []


@pytest.mark.asyncio
async def test_async_stream_object_partial_or_failed_is_not_stored(tmp_path):
    made: list[FakeAsyncStream] = []
    error = Boom("connection reset")

    @cache_llm(cache_dir=tmp_path)
    async def open_stream(prompt: str):
        made.append(FakeAsyncStream(list(CHUNKS), fail=error if prompt == "fail" else None))
        return made[-1]

    stream = await open_stream("q")
    assert await stream.__anext__() == CHUNKS[0]
    await stream.close()
    assert made[-1].closed and open_stream.cache_info().entries == 0

    async with await open_stream("q") as s:
        async for _ in s:
            break
    assert made[-1].closed and open_stream.cache_info().entries == 0

    with pytest.raises(Boom) as info:
        [c async for c in await open_stream("fail")]
    assert info.value is error
    assert made[-1].closed and open_stream.cache_info().entries == 0

    # Closed before any chunk; closed with aclose() (the async generator spelling).
    await (await open_stream("q")).close()
    assert made[-1].closed and open_stream.cache_info().entries == 0
    stream = await open_stream("q")
    assert await stream.__anext__() == CHUNKS[0]
    await stream.aclose()
    assert made[-1].closed and open_stream.cache_info().entries == 0

    assert [c async for c in await open_stream("q")] == CHUNKS
    assert [c async for c in await open_stream("q")] == CHUNKS
    assert len(made) == 6
    hit = await open_stream("q")
    assert await hit.__anext__() == CHUNKS[0]
    await hit.aclose()
    assert [c async for c in hit] == []


# -- modes ------------------------------------------------------------------------------------


def test_offline_mode_raises_cache_miss_when_iterated(tmp_path):
    probe = Probe()

    @cache_llm(cache_dir=tmp_path)
    def tokens(prompt: str):
        probe.call()
        yield from CHUNKS

    with cache_mode("offline"):
        gen = tokens("unrecorded")  # creating the generator does nothing yet
        with pytest.raises(CacheMiss) as info:
            next(gen)
    assert info.value.key == tokens.cache_key("unrecorded")
    assert probe.calls == 0

    assert list(tokens("recorded")) == CHUNKS
    with cache_mode("offline"):
        assert list(tokens("recorded")) == CHUNKS
    assert probe.calls == 1


@pytest.mark.asyncio
async def test_offline_mode_async_generator_and_stream_object(tmp_path):
    @cache_llm(cache_dir=tmp_path)
    async def tokens(prompt: str):
        yield "x"

    @cache_llm(cache_dir=tmp_path)
    def open_stream(prompt: str):
        return FakeStream(list(CHUNKS))

    with cache_mode("offline"):
        gen = tokens("unrecorded")
        with pytest.raises(CacheMiss):
            await gen.__anext__()
        with pytest.raises(CacheMiss):
            open_stream("unrecorded")


def test_mode_off_passes_through_and_stores_nothing(tmp_path):
    probe = Probe()

    @cache_llm(cache_dir=tmp_path)
    def tokens(prompt: str):
        probe.call()
        yield from CHUNKS
        return "done"

    @cache_llm(cache_dir=tmp_path)
    def open_stream(prompt: str):
        probe.call()
        return FakeStream(list(CHUNKS))

    with cache_mode("off"):
        assert list(tokens("q")) == CHUNKS
        assert list(tokens("q")) == CHUNKS
        gen = tokens("q")
        assert list(gen) == CHUNKS
        stream = open_stream("q")
        assert type(stream) is FakeStream  # not even a proxy
        assert list(stream) == CHUNKS
    assert probe.calls == 4
    assert tokens.cache_info().entries == 0 and open_stream.cache_info().entries == 0


@pytest.mark.asyncio
async def test_mode_off_async_generator(tmp_path):
    probe = Probe()

    @cache_llm(cache_dir=tmp_path, mode="off")
    async def tokens(prompt: str):
        probe.call()
        for c in CHUNKS:
            yield c

    assert [c async for c in tokens("q")] == CHUNKS
    assert [c async for c in tokens("q")] == CHUNKS
    assert probe.calls == 2 and tokens.cache_info().entries == 0


def test_readonly_and_refresh_modes(tmp_path):
    probe = Probe()
    version = {"n": 0}

    @cache_llm(cache_dir=tmp_path)
    def tokens(prompt: str):
        probe.call()
        yield from [f"v{version['n']}", *CHUNKS]

    with cache_mode("readonly"):
        assert list(tokens("q"))[0] == "v0"
    assert tokens.cache_info().entries == 0
    assert list(tokens("q"))[0] == "v0"  # recorded now
    version["n"] = 1
    assert list(tokens("q"))[0] == "v0"  # hit
    with cache_mode("refresh"):
        assert list(tokens("q"))[0] == "v1"
    assert list(tokens("q"))[0] == "v1"
    assert probe.calls == 3


# -- single flight ----------------------------------------------------------------------------


def test_single_flight_two_threads_one_provider_call(tmp_path):
    probe = Probe()

    @cache_llm(cache_dir=tmp_path)
    def tokens(prompt: str):
        probe.call()
        for i, c in enumerate(CHUNKS):
            if i:
                time.sleep(0.02)
            yield c
        return "stop"

    barrier = threading.Barrier(2)
    results: list[Any] = [None, None]

    def consume(slot: int) -> None:
        barrier.wait()
        gen = tokens("same")
        chunks = []
        try:
            while True:
                chunks.append(next(gen))
        except StopIteration as stop:
            results[slot] = (chunks, stop.value)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results[0] == results[1] == (CHUNKS, "stop")
    assert probe.calls == 1


def test_single_flight_stream_objects_across_threads(tmp_path):
    probe = Probe()

    @cache_llm(cache_dir=tmp_path)
    def open_stream(prompt: str):
        probe.call()
        time.sleep(0.05)
        return FakeStream(list(CHUNKS))

    barrier = threading.Barrier(2)
    results: list[Any] = [None, None]

    def consume(slot: int) -> None:
        barrier.wait()
        with open_stream("same") as s:
            results[slot] = list(s)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results[0] == results[1] == CHUNKS
    assert probe.calls == 1


@pytest.mark.asyncio
async def test_single_flight_async_tasks_one_provider_call(tmp_path):
    probe = Probe()

    @cache_llm(cache_dir=tmp_path)
    async def tokens(prompt: str):
        probe.call()
        for i, c in enumerate(CHUNKS):
            if i:
                await asyncio.sleep(0.02)
            yield c

    async def consume() -> list[str]:
        return [c async for c in tokens("same")]

    first, second = await asyncio.wait_for(asyncio.gather(consume(), consume()), 10)
    assert first == second == CHUNKS
    assert probe.calls == 1


def _finishes(target: Any, timeout: float = 1.0) -> tuple[bool, list[Any]]:
    """Run ``target`` in a daemon thread; (finished in time, [its result])."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(target()), daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive(), out


def test_interleaved_identical_generators_in_one_thread_do_not_deadlock(tmp_path):
    probe = Probe()

    @cache_llm(cache_dir=tmp_path)
    def tokens(prompt: str):
        probe.call()
        yield from CHUNKS

    finished, out = _finishes(lambda: list(zip(tokens("q"), tokens("q"))))
    assert finished, "deadlocked"
    assert out == [list(zip(CHUNKS, CHUNKS))]


def test_same_stream_opened_twice_in_one_thread_does_not_deadlock(tmp_path):
    @cache_llm(cache_dir=tmp_path)
    def open_stream(prompt: str):
        return FakeStream(list(CHUNKS))

    def run() -> list[list[str]]:
        streams = [open_stream(p) for p in ("q", "q")]  # e.g. a batch of prompts with a duplicate
        return [list(s) for s in streams]

    finished, out = _finishes(run)
    assert finished, "deadlocked"
    assert out == [[CHUNKS, CHUNKS]]


def test_public_names():
    assert memollm.cache_llm is cache_llm
    assert issubclass(memollm.CacheMiss, LookupError)
    assert issubclass(UncacheableValueWarning, CacheWarning)


@pytest.mark.asyncio
async def test_interleaved_identical_async_generators_in_one_task_do_not_deadlock(tmp_path):
    probe = Probe()

    @cache_llm(cache_dir=tmp_path)
    async def tokens(prompt: str):
        probe.call()
        for c in CHUNKS:
            yield c

    async def interleave() -> list[tuple[str, str]]:
        first, second = tokens("q"), tokens("q")
        return [(await first.__anext__(), await second.__anext__()) for _ in CHUNKS]

    assert await asyncio.wait_for(interleave(), 2) == list(zip(CHUNKS, CHUNKS))


# -- values sent into a cached generator ----------------------------------------------------


def test_values_sent_into_a_generator_reach_the_helper_and_that_stream_is_not_stored(tmp_path):
    calls = []

    @cache_llm(cache_dir=tmp_path)
    def conversation(prompt):
        calls.append(prompt)
        reply = yield f"{prompt}?"
        yield f"you said {reply}"
        return "done"

    live = conversation("hi")
    assert next(live) == "hi?"
    with pytest.warns(UncacheableValueWarning, match="send"):
        assert live.send("yes") == "you said yes"
        with pytest.raises(StopIteration) as stop:
            next(live)
    assert stop.value.value == "done"
    assert conversation.cache_info().entries == 0

    assert list(conversation("hi")) == ["hi?", "you said None"]  # plain iteration is stored
    assert list(conversation("hi")) == ["hi?", "you said None"]
    assert calls == ["hi", "hi"]


@pytest.mark.asyncio
async def test_values_sent_into_an_async_generator_reach_the_helper_and_that_stream_is_not_stored(tmp_path):
    calls = []

    @cache_llm(cache_dir=tmp_path)
    async def conversation(prompt):
        calls.append(prompt)
        reply = yield f"{prompt}?"
        yield f"you said {reply}"

    live = conversation("hi")
    assert await live.__anext__() == "hi?"
    with pytest.warns(UncacheableValueWarning, match="send"):
        assert await live.asend("yes") == "you said yes"
        with pytest.raises(StopAsyncIteration):
            await live.__anext__()
    assert conversation.cache_info().entries == 0

    async def collect():
        return [chunk async for chunk in conversation("hi")]

    assert await collect() == await collect() == ["hi?", "you said None"]
    assert calls == ["hi", "hi"]


def test_an_exception_thrown_into_a_generator_reaches_the_helper(tmp_path):
    calls = []

    @cache_llm(cache_dir=tmp_path)
    def resilient(prompt):
        calls.append(prompt)
        try:
            yield "first"
        except ValueError as exc:
            yield f"recovered from {exc}"
        yield "last"

    live = resilient("p")
    assert next(live) == "first"
    with pytest.warns(UncacheableValueWarning, match="throw"):
        assert live.throw(ValueError("boom")) == "recovered from boom"  # the helper handled it
        assert list(live) == ["last"]
    assert resilient.cache_info().entries == 0

    live = resilient("p")
    next(live)
    error = KeyError("not handled")
    with pytest.raises(KeyError) as raised:
        live.throw(error)
    assert raised.value is error
    assert resilient.cache_info().entries == 0

    assert list(resilient("p")) == list(resilient("p")) == ["first", "last"]
    assert calls == ["p", "p", "p"]


@pytest.mark.asyncio
async def test_an_exception_thrown_into_an_async_generator_reaches_the_helper(tmp_path):
    calls = []

    @cache_llm(cache_dir=tmp_path)
    async def resilient(prompt):
        calls.append(prompt)
        try:
            yield "first"
        except ValueError as exc:
            yield f"recovered from {exc}"
        yield "last"

    live = resilient("p")
    assert await live.__anext__() == "first"
    with pytest.warns(UncacheableValueWarning, match="throw"):
        assert await live.athrow(ValueError("boom")) == "recovered from boom"
        assert [chunk async for chunk in live] == ["last"]
    assert resilient.cache_info().entries == 0

    live = resilient("p")
    await live.__anext__()
    error = KeyError("not handled")
    with pytest.raises(KeyError) as raised:
        await live.athrow(error)
    assert raised.value is error

    async def collect():
        return [chunk async for chunk in resilient("p")]

    assert await collect() == await collect() == ["first", "last"]
    assert calls == ["p", "p", "p"]


def test_replayed_chunks_are_never_shared_when_they_could_be_changed(tmp_path: Any) -> None:
    @cache_llm(cache_dir=tmp_path)
    def deltas(prompt: str) -> Any:
        yield {"delta": {"content": "a"}}
        yield ("b", {"nested": ["c"]})
        return ["done"]

    @cache_llm(cache_dir=tmp_path)
    def words(prompt: str) -> Any:
        yield from ["x", "y", ("t", 1)]
        return "end"

    for fn, expected, result in ((deltas, [{"delta": {"content": "a"}}, ("b", {"nested": ["c"]})], ["done"]), (words, ["x", "y", ("t", 1)], "end")):
        list(fn("q"))
        for _ in range(3):  # immutable chunks (text) may be the same objects at every hit; others are fresh copies
            gen = fn("q")
            got = []
            while True:
                try:
                    got.append(next(gen))
                except StopIteration as stop:
                    assert stop.value == result
                    if isinstance(stop.value, list):
                        stop.value.append("changed by the caller")
                    break
            assert got == expected
            if fn is deltas:
                got[0]["delta"]["content"] = "changed by the caller"
                got[1][1]["nested"].append("changed by the caller")
        assert fn.cache_info().misses == 1
