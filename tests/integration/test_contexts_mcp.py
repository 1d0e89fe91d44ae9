"""run.python's persistent contexts end to end: the official MCP client, the coordinator in-process, real local
sandboxes (agent, jail and the session's memory cgroup where the machine has one)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from codegen_mcp.coordinator.server import Coordinator
from codegen_mcp.coordinator.settings import LocalBackendSettings
from tests.support.coordinator import state_root
from tests.support.mcp_client import call, in_process_coordinator, in_process_session, run, text_of

pytestmark = [pytest.mark.timeout(180), pytest.mark.asyncio(loop_scope="module")]

MiB = 1024 * 1024
SESSION_MEMORY = 256 * MiB


def memory_cgroups_usable() -> bool:
    folder = Path("/sys/fs/cgroup/memory")
    return (folder / "cgroup.procs").exists() and os.access(folder, os.W_OK)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def coordinator() -> AsyncIterator[Coordinator]:
    # Each process may take 1 GiB (RLIMIT_AS), the whole session 256 MiB (its cgroup, where there is one).
    local = LocalBackendSettings(memory_bytes=1024 * MiB, session_memory_bytes=SESSION_MEMORY)
    for root in state_root():
        async with in_process_coordinator(root / "state", local=local) as running:
            yield running


async def test_a_variable_set_in_one_call_is_read_in_the_next(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as s:
        first = await run(s, "import statistics\ndata = [3, 1, 4, 1, 5]\nprint('loaded', len(data))", context="main")
        assert first["state"] == "succeeded" and first["run"]["stdout"] == "loaded 5\n"
        second = await call(s, "run.python", code="data.append(9)\nstatistics.mean(data)", context="main")
        view = second.structured_content
        assert view["run"]["value"] == "3.8333333333333335" and view["run"]["context"]["cell"] == 2
        text = text_of(second)
        assert "Value:\n3.8333333333333335" in text and "Context: main, cell 2" in text
        # A stateless run (the default) sees none of it.
        plain = await run(s, "print('data' in globals())")
        assert plain["run"]["stdout"] == "False\n" and plain["run"]["context"] is None

        listed = await call(s, "run.contexts")
        assert [c["name"] for c in listed.structured_content["contexts"]] == ["main"]
        assert "main: started" in text_of(listed) and "2 cells" in text_of(listed)

        slow = await call(s, "run.python", code="while True:\n    pass", context="main", timeout_s=1)
        assert slow.structured_content["state"] == "timed_out"
        assert "The cell was interrupted after 1 s (KeyboardInterrupt); the context 'main' keeps its state." in (
            text_of(slow)
        )
        assert (await run(s, "len(data)", context="main"))["run"]["value"] == "6"

        await call(s, "run.python", context="main", reset=True)
        assert (await call(s, "run.contexts")).structured_content["contexts"] == []


async def test_a_bad_context_name_is_one_sentence(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as s:
        result = await s.call_tool("run.python", {"code": "1", "context": "../main"})
        assert result.is_error
        assert text_of(result) == (
            "Invalid arguments for run.python: `context` must be a short name: a lowercase letter, then up to 31 "
            "lowercase letters, digits, '_' or '-' (e.g. 'main'), not '../main'."
        )
        listed = await s.call_tool("run.contexts", {"name": "main"})
        assert listed.is_error
        assert text_of(listed) == (
            "Invalid arguments for run.contexts: `name` is unknown (this tool takes no arguments)."
        )


@pytest.mark.skipif(
    not memory_cgroups_usable(),
    reason="no writable cgroup v1 memory hierarchy at /sys/fs/cgroup/memory (not root, or no such controller)",
)
async def test_a_memory_limit_kill_restarts_the_context_and_says_state_was_lost(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as s:
        await run(s, "x = 1", context="main")
        # Within the process's 1 GiB, over the session's 256 MiB: the cgroup's OOM killer ends the interpreter.
        oom = await call(s, "run.python", code="block = b'x' * (400 << 20)\nprint('allocated')", context="main")
        view = oom.structured_content
        assert view["state"] == "failed" and "allocated" not in view["run"]["stdout"], view
        assert view["run"]["context"]["state_kept"] is False
        assert "The context 'main' lost its state: its interpreter was killed" in text_of(oom)
        again = await call(s, "run.python", code="'x' in globals()", context="main")
        assert again.structured_content["run"]["value"] == "False"
        assert text_of(again).startswith(
            "The context 'main' was restarted: its state was lost (its interpreter was killed for going over the "
            "session's memory limit (out of memory))."
        )
        # The sandbox itself is fine.
        assert text_of(await call(s, "echo", message="still here")) == "still here"
