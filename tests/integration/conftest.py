"""A real coordinator process on 127.0.0.1 and real MCP clients (the official SDK) on all three transports."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Iterator

import httpx2 as httpx
import pytest
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.support.coordinator import (  # noqa: F401 - re-exported for the test modules
    CoordinatorProcess,
    print_log_tail,
    start_coordinator,
    state_root,
    stop_process,
)

TRANSPORTS = ("http", "sse", "stdio")


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
