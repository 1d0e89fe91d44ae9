"""The bounds on MCP sessions that have no sandbox yet: per client, in all, and in time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from codegen_mcp.coordinator.sessions import Handshakes
from tests.support.waiting import eventually


class Ended:
    def __init__(self) -> None:
        self.ids: list[str] = []

    def callback(self, session_id: str) -> Callable[[], Awaitable[None]]:
        async def end() -> None:
            self.ids.append(session_id)

        return end


@pytest.fixture
async def handshakes() -> AsyncIterator[Handshakes]:
    registry = Handshakes(per_client=3, total=5, idle_timeout_s=0.3)
    registry.start()
    yield registry
    await registry.aclose()


async def open_one(handshakes: Handshakes, ended: Ended, session_id: str, client: str) -> None:
    await handshakes.make_room(client)
    handshakes.opened(session_id, client, ended.callback(session_id))


async def test_a_client_holds_at_most_its_bound_and_loses_its_oldest_first(handshakes: Handshakes) -> None:
    ended = Ended()
    for n in range(5):
        await open_one(handshakes, ended, f"a{n}", "attacker")
    await open_one(handshakes, ended, "b0", "someone else")
    assert ended.ids == ["a0", "a1"]
    assert len(handshakes) == 4
    assert handshakes.ended["evicted"] == 2  # /metrics: codegen_mcp_handshakes_ended_total{reason="evicted"}


async def test_the_server_wide_bound_ends_the_oldest_of_anyone(handshakes: Handshakes) -> None:
    ended = Ended()
    for n in range(5):
        await open_one(handshakes, ended, f"c{n}", f"client-{n}")
    await open_one(handshakes, ended, "late", "client-late")
    assert ended.ids == ["c0"] and len(handshakes) == 5


async def test_promoted_sessions_are_never_ended_and_busy_ones_do_not_expire(handshakes: Handshakes) -> None:
    ended = Ended()
    await open_one(handshakes, ended, "working", "c")
    await open_one(handshakes, ended, "busy", "c")
    await open_one(handshakes, ended, "idle", "c")
    handshakes.promote("working")
    with handshakes.serving("busy"):
        await eventually(lambda: ended.ids == ["idle"], timeout=5, what="the idle handshake to expire")
        for n in range(3):
            await open_one(handshakes, ended, f"new{n}", "c")  # the oldest idle ones go first
        assert ended.ids == ["idle", "new0"]
    assert "working" not in ended.ids
    assert handshakes.ended["expired"] == 1
