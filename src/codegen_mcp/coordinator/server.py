"""The MCP server: `create_server` (the protocol side) and `create_app` (HTTP: /mcp, /sse, /healthz).

State shared by all connections (backend, sessions, audit log) lives in a `Coordinator` owned by the app's
lifespan — not in the MCP server's lifespan, which the SSE transport enters once per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import re
import time
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import LoggingLevel
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from codegen_mcp import __version__
from codegen_mcp.api.errors import CodegenError, ErrorCode, SandboxUnavailable
from codegen_mcp.api.logs import bind_session
from codegen_mcp.api.tools import TOOLS_BY_NAME
from codegen_mcp.coordinator import conformance_tools, mcp_tasks, tools, tracing
from codegen_mcp.coordinator.agent_client import AgentUnreachable
from codegen_mcp.coordinator.audit import AuditEvent, create_audit_log
from codegen_mcp.coordinator.backends import Backend, create_backend
from codegen_mcp.coordinator.backends.base import NAMED_WORKSPACE_PREFIX
from codegen_mcp.coordinator.event_store import ResumableSessionManager, create_event_log
from codegen_mcp.coordinator.mcp_sessions import (
    MCP_SESSION_ID_HEADER,
    McpSessions,
    OneConnection,
    StreamableSessions,
    at_least,
)
from codegen_mcp.coordinator.metrics import Metrics
from codegen_mcp.coordinator.negotiated_version import NegotiatedVersion
from codegen_mcp.coordinator.sessions import Handshakes, SessionManager
from codegen_mcp.coordinator.settings import CoordinatorSettings
from codegen_mcp.coordinator.shared_sessions import create_session_records

log = logging.getLogger(__name__)

SERVER_NAME = "codegen-mcp"
# How long a tool result may wait for its audit event to be stored (written, or committed by PostgreSQL).
AUDIT_WAIT_S = 1.0
INSTRUCTIONS = (
    "Each MCP session gets its own isolated Python workspace. Write files with fs.write, run code with "
    "run.python (it runs in the workspace folder, in the session's own virtualenv), install packages with "
    "pkg.install. Run the workspace's tests with test.run and check code with lint.check; git.clone and "
    "git.commit manage repositories; artifact.list/get/upload reach files runs produced. Long runs return a "
    "task_id: fetch the outcome with task.get_result."
)


WORKSPACE_HEADER = "Codegen-Workspace"
_WORKSPACE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def named_workspace_key(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """`ws-<principal>-<name>` when the HTTP request names a workspace, else None."""
    request = ctx.request
    headers = getattr(request, "headers", None)
    if headers is None:
        return None
    name = headers.get(WORKSPACE_HEADER)
    if name is None:
        return None
    if not _WORKSPACE_NAME.match(name):
        raise CodegenError(
            f"the `{WORKSPACE_HEADER}` header must be 1-63 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    # Scope names by bearer token, so one client cannot resume another's workspace by guessing its name.
    return f"{NAMED_WORKSPACE_PREFIX}{principal(headers.get('authorization'))}-{name}"


def principal(authorization: str | None) -> str:
    """Who a request speaks for, as far as the coordinator knows: a short digest of its bearer token."""
    return hashlib.sha256((authorization or "").encode()).hexdigest()[:8]


def client_of(scope: Scope) -> str:
    """One client, for the bounds on handshakes: its remote address and its bearer token."""
    address = (scope.get("client") or ("-", 0))[0]
    return f"{address}/{principal(Headers(scope=scope).get('authorization'))}"


# The SSE transport's `endpoint` event: where the client posts its messages, with the connection's id.
_SSE_ENDPOINT_SESSION = re.compile(rb"event: endpoint\r?\ndata: [^\r\n]*[?&]session_id=([0-9a-f]+)")


def handshake_id(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """The id under which the MCP session of this request is tracked as a handshake (HTTP or SSE)."""
    request = ctx.request
    if not isinstance(request, Request):
        return None  # stdio: one session, no handshakes
    return request.headers.get(MCP_SESSION_ID_HEADER) or request.query_params.get("session_id")


class Coordinator:
    """Everything one coordinator process shares across MCP connections."""

    def __init__(self, settings: CoordinatorSettings, backend: Backend | None = None) -> None:
        self.settings = settings
        self.backend = backend or create_backend(settings)
        self.records = create_session_records(settings)  # shared_sessions: where any replica finds each session
        self.streamable = StreamableSessions(self.records)
        self.handshakes = Handshakes(
            per_client=settings.max_handshakes_per_client,
            total=settings.max_handshakes,
            idle_timeout_s=settings.handshake_idle_timeout_s,
            records=self.records,  # shared_sessions: one whose calls another replica serves is not ended here
        )
        self.metrics = Metrics(
            sessions=lambda: len(self.sessions), handshakes=self.handshakes, warm_pool=self.backend.warm_pool_size
        )
        self.sessions = SessionManager(
            self.backend,
            idle_timeout_s=settings.session_idle_timeout_s,
            suspend_after_s=settings.suspend_after_s,
            max_sessions=settings.max_sessions,
            # A streamable-HTTP session's key is its id: once its sandbox idled out, the SDK has let it go too.
            on_close=self.streamable.forget,
            on_started=self.metrics.sandbox_started,
        )
        self.audit = create_audit_log(settings, registry=self.metrics.registry)
        self._closing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await asyncio.to_thread(self.audit.open)  # may connect to a database
        await self.backend.start()
        self.sessions.start()
        self.handshakes.start()
        log.info("codegen-mcp %s ready: %s; audit to %s", __version__, self.backend.describe(), self.audit.describe())

    async def aclose(self) -> None:
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        await self.handshakes.aclose()
        await self.sessions.aclose()
        await self.backend.aclose()
        await asyncio.to_thread(self.audit.close)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Coordinator]:
        await self.start()
        try:
            yield self
        finally:
            await self.aclose()

    def problems(self) -> dict[str, str]:
        """What works less well than it should, by part (for /healthz); empty when all is well."""
        problems: dict[str, str] = {}
        if self.audit.problem is not None:
            problems["audit"] = self.audit.problem
        return problems

    # -- MCP sessions ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def one_connection(self, server: Server[McpSessions]) -> AsyncIterator[McpSessions]:
        """The MCP server's lifespan where `Server.run` enters it once per connection: its one session."""
        session = OneConnection()
        try:
            yield session
        finally:
            self._close_in_background(session.session_key)

    @contextlib.asynccontextmanager
    async def streamable_sessions(self, server: Server[McpSessions]) -> AsyncIterator[McpSessions]:
        """The MCP server's lifespan where the streamable-HTTP manager enters it, once for all its sessions."""
        yield self.streamable

    def streamable_session_ended(self, session_id: str) -> None:
        """A streamable-HTTP session was DELETEd: its sandbox ends too."""
        self.streamable.forget(session_id)
        self._close_in_background(session_id)

    def session_key(self, ctx: ServerRequestContext[McpSessions, Any]) -> str:
        """The key of the sandbox this request uses.

        By default one per MCP session, closed when the session ends. A client may instead name a workspace
        with the `Codegen-Workspace` HTTP header: it then outlives MCP sessions (and coordinator restarts)
        until it idles out, and any later session sending the same name (and bearer token) resumes it.
        """
        named = named_workspace_key(ctx)
        if named is not None:
            return named
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            raise CodegenError(
                f"protocol version {ctx.protocol_version} has no sessions, so name your workspace with a "
                f"`{WORKSPACE_HEADER}` header or connect with version {HANDSHAKE_PROTOCOL_VERSIONS[-1]}",
                code=ErrorCode.SESSION_REQUIRED,
            )
        return ctx.lifespan_context.key(ctx)

    def _close_in_background(self, key: str) -> None:
        # Connection teardown must not wait for a sandbox to stop.
        task = asyncio.create_task(self.sessions.close(key), name=f"close-{key}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def notify(
        self, ctx: ServerRequestContext[McpSessions, Any], level: LoggingLevel, message: str, logger: str = SERVER_NAME
    ) -> None:
        """Tell the client of this request what happens to its session, at or above the level it set.

        Rides the request's own stream. On 2026-07-28 connections the SDK also drops notices the request
        did not opt in to, as that version's spec asks.
        """
        if not at_least(level, ctx.lifespan_context.log_level(ctx)):
            return
        with warnings.catch_warnings():
            # `send_log_message` is deprecated upstream (SEP-2577) with the rest of the logging capability.
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            sending = ctx.session.send_log_message(level, message, logger=logger, related_request_id=ctx.request_id)
        try:
            await sending
        except Exception as exc:  # a notice is advisory: a closed stream must not fail the call
            log.debug("log notice to the client not sent: %s", exc)

    # -- MCP handlers ----------------------------------------------------------------------------

    async def list_tools(
        self, ctx: ServerRequestContext[McpSessions, Any], params: types.PaginatedRequestParams
    ) -> dict[str, Any]:
        return tools.list_tools_result()

    async def call_tool(
        self, ctx: ServerRequestContext[McpSessions, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        """One tool call under a call id of its own: its log lines, audit event, agent requests and span."""
        with tracing.tool_call(params.name) as call:
            result = await self._call_tool(ctx, params)
            call.answered(result.is_error)
            return result

    async def _call_tool(
        self, ctx: ServerRequestContext[McpSessions, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        if params.name not in TOOLS_BY_NAME:
            # An unknown tool is a protocol error (JSON-RPC -32602), not a tool result, per the MCP spec.
            raise MCPError(
                code=types.INVALID_PARAMS,
                message=f"Unknown tool {params.name!r}; the tools are: {', '.join(TOOLS_BY_NAME)}",
            )
        started = time.monotonic()
        arguments = dict(params.arguments or {})
        key = "-"
        sandbox_id: str | None = None
        outcome, code = "ok", None
        try:
            spec = TOOLS_BY_NAME[params.name]
            args = tools.parse_arguments(spec, arguments)
            key = self.session_key(ctx)
            bind_session(key)

            async def progress(done: float, total: float | None, message: str) -> None:
                await ctx.session.report_progress(done, total, message)

            async def notice(level: LoggingLevel, message: str) -> None:
                await self.notify(ctx, level, message)

            async def output(stream: str, text: str) -> None:
                # A run's live output: log messages at info from logger "stdout" / "stderr".
                await self.notify(ctx, "info", text, logger=stream)

            async def waiting(message: str) -> None:
                # Progress 0, before the call's own (its elapsed seconds, from later on): it stays increasing.
                try:
                    await ctx.session.report_progress(0, None, message)
                except Exception as exc:  # advisory, like a notice
                    log.debug("progress to the client not sent: %s", exc)

            handshake = handshake_id(ctx)
            for attempt in (1, 2):
                sent = False
                try:
                    # A first call may wait long for its sandbox: its session is not idle meanwhile.
                    with self.handshakes.serving(handshake):
                        async with self.sessions.use(key, notice, waiting) as sandbox:
                            sandbox_id = sandbox.sandbox_id
                            self.handshakes.promote(handshake)
                            sent = True
                            result = await tools.call_tool(
                                spec,
                                args,
                                sandbox.client,
                                progress=progress,
                                progress_interval_s=self.settings.progress_interval_s,
                                output=output,
                            )
                    break
                except AgentUnreachable:
                    # The request never reached the agent (e.g. its Pod was recreated elsewhere): reconnect
                    # to the session's sandbox and send it once more.
                    if attempt == 2:
                        raise
                    log.info("sandbox of session %s unreachable; reconnecting", key)
                    await notice("warning", "your sandbox did not answer; reconnecting and sending the call again")
                except SandboxUnavailable:
                    # The sandbox stopped under the call (say, a keep-alive connection to an agent that just
                    # died). A read-only call changes nothing, so it is sent once more to the revived sandbox;
                    # any other call reports it, since it may have had an effect.
                    if attempt == 2 or not sent or not spec.read_only:
                        raise
                    log.info("sandbox of session %s stopped during a read-only call; sending it again", key)
                    await notice("warning", "your sandbox stopped during this call; restarting it and sending it again")
            if result.is_error:
                outcome = "error"
            return result
        except CodegenError as exc:
            outcome, code = "error", exc.code.value
            return tools.error_result(exc.message)
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception:
            outcome, code = "error", ErrorCode.INTERNAL.value
            log.exception("tool %s failed unexpectedly", params.name)
            message = "the server hit an internal error running this tool; it was logged"
            await self.notify(ctx, "error", f"{params.name}: {message}")
            return tools.error_result(message)
        finally:
            self.metrics.observe_call(params.name, outcome, time.monotonic() - started)
            recorded = self.audit.record(
                AuditEvent.of_call(
                    session=key,
                    sandbox=sandbox_id,
                    tool=params.name,
                    arguments=arguments,
                    outcome=outcome,
                    duration_s=time.monotonic() - started,
                    error_code=code,
                )
            )
            if outcome != "cancelled":
                # The event is stored before the result leaves, unless the sink is slow or down: the call
                # answers anyway, the event stays buffered and retried, and the audit log reports it.
                await self.audit.written_within(recorded, AUDIT_WAIT_S)

    async def discover(
        self, ctx: ServerRequestContext[McpSessions, Any], params: types.RequestParams
    ) -> types.DiscoverResult:
        # Advertise only session-based (handshake) versions: auto-negotiating clients then fall back to
        # `initialize`, which gives the MCP session a sandbox is bound to.
        return types.DiscoverResult(
            supported_versions=list(HANDSHAKE_PROTOCOL_VERSIONS),
            capabilities=server_capabilities(ctx),
            instructions=INSTRUCTIONS,
        )

    async def set_logging_level(
        self, ctx: ServerRequestContext[McpSessions, Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        """`logging/setLevel`: this session's client gets log notices at `params.level` and above only."""
        ctx.lifespan_context.set_log_level(ctx, params.level)
        return types.EmptyResult()


def server_capabilities(ctx: ServerRequestContext[Any, Any]) -> types.ServerCapabilities:
    return types.ServerCapabilities(
        tools=types.ToolsCapability(list_changed=False), extensions=mcp_tasks.advertised(ctx.protocol_version)
    )


Lifespan = Callable[[Server[McpSessions]], AbstractAsyncContextManager[McpSessions]]


def create_server(coordinator: Coordinator, lifespan: Lifespan | None = None) -> Server[McpSessions]:
    """The MCP protocol side: tools/list and tools/call backed by `coordinator`.

    `lifespan` is where the server's handlers find the MCP session of a request (see `mcp_sessions`): by
    default one per connection, as `Server.run` enters it (SSE, stdio, in-process clients).
    """
    with warnings.catch_warnings():
        # `logging/setLevel` is deprecated upstream (SEP-2577) but clients and the conformance suite still use it.
        warnings.simplefilter("ignore")
        server: Server[McpSessions] = Server(
            SERVER_NAME,
            version=__version__,
            title="CodeGen-MCP",
            instructions=INSTRUCTIONS,
            lifespan=lifespan or coordinator.one_connection,
            on_call_tool=coordinator.call_tool,
            on_set_logging_level=coordinator.set_logging_level,
        )
    server.add_request_handler("server/discover", types.RequestParams, coordinator.discover)
    # Registered here, not as `on_list_tools`: its result is the wire form, built once (tools.list_tools_result).
    server.add_request_handler("tools/list", types.PaginatedRequestParams, coordinator.list_tools)
    mcp_tasks.install(server, mcp_tasks.McpTasks(coordinator))
    return server


def transport_security(settings: CoordinatorSettings) -> TransportSecuritySettings:
    hosts = [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "127.0.0.1:*",
        "localhost:*",
        "[::1]:*",
        *settings.allowed_hosts,
    ]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*", *settings.allowed_origins]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


class HandshakeTracker:
    """In front of the streamable-HTTP transport: tells `Handshakes` of the MCP sessions it opens and ends.

    A request without a session id may open one (an `initialize`): its client's oldest handshakes beyond
    the bound are ended first. Ending one is what a client does to end its session: an HTTP DELETE. Every
    session ended so, by its client or by this tracker, is reported to `ended` (its id).
    """

    def __init__(self, app: ASGIApp, handshakes: Handshakes, ended: Callable[[str], None]) -> None:
        self.app = app
        self.handshakes = handshakes
        self.ended = ended

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        session_id = headers.get(MCP_SESSION_ID_HEADER)
        method = scope["method"]
        if session_id is not None:
            if method == "POST":
                with self.handshakes.serving(session_id):
                    await self.app(scope, receive, send)
                return
            self.handshakes.seen(session_id)  # a GET stream held open is no activity: it does not count as busy
            if method != "DELETE":
                await self.app(scope, receive, send)
                return
            status = await _status_of(self.app, scope, receive, send)
            self.handshakes.forget(session_id)
            if status is not None and status < 400:
                self.ended(session_id)
            return
        version = headers.get("mcp-protocol-version")
        if method != "POST" or (version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS):
            await self.app(scope, receive, send)  # nothing that opens a session
            return
        client = client_of(scope)
        await self.handshakes.make_room(client)

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                opened = Headers(raw=message["headers"]).get(MCP_SESSION_ID_HEADER)
                if opened is not None:
                    self.handshakes.opened(opened, client, functools.partial(self.end_session, opened))
            await send(message)

        await self.app(scope, receive, watch)

    async def end_session(self, session_id: str) -> None:
        """End an MCP session as its client would: DELETE it."""
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "DELETE",
            "scheme": "http",
            "path": "/mcp",
            "raw_path": b"/mcp",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (MCP_SESSION_ID_HEADER.encode(), session_id.encode())],
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 0),
        }

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            pass

        status = await _status_of(self.app, scope, receive, send)
        if status not in (200, 404):  # 404: it had ended already
            log.warning("ending MCP session %s answered HTTP %s", session_id, status)
        self.ended(session_id)


async def _status_of(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> int | None:
    """Serve one request with `app`; the HTTP status it answered (None if it sent no response)."""
    status: int | None = None

    async def watch(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    await app(scope, receive, watch)
    return status


class ExplainTooLarge:
    """Turns the transport's bare 413 into a JSON-RPC error naming the limit, which MCP clients show.

    The SDK refuses a request body over `MAX_REQUEST_BYTES` before parsing it; its plain-text answer reaches
    a user as "Server returned an error response".
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def explain(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 413:
                replaced = True
                await self._too_large(Headers(scope=scope).get("content-length"), send)
            elif not replaced:
                await send(message)

        await self.app(scope, receive, explain)

    @staticmethod
    async def _too_large(declared: str | None, send: Send) -> None:
        size = f" is {declared} bytes" if declared and declared.isdigit() else " is too big"
        limit = tools.MAX_REQUEST_BYTES
        message = (
            f"This request{size}; the server accepts requests up to {limit // tools.MiB} MiB ({limit} bytes), "
            f"so {tools.WRITE_LIMIT}."
        )
        error = types.JSONRPCError(
            jsonrpc="2.0", id=None, error=types.ErrorData(code=types.INVALID_REQUEST, message=message)
        )
        body = error.model_dump_json(by_alias=True, exclude_unset=True).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class SseEndpoint:
    """GET /sse: one MCP connection over the SSE transport, served as a plain ASGI app.

    An SSE connection is a handshake too until one of its tool calls holds a sandbox. Its id is the
    `session_id` its `endpoint` event tells the client to post messages with.
    """

    def __init__(self, transport: SseServerTransport, server: Server[McpSessions], handshakes: Handshakes) -> None:
        self.transport = transport
        self.server = server
        self.handshakes = handshakes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client, connection = client_of(scope), anyio.CancelScope()
        opened: list[str] = []

        async def end() -> None:
            connection.cancel()

        async def watch(message: Message) -> None:
            if not opened and message["type"] == "http.response.body":
                found = _SSE_ENDPOINT_SESSION.search(message.get("body", b""))
                if found is not None:
                    opened.append(found.group(1).decode())
                    self.handshakes.opened(opened[0], client, end)
            await send(message)

        await self.handshakes.make_room(client)
        try:
            with connection:
                async with self.transport.connect_sse(scope, receive, watch) as (read, write):
                    await self.server.run(read, write, self.server.create_initialization_options())
        finally:
            for handshake in opened:
                self.handshakes.forget(handshake)


OPEN_PATHS = frozenset({"/healthz", "/metrics"})  # probes and scrapes: no session data behind them


class BearerTokenMiddleware:
    """Optional static bearer tokens on the MCP endpoints (not on /healthz and /metrics)."""

    def __init__(self, app: ASGIApp, tokens: list[str]) -> None:
        self.app = app
        self._tokens = [t.encode() for t in tokens]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._tokens or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() == b"bearer" and any(hmac.compare_digest(token.strip(), t) for t in self._tokens):
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {
                "error": "unauthorized",
                "message": "send `Authorization: Bearer <token>` with a configured token",
            },
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="codegen-mcp"'},
        )
        await response(scope, receive, send)


def create_app(settings: CoordinatorSettings, backend: Backend | None = None) -> Starlette:
    """The HTTP app: streamable HTTP at /mcp, SSE at /sse (+ /messages/), health at /healthz."""
    coordinator = Coordinator(settings, backend)
    server = create_server(coordinator, coordinator.streamable_sessions)
    security = transport_security(settings)
    if settings.conformance_tools:
        conformance_tools.install(server)
    events = create_event_log(settings)
    session_manager = ResumableSessionManager(
        app=server,
        events=events,  # resumable POST SSE streams: a priming event, `retry`, and replay after Last-Event-ID
        records=coordinator.records,  # and with shared_sessions, sessions another replica opened are served here
        on_adopt=coordinator.streamable.adopt,
        retry_interval=settings.stream_retry_ms,
        security_settings=security,
        session_idle_timeout=settings.session_idle_timeout_s,
        # Sessions are bounded where they cost something: sandboxes by `SessionManager`, the MCP sessions
        # that have none yet by `Handshakes` (per client). A count of all MCP sessions would let bare
        # `initialize` requests lock every other client out.
        max_sessions=None,
        max_request_body_size=tools.MAX_REQUEST_BYTES,
    )
    streamable = ExplainTooLarge(
        HandshakeTracker(
            NegotiatedVersion(
                StreamableHTTPASGIApp(session_manager),
                # Shared sessions: a session another replica opened streams as the version it negotiated there.
                elsewhere=coordinator.records.negotiated if coordinator.records is not None else None,
            ),
            coordinator.handshakes,
            coordinator.streamable_session_ended,
        )
    )
    sse = SseServerTransport("/messages/", security_settings=security, max_request_body_size=tools.MAX_REQUEST_BYTES)

    async def healthz(request: Request) -> Response:
        # Degraded is still 200: tool calls work, and restarting the coordinator would not give the disk room.
        problems = coordinator.problems()
        body: dict[str, Any] = {
            "status": "degraded" if problems else "ok",
            "version": __version__,
            "sessions": len(coordinator.sessions),
        }
        if problems:
            body["problems"] = problems
        return JSONResponse(body)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(coordinator.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with coordinator.running(), events.opened(), session_manager.run():
            yield

    routes: list[BaseRoute] = [
        Route("/mcp", endpoint=streamable),
        Route("/sse", endpoint=SseEndpoint(sse, create_server(coordinator), coordinator.handshakes), methods=["GET"]),
        Mount("/messages/", app=ExplainTooLarge(sse.handle_post_message)),
        Route("/healthz", endpoint=healthz, methods=["GET"]),
        Route("/metrics", endpoint=metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    tokens = [t.get_secret_value() for t in settings.auth_tokens]
    if tokens:
        app.add_middleware(BearerTokenMiddleware, tokens=tokens)
    app.state.coordinator = coordinator
    app.state.session_manager = session_manager  # told to end its streams when the process stops (`stopping`)
    return app


async def serve_stdio(settings: CoordinatorSettings) -> None:
    """One MCP session over this process's stdin/stdout."""
    from mcp.server.stdio import stdio_server

    coordinator = Coordinator(settings)
    server = create_server(coordinator)
    async with coordinator.running(), stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
