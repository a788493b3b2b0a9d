"""Streams: record chunks while passing them through untouched, and replay them on a hit.

Each chunk reaches the caller as soon as the provider yields it; it is encoded on the side
(so the recording costs one compact copy of the stream, not a list of live objects) and the
entry is written only when the stream finished normally. A caller that stops early, or a
provider that fails, leaves nothing behind, and the provider's stream is closed.
"""

from __future__ import annotations

import asyncio
import functools
import struct
import time
from typing import Any, AsyncGenerator, Awaitable, Callable, Generator, Optional

import wrapt

from . import codec
from .entry import Stream
from .stats import UsageTally

DEFAULT_MAX_STREAM_SIZE = 64 * 2**20
# The body starts as a msgpack array of 3 ([chunks, result, offsets]) whose first element is an
# array32 header; its count is filled in at the end, so the chunks append to one buffer in place.
_BODY_START = b"\x93\xdd\x00\x00\x00\x00"


class Recorder:
    """Collects encoded chunks (in one growing buffer) and their arrival offsets; gives up past ``limit`` bytes."""

    def __init__(self, limit: int, allow_pickle: bool) -> None:
        self.limit = limit
        self.allow_pickle = allow_pickle
        self.buffer = bytearray(_BODY_START)
        self.count = 0
        self.offsets: list[float] = []
        self.size = 0
        self.usage = UsageTally()
        self.problem: Optional[str] = None
        self.start = time.perf_counter()

    def add(self, chunk: Any) -> None:
        self.offsets.append(time.perf_counter() - self.start)
        if self.problem is not None:
            return
        self.usage.add(chunk)
        try:
            data = codec.encode(chunk, self.allow_pickle)
        except codec.UnencodableValue as exc:
            self._give_up(str(exc))
            return
        self.size += len(data)
        if self.size > self.limit:
            self._give_up(f"the stream is larger than max_stream_size={self.limit} bytes")
        else:
            self.buffer += data
            self.count += 1

    def give_up(self, problem: str) -> None:
        """Stop recording: the stream passes through and is not stored (``problem`` says why)."""
        if self.problem is None:
            self._give_up(problem)

    def _give_up(self, problem: str) -> None:
        self.problem = problem
        self.buffer = bytearray()

    @property
    def duration(self) -> float:
        return time.perf_counter() - self.start

    def body(self, result: Any) -> bytearray:
        """The entry body: the msgpack form of ``[chunks, result, offsets]``.

        Hands over the recorder's buffer (no copy of the chunks); call it once.
        """
        tail = codec.encode(result, self.allow_pickle) + codec.encode(self.offsets)
        body, self.buffer = self.buffer, bytearray()
        struct.pack_into(">I", body, 2, self.count)
        body += tail
        return body


def _close(source: Any) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        close()


async def _aclose(source: Any) -> None:
    close = getattr(source, "aclose", None) or getattr(source, "close", None)
    if close is not None:
        result = close()
        if asyncio.iscoroutine(result):
            await result


Finish = Callable[[Optional[Recorder], Any], None]
"""Called once per stream: ``(recorder, return value)`` if it completed, ``(None, None)`` if not."""


_STEERED = "values or exceptions were sent into it (send, asend, throw, athrow), and a replay could not take them into account"


def record(source: Any, recorder: Recorder, finish: Finish) -> Generator[Any, Any, Any]:
    """Yield ``source``'s chunks while recording; returns its return value.

    Values sent in with ``send()`` and exceptions thrown in with ``throw()`` reach ``source``
    (a generator); such a stream is not stored, as its chunks may depend on them.
    """
    iterator = iter(source)
    step: Callable[[], Any] = iterator.__next__
    try:
        while True:
            try:
                chunk = step()
            except StopIteration as stop:
                result = stop.value
                break
            recorder.add(chunk)
            try:
                sent = yield chunk
            except GeneratorExit:
                raise
            except BaseException as exc:
                throw = getattr(iterator, "throw", None)
                if throw is None:  # a plain iterator: the exception ends it, as it would uncached
                    raise
                recorder.give_up(_STEERED)
                step = functools.partial(throw, exc)
                continue
            if sent is None:
                step = iterator.__next__
            else:
                recorder.give_up(_STEERED)
                step = functools.partial(iterator.send, sent)
    except BaseException:
        finish(None, None)
        _close(iterator)
        raise
    finish(recorder, result)
    return result


