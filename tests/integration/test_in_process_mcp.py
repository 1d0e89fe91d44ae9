"""The coordinator spoken to in-process, over the SDK's in-memory transport: real agents, no HTTP hop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from codegen_mcp.api.tools import TOOLS
from codegen_mcp.coordinator.server import Coordinator
from tests.support.coordinator import state_root
from tests.support.mcp_client import call, in_process_coordinator, in_process_session, text_of
from tests.support.waiting import eventually

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def coordinator() -> AsyncIterator[Coordinator]:
    for root in state_root():
        async with in_process_coordinator(root / "state") as running:
            yield running


async def test_lists_the_fifteen_tools(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as s:
        listed = (await s.list_tools()).tools
    assert len(listed) == 15 and {t.name for t in listed} == {t.name for t in TOOLS}


async def test_echo_files_and_a_run_in_one_workspace(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as s:
        assert text_of(await call(s, "echo", message="héllo")) == "héllo"
        await call(s, "fs.write", path="pkg/hello.py", content="print('hi from the sandbox')\n")
        listing = (await call(s, "fs.list", recursive=True)).structured_content
        assert listing is not None
        entries = {e["name"]: e["type"] for e in listing["entries"]}
        assert entries["pkg"] == "directory" and entries["pkg/hello.py"] == "file"
        read = (await call(s, "fs.read", path="pkg/hello.py")).structured_content
        assert read is not None and read["content"] == "print('hi from the sandbox')\n"
        ran = (await call(s, "run.python", file="pkg/hello.py")).structured_content
        assert ran is not None and ran["run"]["stdout"] == "hi from the sandbox\n"


async def test_an_invalid_argument_gets_one_sentence_and_the_session_lives(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as s:
        refused = await s.call_tool("fs.read", {"path": "a.txt", "limit": -1})
        assert refused.is_error
        assert "limit" in text_of(refused) and "\n" not in text_of(refused) and "Traceback" not in text_of(refused)
        bad_id = await s.call_tool("task.get_status", {"task_id": "../../healthz"})
        assert bad_id.is_error and "task_id" in text_of(bad_id)
        unknown = await s.call_tool("task.get_status", {"task_id": "task_nope"})
        assert unknown.is_error and "\n" not in text_of(unknown)
        assert text_of(await call(s, "echo", message="alive")) == "alive"


async def test_each_in_process_session_has_its_own_sandbox_closed_when_it_ends(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as a, in_process_session(coordinator) as b:
        await call(a, "fs.write", path="mine.txt", content="a's")
        assert (await b.call_tool("fs.read", {"path": "mine.txt"})).is_error
        held = len(coordinator.sessions)
    await eventually(lambda: len(coordinator.sessions) <= held - 2, what="both sandboxes to close")
