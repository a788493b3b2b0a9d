"""A real ``redis-server`` for tests: a free loopback port, a temp dir, no persistence.

``with RedisServer(tmp_path) as server:`` starts it (``server.url`` is ``redis://127.0.0.1:<port>/0``)
and stops it at the end of the block.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Optional


def redis_server_path() -> Optional[str]:
    """The ``redis-server`` executable, or ``None``."""
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None


def free_port() -> int:
    """A loopback TCP port nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))  # (a server started with --requirepass)
    except OSError:
        return False


class RedisServer:
    """Start ``redis-server`` on a free loopback port in ``directory``; ``stop()`` ends it."""

    def __init__(self, directory: Optional[str] = None, *args: str) -> None:
        self.directory = str(directory) if directory is not None else tempfile.mkdtemp(prefix="memollm-redis-")
        self.args = args
        self.port = 0
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, attempts: int = 5) -> "RedisServer":
        executable = redis_server_path()
        if executable is None:
            raise FileNotFoundError("redis-server is not installed (Debian package redis-server)")
        for _ in range(attempts):  # another process may take the port between free_port() and bind
            self.port = free_port()
            log = os.path.join(self.directory, f"redis-{self.port}.log")
            command = [
                executable,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self.directory,
                "--logfile", log,
                "--daemonize", "no",
                *self.args,
            ]  # fmt: skip
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.process.poll() is None:
                if _ping(self.port):
                    return self
                time.sleep(0.01)
            self.stop()
        raise RuntimeError(f"redis-server did not start (see the logs in {self.directory})")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
