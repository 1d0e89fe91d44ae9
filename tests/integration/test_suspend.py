"""Suspend and resume on the local backend, with real agents and the official MCP client in-process: an idle
session's processes stop while its workspace stays, and its next call resumes it there, transparently."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest

from codegen_mcp.coordinator.server import Coordinator
from tests.integration import test_warm_pool
from tests.support.mcp_client import call, in_process_coordinator, in_process_session, run, text_of
from tests.support.waiting import eventually

pytestmark = [pytest.mark.timeout(240), pytest.mark.asyncio]

root = test_warm_pool.root  # the fixture: a state folder sandbox uids can traverse, a uid registry of its own


def coordinator_on(root: Path, **settings: Any) -> Any:
    return in_process_coordinator(root / "state", **{"session_idle_timeout_s": 600, **settings})


class Notices:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def __call__(self, params: types.LoggingMessageNotificationParams) -> None:
        self.messages.append(str(params.data))


def only_folder(root: Path) -> Path:
    [folder] = [p for p in (root / "state" / "sessions").iterdir() if p.is_dir()]
    return folder


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def processes_of(uid: int) -> list[int]:
    """Pids running as `uid` (zombies not counted)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            real_uid = int(status.split("Uid:")[1].split()[0])
            if real_uid == uid and running(int(entry.name)):
                pids.append(int(entry.name))
    return pids


def suspended(coordinator: Coordinator, sessions: int = 1) -> bool:
    return len(coordinator.sessions) == sessions and coordinator.sessions.running() == 0


async def test_an_idle_session_is_suspended_and_resumed_on_its_workspace(root: Path) -> None:
    notices = Notices()
    async with (
        coordinator_on(root, suspend_after_s=1) as coordinator,
        in_process_session(coordinator, logging_callback=notices) as s,
    ):
        await call(s, "fs.write", path="notes.txt", content="written before the suspension")
        uid = int((await run(s, "import os; print(os.getuid())"))["run"]["stdout"])
        folder = only_folder(root)
        agent = int((folder / "agent.pid").read_text())
        assert running(agent)

        await eventually(lambda: suspended(coordinator), timeout=30, what="the idle session to be suspended")
        await eventually(lambda: not running(agent), timeout=10, what="the agent to end")
        if os.geteuid() == 0:  # as root, the session's code runs as its own uid: none of it may run on
            assert processes_of(uid) == [], "a process of the suspended session is still running"
        assert (folder / "workspace" / "notes.txt").exists()  # the workspace stays

        messages: list[str | None] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            messages.append(message)

        read = await s.call_tool("fs.read", {"path": "notes.txt"}, progress_callback=on_progress)
        assert "written before the suspension" in text_of(read)
        assert any("resuming your suspended sandbox" in m for m in notices.messages), notices.messages
        assert any("resuming your suspended sandbox" in (m or "") for m in messages), messages
        assert coordinator.sessions.running() == 1 and only_folder(root) == folder
        assert int((folder / "agent.pid").read_text()) != agent
        after = await run(s, "import os; print(os.getuid()); print(open('notes.txt').read())")
        assert after["run"]["stdout"].splitlines() == [str(uid), "written before the suspension"]


async def test_suspended_sessions_do_not_count_against_max_sessions(root: Path) -> None:
    async with (
        coordinator_on(root, suspend_after_s=1, max_sessions=1) as coordinator,
        in_process_session(coordinator) as a,
        in_process_session(coordinator) as b,
    ):
        await call(a, "fs.write", path="a.txt", content="of a")
        await eventually(lambda: suspended(coordinator), timeout=30, what="session a to be suspended")
        # a's slot is free while it is suspended: b gets one at the cap of 1.
        assert text_of(await call(b, "echo", message="b runs")) == "b runs"
        refused = await a.call_tool("fs.read", {"path": "a.txt"})  # b holds the only slot: a cannot resume
        assert refused.is_error and "maximum of 1 sessions" in text_of(refused)
        await eventually(lambda: suspended(coordinator, 2), timeout=30, what="both sessions to be suspended")
        assert "of a" in text_of(await call(a, "fs.read", path="a.txt"))


async def test_a_suspended_session_still_ends_at_the_idle_timeout(root: Path) -> None:
    async with (
        coordinator_on(root, suspend_after_s=1, session_idle_timeout_s=6) as coordinator,
        in_process_session(coordinator) as s,
    ):
        await call(s, "fs.write", path="gone.txt", content="x")
        folder = only_folder(root)
        await eventually(lambda: suspended(coordinator), timeout=30, what="the session to be suspended")
        assert folder.exists()
        await eventually(lambda: len(coordinator.sessions) == 0, timeout=30, what="the idle timeout")
        await eventually(lambda: not folder.exists(), timeout=10, what="its workspace to be removed")


async def test_suspension_off_keeps_idle_sessions_whole(root: Path) -> None:
    async with (
        coordinator_on(root, suspend_after_s=0, session_idle_timeout_s=8) as coordinator,
        in_process_session(coordinator) as s,
    ):
        await call(s, "echo", message="hi")
        agent = int((only_folder(root) / "agent.pid").read_text())
        # Nothing to wait for: the point is that nothing happens. The reaper looks every 2 s here, and 1 s of
        # suspend_after would have stopped the agent within these 5 s.
        await asyncio.sleep(5)
        assert coordinator.sessions.running() == 1 and running(agent)


async def test_a_named_workspace_suspends_and_resumes_on_its_folder(root: Path) -> None:
    async with coordinator_on(root, suspend_after_s=1) as coordinator:
        sandbox = await coordinator.sessions.acquire("ws-suspended")
        await sandbox.client.request("POST", "/v1/fs/write", body={"path": "kept.txt", "content": "named"})
        await eventually(lambda: suspended(coordinator), timeout=30, what="the named workspace to be suspended")
        assert not sandbox.alive
        resumed = await coordinator.sessions.acquire("ws-suspended")
        assert resumed.sandbox_id == sandbox.sandbox_id and resumed.alive
        read = await resumed.client.request("POST", "/v1/fs/read", body={"path": "kept.txt"})
        assert read["content"] == "named", read
        await coordinator.sessions.close("ws-suspended")


async def test_a_session_whose_task_still_runs_is_busy_not_idle(root: Path) -> None:
    async with (
        coordinator_on(root, suspend_after_s=1) as coordinator,
        in_process_session(coordinator) as s,
    ):
        started = await call(s, "run.python", code="import time; time.sleep(5)", wait_s=0.1)
        assert started.structured_content is not None and started.structured_content["state"] == "running"
        await asyncio.sleep(3)  # idle three times over, but its task runs: not suspended
        assert coordinator.sessions.running() == 1
        await eventually(lambda: suspended(coordinator), timeout=30, what="the session to be suspended after its task")