async def record_async(source: Any, recorder: Recorder, finish: Finish) -> AsyncGenerator[Any, Any]:
    """``record`` for async iterators (``asend()`` and ``athrow()`` reach ``source`` alike)."""
    iterator = source.__aiter__()
    try:
        step = iterator.__anext__()
        while True:
            try:
                chunk = await step
            except StopAsyncIteration:
                break
            recorder.add(chunk)
            try:
                sent = yield chunk
            except GeneratorExit:
                raise
            except BaseException as exc:
                if not hasattr(iterator, "athrow"):
                    raise
                recorder.give_up(_STEERED)
                step = iterator.athrow(exc)
                continue
            if sent is not None:
                recorder.give_up(_STEERED)
            step = iterator.__anext__() if sent is None else iterator.asend(sent)
    except BaseException:
        finish(None, None)
        await _aclose(iterator)
        raise
    finish(recorder, None)


async def relay(start: Callable[[], Awaitable[AsyncGenerator[Any, Any]]]) -> AsyncGenerator[Any, Any]:
    """Yield the items of the generator ``start()`` gives, passing ``asend()`` values and
    ``athrow()`` exceptions on to it: the ``yield from`` async generators lack.

    ``start`` runs when iteration begins (a cached async generator does nothing until then);
    the generator is closed when this one is.
    """
    chunks = await start()
    try:
        step = chunks.__anext__()
        while True:
            try:
                chunk = await step
            except StopAsyncIteration:
                break
            try:
                sent = yield chunk
            except GeneratorExit:
                raise
            except BaseException as exc:
                step = chunks.athrow(exc)
                continue
            step = chunks.__anext__() if sent is None else chunks.asend(sent)
    finally:
        await chunks.aclose()


def replay(stream: Stream, realtime: bool) -> Generator[Any, None, Any]:
    """Yield recorded chunks in order (at their recorded pace if ``realtime``); returns the result."""
    start = time.perf_counter()
    for i, chunk in enumerate(stream.chunks):
        if realtime and i < len(stream.offsets):
            delay = stream.offsets[i] - (time.perf_counter() - start)
            if delay > 0:
                time.sleep(delay)
        yield chunk
    return stream.result


async def replay_async(stream: Stream, realtime: bool) -> AsyncGenerator[Any, Any]:
    """``replay`` for async consumers."""
    start = time.perf_counter()
    for i, chunk in enumerate(stream.chunks):
        if realtime and i < len(stream.offsets):
            delay = stream.offsets[i] - (time.perf_counter() - start)
            if delay > 0:
                await asyncio.sleep(delay)
        yield chunk


class RecordingStream(wrapt.ObjectProxy):  # type: ignore[misc]
    """Proxy of an SDK stream object (``openai.Stream``...) that records while it is iterated.

    Attributes (``.response``...), ``with`` blocks and ``close()`` reach the original.
    """

    def __init__(self, stream: Any, recorder: Recorder, finish: Finish) -> None:
        super().__init__(stream)
        self._self_chunks = record(stream, recorder, finish)
        self._self_finish = finish
        self._self_started = False

    def __iter__(self) -> "RecordingStream":
        return self

    def __next__(self) -> Any:
        self._self_started = True
        return next(self._self_chunks)

    def __enter__(self) -> "RecordingStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if not self._self_started:
            self._self_finish(None, None)
        self._self_chunks.close()
        _close(self.__wrapped__)

    def __del__(self) -> None:
        if not self._self_started:
            self._self_finish(None, None)


