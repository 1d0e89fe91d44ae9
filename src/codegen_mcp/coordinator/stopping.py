"""uvicorn's server, stopping so that the sessions' open GET streams end as complete responses.

On a stop signal, sse-starlette (which the MCP SDK streams with) cancels every open SSE response at once: each
is cut mid-response (an incomplete chunked body, logged by uvicorn as "ASGI callable returned without completing
response"), and a client of a session served by other replicas too sees a broken connection. Here the server
first stops taking connections, then ends the sessions' GET streams itself (their clients open them again, from
their newest event, on another replica), and only then lets sse-starlette end what is left as before.
"""

from __future__ import annotations

import socket

import uvicorn
from sse_starlette.sse import AppStatus

from codegen_mcp.coordinator.event_store import ResumableSessionManager


class StoppingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, sessions: ResumableSessionManager) -> None:
        super().__init__(config)
        self.sessions = sessions
        AppStatus.enable_automatic_graceful_drain = False  # the stop signal no longer cancels streams by itself

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:  # no new request (a GET stream reopened) reaches this process from now on
            server.close()
        await self.sessions.end_streams()
        AppStatus.should_exit = True  # the other SSE responses (the /sse transport's) end as sse-starlette ends them
        try:
            await super().shutdown(sockets)
        finally:  # process-wide: a server started after this one in the same process streams again
            AppStatus.should_exit = False
            AppStatus.enable_automatic_graceful_drain = True
