"""In front of the streamable-HTTP transport: a session's requests carry the protocol version it negotiated.

The SDK decides per request, from its `mcp-protocol-version` header, whether the client can resume a stream:
only from 2025-11-25 on does it open a POST SSE stream with a priming event and `retry`. A client SHOULD send
the version negotiated at `initialize`, but some send an older one on a session that negotiated 2025-11-25 (the
MCP conformance suite's raw requests say 2025-03-26), or none, and then could not resume. The session's
negotiated version is what binds both sides, so requests of a session known to have negotiated a newer version
are passed on with that version in the header. Only handshake-era versions are rewritten, and only upward; in
the SDK's session path the header decides nothing else.

The negotiated version is read from the server's answer to `initialize` (its SSE or JSON body), with the
session id from the answer's headers; the newest sessions are remembered, the oldest forgotten past a bound.
With shared sessions, a session another replica opened is looked up once in its record (`elsewhere`).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Final

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_HEADER: Final = "mcp-session-id"
VERSION_HEADER: Final = "mcp-protocol-version"
MAX_INITIALIZE_BODY: Final = 64 * 1024  # an initialize answer is a few KiB: past this it is not read any further
DEFAULT_REMEMBERED: Final = 10_000


def _negotiated(body: bytes) -> str | None:
    """The protocolVersion of an initialize result in a JSON or SSE body."""
    candidates = [body] + [line[5:] for line in body.splitlines() if line.startswith(b"data:")]
    for candidate in candidates:
        try:
            message: Any = json.loads(candidate)
        except ValueError:
            continue
        version = message.get("result", {}).get("protocolVersion") if isinstance(message, dict) else None
        if isinstance(version, str) and version in HANDSHAKE_PROTOCOL_VERSIONS:
            return version
    return None


class NegotiatedVersion:
    def __init__(
        self,
        app: ASGIApp,
        remembered: int = DEFAULT_REMEMBERED,
        elsewhere: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> None:
        self.app = app
        self.remembered = remembered
        self.versions: OrderedDict[str, str] = OrderedDict()
        self.elsewhere = elsewhere  # the version a session opened by another replica negotiated, if any

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        session_id = headers.get(SESSION_HEADER)
        if session_id is None:
            if scope["method"] == "POST":
                await self.app(scope, receive, self._watch_initialize(send))
            else:
                await self.app(scope, receive, send)
            return
        negotiated = self.versions.get(session_id)
        if negotiated is None and self.elsewhere is not None:
            negotiated = await self.elsewhere(session_id)
            if negotiated is not None:
                self._remember(session_id, negotiated)
        sent = headers.get(VERSION_HEADER)
        if negotiated is not None:
            self.versions.move_to_end(session_id)
        if negotiated is not None and (sent is None or (sent in HANDSHAKE_PROTOCOL_VERSIONS and sent < negotiated)):
            raw = [(k, v) for k, v in scope["headers"] if k.lower() != VERSION_HEADER.encode()]
            scope = {**scope, "headers": [*raw, (VERSION_HEADER.encode(), negotiated.encode())]}
        await self.app(scope, receive, send)

    def _watch_initialize(self, send: Send) -> Send:
        opened: list[str] = []
        body = bytearray()

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                opened.extend(filter(None, [Headers(raw=message["headers"]).get(SESSION_HEADER)]))
            elif message["type"] == "http.response.body" and opened and len(body) < MAX_INITIALIZE_BODY:
                body.extend(message.get("body", b""))
                if (version := _negotiated(bytes(body))) is not None:
                    self._remember(opened[0], version)
                    opened.clear()
            await send(message)

        return watch

    def _remember(self, session_id: str, version: str) -> None:
        self.versions[session_id] = version
        self.versions.move_to_end(session_id)
        while len(self.versions) > self.remembered:
            self.versions.popitem(last=False)
