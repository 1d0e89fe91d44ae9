"""When the session manager suspends idle sessions: only on a backend that suspends, and only before the idle
timeout (a `suspend_after_s` at or above it would never happen, so it is not attempted)."""

from __future__ import annotations

import pytest

from codegen_mcp.coordinator.backends.base import Sandbox
from codegen_mcp.coordinator.sessions import SessionManager
from tests.support.waiting import eventually
from tests.unit.coordinator.test_sessions import RecordingBackend

pytestmark = pytest.mark.asyncio


class SuspendingBackend(RecordingBackend):
    suspends = True

    def __init__(self) -> None:
        super().__init__()
        self.suspended: list[str] = []

    async def suspend(self, sandbox: Sandbox) -> None:
        sandbox.alive = False
        self.suspended.append(sandbox.sandbox_id)


async def idle_until_closed(backend: RecordingBackend, suspend_after_s: float) -> None:
    """Open one session, let it idle until the 2 s idle timeout closes it."""
    manager = SessionManager(backend, idle_timeout_s=2, suspend_after_s=suspend_after_s, max_sessions=10)
    manager.start()
    try:
        await manager.acquire("s1")
        await eventually(lambda: backend.deleted == 1, timeout=10, what="the idle timeout to close the session")
    finally:
        await manager.aclose()


async def test_an_idle_session_is_suspended_before_the_idle_timeout() -> None:
    backend = SuspendingBackend()
    await idle_until_closed(backend, 0.5)
    assert backend.suspended == ["s1"] and backend.deleted == 1


@pytest.mark.parametrize("suspend_after_s", [0, 2, 5])
async def test_off_or_not_below_the_idle_timeout_never_suspends(suspend_after_s: float) -> None:
    backend = SuspendingBackend()
    await idle_until_closed(backend, suspend_after_s)
    assert backend.suspended == [] and backend.deleted == 1


class NonSuspendingBackend(SuspendingBackend):
    suspends = False  # like the kubernetes backend for now


async def test_a_backend_that_cannot_suspend_keeps_idle_sessions_whole() -> None:
    backend = NonSuspendingBackend()
    await idle_until_closed(backend, 0.5)
    assert backend.suspended == [] and backend.deleted == 1
