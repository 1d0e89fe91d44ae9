"""What the coordinator keeps per MCP session (its sandbox key, its log level), reached through public SDK API.

mcp 2.3 keeps per-connection state on a `Connection`, but hands request handlers a `ServerRequestContext`
that reaches it only through private attributes. So the coordinator keeps its own, as the MCP server's
lifespan state (`ctx.lifespan_context`), which each transport enters in its own way:

- `Server.run` (SSE, stdio, the in-process client) enters the lifespan once per connection: `OneConnection`
  is that connection's one MCP session, ended with it.
- The streamable-HTTP session manager enters it once for all its sessions: `StreamableSessions` tells them
  apart by the `mcp-session-id` header, which the SDK has matched to a live session of the same client
  before any handler runs. They end with an HTTP DELETE (the client's, or the coordinator's for an idle
  handshake), or when their sandbox idles out. With `shared_sessions`, what is kept of each is also in its
  `SessionRecord` (see `shared_sessions`), so that another replica serving the session knows it too.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, get_args

from mcp.server.context import ServerRequestContext
from mcp_types import LoggingLevel
from starlette.requests import Request

from codegen_mcp.api.errors import CodegenError, ErrorCode
from codegen_mcp.coordinator.shared_sessions import SessionRecord, SessionRecords

MCP_SESSION_ID_HEADER = "mcp-session-id"

# RFC 5424 severities as MCP names them, least severe first (the order `LoggingLevel` declares them in).
LOG_LEVELS: Final[tuple[LoggingLevel, ...]] = get_args(LoggingLevel)
# Until a client sets a level, it gets every notice the coordinator sends it.
DEFAULT_LOG_LEVEL: Final[LoggingLevel] = LOG_LEVELS[0]


def at_least(level: LoggingLevel, minimum: LoggingLevel) -> bool:
    """Whether a notice at `level` reaches a client that asked for `minimum` and above."""
    return LOG_LEVELS.index(level) >= LOG_LEVELS.index(minimum)


class McpSessions(Protocol):
    """The MCP session a request belongs to, as the coordinator knows it."""

    def key(self, ctx: ServerRequestContext[Any, Any]) -> str:
        """The key of the session's own sandbox (when it names no workspace)."""

    def log_level(self, ctx: ServerRequestContext[Any, Any]) -> LoggingLevel:
        """The least severe log notice the session's client wants."""

    def set_log_level(self, ctx: ServerRequestContext[Any, Any], level: LoggingLevel) -> None: ...


@dataclass(eq=False)
class OneConnection:
    """The one MCP session of a connection `Server.run` serves (SSE, stdio, in-process)."""

    session_key: str = field(default_factory=lambda: "c-" + secrets.token_hex(8))
    level: LoggingLevel = DEFAULT_LOG_LEVEL

    def key(self, ctx: ServerRequestContext[Any, Any]) -> str:
        return self.session_key

    def log_level(self, ctx: ServerRequestContext[Any, Any]) -> LoggingLevel:
        return self.level

    def set_log_level(self, ctx: ServerRequestContext[Any, Any], level: LoggingLevel) -> None:
        self.level = level


class StreamableSessions:
    """All MCP sessions of the streamable-HTTP transport, by their `mcp-session-id`.

    Only the levels clients set are kept (the key is the session id itself), until `forget`; with `records`,
    in the session's record too, which each use of the session keeps from expiring.
    """

    def __init__(self, records: SessionRecords | None = None) -> None:
        self._levels: dict[str, LoggingLevel] = {}
        self._records = records
        self._writes: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._levels)

    def key(self, ctx: ServerRequestContext[Any, Any]) -> str:
        session_id = _session_id(ctx)
        if self._records is not None:
            self._write(self._records.touch(session_id))
        return session_id

    def adopt(self, record: SessionRecord) -> None:
        """This replica serves a session another one opened: its client's level as the record says."""
        if record.log_level is not None:
            self._levels[record.session_id] = record.log_level

    def log_level(self, ctx: ServerRequestContext[Any, Any]) -> LoggingLevel:
        # A 2026-07-28 request has no session (its log level comes with it, and the SDK applies it).
        session_id = _header(ctx)
        return DEFAULT_LOG_LEVEL if session_id is None else self._levels.get(session_id, DEFAULT_LOG_LEVEL)

    def set_log_level(self, ctx: ServerRequestContext[Any, Any], level: LoggingLevel) -> None:
        session_id = _session_id(ctx)
        self._levels[session_id] = level
        if self._records is not None:
            self._write(self._records.set_log_level(session_id, level))

    def forget(self, session_id: str) -> None:
        """The session ended: nothing of it is kept."""
        self._levels.pop(session_id, None)
        if self._records is not None:
            self._write(self._records.forget(session_id))

    def _write(self, write: Coroutine[Any, Any, None]) -> None:
        # Records are written beside the request, never in its way (and never fail it: they do not raise).
        task = asyncio.create_task(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)


def _header(ctx: ServerRequestContext[Any, Any]) -> str | None:
    request = ctx.request
    session_id = request.headers.get(MCP_SESSION_ID_HEADER) if isinstance(request, Request) else None
    return str(session_id) if session_id else None


def _session_id(ctx: ServerRequestContext[Any, Any]) -> str:
    session_id = _header(ctx)
    if session_id is None:
        # The SDK lets only `initialize` through without one; this is a guard, not a path clients take.
        raise CodegenError(
            f"this request carries no `{MCP_SESSION_ID_HEADER}` header; initialize an MCP session first",
            code=ErrorCode.SESSION_REQUIRED,
        )
    return session_id
