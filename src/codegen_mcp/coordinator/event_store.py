"""Resumable streams: the events the streamable-HTTP transport sent, kept so a client can resume after a drop.

With an event store the SDK's transport opens every POST SSE stream with a priming event (an id, empty data,
and `retry`), gives every message an id, and answers a GET carrying `Last-Event-ID` with what the stream sent
after that id, then with what it sends from then on. A client whose connection dropped mid-call therefore
still receives the call's result, even one that finished while it was away.

Two logs keep the events: `MemoryEventLog` (one process; the default) and `RedisEventLog` (Redis Streams,
shared by every coordinator replica). Both are bounded: each stream keeps its newest events, and events older
than a TTL go; the memory log also caps its total bytes, Redis its memory by its own `maxmemory` policy.

The SDK hands one store to the transports of all sessions and names a stream by its JSON-RPC request id,
which every client counts from 0 or 1: sessions would read each other's streams. `ResumableSessionManager`
therefore gives each session's transport its own `SessionEvents` view, under a scope derived from the session
id that every event id carries; a `Last-Event-ID` of another scope (another session's, or a made-up one)
replays nothing. Derived, not random: another replica serving the same session (`shared_sessions`) reads the
same streams from Redis.

With `shared_sessions` the manager also records each session it opens (`shared_sessions.SessionRecords`) and
serves a session another replica opened, as already initialized, when a request of it arrives here.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import hashlib
import json
import logging
import re
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from uuid import uuid4

import anyio
from anyio.abc import TaskStatus
from mcp.server.connection import Connection
from mcp.server.runner import serve_connection
from mcp.server.streamable_http import (
    MCP_SESSION_ID_HEADER,
    EventCallback,
    EventId,
    EventMessage,
    EventStore,
    StreamableHTTPServerTransport,
    StreamId,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.transport_context import TransportContext
from mcp_types import (
    INVALID_REQUEST,
    ErrorData,
    InitializeRequestParams,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCResponse,
    jsonrpc_message_adapter,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from codegen_mcp.coordinator.shared_sessions import SessionRecord, SessionRecords, owner_digest, same_owner

if TYPE_CHECKING:
    from codegen_mcp.coordinator.settings import CoordinatorSettings

log = logging.getLogger(__name__)

# A stored event: its position in its stream (as the log writes it) and the message, or None for a priming event.
Event = tuple[str, JSONRPCMessage | None]

REDIS_KEY_PREFIX: Final = "codegen-mcp:events:"
_REDIS_ENTRY_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
# A position that replays nothing: the id of an event that could not be stored (the log was unreachable).
UNSTORED: Final = "unstored"


class EventLogError(Exception):
    """The log could not store or read events (e.g. Redis is unreachable)."""


@dataclass(frozen=True)
class StreamKey:
    """One SSE stream of one session: `scope` is the session's, `stream_id` the SDK's (a request id)."""

    scope: str
    stream_id: StreamId

    @property
    def name(self) -> str:
        # base64url keeps any request id (a client's string) out of the SSE `id:` line's forbidden characters.
        encoded = base64.urlsafe_b64encode(self.stream_id.encode()).decode().rstrip("=")
        return f"{self.scope}.{encoded}"

    def event_id(self, position: str) -> EventId:
        return f"{self.name}.{position}"

    @staticmethod
    def parse(event_id: str) -> tuple[StreamKey, str] | None:
        """The stream and position an event id names, or None if it is not one of ours."""
        parts = event_id.split(".")
        if len(parts) != 3 or not all(parts):
            return None
        scope, encoded, position = parts
        try:
            stream_id = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return StreamKey(scope, stream_id), position


def _dump(message: JSONRPCMessage | None) -> bytes:
    return b"" if message is None else message.model_dump_json(by_alias=True, exclude_unset=True).encode()


def _load(data: bytes) -> JSONRPCMessage | None:
    return jsonrpc_message_adapter.validate_json(data) if data else None


class EventLog(ABC):
    """Where events are kept, by stream. Shared by all sessions; `SessionEvents` is what a transport sees."""

    @abstractmethod
    async def append(self, stream: StreamKey, message: JSONRPCMessage | None) -> str:
        """Keep `message` as the stream's newest event; its position. Raises EventLogError."""

    @abstractmethod
    async def read_after(self, stream: StreamKey, position: str) -> list[Event] | None:
        """The stream's kept events after `position`, oldest first; None if the stream is not kept (any more).

        A position older than the oldest kept event gives every kept event: the ones between were dropped.
        Raises EventLogError.
        """

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        """Connect for the app's lifetime (and let go at the end)."""
        yield


