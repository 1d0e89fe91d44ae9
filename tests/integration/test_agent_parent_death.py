"""A coordinator that dies without cleaning up (SIGKILL, OOM) takes its agents, serving or pooled, with it."""

from __future__ import annotations

import functools
import os
import signal

import pytest

from .conftest import mcp_session, print_log_tail, start_coordinator, state_root, stop_process
from .test_local_backend import agent_pids, process_alive, wait_for
from .test_mcp_tools import call

pytestmark = pytest.mark.timeout(120)


def all_ended(pids: list[int]) -> bool:
    return not any(process_alive(p) for p in pids)


async def test_agents_get_sigterm_when_their_coordinator_is_killed() -> None:
    for root in state_root():
        (root / "state").mkdir()
        cp = start_coordinator(root / "state", env={"CODEGEN_LOCAL_WARM_POOL": "2"})  # pooled agents too
        try:
            async with mcp_session(cp) as s:
                await call(s, "echo", message="start a sandbox")
                pids = agent_pids(cp.state_dir)
                assert pids, "no agent runs for the session"
                os.kill(cp.proc.pid, signal.SIGKILL)
                cp.proc.wait()
                await wait_for(functools.partial(all_ended, pids), what="the agents to end with their coordinator")
        except BaseException:
            print_log_tail(cp)
            raise
        finally:
            stop_process(cp.proc)
