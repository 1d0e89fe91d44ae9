"""Any replica serves any session, on the local backend: two real coordinator processes on one state folder.

The client talks to them through a round-robin proxy (a Service without session affinity), so its requests
alternate between the two from `initialize` on. A run started as a task goes on when the coordinator that owns
its sandbox stops: the other one adopts the running agent, and the client gets the run's result and its files.
With the Redis event store, a call whose connection dropped is resumed through the other replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator
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

TIMEOUT = httpx.Timeout(60.0, read=120.0)
RUN = "import time\nprint('started', flush=True)\ntime.sleep(3)\nprint('finished')"


@contextlib.contextmanager
def two_replicas(*extra: str) -> Iterator[tuple[CoordinatorProcess, CoordinatorProcess]]:
    """Two coordinators with shared sessions on one state folder (and one uid registry)."""
    for root in state_root():
        state = root / "state"
        state.mkdir()
        env = private_uid_registry(root / "uids")
        flags = ["--shared-sessions", "--warm-pool", "0", "--suspend-after", "0", *extra]
        first = start_coordinator(state, *flags, env=env)
        second: CoordinatorProcess | None = None
        try:
            second = start_coordinator(state, *flags, env=env)
            yield first, second
        finally:
            for cp in (first, second):
                if cp is not None:
                    stop_process(cp.proc)
            print_log_tail(first, 120)


@pytest.fixture
def replicas() -> Iterator[tuple[CoordinatorProcess, CoordinatorProcess]]:
    with two_replicas() as both:
        yield both


@pytest.fixture
def replicas_on_redis(redis_server: RedisServer) -> Iterator[tuple[CoordinatorProcess, CoordinatorProcess]]:  # noqa: F811
    with two_replicas("--event-store", "redis", "--redis-url", redis_server.url, "--stream-retry-ms", "300") as both:
        yield both


def owner_of_the_sandbox(state: Path, replicas: tuple[CoordinatorProcess, ...]) -> CoordinatorProcess:
    """The coordinator that started the one sandbox's agent (its parent process)."""
    (record,) = (state / "sessions").glob("*/agent.json")
    pid = int(record.read_text().split('"pid": ')[1].split(",")[0])
    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    (owner,) = [cp for cp in replicas if cp.proc.pid == parent]
    return owner


async def test_a_session_goes_on_on_the_other_replica_when_its_own_stops(
    replicas: tuple[CoordinatorProcess, CoordinatorProcess],
) -> None:
    first, second = replicas
    async with round_robin([first.url, second.url]) as (url, proxy), mcp_session(url, timeout=TIMEOUT) as s:
        await call(s, "fs.write", path="notes.txt", content="kept across replicas")
        started = (await call(s, "run.python", code=RUN, wait_s=0.5)).structured_content
        assert started is not None and started["state"] in ("queued", "running")

        served = {(backend, session) for backend, _, session in proxy.served if session}
        assert {backend for backend, _ in served} == {first.url, second.url}, "both replicas served the session"
        assert len({session for _, session in served}) == 1

        owner = owner_of_the_sandbox(first.state_dir, replicas)
        other = second if owner is first else first
        stop_process(owner.proc)
        assert other.alive()

        began = time.monotonic()
        status = (await call(s, "task.get_status", task_id=started["task_id"])).structured_content
        first_call_ms = (time.monotonic() - began) * 1000
        print(f"first call on the remaining replica after the owner stopped: {first_call_ms:.0f} ms", file=sys.stderr)
        assert status is not None and status["state"] in ("running", "succeeded")

        result = (await call(s, "task.get_result", task_id=started["task_id"], wait_s=30)).structured_content
        assert result is not None and result["state"] == "succeeded"
        assert result["run"]["stdout"] == "started\nfinished\n"
        assert "kept across replicas" in text_of(await call(s, "fs.read", path="notes.txt"))
        assert {backend for backend, _, _ in proxy.served[-3:]} == {other.url}


async def test_a_session_id_no_replica_opened_is_not_found(
    replicas: tuple[CoordinatorProcess, CoordinatorProcess],
) -> None:
    first, _ = replicas
    headers = {"mcp-session-id": "0" * 32, "mcp-protocol-version": "2025-06-18", "accept": "application/json"}
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        response = await http.post(
            f"{first.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=headers
        )
    assert response.status_code == 404


async def test_a_dropped_call_resumes_through_the_other_replica(
    replicas_on_redis: tuple[CoordinatorProcess, CoordinatorProcess],
) -> None:
    first, second = replicas_on_redis
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
