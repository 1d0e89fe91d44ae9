"""`logging/setLevel` sets, per MCP session, the least severe log notice the coordinator sends that session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import mcp_types as types
import pytest

from codegen_mcp.coordinator.backends.base import Sandbox
from codegen_mcp.coordinator.mcp_sessions import LOG_LEVELS, at_least
from codegen_mcp.coordinator.server import Coordinator
from tests.support.mcp_client import in_process_coordinator, in_process_session
from tests.support.waiting import eventually
from tests.unit.coordinator.test_sessions import RecordingBackend


class BrokenBackend(RecordingBackend):
    """Every sandbox fails to open with a bug: the coordinator says it is starting one (info), then fails (error)."""

    async def open(self, session_key: str) -> Sandbox:
        raise RuntimeError("a bug in the backend")


class Notices:
    def __init__(self) -> None:
        self.levels: list[str] = []

    async def __call__(self, params: types.LoggingMessageNotificationParams) -> None:
        assert params.logger == "codegen-mcp" and isinstance(params.data, str)
        self.levels.append(params.level)


@pytest.fixture
async def coordinator(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Coordinator]:
    async with in_process_coordinator(tmp_path_factory.mktemp("state"), BrokenBackend()) as running:
        yield running


def test_levels_are_ordered_as_rfc_5424_says() -> None:
    assert LOG_LEVELS == ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
    assert at_least("error", "error") and at_least("emergency", "debug") and not at_least("info", "error")


async def test_level_error_keeps_the_info_notice_from_that_session_only(coordinator: Coordinator) -> None:
    quiet, chatty = Notices(), Notices()
    async with (
        in_process_session(coordinator, logging_callback=quiet) as q,
        in_process_session(coordinator, logging_callback=chatty) as c,
    ):
        await q.set_logging_level("error")
        for session in (q, c):
            failed = await session.call_tool("echo", {"message": "hi"})
            assert failed.is_error
        await eventually(lambda: len(chatty.levels) == 2 and quiet.levels, what="the notices")
    assert chatty.levels == ["info", "error"]  # what every session gets by default
    assert quiet.levels == ["error"]


async def test_a_level_above_error_silences_the_coordinator(coordinator: Coordinator) -> None:
    notices = Notices()
    async with in_process_session(coordinator, logging_callback=notices) as s:
        await s.set_logging_level("critical")
        assert (await s.call_tool("echo", {"message": "hi"})).is_error
        await s.set_logging_level("info")
        assert (await s.call_tool("echo", {"message": "hi"})).is_error
        await eventually(lambda: len(notices.levels) == 2, what="the notices after lowering the level")
    assert notices.levels == ["info", "error"]
