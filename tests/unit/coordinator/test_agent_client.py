"""The agent client's deadlines, against real loopback sockets."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import aiohttp
import pytest

from codegen_mcp.coordinator.agent_client import AgentClient, AgentEndpoint, AgentUnreachable
from codegen_mcp.coordinator.settings import DEFAULT_AGENT_CONNECT_TIMEOUT_S, CoordinatorSettings


@pytest.fixture
def black_hole() -> Iterator[tuple[str, int]]:
    """A loopback address whose connects hang, like a replaced Pod's IP that drops packets.

    A listening socket that never accepts and whose accept queue is full: Linux drops the SYNs of further
    connects (they are not refused), so only a connect timeout ends them.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers: list[socket.socket] = []
    try:
        while True:
            assert len(fillers) < 16, "the accept queue never filled up"
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(address)
            fillers.append(filler)
            # A loopback connect with room in the queue completes at once; one still pending is dropped.
            _, writable, _ = select.select([], [filler], [], 0.5)
            if not writable:
                break
        yield address
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_the_default_connect_timeout_is_short_and_a_setting() -> None:
    assert DEFAULT_AGENT_CONNECT_TIMEOUT_S <= 2.0
    assert CoordinatorSettings().agent_connect_timeout_s == DEFAULT_AGENT_CONNECT_TIMEOUT_S
    assert CoordinatorSettings(agent_connect_timeout_s=0.5).agent_connect_timeout_s == 0.5


async def test_an_endpoint_that_never_answers_a_connect_is_unreachable_after_the_connect_timeout(
    black_hole: tuple[str, int],
) -> None:
    host, port = black_hole
    total_s = 20.0
    client = AgentClient(AgentEndpoint(f"http://{host}:{port}", "token"), request_timeout_s=total_s)
    started = time.monotonic()
    try:
        with pytest.raises(AgentUnreachable, match="not reachable") as info:
            await client.request("GET", "/healthz")
    finally:
        await client.aclose()
    elapsed = time.monotonic() - started
    # It failed on the connect deadline (the endpoint really hung: no refusal), long before the total one.
    assert isinstance(info.value.__cause__, aiohttp.ConnectionTimeoutError)
    assert DEFAULT_AGENT_CONNECT_TIMEOUT_S - 0.1 <= elapsed < DEFAULT_AGENT_CONNECT_TIMEOUT_S + 2.0 < total_s


async def test_the_connect_timeout_is_separate_from_the_total(black_hole: tuple[str, int]) -> None:
    host, port = black_hole
    client = AgentClient(AgentEndpoint(f"http://{host}:{port}", "token"), request_timeout_s=20, connect_timeout_s=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(AgentUnreachable):
            await client.request("POST", "/v1/run", body={}, extra_wait_s=60)
    finally:
        await client.aclose()
    assert time.monotonic() - started < 2.0
