"""Any replica serves any session, on the local backend: two real coordinator processes on one state folder.

The client talks to them through a round-robin proxy (a Service without session affinity), so its requests
alternate between the two from `initialize` on. A run started as a task goes on when the coordinator that owns
its sandbox stops: the other one adopts the running agent, and the client gets the run's result and its files.
With the Redis event store, a call whose connection dropped is resumed through the other replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.integration.test_resumable_streams import CODE, RawSession, sse_events
from tests.support.coordinator import (
    CoordinatorProcess,
    print_log_tail,
    private_uid_registry,
    start_coordinator,
    state_root,
    stop_process,
)
from tests.support.mcp_client import call, mcp_session, text_of
from tests.support.redis import RedisServer, redis_server  # noqa: F401  (a fixture)
from tests.support.round_robin import round_robin
from tests.support.waiting import eventually

TIMEOUT = httpx.Timeout(60.0, read=120.0)
RUN = "import time\nprint('started', flush=True)\ntime.sleep(3)\nprint('finished')"


@dataclass
class Replicas:
    """Coordinators with shared sessions on one state folder (and one uid registry)."""

    state: Path
    flags: list[str]
    env: dict[str, str]
    started: list[CoordinatorProcess] = field(default_factory=list)

    def start(self) -> CoordinatorProcess:
        cp = start_coordinator(self.state, *self.flags, env=self.env)
        self.started.append(cp)
        return cp


@contextlib.contextmanager
def two_replicas(*extra: str) -> Iterator[Replicas]:
    for root in state_root():
        state = root / "state"
        state.mkdir()
        flags = ["--shared-sessions", "--warm-pool", "0", "--suspend-after", "0", *extra]
        replicas = Replicas(state, flags, private_uid_registry(root / "uids"))
        try:
            replicas.start()
            replicas.start()
            yield replicas
        finally:
            for cp in replicas.started:
                stop_process(cp.proc)
            end_agents_left_running(state)
            if replicas.started:
                print_log_tail(replicas.started[0], 120)


def end_agents_left_running(state: Path) -> None:
    """Kill the agents the stopped replicas left running on the state folder, as shared sessions do by design: a
    session ended on a guest replica runs on its owner until the owner idles it out, and an owner that stops first
    leaves it to the next coordinator's sweep. No coordinator comes after a test's replicas."""
    for record in (state / "sessions").glob("*/agent.json"):
        pid = int(json.loads(record.read_text())["pid"])
        with contextlib.suppress(OSError):
            if b"codegen_mcp.sandbox_agent" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue  # the pid was reused: not that agent
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def replicas() -> Iterator[Replicas]:
    with two_replicas() as started:
        yield started


@pytest.fixture
def replicas_idling_fast() -> Iterator[Replicas]:
    with two_replicas("--idle-timeout", "3") as started:
        yield started


@pytest.fixture
def replicas_on_redis(redis_server: RedisServer) -> Iterator[Replicas]:  # noqa: F811
    with two_replicas("--event-store", "redis", "--redis-url", redis_server.url, "--stream-retry-ms", "300") as both:
        yield both


def agent_pid(state: Path) -> int:
    """The pid of the one sandbox's agent."""
    (record,) = (state / "sessions").glob("*/agent.json")
    return int(json.loads(record.read_text())["pid"])


def owner_of_the_sandbox(state: Path, replicas: list[CoordinatorProcess]) -> CoordinatorProcess:
    """The coordinator that started the one sandbox's agent (its parent process)."""
    parent = int(Path(f"/proc/{agent_pid(state)}/stat").read_text().rsplit(")", 1)[1].split()[1])
    (owner,) = [cp for cp in replicas if cp.proc.pid == parent]
    return owner


@pytest.mark.parametrize("end", ["stopped", "killed"])
async def test_a_session_goes_on_on_the_other_replicas_when_its_own_ends(replicas: Replicas, end: str) -> None:
    first, second = replicas.started
    async with round_robin([first.url, second.url]) as (url, proxy), mcp_session(url, timeout=TIMEOUT) as s:
        await call(s, "fs.write", path="notes.txt", content="kept across replicas")
        started = (await call(s, "run.python", code=RUN, wait_s=0.5)).structured_content
        assert started is not None and started["state"] in ("queued", "running")

        served = {(backend, session) for backend, _, session in proxy.served if session}
        assert {backend for backend, _ in served} == {first.url, second.url}, "both replicas served the session"
        assert len({session for _, session in served}) == 1

        agent = agent_pid(replicas.state)
        owner = owner_of_the_sandbox(replicas.state, replicas.started)
        other = second if owner is first else first
        if end == "stopped":
            stop_process(owner.proc)
        else:
            owner.proc.kill()
            owner.proc.wait()
        assert other.alive()

        # The other replica, which served the session beside the owner, goes on with its agent.
        began = time.monotonic()
        status = (await call(s, "task.get_status", task_id=started["task_id"])).structured_content
        first_call_ms = (time.monotonic() - began) * 1000
        print(f"first call on the remaining replica after the owner {end}: {first_call_ms:.0f} ms", file=sys.stderr)
        assert status is not None and status["state"] in ("running", "succeeded")

        # A replica new to the session takes the sandbox over, with the same agent (it knows the task).
        third = replicas.start()
        proxy.backends.append(third.url)
        stop_process(other.proc)
        began = time.monotonic()
        result = (await call(s, "task.get_result", task_id=started["task_id"], wait_s=30)).structured_content
        print(f"first call on a new replica: {(time.monotonic() - began) * 1000:.0f} ms", file=sys.stderr)
        assert result is not None and result["state"] == "succeeded"
        assert result["run"]["stdout"] == "started\nfinished\n"
        assert "kept across replicas" in text_of(await call(s, "fs.read", path="notes.txt"))
        assert {backend for backend, _, _ in proxy.served[-2:]} == {third.url}
        assert agent_pid(replicas.state) == agent and Path(f"/proc/{agent}").exists()


