"""The session manager against a backend that records what it creates and deletes, like a cluster would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from codegen_mcp.api.errors import SandboxUnavailable
from codegen_mcp.coordinator.agent_client import AgentClient, AgentEndpoint
from codegen_mcp.coordinator.backends.base import NAMED_WORKSPACE_PREFIX, Backend, Sandbox
from codegen_mcp.coordinator.sessions import SessionManager
from tests.support.waiting import eventually


class RecordingBackend(Backend):
    """Like the kubernetes backend: `open` first creates a resource named after the key, then waits for it."""

    name = "recording"

    def __init__(self) -> None:
        self.resources: set[str] = set()
        self.created = 0
        self.deleted = 0
        self.failures_left = 0  # how many opens fail (after creating the resource), e.g. an unpullable image
        self.gate: asyncio.Event | None = None  # when set, opens wait for it before answering
        self.detached: set[str] = set()

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def describe(self) -> str:
        return self.name

    async def open(self, session_key: str) -> Sandbox:
        if session_key not in self.resources:  # a second open finds the resource again (HTTP 409)
            self.resources.add(session_key)
            self.created += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failures_left:
            self.failures_left -= 1
            raise SandboxUnavailable("your sandbox could not start: ImagePullBackOff")
        client = AgentClient(AgentEndpoint("http://127.0.0.1:9", "token"))
        return Sandbox(sandbox_id=session_key, client=client, where=session_key)

    async def revive(self, sandbox: Sandbox) -> Sandbox:
        return sandbox

    async def close(self, sandbox: Sandbox) -> None:
        await sandbox.client.aclose()
        self._delete(sandbox.sandbox_id)

    async def close_unopened(self, session_key: str) -> None:
        self._delete(session_key)

    async def detach(self, sandbox: Sandbox) -> None:
        await sandbox.client.aclose()
        self.detached.add(sandbox.sandbox_id)

    def _delete(self, key: str) -> None:
        if key in self.resources:
            self.resources.remove(key)
            self.deleted += 1


@pytest.fixture
def backend() -> RecordingBackend:
    return RecordingBackend()


@pytest.fixture
async def manager(backend: RecordingBackend) -> AsyncIterator[SessionManager]:
    sessions = SessionManager(backend, idle_timeout_s=3600, max_sessions=10)
    try:
        yield sessions
    finally:
        await sessions.aclose()


async def test_closing_a_session_whose_open_failed_deletes_what_the_open_created(
    backend: RecordingBackend, manager: SessionManager
) -> None:
    backend.failures_left = 1
    with pytest.raises(SandboxUnavailable, match="ImagePullBackOff"):
        await manager.acquire("s1")
    assert backend.resources == {"s1"}  # the resource exists although the sandbox never opened

    await manager.close("s1")
    assert backend.resources == set()
    assert (backend.created, backend.deleted) == (1, 1)
    assert len(manager) == 0


async def test_the_next_call_retries_a_failed_open_and_close_deletes_once(
    backend: RecordingBackend, manager: SessionManager
) -> None:
    backend.failures_left = 1
    with pytest.raises(SandboxUnavailable):
        await manager.acquire("s1")
    sandbox = await manager.acquire("s1")  # the user's next call in the same session
    assert sandbox.sandbox_id == "s1"
    assert manager.sandbox_id("s1") == "s1"

    await manager.close("s1")
    assert backend.resources == set()
    assert (backend.created, backend.deleted) == (1, 1)


async def test_closing_while_an_open_is_failing_deletes_what_it_created(
    backend: RecordingBackend, manager: SessionManager
) -> None:
    backend.failures_left = 1
    backend.gate = asyncio.Event()
    opening = asyncio.create_task(manager.acquire("s1"))
    await eventually(lambda: backend.resources == {"s1"}, what="the open to create its resource")
    closing = asyncio.create_task(manager.close("s1"))  # the MCP session ends while the sandbox starts
    backend.gate.set()
    with pytest.raises(SandboxUnavailable):
        await opening
    await closing
    assert backend.resources == set()


async def test_a_failed_session_left_alone_is_reaped_at_idle_timeout(backend: RecordingBackend) -> None:
    manager = SessionManager(backend, idle_timeout_s=0.01, max_sessions=10)
    manager.start()
    try:
        backend.failures_left = 1
        with pytest.raises(SandboxUnavailable):
            await manager.acquire("s1")
        await eventually(lambda: not backend.resources, timeout=5, what="the idle reaper to delete the resource")
        assert len(manager) == 0
    finally:
        await manager.aclose()


async def test_at_shutdown_a_sessions_own_sandbox_ends_and_a_named_workspace_is_let_go(
    backend: RecordingBackend,
) -> None:
    closed: list[str] = []
    manager = SessionManager(backend, idle_timeout_s=3600, max_sessions=10, on_close=closed.append)
    await manager.acquire("c-0123")
    await manager.acquire(f"{NAMED_WORKSPACE_PREFIX}abcd-project")
    await manager.aclose()
    assert backend.resources == {f"{NAMED_WORKSPACE_PREFIX}abcd-project"}  # found again after a restart
    assert backend.detached == {f"{NAMED_WORKSPACE_PREFIX}abcd-project"}
    assert closed == ["c-0123"]


async def test_the_client_is_told_when_its_sandbox_starts_and_when_it_restarts(
    backend: RecordingBackend, manager: SessionManager
) -> None:
    notices: list[tuple[str, str]] = []

    async def notice(level: str, message: str) -> None:
        notices.append((level, message))

    sandbox = await manager.acquire("s1", notice)
    await manager.acquire("s1", notice)  # a working sandbox: nothing to say
    sandbox.alive, sandbox.exit_reason = False, "exit code 137"
    await manager.acquire("s1", notice)
    assert [level for level, _ in notices] == ["info", "warning"]
    assert "exit code 137" in notices[1][1] and "workspace" in notices[1][1]