class MemoryEventLog(EventLog):
    """This process's memory: per stream the newest `max_events_per_stream`, in all at most `max_bytes` of
    messages, none older than `ttl_s`. The oldest events go first, whichever stream they belong to."""

    def __init__(self, *, max_events_per_stream: int, max_bytes: int, ttl_s: float) -> None:
        self.max_events_per_stream = max_events_per_stream
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._streams: dict[str, collections.deque[tuple[int, bytes]]] = {}
        # Every event in the order written: (stream name, sequence, time, size). Entries whose event its stream
        # already dropped (past max_events_per_stream) stay until they reach the front, or a compaction.
        self._order: collections.deque[tuple[str, int, float, int]] = collections.deque()
        self._sequence = 0
        self.events = 0
        self.bytes = 0

    async def append(self, stream: StreamKey, message: JSONRPCMessage | None) -> str:
        data = _dump(message)
        self._sequence += 1
        now = time.monotonic()
        events = self._streams.setdefault(stream.name, collections.deque())
        events.append((self._sequence, data))
        self._order.append((stream.name, self._sequence, now, len(data)))
        self.events += 1
        self.bytes += len(data)
        if len(events) > self.max_events_per_stream:
            self.events -= 1
            self.bytes -= len(events.popleft()[1])
        self._evict(now)
        return str(self._sequence)

    async def read_after(self, stream: StreamKey, position: str) -> list[Event] | None:
        self._evict(time.monotonic())
        events = self._streams.get(stream.name)
        if events is None or not position.isdigit():
            return None
        after = int(position)
        return [(str(sequence), _load(data)) for sequence, data in events if sequence > after]

    def _evict(self, now: float) -> None:
        while self._order and (self.bytes > self.max_bytes or now - self._order[0][2] > self.ttl_s):
            name, sequence, _, size = self._order.popleft()
            events = self._streams.get(name)
            if events and events[0][0] == sequence:
                events.popleft()
                self.events -= 1
                self.bytes -= size
                if not events:
                    del self._streams[name]
        if len(self._order) > 2 * self.events + 1024:
            self._compact()

    def _compact(self) -> None:
        """Drop the order's entries of events their streams already dropped (keeps the order's size bounded)."""
        live = {(name, sequence) for name, events in self._streams.items() for sequence, _ in events}
        self._order = collections.deque(entry for entry in self._order if (entry[0], entry[1]) in live)


