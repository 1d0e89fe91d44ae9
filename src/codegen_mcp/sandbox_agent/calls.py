"""Each request to the agent is handled as part of the coordinator's call: under its call id and session (so
the agent's log lines, also those of tasks the request starts, name them) and in a span child of the
coordinator's, when tracing is on. Outermost of the agent's middlewares, so refused requests count too."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from codegen_mcp.api.call_id import current_call_id
from codegen_mcp.api.propagation import incoming

log = logging.getLogger(__name__)


@web.middleware
async def call_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "(no route)"
    started = time.monotonic()
    attributes = {"http.request.method": request.method, "http.route": route}
    with incoming(request.headers, f"{request.method} {route}", attributes) as span:
        response = await handler(request)
        span.set("codegen.call_id", current_call_id())  # a request about a task may have joined its call
        span.set("http.response.status_code", response.status)
        if response.status >= 500:
            span.failed(f"HTTP {response.status}")
        log.debug(
            "%s %s answered %d in %.3f s", request.method, request.path, response.status, time.monotonic() - started
        )
        return response
