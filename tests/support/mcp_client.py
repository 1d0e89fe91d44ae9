"""The official MCP SDK's client on a coordinator for tests: a session over streamable HTTP or in-process, and
tool calls."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
from mcp import Client, ClientSession
from mcp.client.session import LoggingFnT
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from codegen_mcp.coordinator.backends import Backend
from codegen_mcp.coordinator.server import Coordinator, create_server
from codegen_mcp.coordinator.settings import CoordinatorSettings


def bearer(token: str | None) -> dict[str, str]:
    """The header a coordinator with auth on asks for; none without a token."""
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextlib.asynccontextmanager
async def mcp_session(url: str, token: str | None = None, *, timeout: httpx.Timeout) -> AsyncIterator[ClientSession]:
    """An initialized client session on the coordinator at `url` (its /mcp endpoint)."""
    async with (
        httpx.AsyncClient(headers=bearer(token), timeout=timeout) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as streams,
        ClientSession(streams[0], streams[1]) as session,
    ):
        await session.initialize()
        yield session


@contextlib.asynccontextmanager
async def in_process_coordinator(
    state_dir: Path, backend: Backend | None = None, **settings: Any
) -> AsyncIterator[Coordinator]:
    """A running coordinator in this process (the local backend unless told otherwise): its sandboxes are real."""
    async with Coordinator(CoordinatorSettings(state_dir=state_dir, **settings), backend).running() as coordinator:
        yield coordinator


@contextlib.asynccontextmanager
async def in_process_session(
    coordinator: Coordinator, *, logging_callback: LoggingFnT | None = None
) -> AsyncIterator[ClientSession]:
    """An initialized official-SDK client session on `coordinator` over the SDK's in-memory transport.

    Everything but the HTTP hop is what a remote client gets: the same MCP server, handlers and sandboxes.
    """
    server = create_server(coordinator)
    async with Client(server, mode="legacy", logging_callback=logging_callback) as client:
        yield client.session


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


async def call(session: ClientSession, tool: str, **arguments: Any) -> CallToolResult:
    """A tool call that must succeed: its result, or an AssertionError with the tool's own message."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, f"{tool} failed: {text_of(result)}"
    return result


async def run(session: ClientSession, code: str, **extra: Any) -> dict[str, Any]:
    """run.python that must succeed as a call (the code itself may fail): its structured result."""
    structured: dict[str, Any] | None = (await call(session, "run.python", code=code, **extra)).structured_content
    assert structured is not None
    return structured
