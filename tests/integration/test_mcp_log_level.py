"""Log notices over streamable HTTP: a `logging/setLevel` belongs to the MCP session that sent it; at 2026-07-28,
where there are no sessions, each request carries its own level."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx2 as httpx
import mcp_types as types
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import LoggingLevel
from mcp_types.version import LATEST_MODERN_VERSION

from tests.support.coordinator import CoordinatorProcess
from tests.support.mcp_client import call, text_of
from tests.support.waiting import eventually


class Notices:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, params: types.LoggingMessageNotificationParams) -> None:
        self.seen.append((params.level, str(params.data)))


@contextlib.asynccontextmanager
async def session_with(coordinator: CoordinatorProcess, notices: Notices) -> AsyncIterator[ClientSession]:
    async with (
        streamable_http_client(f"{coordinator.url}/mcp") as streams,
        ClientSession(streams[0], streams[1], logging_callback=notices) as session,
    ):
        await session.initialize()
        yield session


async def test_a_session_that_asks_for_warnings_no_longer_gets_the_info_notice(
    coordinator: CoordinatorProcess,
) -> None:
    quiet, chatty = Notices(), Notices()
    async with session_with(coordinator, quiet) as q, session_with(coordinator, chatty) as c:
        await q.set_logging_level("warning")
        await call(q, "echo", message="first call")
        await call(c, "echo", message="first call")
        await eventually(lambda: chatty.seen, what="the info notice of the default session")
        await call(q, "echo", message="a later call")
    assert [level for level, _ in chatty.seen] == ["info"]
    assert "starting a sandbox" in chatty.seen[0][1]
    assert quiet.seen == []


async def test_a_2026_client_gets_the_notices_it_opts_in_to_per_request(coordinator: CoordinatorProcess) -> None:
    # No sessions at 2026-07-28: the client names its workspace, and each request carries its own log level.
    async def notices_of(name: str, log_level: LoggingLevel | None) -> list[tuple[str, str]]:
        notices = Notices()
        headers = {"Codegen-Workspace": name}
        async with (
            httpx.AsyncClient(headers=headers) as http,
            Client(
                streamable_http_client(f"{coordinator.url}/mcp", http_client=http),
                mode=LATEST_MODERN_VERSION,
                log_level=log_level,
                logging_callback=notices,
            ) as client,
        ):
            result = await client.call_tool("echo", {"message": "hi"})
            assert not result.is_error and text_of(result) == "hi"
        return notices.seen

    assert [level for level, _ in await notices_of("opted-in", "info")] == ["info"]
    assert await notices_of("not-opted-in", None) == []
