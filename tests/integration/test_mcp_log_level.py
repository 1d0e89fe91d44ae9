"""`logging/setLevel` over streamable HTTP: the level belongs to the MCP session that set it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import mcp_types as types
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.support.coordinator import CoordinatorProcess
from tests.support.mcp_client import call
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
