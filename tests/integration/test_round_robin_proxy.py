"""The test proxy standing in for a Service (`tests/support/round_robin`): a request reaches a live backend while
others are stopped, whatever other requests go through it meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import httpx2 as httpx
import uvicorn
from starlette.types import Receive, Scope, Send

from tests.support.round_robin import round_robin


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@contextlib.asynccontextmanager
async def _live_backend() -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(_ok, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await serving


def _stopped_backend() -> str:
    """The address of a backend that stopped: nothing listens on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_concurrent_requests_all_reach_the_one_live_backend() -> None:
    async with (
        _live_backend() as live,
        round_robin([_stopped_backend(), _stopped_backend(), live]) as (url, proxy),
        httpx.AsyncClient() as http,
    ):
        responses = await asyncio.gather(*(http.get(f"{url}/x") for _ in range(30)))
    assert [r.status_code for r in responses] == [200] * 30
    assert {backend for backend, _, _ in proxy.served} == {live}
