"""A small, self-contained fake LLM HTTP server for tests (standard library only).

It listens on 127.0.0.1 on a free port and speaks just enough of two APIs for
the real ``openai`` and ``anthropic`` SDKs to work against it:

* OpenAI Chat Completions: ``POST /v1/chat/completions`` (plain JSON or SSE
  streaming with ``"stream": true``, including ``stream_options.include_usage``).
* OpenAI Responses: ``POST /v1/responses`` (plain JSON, or SSE with ``"stream": true``:
  ``response.created``, ``response.in_progress``, ``response.output_item.added``,
  ``response.content_part.added``, one ``response.output_text.delta`` per token, the
  ``.done`` events and ``response.completed`` carrying the usage).
* Anthropic Messages: ``POST /v1/messages`` (plain JSON or SSE streaming).

Reply text rule (unless overridden with ``reply=``)::

    reply = "echo: " + <text of the last user message>

where the text of a message is its ``content`` if that is a string, otherwise
the ``text`` of its ``{"type": "text"}`` (or ``"input_text"``) parts joined with a single
space. For the Responses API the messages are its ``input`` (a string is one user message)
and ``instructions`` counts as a system prompt.
The reply is split into word tokens with ``re.findall(r"\\s*\\S+\\s*", reply)``
(so ``"".join(tokens) == reply``); streaming sends one content chunk per token,
and ``usage.completion_tokens`` / ``output_tokens`` is ``len(tokens)``.
``prompt_tokens`` / ``input_tokens`` is the number of whitespace-separated
words in all message texts (plus the Anthropic ``system`` prompt).

Example::

    with FakeLLMServer(chunk_delay=0.05) as server:
        client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)
        ...
        assert server.request_count == 1
"""

from __future__ import annotations

import collections
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeLLMServer", "message_text", "reply_tokens"]

ECHO_PREFIX = "echo: "
_TOKEN_RE = re.compile(r"\s*\S+\s*")


class _Abort(Exception):
    """Internal: drop the connection without finishing the response."""


def message_text(content: Any) -> str:
    """Text of a message ``content`` (string, or list of ``{"type": "text"}`` parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("text", "input_text"):
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
        return " ".join(parts)
    return str(content)


def reply_tokens(reply: str) -> list[str]:
    """Split reply text into the word tokens that are streamed (joins back to ``reply``)."""
    tokens = _TOKEN_RE.findall(reply)
    if not tokens and reply:
        tokens = [reply]
    return tokens


def _last_user_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return message_text(msg.get("content"))
    return ""


def _messages(body: dict[str, Any]) -> Any:
    """The conversation of a request: ``messages``, or the Responses API's ``input``."""
    if "messages" in body:
        return body.get("messages")
    given = body.get("input")
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    return given


