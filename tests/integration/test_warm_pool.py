"""The local backend's warm pool, with real agents and the official MCP client in-process: a session claims a
sandbox started ahead (no agent start), finds nothing of any other session in it, and the pool refills."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from mcp import ClientSession

from codegen_mcp.coordinator.backends.local import LocalBackend
from codegen_mcp.coordinator.server import Coordinator
from codegen_mcp.coordinator.settings import LocalBackendSettings
from tests.support.coordinator import private_uid_registry, state_root
from tests.support.mcp_client import call, in_process_coordinator, in_process_session, run, text_of
from tests.support.waiting import eventually

pytestmark = [pytest.mark.timeout(240), pytest.mark.asyncio]


@pytest.fixture
def root(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for folder in state_root():
        for name, value in private_uid_registry(folder / "uids").items():
            monkeypatch.setenv(name, value)
        yield folder


def pool_coordinator(root: Path, warm_pool: int, **settings: Any) -> Any:
    return in_process_coordinator(root / "state", local=LocalBackendSettings(warm_pool=warm_pool), **settings)


def backend_of(coordinator: Coordinator) -> LocalBackend:
    return cast(LocalBackend, coordinator.backend)


async def pool_full(coordinator: Coordinator, size: int) -> list[str]:
    pool = backend_of(coordinator).pool
    await eventually(lambda: pool.ready == size, timeout=90, what=f"the warm pool to hold {size} sandboxes")
    return pool.sandbox_ids()


def session_folders(root: Path) -> set[str]:
    sessions = root / "state" / "sessions"
    return {p.name for p in sessions.iterdir() if p.is_dir()} if sessions.exists() else set()


async def sandbox_of(root: Path, s: ClientSession) -> str:
    """The folder serving a session, found from outside: the one where its marker file landed."""
    mark = f"mark-{os.urandom(4).hex()}"
    await call(s, "fs.write", path=mark, content="")
    [folder] = [
        name for name in session_folders(root) if (root / "state" / "sessions" / name / "workspace" / mark).exists()
    ]
    await call(s, "run.python", code=f"import os; os.remove({mark!r})")
    return folder


@pytest.fixture
async def pool_of_two(root: Path) -> AsyncIterator[Coordinator]:
    async with pool_coordinator(root, 2) as coordinator:
        yield coordinator


async def test_a_claimed_sandbox_holds_nothing_of_the_session_before_it(root: Path, pool_of_two: Coordinator) -> None:
    pooled = await pool_full(pool_of_two, 2)
    async with in_process_session(pool_of_two) as a, in_process_session(pool_of_two) as b:
        # A leaves everything a session can leave: files, a task still running, artifacts, files in /tmp.
        await call(a, "fs.write", path="secret.txt", content="of session A")
        made = await run(a, "import os\nopen('/tmp/a-was-here','w').write('x')\nopen('out.csv','w').write('1,2\\n')")
        [artifact] = made["run"]["artifacts"]
        task = (await call(a, "run.python", code="import time; time.sleep(60)", wait_s=0.1)).structured_content
        assert task is not None and task["task_id"]
        uid_a = (await run(a, "import os; print(os.getuid())"))["run"]["stdout"]

        listing = (await call(b, "fs.list", path=".")).structured_content
        # Only what every fresh sandbox has: the agent's bookkeeping and the venv, made for it alone.
        assert listing is not None and {e["name"] for e in listing["entries"]} <= {".codegen", ".venv"}, listing
        arts = (await call(b, "artifact.list")).structured_content
        assert arts is not None and arts["artifacts"] == [] and arts["total"] == 0
        assert (await b.call_tool("task.get_status", {"task_id": task["task_id"]})).is_error
        assert (await b.call_tool("artifact.get", {"artifact_id": artifact["artifact_id"]})).is_error
        assert (await b.call_tool("fs.read", {"path": "secret.txt"})).is_error
        seen = await run(b, "import os\nprint(sorted(os.listdir('/tmp')))\nprint(os.getuid())")
        tmp_b, uid_b = seen["run"]["stdout"].splitlines()
        assert "a-was-here" not in tmp_b and uid_b != uid_a
        # Both came from the pool, started before either session existed.
        assert {await sandbox_of(root, a), await sandbox_of(root, b)} == set(pooled)


async def test_claims_are_refilled_without_starting_agents_for_the_sessions(
    root: Path, pool_of_two: Coordinator
) -> None:
    backend = backend_of(pool_of_two)
    pooled = await pool_full(pool_of_two, 2)
    started = backend.agents_started
    async with in_process_session(pool_of_two) as a, in_process_session(pool_of_two) as b:
        assert text_of(await call(a, "echo", message="a")) == "a"
        assert text_of(await call(b, "echo", message="b")) == "b"
        assert {await sandbox_of(root, a), await sandbox_of(root, b)} == set(pooled)
        refilled = await pool_full(pool_of_two, 2)
        assert not set(refilled) & set(pooled)
        # Two starts, both the pool's: the sessions' first calls started none.
        assert backend.agents_started == started + 2
    await eventually(lambda: session_folders(root) == set(refilled), timeout=30, what="the sessions' folders to go")


async def test_a_pooled_agent_that_dies_is_replaced_never_handed_out(root: Path) -> None:
    async with pool_coordinator(root, 1) as coordinator:
        [dead] = await pool_full(coordinator, 1)
        pid = int((root / "state" / "sessions" / dead / "agent.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        pool = backend_of(coordinator).pool
        await eventually(lambda: pool.ready == 1 and dead not in pool.sandbox_ids(), timeout=90, what="a new one")
        await eventually(lambda: dead not in session_folders(root), timeout=30, what="the dead one's folder to go")
        [fresh] = pool.sandbox_ids()
        async with in_process_session(coordinator) as s:
            assert text_of(await call(s, "echo", message="works")) == "works"
            assert await sandbox_of(root, s) == fresh


async def test_pooled_sandboxes_count_against_max_sessions_and_give_way(root: Path) -> None:
    async with pool_coordinator(root, 2, max_sessions=2) as coordinator:
        backend = backend_of(coordinator)
        await pool_full(coordinator, 2)
        # A named workspace is never served from the pool; at the cap the pool shrinks to make it room.
        named = await coordinator.sessions.acquire("ws-pooltest")
        assert named.sandbox_id.startswith("w-") and backend.pool.ready == 1
        assert len(session_folders(root)) == 2
        async with in_process_session(coordinator) as a:
            await call(a, "echo", message="claims the last pooled one")
            assert backend.pool.ready == 0
            started = backend.agents_started
            async with in_process_session(coordinator) as refused:
                result = await refused.call_tool("echo", {"message": "one too many"})
            assert result.is_error and "maximum of 2 sessions" in text_of(result)
            assert len(session_folders(root)) == 2 and backend.pool.ready == 0
        # The session's end gives its room back, and the pool takes it.
        await pool_full(coordinator, 1)
        assert backend.agents_started == started + 1
        await coordinator.sessions.close("ws-pooltest")


async def test_a_session_takes_the_room_of_a_pool_start_in_progress(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pool's first start stays in progress until it is given up: its folder, uid, disk and cgroup made,
    # its agent not yet asked for (whatever the machine's speed, the session meets a start in progress).
    parked = asyncio.Event()
    spawn = LocalBackend._spawn

    async def first_spawn_parks(self: LocalBackend, *args: Any) -> Any:
        if not parked.is_set():
            parked.set()
            await asyncio.Event().wait()
        return await spawn(self, *args)

    monkeypatch.setattr(LocalBackend, "_spawn", first_spawn_parks)
    async with pool_coordinator(root, 1, max_sessions=1) as coordinator:
        backend = backend_of(coordinator)
        await eventually(parked.is_set, what="the pool's first start")
        [starting] = session_folders(root)
        assert backend.pool.ready == 0
        named = await coordinator.sessions.acquire("ws-startrace")
        assert await named.client.healthy()
        assert backend.pool.ready == 0 and session_folders(root) == {named.sandbox_id} != {starting}
        await coordinator.sessions.close("ws-startrace")
        await pool_full(coordinator, 1)


async def test_without_a_pool_each_session_starts_its_own(root: Path) -> None:
    async with pool_coordinator(root, 0) as coordinator:
        backend = backend_of(coordinator)
        assert backend.pool.ready == 0 and session_folders(root) == set() and backend.agents_started == 0
        async with in_process_session(coordinator) as s:
            await call(s, "echo", message="fresh")
            assert backend.agents_started == 1 and backend.pool.ready == 0


async def test_closing_the_coordinator_removes_pooled_sandboxes_and_their_uids(root: Path) -> None:
    async with pool_coordinator(root, 2) as coordinator:
        pooled = await pool_full(coordinator, 2)
        pids = [int((root / "state" / "sessions" / sid / "agent.pid").read_text()) for sid in pooled]
        assert sorted(os.listdir(root / "uids")) != [".lock"]
    assert session_folders(root) == set()
    assert [name for name in os.listdir(root / "uids") if name.isdigit()] == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