class RedisEventLog(EventLog):
    """Redis Streams, one per SSE stream (XADD with an exact MAXLEN, EXPIRE after each write, XRANGE to replay):
    every coordinator replica reads what any of them wrote."""

    def __init__(self, url: str, *, max_events_per_stream: int, ttl_s: float, prefix: str = REDIS_KEY_PREFIX) -> None:
        from redis.asyncio import Redis  # the `redis` extra; only this store needs it

        self._redis = Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=5.0)
        self._where = _without_credentials(url)
        self.max_events_per_stream = max_events_per_stream
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.prefix = prefix

    def _key(self, stream: StreamKey) -> str:
        return self.prefix + stream.name

    async def append(self, stream: StreamKey, message: JSONRPCMessage | None) -> str:
        from redis.exceptions import RedisError

        key = self._key(stream)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xadd(key, {"m": _dump(message)}, maxlen=self.max_events_per_stream, approximate=False)
                pipe.pexpire(key, self.ttl_ms)
                entry_id, _ = await pipe.execute()
        except RedisError as err:
            raise EventLogError(f"the event store at {self._where} did not take the event: {err}") from err
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def read_after(self, stream: StreamKey, position: str) -> list[Event] | None:
        from redis.exceptions import RedisError

        if not _REDIS_ENTRY_ID.match(position):
            return None
        key = self._key(stream)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.exists(key)
                pipe.xrange(key, min=f"({position}", max="+")
                exists, rows = await pipe.execute()
        except RedisError as err:
            raise EventLogError(f"the event store at {self._where} did not answer: {err}") from err
        if not exists:
            return None
        return [(_text(entry_id), _load(fields.get(b"m", b""))) for entry_id, fields in rows]

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        from redis.exceptions import RedisError

        try:
            await self._redis.ping()
        except RedisError as err:  # calls still work, without resuming; each failed write logs why
            log.warning("event store: Redis at %s is unreachable (%s); streams cannot be resumed", self._where, err)
        try:
            yield
        finally:
            await self._redis.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _without_credentials(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url


class SessionEvents(EventStore):
    """One session's view of the shared log: the SDK's `EventStore` for that session's transport.

    Never raises into the SDK (its message router would stop, and the session with it): an event the log
    could not keep is still sent, under an id that replays nothing.

    A replay stays open for the stream's live tail only where the stream is live: in this process, its request
    not answered yet. Otherwise the stream ends after what was kept, and the client, as for any stream that ends
    before its answer, reconnects after `retry` from its newest event: so a resume that reaches a replica other
    than the one serving the request polls the shared log until the answer is in it.
    """

    def __init__(self, events: EventLog, scope: str | None = None) -> None:
        self.events = events
        self.scope = scope or secrets.token_hex(16)
        self._live: set[StreamId] = set()  # streams this process writes whose request is not answered yet

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        if isinstance(message, JSONRPCResponse | JSONRPCError):  # a request's answer: its stream's last event
            self._live.discard(stream_id)
        else:
            self._live.add(stream_id)
        stream = StreamKey(self.scope, stream_id)
        try:
            return stream.event_id(await self.events.append(stream, message))
        except EventLogError as err:
            log.warning("event store: %s; this stream cannot be resumed", err)
            return stream.event_id(UNSTORED)

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        parsed = StreamKey.parse(last_event_id)
        if parsed is None or parsed[0].scope != self.scope:
            return None
        stream, position = parsed
        try:
            kept = await self.events.read_after(stream, position)
        except EventLogError as err:
            log.warning("event store: %s; the client resumes with nothing replayed", err)
            return None
        if kept is None:
            return None
        for kept_position, message in kept:
            if message is not None:  # a priming event has nothing to replay
                await send_callback(EventMessage(message, stream.event_id(kept_position)))
        return stream.stream_id if stream.stream_id in self._live else None


def session_scope(session_id: str) -> str:
    """The scope of a session's streams: the same on every replica, and telling nothing of the session id."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:32]


MAX_INITIALIZE_BODY: Final = 64 * 1024  # an initialize request is a few KiB: past this it is not recorded


class ResumableSessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager, giving each session's transport its own `SessionEvents` view; with `records`,
    also recording the sessions it opens and serving those another replica opened.

    Relies on mcp 2.3's private `_handle_stateful_request`, `_admit_session`, `_server_instances`,
    `_session_owners`, `_session_creation_lock`, `_task_group`, `_lifespan_state` and `_discard_session` (the
    SDK has no public way to name a session's id, or to serve a session initialized elsewhere); the connection
    of an adopted session is built with public API (`Connection`, `JSONRPCDispatcher`, `serve_connection`).
    """

    def __init__(
        self,
        *,
        events: EventLog,
        records: SessionRecords | None = None,
        on_adopt: Callable[[SessionRecord], None] | None = None,
        **kwargs: Any,
    ) -> None:
        self.events = events
        self.records = records
        self.on_adopt = on_adopt  # told of each session this replica serves that another one opened
        # With `records`: the `owner_digest` of each session served here, checked on each of its requests (the
        # SDK compares only an authenticated user, which the coordinator's static tokens do not set).
        self._owners: dict[str, str] = {}
        self._open_gets: set[anyio.Event] = set()  # each set when its GET request is answered (`end_streams`)
        super().__init__(**kwargs)

    @property
    def event_store(self) -> EventStore | None:
        return None  # each session's transport gets its own view (`_transport`)

    @event_store.setter
    def event_store(self, value: EventStore | None) -> None:
        if value is not None:
            raise TypeError("ResumableSessionManager keeps events in its `events` log; pass no event_store")

    def _transport(self, session_id: str) -> StreamableHTTPServerTransport:
        return StreamableHTTPServerTransport(
            mcp_session_id=session_id,
            is_json_response_enabled=self.json_response,
            event_store=SessionEvents(self.events, session_scope(session_id)),
            security_settings=self.security_settings,
            retry_interval=self.retry_interval,
            idle_timeout=self.session_idle_timeout,
        )

    def _admit_session(self, requestor: Any) -> StreamableHTTPServerTransport | None:
        # The SDK's, with our transport (mcp 2.3 builds its own inside, with the one shared event store).
        if self.max_sessions is not None and len(self._server_instances) >= self.max_sessions:
            return None
        session_id = uuid4().hex
        transport = self._transport(session_id)
        if requestor is not None:
            self._session_owners[session_id] = requestor
        self._server_instances[session_id] = transport
        log.info("Created new transport with session ID: %s", session_id)
        return transport

    async def end_streams(self, within_s: float = 1.0) -> None:
        """This process stops: end each session's GET stream as a complete response, so that its client opens it
        again from its newest event (on another replica), rather than see it cut mid-response. Waits (at most
        `within_s`) until the GET requests in flight are answered."""
        for transport in list(self._server_instances.values()):
            transport.close_standalone_sse_stream()
        with anyio.move_on_after(within_s):
            for answered in list(self._open_gets):
                await answered.wait()

    async def _handle_stateful_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":
            await self._handle_session_request(scope, receive, send)
            return
        answered = anyio.Event()
        self._open_gets.add(answered)
        try:
            await self._handle_session_request(scope, receive, send)
        finally:
            self._open_gets.discard(answered)
            answered.set()

    async def _handle_session_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.records is not None:
            headers = Headers(scope=scope)
            session_id = headers.get(MCP_SESSION_ID_HEADER)
            if session_id is None and scope["method"] == "POST":
                receive, send = _RecordInitialize(self.records, self._owners, scope, receive, send).streams()
            elif session_id is not None:
                if session_id not in self._server_instances:
                    await self._adopt(session_id, scope)
                owner, authorization = self._owners.get(session_id), headers.get("authorization")
                # A DELETE with no credential is the coordinator's own (ending an idle handshake, behind the
                # bearer-token check): from outside, one comes with a token whenever tokens are configured.
                own = scope["method"] == "DELETE" and authorization is None
                if owner is not None and not own and not same_owner(owner, authorization):
                    # Another credential: answered as a session that does not exist, as the SDK answers.
                    log.warning("refused a request for MCP session %s with another credential than its own", session_id)
                    await _not_found(scope, receive, send)
                    return
        await super()._handle_stateful_request(scope, receive, send)

    async def _adopt(self, session_id: str, scope: Scope) -> None:
        """Serve a session another replica opened (if its record says so, for this credential) from now on."""
        assert self.records is not None and self._task_group is not None
        record = await self.records.load(session_id)
        if record is None or not same_owner(record.owner, Headers(scope=scope).get("authorization")):
            return  # the SDK answers 404, as for any session it does not know
        async with self._session_creation_lock:
            if session_id in self._server_instances:
                return  # a concurrent request adopted it first
            # Served (connected) before it is known: a concurrent request of it must not reach it unconnected.
            transport = self._transport(session_id)
            await self._task_group.start(self._serve_adopted, transport, record)
            self._owners[session_id] = record.owner
            self._server_instances[session_id] = transport
        if self.on_adopt is not None:
            self.on_adopt(record)
        log.info("serving MCP session %s, opened by another replica", session_id)

    async def _serve_adopted(
        self,
        transport: StreamableHTTPServerTransport,
        record: SessionRecord,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """The SDK's session task (as `_serve_opening_request` runs it), on a connection initialized already."""
        session_id = record.session_id
        async with transport.connect() as (read_stream, write_stream):
            task_status.started()
            try:
                idle_scope = transport.idle_scope or anyio.CancelScope()
                with idle_scope:
                    dispatcher: JSONRPCDispatcher[TransportContext] = JSONRPCDispatcher(
                        read_stream, write_stream, inline_methods=frozenset({"initialize"})
                    )
                    connection = Connection.for_loop(
                        dispatcher, session_id=session_id, protocol_version_hint=record.protocol_version
                    )
                    connection.client_params = _client_params(record)
                    connection.initialized.set()
                    await serve_connection(
                        self.app, dispatcher, connection=connection, lifespan_state=self._lifespan_state
                    )
            except Exception:
                log.exception("MCP session %s crashed", session_id)
            finally:
                await self._discard_session(session_id, transport)

    async def _discard_session(self, session_id: str, transport: StreamableHTTPServerTransport) -> None:
        self._owners.pop(session_id, None)
        await super()._discard_session(session_id, transport)

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if self.records is not None:
                await stack.enter_async_context(self.records.opened())
            await stack.enter_async_context(super().run())
            yield


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    body = JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=INVALID_REQUEST, message="Session not found"))
    response = Response(body.model_dump_json(by_alias=True, exclude_unset=True), 404, media_type="application/json")
    await response(scope, receive, send)


