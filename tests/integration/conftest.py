"""A real coordinator process on 127.0.0.1 and real MCP clients (the official SDK) on all three transports."""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

TRANSPORTS = ("http", "sse", "stdio")


@dataclass
class CoordinatorProcess:
    url: str
    state_dir: Path
    proc: subprocess.Popen[bytes]

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "audit.jsonl"


def _read_listening_line(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    buf = b""
    while time.monotonic() < deadline:
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
        for line in buf.decode(errors="replace").splitlines():
            if line.startswith("LISTENING "):
                return line.split(" ", 1)[1].strip()
    raise RuntimeError(f"coordinator did not report LISTENING within {timeout_s} s (exit code {proc.poll()})")


def start_coordinator(state_dir: Path, *extra: str, env: dict[str, str] | None = None) -> CoordinatorProcess:
    cmd = [
        sys.executable,
        "-m",
        "codegen_mcp.coordinator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--state-dir",
        str(state_dir),
        "--log-level",
        "WARNING",
        *extra,
    ]
    with (state_dir.parent / f"{state_dir.name}.log").open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env={**os.environ, **(env or {})})
    try:
        base = _read_listening_line(proc, 60)
    except BaseException:
        stop_process(proc)
        raise
    return CoordinatorProcess(url=base, state_dir=state_dir, proc=proc)


def print_log_tail(cp: CoordinatorProcess, lines: int = 60) -> None:
    """Echo the end of a coordinator's log: pytest shows it only when a test failed."""
    log = cp.state_dir.parent / f"{cp.state_dir.name}.log"
    if log.exists():
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- {log} (last {len(tail)} lines) ---", *tail, sep="\n")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()


def state_root() -> Iterator[Path]:
    """A temp folder sandbox uids can traverse (pytest's own temp root is 0700 when run as root)."""
    root = Path(tempfile.mkdtemp(prefix="codegen-mcp-test-"))
    root.chmod(0o711)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def coordinator() -> Iterator[CoordinatorProcess]:
    for root in state_root():
        state = root / "state"
        state.mkdir()
        cp = start_coordinator(state)
        try:
            yield cp
        finally:
            stop_process(cp.proc)
            print_log_tail(cp)


@contextlib.asynccontextmanager
async def mcp_session(
    coordinator: CoordinatorProcess, transport: str = "http", headers: dict[str, str] | None = None
) -> AsyncIterator[ClientSession]:
    """An initialized official-SDK ClientSession over the given transport."""
    stack = contextlib.AsyncExitStack()
    if transport == "http":
        http_client = await stack.enter_async_context(httpx.AsyncClient(headers=headers)) if headers else None
        cm = streamable_http_client(f"{coordinator.url}/mcp", http_client=http_client)
    elif transport == "sse":
        cm = sse_client(f"{coordinator.url}/sse")
    elif transport == "stdio":
        params = StdioServerParameters(
            command=sys.executable,
            args=[
                "-m",
                "codegen_mcp.coordinator",
                "--transport",
                "stdio",
                "--log-level",
                "WARNING",
                "--state-dir",
                str(coordinator.state_dir.parent / "stdio-state"),
            ],
            env={**os.environ},
        )
        errlog = (coordinator.state_dir.parent / "stdio.log").open("a")
        cm = stdio_client(params, errlog=errlog)
    else:
        raise ValueError(transport)
    try:
        async with stack, cm as streams, ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            yield session
    finally:
        if transport == "stdio":
            errlog.close()
