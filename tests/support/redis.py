"""A real `redis-server` on 127.0.0.1 for tests: a free port, no persistence, a folder of its own.

Tests that need it take the `redis_server` fixture (import it into the test module or a conftest.py). Without
the binary they skip, saying how to install it; CI installs it (`.ci/run`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.control_plane import free_port

MISSING = "redis-server not installed (apt install redis-server)"
START_TIMEOUT_S = 10.0


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def start_redis(folder: Path) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(reason=MISSING)
    port = free_port()
    log = folder / "redis.log"
    # No RDB/AOF files, no background saves: only what a test writes, gone when the process ends.
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    cmd += ["--dir", str(folder), "--logfile", str(log), "--daemonize", "no"]
    server = RedisServer(port=port, proc=subprocess.Popen(cmd, stdin=subprocess.DEVNULL), log=log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.ping():
        if server.proc.poll() is not None or time.monotonic() > deadline:
            stop_redis(server)
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
            raise RuntimeError(f"redis-server did not answer PING on port {port}:\n{tail}")
        time.sleep(0.02)
    return server


def stop_redis(server: RedisServer) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=5)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh `redis-server` for one test."""
    server = start_redis(tmp_path)
    try:
        yield server
    finally:
        stop_redis(server)
