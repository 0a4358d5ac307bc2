"""A real `redis-server` on a free loopback port, for tests and benchmarks.

    with RedisServer(tmp_path) as server:
        server.url          # redis://127.0.0.1:PORT/0
        server.stop(); server.start()     # an outage, then the same port again
        server.pause(); server.resume()   # a hung server (SIGSTOP / SIGCONT)

No persistence (`--save '' --appendonly no`): a restart comes back empty.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

STARTUP_DEADLINE_S = 10.0


def redis_server_path() -> str | None:
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith((b"+PONG", b"-NOAUTH"))  # answered
    except OSError:
        return False


class RedisServer:
    """A redis-server process bound to 127.0.0.1, started and stopped on demand."""

    def __init__(
        self, directory: str | Path, port: int | None = None, password: str | None = None
    ) -> None:
        executable = redis_server_path()
        if executable is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self.executable = executable
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.password = password  # requirepass: clients must AUTH with it
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and return once it answers PING (bounded retries, no sleep)."""
        log = self.directory / "redis.log"
        self.process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.directory),
             "--logfile", str(log),
             *(["--requirepass", self.password] if self.password else [])],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while not answers_ping(self.port):
            if self.process.poll() is not None:
                text = log.read_text() if log.exists() else ""
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{text}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer within {STARTUP_DEADLINE_S} s")
        return self

    def stop(self) -> None:
        """Kill the server (an outage); `start()` brings it back on the same port."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused server cannot die
            self.process.kill()
        self.process.wait(timeout=30)
        self.process = None

    def pause(self) -> None:
        """Freeze the server: connections are accepted, nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