class AsyncRecordingStream(wrapt.ObjectProxy):  # type: ignore[misc]
    """``RecordingStream`` for async SDK streams (``openai.AsyncStream``...)."""

    def __init__(self, stream: Any, recorder: Recorder, finish: Finish) -> None:
        super().__init__(stream)
        self._self_chunks = record_async(stream, recorder, finish)
        self._self_finish = finish
        self._self_started = False

    def __aiter__(self) -> "AsyncRecordingStream":
        return self

    async def __anext__(self) -> Any:
        self._self_started = True
        return await self._self_chunks.__anext__()

    async def __aenter__(self) -> "AsyncRecordingStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if not self._self_started:
            self._self_finish(None, None)
        await self._self_chunks.aclose()
        await _aclose(self.__wrapped__)

    async def aclose(self) -> None:
        """``close()``, under the name async generators use."""
        await self.close()

    def __del__(self) -> None:
        if not self._self_started:
            self._self_finish(None, None)


class _Cursor:
    """The position in a recorded stream, and (for realtime replay) how long until the next chunk."""

    def __init__(self, stream: Stream, realtime: bool) -> None:
        self.chunks = iter(stream.chunks)
        self.offsets = stream.offsets if realtime else []
        self.next = 0
        self.start: Optional[float] = None

    def wait(self) -> float:
        """Seconds to wait before the next chunk is due (``0.0`` if it is due now)."""
        if self.start is None:
            self.start = time.perf_counter()
        if self.next < len(self.offsets):
            return max(0.0, self.offsets[self.next] - (time.perf_counter() - self.start))
        return 0.0

    def take(self) -> Any:
        """The next chunk; ``StopIteration`` at the end."""
        chunk = next(self.chunks)
        self.next += 1
        return chunk

    def close(self) -> None:
        self.chunks, self.offsets = iter(()), []


class _Closed:
    """What ``ReplayStream.close()`` returns: awaiting it is a no-op, so ``await s.close()`` works too."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


_CLOSED = _Closed()


class ReplayStream:
    """What a cached helper that returned a stream gives on a hit.

    It replays the recorded chunks with either protocol, whatever the original was: ``for`` and
    ``with``, or ``async for`` and ``async with``; ``close()`` works with or without ``await``
    (``aclose()`` too). ``result`` is the recorded return value.
    """

    def __init__(self, stream: Stream, realtime: bool = False) -> None:
        self._cursor = _Cursor(stream, realtime)
        self.result = stream.result

    def __iter__(self) -> "ReplayStream":
        return self

    def __next__(self) -> Any:
        cursor = self._cursor
        if cursor.offsets:  # realtime: wait until the chunk is due
            delay = cursor.wait()
            if delay > 0:
                time.sleep(delay)
            try:
                return cursor.take()
            except StopIteration:
                raise StopIteration(self.result) from None
        try:
            return next(cursor.chunks)
        except StopIteration:
            raise StopIteration(self.result) from None

    def __aiter__(self) -> "ReplayStream":
        return self

    async def __anext__(self) -> Any:
        cursor = self._cursor
        if cursor.offsets:
            delay = cursor.wait()
            if delay > 0:
                await asyncio.sleep(delay)
        try:
            return cursor.take()
        except StopIteration:
            raise StopAsyncIteration from None

    def __enter__(self) -> "ReplayStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cursor.close()

    async def __aenter__(self) -> "ReplayStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._cursor.close()

    def close(self) -> _Closed:
        """Stop the replay (later iteration ends at once)."""
        self._cursor.close()
        return _CLOSED

    async def aclose(self) -> None:
        self._cursor.close()


class AsyncReplayStream(ReplayStream):
    """What an ``async`` helper that returned a stream gives on a hit (the same replay object)."""
