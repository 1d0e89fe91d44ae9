"""A round-robin HTTP proxy on 127.0.0.1 standing in for a Kubernetes Service without session affinity.

Each request goes to the next backend in turn (not each connection: a client's keep-alive connection would give
it affinity); a backend that refuses the connection is skipped, as a Service drops a stopped Pod's endpoint.
Responses are streamed through (SSE included), so a long-lived stream stays on the backend that opened it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx2 as httpx
import uvicorn
from starlette.types import Receive, Scope, Send

_HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"host", b"content-length", b"upgrade"}


@dataclass
class RoundRobin:
    backends: list[str]  # base URLs, e.g. http://127.0.0.1:8765
    served: list[tuple[str, str, str]] = field(default_factory=list)  # (backend, method, mcp-session-id)

    def __post_init__(self) -> None:
        self._turns = itertools.count()  # backends may be added while it serves: each turn takes the next
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(60.0, read=None))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body.extend(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP]
        target = scope["path"] + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
        session = dict(headers).get(b"mcp-session-id", b"").decode()
        backends, turn = list(self.backends), next(self._turns)
        for backend in backends[turn % len(backends) :] + backends[: turn % len(backends)]:
            # Each backend once, from this request's turn on: a request taking turns one by one could, while
            # others take turns meanwhile (the client's GET stream reconnecting), try stopped ones only.
            request = self._http.build_request(scope["method"], backend + target, headers=headers, content=bytes(body))
            try:
                response = await self._http.send(request, stream=True)
            except httpx.ConnectError:
                continue  # a stopped backend: the next one
            self.served.append((backend, scope["method"], session))
            try:
                raw = [(k.encode(), v.encode()) for k, v in response.headers.multi_items()]
                out = [(k, v) for k, v in raw if k.lower() not in _HOP_BY_HOP]
                await send({"type": "http.response.start", "status": response.status_code, "headers": out})
                relay = asyncio.create_task(self._relay(response, send))
                gone = asyncio.create_task(self._disconnect(receive))
                await asyncio.wait({relay, gone}, return_when=asyncio.FIRST_COMPLETED)
                for task in (relay, gone):  # the client left mid-stream: stop reading the backend, as a Service would
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            finally:
                await response.aclose()
            return
        await send({"type": "http.response.start", "status": 502, "headers": []})
        await send({"type": "http.response.body", "body": b"no backend answered"})

    @staticmethod
    async def _relay(response: httpx.Response, send: Send) -> None:
        with contextlib.suppress(httpx.HTTPError):  # the backend went away mid-stream: the stream ends
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _disconnect(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def aclose(self) -> None:
        await self._http.aclose()


@contextlib.asynccontextmanager
async def round_robin(backends: list[str]) -> AsyncIterator[tuple[str, RoundRobin]]:
    """The proxy's base URL and the proxy, serving in this event loop until the block ends."""
    proxy = RoundRobin(backends)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(proxy, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", proxy
    finally:
        server.should_exit = True
        await serving
        await proxy.aclose()