def _count_words(body: dict[str, Any]) -> int:
    texts = []
    messages = _messages(body)
    if isinstance(messages, list):
        for msg in messages:
            if isinstance(msg, dict):
                texts.append(message_text(msg.get("content")))
    if "system" in body:  # Anthropic top-level system prompt
        texts.append(message_text(body.get("system")))
    if "instructions" in body:  # Responses API system prompt
        texts.append(message_text(body.get("instructions")))
    return sum(len(t.split()) for t in texts)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # we track and join handler threads ourselves
    allow_reuse_address = True

    def __init__(self, owner: FakeLLMServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Client disconnects etc. are expected in tests; keep stderr quiet.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeLLM/1.0"
    timeout = 30  # idle keep-alive connections are closed after this (stop() closes them at once)
    server: _HTTPServer

    # -- plumbing -----------------------------------------------------------

    def setup(self) -> None:
        # No Nagle: headers and body/SSE events are separate writes; without this
        # a delayed ACK can hold each response (and each streamed chunk) for ~40 ms.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()
        self.server.owner._register_connection(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.owner._unregister_connection(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except _Abort:
            self.close_connection = True
            self._hard_close()
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    def _hard_close(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_json(self, status: int, payload: Any, extra_headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _sse(self, data: Any, event: str | None = None) -> None:
        text = data if isinstance(data, str) else json.dumps(data)
        prefix = f"event: {event}\n" if event else ""
        self._write_chunk(f"{prefix}data: {text}\n\n".encode())

    # -- dispatch -----------------------------------------------------------

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        owner = self.server.owner
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0].rstrip("/")
        if path.endswith("/chat/completions"):
            api = "openai"
        elif path.endswith("/responses"):
            api = "responses"
        elif path.endswith("/messages"):
            api = "anthropic"
        else:
            api = None
        stream = bool(isinstance(body, dict) and body.get("stream"))
        record = {
            "path": self.path,
            "method": self.command,
            "json": body,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "api": api,
            "stream": stream,
            "time": time.monotonic(),
        }
        owner._record(record)
        with owner._lock:
            owner._active += 1
            owner._max_active = max(owner._max_active, owner._active)
        try:
            self._dispatch(owner, api, body, stream)
        finally:
            with owner._lock:
                owner._active -= 1

    def _dispatch(self, owner: FakeLLMServer, api: str | None, body: Any, stream: bool) -> None:
        if api is None or self.command != "POST":
            self._send_json(
                404,
                {
                    "error": {
                        "message": f"no route for {self.command} {self.path}",
                        "type": "not_found",
                    }
                },
            )
            return
        if not isinstance(body, dict):
            self._error(api, 400, "request body must be a JSON object", "invalid_request_error")
            return

        fault = owner._take_fault(stream)
        owner._sleep(owner.delay)

        if fault is not None and fault[0] == "disconnect":
            raise _Abort
        if fault is not None and fault[0] == "fail":
            _, status, message, retry_after_ms = fault
            headers = {} if retry_after_ms is None else {"retry-after-ms": str(retry_after_ms)}
            self._error(api, status, message, None, headers)
            return
        abort_after = fault[1] if fault is not None and fault[0] == "abort" else None

        try:
            reply = owner._reply_for(body)
        except Exception as exc:  # surface bugs in a reply callable as an HTTP 500
            self._error(api, 500, f"FakeLLMServer reply callable raised {exc!r}", None)
            return
        tokens = reply_tokens(reply)
        prompt_tokens = _count_words(body)
        model = str(body.get("model") or "fake-model")
        n = next(owner._ids)

        if api == "openai":
            if stream:
                self._openai_stream(owner, body, model, n, tokens, prompt_tokens, abort_after)
            else:
                self._send_json(200, _openai_completion(model, n, reply, prompt_tokens, len(tokens)))
        elif api == "responses":
            if stream:
                self._responses_stream(owner, model, n, tokens, prompt_tokens, abort_after)
            else:
                self._send_json(200, _response_object(model, n, reply, prompt_tokens, len(tokens)))
        else:
            if stream:
                self._anthropic_stream(owner, model, n, tokens, prompt_tokens, abort_after)
            else:
                self._send_json(200, _anthropic_message(model, n, reply, prompt_tokens, len(tokens)))

    def _error(
        self,
        api: str,
        status: int,
        message: str,
        err_type: str | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if api == "anthropic":
            err_type = err_type or ("rate_limit_error" if status == 429 else "api_error")
            payload: dict[str, Any] = {
                "type": "error",
                "error": {"type": err_type, "message": message},
            }
        else:
            err_type = err_type or ("rate_limit_error" if status == 429 else "server_error")
            payload = {
                "error": {
                    "message": message,
                    "type": err_type,
                    "param": None,
                    "code": None,
                }
            }
        self._send_json(status, payload, headers)

    # -- streaming ----------------------------------------------------------

    def _stream_tokens(
        self,
        owner: FakeLLMServer,
        tokens: list[str],
        abort_after: int | None,
        emit: Callable[[str], None],
    ) -> None:
        for i, tok in enumerate(tokens):
            if abort_after is not None and i >= abort_after:
                raise _Abort
            if i > 0:
                owner._sleep(owner.chunk_delay)
            emit(tok)
        if abort_after is not None:  # asked to abort after >= len(tokens): abort before the final events
            raise _Abort

    def _openai_stream(
        self,
        owner: FakeLLMServer,
        body: dict[str, Any],
        model: str,
        n: int,
        tokens: list[str],
        prompt_tokens: int,
        abort_after: int | None,
    ) -> None:
        opts = body.get("stream_options")
        include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        cid = f"chatcmpl-fake{n}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            c: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
            }
            if include_usage:
                c["usage"] = None
            return c

        self._start_sse()
        self._sse(chunk({"role": "assistant", "content": "", "refusal": None}))
        self._stream_tokens(owner, tokens, abort_after, lambda tok: self._sse(chunk({"content": tok})))
        self._sse(chunk({}, "stop"))
        if include_usage:
            self._sse(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": _openai_usage(prompt_tokens, len(tokens)),
                }
            )
        self._sse("[DONE]")
        self._end_chunks()

    def _responses_stream(
        self,
        owner: FakeLLMServer,
        model: str,
        n: int,
        tokens: list[str],
        prompt_tokens: int,
        abort_after: int | None,
    ) -> None:
        sequence = itertools.count()
        item_id = f"msg_fake{n}"

        def event(kind: str, **fields: Any) -> None:
            self._sse({"type": kind, "sequence_number": next(sequence), **fields}, kind)

        started = _response_object(model, n, "", prompt_tokens, 0, status="in_progress")
        started["output"], started["usage"] = [], None
        item = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        where = {"item_id": item_id, "output_index": 0, "content_index": 0}
        self._start_sse()
        event("response.created", response=started)
        event("response.in_progress", response=started)
        event("response.output_item.added", output_index=0, item=item)
        event("response.content_part.added", part={"type": "output_text", "text": "", "annotations": []}, **where)
        self._stream_tokens(owner, tokens, abort_after, lambda tok: event("response.output_text.delta", delta=tok, logprobs=[], **where))
        text = "".join(tokens)
        part = {"type": "output_text", "text": text, "annotations": []}
        event("response.output_text.done", text=text, logprobs=[], **where)
        event("response.content_part.done", part=part, **where)
        done = _response_object(model, n, text, prompt_tokens, len(tokens))
        event("response.output_item.done", output_index=0, item=done["output"][0])
        event("response.completed", response=done)
        self._end_chunks()

    def _anthropic_stream(
        self,
        owner: FakeLLMServer,
        model: str,
        n: int,
        tokens: list[str],
        prompt_tokens: int,
        abort_after: int | None,
    ) -> None:
        start = _anthropic_message(model, n, "", prompt_tokens, 1)
        start["content"] = []
        start["stop_reason"] = None
        self._start_sse()
        self._sse({"type": "message_start", "message": start}, "message_start")
        self._sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        )
        self._sse({"type": "ping"}, "ping")
        self._stream_tokens(
            owner,
            tokens,
            abort_after,
            lambda tok: self._sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": tok},
                },
                "content_block_delta",
            ),
        )
        self._sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        self._sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(tokens)},
            },
            "message_delta",
        )
        self._sse({"type": "message_stop"}, "message_stop")
        self._end_chunks()