async def test_a_session_id_no_replica_opened_is_not_found(replicas: Replicas) -> None:
    first = replicas.started[0]
    headers = {"mcp-session-id": "0" * 32, "mcp-protocol-version": "2025-06-18", "accept": "application/json"}
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        response = await http.post(
            f"{first.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=headers
        )
    assert response.status_code == 404


async def test_a_dropped_call_resumes_through_the_other_replica(replicas_on_redis: Replicas) -> None:
    first, second = replicas_on_redis.started
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        session = RawSession(http, f"{first.url}/mcp")
        await session.initialize()
        run = {"name": "run.python", "arguments": {"code": CODE, "wait_s": 60}, "_meta": {"progressToken": 7}}
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": run}
        async with http.stream("POST", session.url, json=call, headers=session.headers()) as response:
            priming = await anext(sse_events(response))
            assert priming.id and priming.retry == 300
        # The connection dropped mid-call; the client comes back through the other replica. It replays what the
        # first one kept in Redis and ends the stream (the call runs elsewhere); the client comes back from its
        # newest event, after `retry`, until the answer is in Redis too.
        session.url = f"{second.url}/mcp"
        last_event_id, resumes, answer = priming.id, 0, None
        while answer is None:
            resumes += 1
            headers = session.headers(**{"last-event-id": last_event_id, "accept": "text/event-stream"})
            async with http.stream("GET", session.url, headers=headers) as resumed:
                assert resumed.status_code == 200, await resumed.aread()
                async for event in sse_events(resumed):
                    last_event_id = event.id or last_event_id
                    message = event.message()
                    if message is not None and message.get("id") == 1:
                        answer = message
            if answer is None:
                await asyncio.sleep(0.3)
            assert resumes < 100, "the answer never reached the other replica"
    assert resumes >= 2  # the run was still going when the client first came back
    assert answer["result"]["structuredContent"]["run"]["stdout"] == "started\nfinished\n"
    assert first.alive() and second.alive()


async def test_first_calls_on_both_replicas_at_once_share_one_sandbox(replicas: Replicas) -> None:
    first, second = replicas.started
    async with round_robin([first.url, second.url]) as (url, proxy), mcp_session(url, timeout=TIMEOUT) as s:
        await s.list_tools()
        calls_before = len(proxy.served)
        # Two first calls at once, one to each replica: each starts a sandbox, one of them serves the session.
        await asyncio.gather(*(call(s, "fs.write", path=f"from-{n}.txt", content=str(n)) for n in range(2)))
        assert {backend for backend, _, _ in proxy.served[calls_before:]} == {first.url, second.url}
        listing = text_of(await call(s, "fs.list", path="."))
        assert "from-0.txt" in listing and "from-1.txt" in listing
    serving = list((replicas.state / "sessions").glob("*/session"))
    assert len(serving) <= 1  # the session's one sandbox (gone if the session ended already)


async def test_a_sandbox_its_owner_left_and_nobody_uses_is_ended_by_another_coordinator(
    replicas_idling_fast: Replicas,
) -> None:
    first, second = replicas_idling_fast.started
    state = replicas_idling_fast.state
    async with mcp_session(first.url, timeout=TIMEOUT) as s:
        await call(s, "fs.write", path="left.txt", content="behind")
        agent = agent_pid(state)
        first.proc.kill()  # no goodbye: its agent runs on, and its session's client is gone too
        first.proc.wait()
        assert Path(f"/proc/{agent}").exists()
        (folder,) = [p.parent for p in (state / "sessions").glob("*/agent.json")]
        # Idle for the idle timeout (3 s), with nobody to serve it: the other coordinator sweeps it.
        await eventually(lambda: not folder.exists(), timeout=20, what="the orphaned sandbox's folder to go")
        await eventually(lambda: not Path(f"/proc/{agent}").exists(), timeout=5, what="its agent to end")
        assert second.alive()
        assert not list((state / "session-keys").iterdir())


async def test_a_call_on_the_other_replica_streams_as_the_session_negotiated(replicas_on_redis: Replicas) -> None:
    first, second = replicas_on_redis.started
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        session = RawSession(http, f"{first.url}/mcp")  # negotiates 2025-11-25: resumable streams
        await session.initialize()
        session.url = f"{second.url}/mcp"
        # A client that sends an older version header on the session (as the conformance suite's raw requests do)
        # still gets a resumable stream from a replica that did not answer its `initialize`.
        headers = session.headers(**{"mcp-protocol-version": "2025-03-26"})
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "fs.list", "arguments": {}}}
        async with http.stream("POST", session.url, json=call, headers=headers) as response:
            assert response.status_code == 200
            events = [event async for event in sse_events(response)]
    priming = events[0]
    assert priming.data == "" and priming.id and priming.retry == 300
    answer = events[-1].message()
    assert answer is not None and answer["id"] == 1 and "result" in answer