def _client_params(record: SessionRecord) -> InitializeRequestParams | None:
    try:
        return InitializeRequestParams.model_validate(record.client, by_name=False)
    except ValidationError:
        return None


class _RecordInitialize:
    """Around a request that may open a session: once the SDK opened one, its record is saved (before the
    client learns the session id, so that its next request finds the record on any replica), and its owner
    noted in `owners` (this replica's, checked on each request of the session)."""

    def __init__(
        self, records: SessionRecords, owners: dict[str, str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.records = records
        self.owners = owners
        self.owner = owner_digest(Headers(scope=scope).get("authorization"))
        self._receive = receive
        self._send = send
        self._body = bytearray()

    def streams(self) -> tuple[Receive, Send]:
        return self.receive, self.send

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request" and len(self._body) <= MAX_INITIALIZE_BODY:
            self._body.extend(message.get("body", b""))
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] < 400:
            session_id = Headers(raw=message["headers"]).get(MCP_SESSION_ID_HEADER)
            if session_id is not None:
                self.owners[session_id] = self.owner
            record = self._record(session_id) if session_id is not None else None
            if record is not None:
                await self.records.save(record)
        await self._send(message)

    def _record(self, session_id: str) -> SessionRecord | None:
        try:
            request = json.loads(self._body)
        except ValueError:
            return None
        params = request.get("params") if isinstance(request, dict) and request.get("method") == "initialize" else None
        if not isinstance(params, dict):
            return None
        # The version the SDK negotiates (mcp 2.3's ServerRunner._negotiate_initialize): the client's, if known.
        requested = params.get("protocolVersion")
        version = requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
        return SessionRecord(session_id=session_id, owner=self.owner, protocol_version=version, client=params)


def create_event_log(settings: CoordinatorSettings) -> EventLog:
    """The log `settings.event_store` names."""
    if settings.event_store == "redis":
        assert settings.redis_url is not None  # the settings say so when it is missing
        return RedisEventLog(
            settings.redis_url.get_secret_value(),
            max_events_per_stream=settings.event_store_max_events_per_stream,
            ttl_s=settings.event_store_ttl_s,
        )
    return MemoryEventLog(
        max_events_per_stream=settings.event_store_max_events_per_stream,
        max_bytes=settings.event_store_max_bytes,
        ttl_s=settings.event_store_ttl_s,
    )
