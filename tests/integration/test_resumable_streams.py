"""A client whose connection drops mid-call resumes the stream with `Last-Event-ID` and gets the call's result.

Raw HTTP against a real coordinator process (memory store, and the Redis store on a real `redis-server`):
a `run.python` that prints and sleeps is called by POST, the priming event's id is read, the connection is
dropped, and a GET with `Last-Event-ID` and the session id gets the rest of the stream — while the run is still
going, and after it finished.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import pytest

from tests.support.coordinator import CoordinatorProcess, print_log_tail, start_coordinator, state_root, stop_process
from tests.support.redis import redis_server  # noqa: F401  (a fixture)

PROTOCOL = "2025-11-25"
RUN_S = 2.5
CODE = f"import time\nprint('started', flush=True)\ntime.sleep({RUN_S})\nprint('finished')"


@dataclass
class SseEvent:
    id: str | None = None
    data: str = ""
    retry: int | None = None
    fields: list[str] = field(default_factory=list)

    def message(self) -> dict[str, Any] | None:
        return json.loads(self.data) if self.data else None


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """The events of an SSE body, as the HTML standard splits them (a blank line ends one)."""
    event = SseEvent()
    async for line in response.aiter_lines():
        if line == "":
            if event.fields:
                yield event
            event = SseEvent()
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        event.fields.append(name)
        if name == "id":
            event.id = value
        elif name == "data":
            event.data = f"{event.data}\n{value}" if event.data else value
        elif name == "retry":
            event.retry = int(value)


@pytest.fixture(params=["memory", "redis"])
def coordinator(request: pytest.FixtureRequest) -> Iterator[CoordinatorProcess]:
    flags = ["--event-store", "memory", "--stream-retry-ms", "700"]
    if request.param == "redis":
        flags = ["--event-store", "redis", "--redis-url", request.getfixturevalue("redis_server").url]
        flags += ["--stream-retry-ms", "700"]
    for root in state_root():
        state = root / "state"
        state.mkdir()
        cp = start_coordinator(state, *flags)
        try:
            yield cp
        finally:
            stop_process(cp.proc)
            print_log_tail(cp)


class RawSession:
    """An MCP session over raw streamable HTTP: what a client's own transport would send."""

    def __init__(self, http: httpx.AsyncClient, url: str, protocol: str = PROTOCOL) -> None:
        self.http = http
        self.url = url
        self.protocol = protocol
        self.session_id = ""

    def headers(self, **extra: str) -> dict[str, str]:
        base = {"accept": "application/json, text/event-stream", "mcp-protocol-version": self.protocol}
        if self.session_id:
            base["mcp-session-id"] = self.session_id
        return {**base, **extra}

    async def initialize(self) -> None:
        params = {"protocolVersion": self.protocol, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}
        async with self.http.stream("POST", self.url, json=body, headers=self.headers()) as response:
            assert response.status_code == 200, await response.aread()
            self.session_id = response.headers["mcp-session-id"]
            async for event in sse_events(response):
                if (message := event.message()) is not None and message.get("id") == 0:
                    assert message["result"]["protocolVersion"] == self.protocol
                    break
        done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await self.http.post(self.url, json=done, headers=self.headers())).status_code == 202


async def result_after(session: RawSession, last_event_id: str) -> tuple[dict[str, Any], list[SseEvent]]:
    """GET with Last-Event-ID: every event until the call's result, and that result."""
    seen: list[SseEvent] = []
    headers = session.headers(**{"last-event-id": last_event_id, "accept": "text/event-stream"})
    async with session.http.stream("GET", session.url, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in sse_events(response):
            seen.append(event)
            message = event.message()
            if message is not None and message.get("id") == 1:
                return message, seen
    raise AssertionError(f"the resumed stream ended without the result; it sent {seen}")


@pytest.mark.parametrize("resume", ["while the run goes on", "after the run finished"])
async def test_a_dropped_call_resumes_to_its_result(coordinator: CoordinatorProcess, resume: str) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
        session = RawSession(http, f"{coordinator.url}/mcp")
        await session.initialize()
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "run.python", "arguments": {"code": CODE, "wait_s": 60}, "_meta": {"progressToken": 7}},
        }
        async with http.stream("POST", session.url, json=call, headers=session.headers()) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse_events(response)
            priming = await anext(events)
            # The priming event: an id, empty data, and the retry this coordinator was told to send.
            assert priming.id and priming.data == "" and priming.retry == 700
            # Leaving the block closes the connection mid-call (the run sleeps for RUN_S seconds).

        if resume == "after the run finished":
            await asyncio.sleep(RUN_S + 1.5)
        message, seen = await result_after(session, priming.id)

        result = message["result"]
        assert result.get("isError") is not True, result
        run = result["structuredContent"]["run"]
        assert run["exit_code"] == 0 and run["stdout"] == "started\nfinished\n"
        assert all(event.id for event in seen if event.data)  # every replayed or live message can be resumed from
        # What the client had seen (the priming event) is not sent again.
        assert priming.id not in [event.id for event in seen]


async def test_a_made_up_event_id_resumes_nothing(coordinator: CoordinatorProcess) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as http:
        session = RawSession(http, f"{coordinator.url}/mcp")
        await session.initialize()
        headers = session.headers(**{"last-event-id": "0123.MQ.1", "accept": "text/event-stream"})
        async with http.stream("GET", session.url, headers=headers) as response:
            assert response.status_code == 200
            assert [event async for event in sse_events(response)] == []  # the stream closes at once, empty


@pytest.mark.parametrize(
    ("negotiated", "sent", "primed"),
    [
        (PROTOCOL, PROTOCOL, True),
        # A session that negotiated 2025-11-25 can resume whatever version its requests say, or if they say none.
        (PROTOCOL, "2025-03-26", True),
        (PROTOCOL, None, True),
        # An older session's client may not read an event without data: it gets none.
        ("2025-03-26", "2025-03-26", False),
    ],
)
async def test_streams_are_primed_for_sessions_that_negotiated_resumability(
    coordinator: CoordinatorProcess, negotiated: str, sent: str | None, primed: bool
) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
        session = RawSession(http, f"{coordinator.url}/mcp", protocol=negotiated)
        await session.initialize()
        headers = session.headers()
        if sent is None:
            del headers["mcp-protocol-version"]
        else:
            headers["mcp-protocol-version"] = sent
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": "hi"}},
        }
        async with http.stream("POST", session.url, json=call, headers=headers) as response:
            assert response.status_code == 200
            events = [event async for event in sse_events(response)]
        answer = events[-1].message()
        assert answer is not None and answer["result"]["content"][0]["text"] == "hi"
        first = events[0]
        assert (first.data == "" and first.id is not None and first.retry == 700) is primed


async def test_the_conformance_suites_tool_is_not_served_unless_asked_for(coordinator: CoordinatorProcess) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
        session = RawSession(http, f"{coordinator.url}/mcp")
        await session.initialize()
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "test_reconnection"}}
        async with http.stream("POST", session.url, json=call, headers=session.headers()) as response:
            answers = [m for event in [e async for e in sse_events(response)] if (m := event.message()) is not None]
        assert answers[-1]["error"]["message"].startswith("Unknown tool 'test_reconnection'")
