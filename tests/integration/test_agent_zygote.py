"""Local agents forked by the agent zygote, with real processes: each is one session's own agent (its own pid,
settings, uid and cgroup, nothing writable shared), it waits for its cgroup before serving, its end is
noticed, and a killed zygote is replaced while the next session is served by a directly started agent."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from codegen_mcp.coordinator.backends.agent_zygote import AgentZygote
from codegen_mcp.coordinator.backends.local import _kill_leftover_agent
from codegen_mcp.coordinator.settings import LocalBackendSettings
from tests.integration import test_warm_pool
from tests.integration.test_warm_pool import backend_of
from tests.support.mcp_client import call, in_process_coordinator, in_process_session, run
from tests.support.waiting import eventually

pytestmark = [pytest.mark.timeout(240), pytest.mark.asyncio]
root = test_warm_pool.root  # the fixture: a state root with a private uid registry


@pytest.fixture
async def zygote(root: Path) -> AsyncIterator[AgentZygote]:
    """A zygote of our own (no coordinator), and the folder `root/agent` with a workspace for its agents."""
    (root / "agent" / "workspace").mkdir(parents=True)
    zygote = AgentZygote(root / "zygote.log", dict(os.environ), [])
    await zygote.start()
    try:
        yield zygote
    finally:
        await zygote.aclose_all()


def coordinator_with(root: Path, *, zygote: bool) -> Any:
    return in_process_coordinator(root / "state", local=LocalBackendSettings(warm_pool=0, zygote=zygote))


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def agent_of(root: Path, folder: str) -> int:
    return int((root / "state" / "sessions" / folder / "agent.pid").read_text())


async def folder_of(root: Path, s: Any) -> str:
    mark = f"mark-{os.urandom(4).hex()}"
    await call(s, "fs.write", path=mark, content="")
    sessions = root / "state" / "sessions"
    [folder] = [p.name for p in sessions.iterdir() if (p / "workspace" / mark).exists()]
    return folder


def writable_shared_mappings(pid: int) -> list[str]:
    return [line for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if line.split()[1][1:4] == "w-s"]


def open_paths(pid: int) -> list[str]:
    paths = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            paths.append(os.readlink(fd))
        except OSError:
            continue
    return paths


async def test_two_forked_agents_are_separate_processes_with_their_own_settings_uid_and_cgroup(root: Path) -> None:
    async with coordinator_with(root, zygote=True) as coordinator:
        backend = backend_of(coordinator)
        assert backend.zygote is not None and backend.zygote.pid is not None
        async with in_process_session(coordinator) as a, in_process_session(coordinator) as b:
            uid_a = (await run(a, "import os; print(os.getuid())"))["run"]["stdout"]
            uid_b = (await run(b, "import os; print(os.getuid())"))["run"]["stdout"]
            folder_a, folder_b = await folder_of(root, a), await folder_of(root, b)
            pid_a, pid_b = agent_of(root, folder_a), agent_of(root, folder_b)
            assert pid_a != pid_b and uid_a != uid_b
            for pid, folder, other in ((pid_a, folder_a, folder_b), (pid_b, folder_b, folder_a)):
                assert status_field(pid, "PPid") == str(backend.zygote.pid), "the agent is not the zygote's fork"
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                assert str(root / "state" / "sessions" / folder / "agent.sock").encode() in cmdline
                assert os.readlink(f"/proc/{pid}/cwd") == str(root / "state" / "sessions" / folder)
                if backend._cgroups.found:
                    assert pid in backend._cgroups.pids(folder)
                assert writable_shared_mappings(pid) == []
                assert not [p for p in open_paths(pid) if other in p], "an agent holds a file of the other session"


async def test_a_forked_agent_waits_for_its_go_before_it_serves(root: Path, zygote: AgentZygote) -> None:
    folder = root / "agent"
    env = {**os.environ, "CODEGEN_AGENT_WORKSPACE": str(folder / "workspace"), "CODEGEN_AGENT_TOKEN": "t"}
    agent = await zygote.fork(
        env=env, argv=["--unix-socket", str(folder / "a.sock")], log_path=folder / "agent.log", cwd=folder
    )
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(2):
            await agent.stdout.readline()
    assert not (folder / "a.sock").exists()
    agent.go()
    async with asyncio.timeout(30):
        line = await agent.stdout.readline()
    assert line.decode().startswith(f"LISTENING unix:{folder / 'a.sock'}")
    agent.terminate()
    async with asyncio.timeout(10):
        await agent.wait()
    assert agent.returncode is not None


async def test_a_forked_agent_asks_nothing_its_zygote_asked_before_forking(root: Path, zygote: AgentZygote) -> None:
    # The zygote asked the base interpreter once (where it lives, its version): its agent starts none for it.
    folder = root / "agent"
    env = {**os.environ, "CODEGEN_AGENT_WORKSPACE": str(folder / "workspace"), "CODEGEN_AGENT_TOKEN": "t"}
    agent = await zygote.fork(
        env=env, argv=["--unix-socket", str(folder / "a.sock")], log_path=folder / "agent.log", cwd=folder
    )
    agent.go()
    async with asyncio.timeout(30):
        assert (await agent.stdout.readline()).startswith(b"LISTENING ")
    await eventually(lambda: (folder / "workspace" / ".venv" / "pyvenv.cfg").exists(), timeout=60, what="the venv")
    agent.terminate()
    async with asyncio.timeout(10):
        await agent.wait()
    log = (folder / "agent.log").read_text()
    assert "sandbox agent ready" in log and "base interpreter" not in log, log
    assert "Unknown child process" not in (root / "zygote.log").read_text()


async def test_a_forked_agent_refuses_unknown_settings_like_a_started_one(root: Path, zygote: AgentZygote) -> None:
    folder = root / "agent"
    env = {"CODEGEN_AGENT_WORKSPACE": str(folder / "workspace"), "CODEGEN_AGENT_WORKSPAEC": "typo"}
    agent = await zygote.fork(env=env, argv=[], log_path=folder / "agent.log", cwd=folder)
    agent.go()
    async with asyncio.timeout(30):
        assert await agent.stdout.read() == b""
        await agent.wait()
    assert "CODEGEN_AGENT_WORKSPAEC" in (folder / "agent.log").read_text()


async def test_a_killed_zygote_is_replaced_and_the_next_session_is_served_meanwhile(root: Path) -> None:
    async with coordinator_with(root, zygote=True) as coordinator:
        zygote = backend_of(coordinator).zygote
        assert zygote is not None and zygote.pid is not None
        os.kill(zygote.pid, signal.SIGKILL)
        await eventually(lambda: zygote.pid is None, timeout=10, what="the zygote to be seen dead")
        async with in_process_session(coordinator) as s:
            assert (await run(s, "print(6 * 7)"))["run"]["stdout"] == "42\n"
        await eventually(lambda: zygote.pid is not None and zygote.starts == 2, timeout=60, what="a new zygote")
        async with in_process_session(coordinator) as s:
            folder = await folder_of(root, s)
            assert status_field(agent_of(root, folder), "PPid") == str(zygote.pid)


async def test_without_the_zygote_agents_are_the_coordinators_children(root: Path) -> None:
    async with coordinator_with(root, zygote=False) as coordinator:
        assert backend_of(coordinator).zygote is None
        async with in_process_session(coordinator) as s:
            folder = await folder_of(root, s)
            ppid = status_field(agent_of(root, folder), "PPid")
            # Behind setpriv, which execs the agent in place: the agent's parent is this process.
            assert ppid == str(os.getpid())


async def test_the_leftover_agent_sweep_knows_a_forked_agent_by_its_folder(root: Path, zygote: AgentZygote) -> None:
    folder = root / "agent"
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    env = {"CODEGEN_AGENT_WORKSPACE": str(folder / "workspace"), "CODEGEN_AGENT_TOKEN": "t"}
    argv = ["--port", "0"]
    mine = await zygote.fork(env=env, argv=argv, log_path=folder / "agent.log", cwd=folder)
    other = await zygote.fork(env=env, argv=argv, log_path=elsewhere / "agent.log", cwd=elsewhere)
    for agent in (mine, other):
        agent.go()
        async with asyncio.timeout(30):
            assert (await agent.stdout.readline()).startswith(b"LISTENING ")
    try:
        # A pid file naming a process of another folder (a reused pid) is not followed.
        (folder / "agent.pid").write_text(f"{other.pid}\n")
        _kill_leftover_agent(folder)
        (folder / "agent.pid").write_text(f"{mine.pid}\n")
        _kill_leftover_agent(folder)
        async with asyncio.timeout(10):
            await mine.wait()
        assert other.returncode is None
    finally:
        other.kill()
        await other.wait()
