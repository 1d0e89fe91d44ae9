"""A sandbox that stops under a call: a read-only call is sent again to the revived sandbox, any other is reported.

The agent here is a stand-in whose first request fails the way a dead agent's reused keep-alive connection does
(aiohttp's ServerDisconnected → SandboxUnavailable): the coordinator cannot know whether the agent acted on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from codegen_mcp.api.errors import SandboxUnavailable
from codegen_mcp.coordinator.agent_client import AgentClient, AgentEndpoint
from codegen_mcp.coordinator.backends.base import Sandbox
from codegen_mcp.coordinator.server import Coordinator
from tests.support.mcp_client import in_process_coordinator, in_process_session, text_of
from tests.unit.coordinator.test_sessions import RecordingBackend


class DyingAgent(AgentClient):
    """Answers like an agent, except that its first request finds the agent gone."""

    def __init__(self, requests: list[str]) -> None:
        super().__init__(AgentEndpoint("http://127.0.0.1:9", "token"))
        self.requests = requests

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        self.requests.append(path)
        if len(self.requests) == 1:
            raise SandboxUnavailable("the sandbox is not reachable (ServerDisconnectedError)")
        body = kwargs.get("body") or {}
        if path.endswith("/echo"):
            return {"message": body["message"]}
        return {"path": body["path"], "bytes_written": 2, "size": 2}

    async def healthy(self, timeout_s: float = 2.0) -> bool:
        return False  # it did die


class DyingBackend(RecordingBackend):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []
        self.revived = 0

    async def open(self, session_key: str) -> Sandbox:
        await (await super().open(session_key)).client.aclose()  # the resource bookkeeping, not its client
        return Sandbox(sandbox_id=session_key, client=DyingAgent(self.requests), where=session_key)

    async def revive(self, sandbox: Sandbox) -> Sandbox:
        self.revived += 1
        return Sandbox(sandbox_id=sandbox.sandbox_id, client=sandbox.client, where=sandbox.where)


@pytest.fixture
def backend() -> DyingBackend:
    return DyingBackend()


@pytest.fixture
async def coordinator(tmp_path_factory: pytest.TempPathFactory, backend: DyingBackend) -> AsyncIterator[Coordinator]:
    async with in_process_coordinator(tmp_path_factory.mktemp("state"), backend) as running:
        yield running


async def test_a_read_only_call_is_sent_again_to_the_revived_sandbox(
    coordinator: Coordinator, backend: DyingBackend
) -> None:
    async with in_process_session(coordinator) as s:
        result = await s.call_tool("echo", {"message": "still here"})
    assert not result.is_error and text_of(result) == "still here", text_of(result)
    assert len(backend.requests) == 2 and backend.revived == 1


async def test_a_call_that_may_have_acted_is_reported_not_sent_again(
    coordinator: Coordinator, backend: DyingBackend
) -> None:
    async with in_process_session(coordinator) as s:
        result = await s.call_tool("fs.write", {"path": "a.txt", "content": "hi"})
        assert result.is_error and "stopped during this call" in text_of(result), text_of(result)
        assert len(backend.requests) == 1  # never written twice
        after = await s.call_tool("fs.write", {"path": "a.txt", "content": "hi"})
    assert not after.is_error and backend.revived == 1