def _openai_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _openai_completion(model: str, n: int, reply: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-fake{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _openai_usage(prompt_tokens, completion_tokens),
    }


def _response_object(model: str, n: int, reply: str, input_tokens: int, output_tokens: int, status: str = "completed") -> dict[str, Any]:
    """A Responses API ``response`` object holding one assistant message."""
    return {
        "id": f"resp_fake{n}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": [
            {
                "id": f"msg_fake{n}",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
    }


def _anthropic_message(model: str, n: int, reply: str, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "id": f"msg_fake{n}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": reply}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


class FakeLLMServer:
    """Loopback fake of the OpenAI Chat Completions and Responses APIs and Anthropic Messages.

    Args:
        delay: seconds to wait before responding to each API request (streaming
            or not, errors included).
        chunk_delay: seconds to wait between consecutive streamed content
            tokens (the first token is sent right after ``delay``).
        reply: ``None`` for the echo rule (see module docstring), a fixed
            string, or a callable ``(request_json: dict) -> str``.

    ``delay``, ``chunk_delay`` and ``reply`` are plain attributes and may be
    changed at any time; ``reset()`` restores the constructor values.
    """

    def __init__(
        self,
        *,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        reply: str | Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        self.delay = delay
        self.chunk_delay = chunk_delay
        self.reply = reply
        self._defaults = (delay, chunk_delay, reply)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._requests: list[dict[str, Any]] = []
        self._faults: collections.deque[tuple[Any, ...]] = collections.deque()
        self._stream_aborts: collections.deque[int] = collections.deque()
        self._active = 0
        self._max_active = 0
        self._ids = itertools.count(1)
        self._conns: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.host = "127.0.0.1"
        self.port: int | None = None

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> FakeLLMServer:
        if self._httpd is not None:
            raise RuntimeError("FakeLLMServer already started")
        self._stopping.clear()
        self._httpd = _HTTPServer(self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="FakeLLMServer",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving, drop open connections and join all server threads."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wakes handlers sleeping in delay/chunk_delay
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            self._thread = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ----------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no path)."""
        if self.port is None:
            raise RuntimeError("FakeLLMServer not started")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """Base URL for ``openai.OpenAI(base_url=...)``: ``http://127.0.0.1:PORT/v1``."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Base URL for ``anthropic.Anthropic(base_url=...)``: ``http://127.0.0.1:PORT``."""
        return self.url

    # -- inspection ---------------------------------------------------------

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Snapshot (copy) of received requests, oldest first.

        Each is ``{"path", "method", "json", "headers", "api", "stream", "time"}``;
        ``headers`` keys are lower-case, ``api`` is ``"openai"``, ``"responses"``, ``"anthropic"``
        or ``None``, ``time`` is ``time.monotonic()`` at arrival. Requests are
        recorded on arrival, before ``delay`` and before any injected failure.
        """
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def active_requests(self) -> int:
        """Requests currently being handled."""
        with self._lock:
            return self._active

    @property
    def max_active_requests(self) -> int:
        """Highest number of concurrently handled requests since start/reset."""
        with self._lock:
            return self._max_active

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` requests have been received; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._requests) >= n, timeout)

    def reset(self) -> None:
        """Forget recorded requests and pending fault injections; restore constructor options."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self._stream_aborts.clear()
            self._max_active = self._active
            self.delay, self.chunk_delay, self.reply = self._defaults

    # -- fault injection ----------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        message: str = "injected failure",
        *,
        retry_after_ms: int | None = 1,
    ) -> None:
        """Make the next ``n`` API requests (streaming or not) fail with HTTP ``status``.

        The body is the API's error JSON. ``retry-after-ms`` is sent (default 1)
        so an SDK that retries does so almost immediately; pass None to omit it.
        """
        with self._lock:
            self._faults.extend([("fail", status, message, retry_after_ms)] * n)

    def disconnect_next(self, n: int = 1) -> None:
        """Make the next ``n`` API requests get no response: the connection is closed."""
        with self._lock:
            self._faults.extend([("disconnect",)] * n)

    def abort_next_stream(self, n: int = 1, after_tokens: int = 1) -> None:
        """Cut the next ``n`` *streaming* requests after ``after_tokens`` content tokens.

        Response headers and the preamble events (OpenAI role chunk; Anthropic
        message_start/content_block_start/ping) are sent, then ``after_tokens``
        content chunks, then the connection is closed mid-body (the chunked body
        is never terminated, so the client sees a protocol/connection error).
        Non-streaming requests do not consume these.
        """
        with self._lock:
            self._stream_aborts.extend([after_tokens] * n)

    # -- internals ----------------------------------------------------------

    def _take_fault(self, stream: bool) -> tuple[Any, ...] | None:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            if stream and self._stream_aborts:
                return ("abort", self._stream_aborts.popleft())
            return None

    def _reply_for(self, body: dict[str, Any]) -> str:
        reply = self.reply
        if reply is None:
            return ECHO_PREFIX + _last_user_text(_messages(body))
        if callable(reply):
            return str(reply(body))
        return str(reply)

    def _sleep(self, seconds: float) -> None:
        if seconds and seconds > 0:
            if self._stopping.wait(seconds):
                raise _Abort
        elif self._stopping.is_set():
            raise _Abort

    def _record(self, record: dict[str, Any]) -> None:
        with self._cond:
            self._requests.append(record)
            self._cond.notify_all()

    def _register_connection(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
            self._threads.add(threading.current_thread())
        if self._stopping.is_set():  # raced with stop(): don't serve it
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _unregister_connection(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)
            self._threads.discard(threading.current_thread())
