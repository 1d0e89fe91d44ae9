"""Sandbox lifecycle on the local backend: dead agents are noticed and revived, sessions end cleanly."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from .conftest import CoordinatorProcess, mcp_session, print_log_tail, start_coordinator, state_root, stop_process
from .test_mcp_tools import call, text_of

pytestmark = pytest.mark.timeout(120)


def agent_pids(state_dir: Path) -> list[int]:
    """Pids of sandbox agents started under this state dir (their socket or workspace path names it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "codegen_mcp.sandbox_agent" in cmdline and str(state_dir.resolve()) in cmdline + environ:
            pids.append(int(entry.name))
    return pids


def process_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        await anyio.sleep(0.1)


@pytest.fixture
def fresh_coordinator() -> Iterator[CoordinatorProcess]:
    for root in state_root():
        state = root / "state"
        state.mkdir()
        # No warm pool: these tests count the agents and folders of the session they open (test_warm_pool.py
        # covers sandboxes claimed from the pool).
        cp = start_coordinator(state, "--idle-timeout", "2", "--warm-pool", "0")
        try:
            yield cp
        finally:
            stop_process(cp.proc)
            print_log_tail(cp)


def session_dirs(cp: CoordinatorProcess) -> list[Path]:
    sessions = cp.state_dir / "sessions"
    return sorted(sessions.iterdir()) if sessions.exists() else []


async def test_a_killed_agent_is_revived_with_its_workspace(fresh_coordinator: CoordinatorProcess) -> None:
    cp = fresh_coordinator
    async with mcp_session(cp) as s:
        await call(s, "fs.write", path="keep.txt", content="survives")
        [pid] = agent_pids(cp.state_dir)
        os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: not process_alive(pid), what="the agent to die")
        # Even when the call races the death notice, a read-only call is sent again to the revived agent.
        first = await s.call_tool("fs.read", {"path": "keep.txt"})
        assert not first.is_error and text_of(first) == "survives", text_of(first)
        assert agent_pids(cp.state_dir) and pid not in agent_pids(cp.state_dir)


async def test_a_call_in_flight_when_the_agent_dies_gets_a_clear_error(fresh_coordinator: CoordinatorProcess) -> None:
    cp = fresh_coordinator
    code = "import pathlib, time\npathlib.Path('started').write_text('yes')\ntime.sleep(30)"
    async with mcp_session(cp) as s:
        await call(s, "echo", message="start")
        [pid] = agent_pids(cp.state_dir)
        results = []
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:

                async def long_call() -> None:
                    results.append(await s.call_tool("run.python", {"code": code, "wait_s": 60}))

                tg.start_soon(long_call)
                # Kill only once the run is really going inside the sandbox.
                while (await s.call_tool("fs.read", {"path": "started"})).is_error:
                    await anyio.sleep(0.05)
                os.kill(pid, signal.SIGKILL)
        [result] = results
        assert result.is_error
        assert "sandbox stopped" in text_of(result)
        assert text_of(await call(s, "echo", message="back")) == "back"


async def test_ending_the_mcp_session_closes_its_sandbox(fresh_coordinator: CoordinatorProcess) -> None:
    cp = fresh_coordinator
    async with mcp_session(cp) as s:
        await call(s, "echo", message="hi")
        assert len(session_dirs(cp)) == 1 and agent_pids(cp.state_dir)
    await wait_for(lambda: not session_dirs(cp) and not agent_pids(cp.state_dir), what="the sandbox to close")


async def test_an_idle_session_is_closed(fresh_coordinator: CoordinatorProcess) -> None:
    cp = fresh_coordinator  # idle timeout 2 s
    async with mcp_session(cp) as s:
        await call(s, "echo", message="hi")
        assert len(session_dirs(cp)) == 1
        await wait_for(lambda: not session_dirs(cp), timeout_s=30, what="the idle sandbox to close")
        # The MCP session itself still works: its next call gets a fresh sandbox.
        assert text_of(await call(s, "echo", message="again")) == "again"
