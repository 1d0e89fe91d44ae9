"""Which sandbox serves which MCP session: created on first use, revived when it died, closed when done.

A session idle for `suspend_after_s` (on a backend that `suspends`) is suspended: its processes stop, its
workspace stays, and it no longer counts against `max_sessions`; its next call resumes it on the same
workspace. The idle timeout still closes it, counted from its last call like any other.

And the MCP sessions that have no sandbox yet (handshakes): bounded per client and ended when idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from mcp_types import LoggingLevel

from codegen_mcp.api.errors import CodegenError, ErrorCode, SandboxUnavailable
from codegen_mcp.coordinator.agent_client import AgentUnreachable
from codegen_mcp.coordinator.backends.base import Backend, Sandbox, is_named_workspace
from codegen_mcp.coordinator.metrics import StartKind
from codegen_mcp.coordinator.shared_sessions import SessionRecords

log = logging.getLogger(__name__)

# Tells the session's client what happens to its sandbox (an MCP log notice): a level and a sentence.
Notice = Callable[[LoggingLevel, str], Awaitable[None]]


async def _no_notice(level: LoggingLevel, message: str) -> None:
    pass


# Tells the client of a call that waits for its sandbox why (MCP progress, when the call asked for it).
Waiting = Callable[[str], Awaitable[None]]


async def _no_waiting(message: str) -> None:
    pass


@dataclass(eq=False)
class SessionEntry:
    key: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sandbox: Sandbox | None = None
    last_used: float = field(default_factory=time.monotonic)
    calls_in_flight: int = 0
    suspended: bool = False  # its sandbox is stopped while idle; the next acquire resumes it


class SessionManager:
    """Maps MCP session keys to sandboxes. One per coordinator process."""

    def __init__(
        self,
        backend: Backend,
        *,
        idle_timeout_s: float,
        max_sessions: int,
        suspend_after_s: float = 0,
        on_close: Callable[[str], None] | None = None,
        on_started: Callable[[StartKind, float], None] | None = None,
    ) -> None:
        self._backend = backend
        self._idle_timeout_s = idle_timeout_s
        # Suspending only makes sense before the idle timeout closes the session anyway.
        suspends = backend.suspends and 0 < suspend_after_s < idle_timeout_s
        self._suspend_after_s = suspend_after_s if suspends else None
        self._max_sessions = max_sessions
        self._on_close = on_close  # told of each session key closed, to forget what else was kept for it
        self._on_started = on_started  # told of each sandbox start and how long it took, for /metrics
        self._entries: dict[str, SessionEntry] = {}
        self._reaper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def running(self) -> int:
        """Sessions that hold a session slot: all but the suspended ones."""
        return sum(not e.suspended for e in self._entries.values())

    def _at_capacity(self) -> CodegenError:
        return CodegenError(
            f"this server already runs its maximum of {self._max_sessions} sessions; try again later",
            code=ErrorCode.SANDBOX_UNAVAILABLE,
        )

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_idle(), name="session-reaper")

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(*(self._shut_down(key) for key in list(self._entries)), return_exceptions=True)

    async def _shut_down(self, key: str) -> None:
        """At shutdown a session's own sandbox ends with it; a named workspace's is let go, to be found again
        (as is every sandbox when other coordinators serve the same sessions: the session goes on there)."""
        if not is_named_workspace(key) and not self._backend.shared:
            await self.close(key)
            return
        entry = self._entries.pop(key, None)
        if entry is not None and entry.sandbox is not None:
            await self._backend.detach(entry.sandbox)

    def sandbox_id(self, key: str) -> str | None:
        entry = self._entries.get(key)
        return entry.sandbox.sandbox_id if entry and entry.sandbox else None

    async def acquire(self, key: str, notice: Notice = _no_notice, waiting: Waiting = _no_waiting) -> Sandbox:
        """The session's working sandbox: created on first use, revived (same workspace) if it stopped."""
        entry = self._entries.get(key)
        if entry is None:
            if self.running() >= self._max_sessions:
                raise self._at_capacity()
            entry = self._entries[key] = SessionEntry(key)
        entry.last_used = time.monotonic()
        async with entry.lock:
            if entry.sandbox is None:
                log.info("opening a sandbox for session %s", key)
                await notice("info", "starting a sandbox for this session; its first call may take a while")
                # A failed open keeps the entry: the backend may have made something for the session (on
                # kubernetes its CodegenSession) that closing the session must delete. The next call retries.
                entry.sandbox = await self._started("new", self._backend.open(key))
                log.info("session %s → sandbox %s (%s)", key, entry.sandbox.sandbox_id, entry.sandbox.where)
            elif entry.suspended:
                if self.running() >= self._max_sessions:
                    raise self._at_capacity()
                log.info("resuming the suspended sandbox %s of session %s", entry.sandbox.sandbox_id, key)
                resuming = "resuming your suspended sandbox on its workspace; this call waits until it runs"
                await notice("info", resuming)
                await waiting(resuming)
                entry.sandbox = await self._started("resume", self._backend.revive(entry.sandbox))
                entry.suspended = False
            elif not entry.sandbox.alive:
                # Also a sandbox suspended behind this coordinator's back (kubernetes: by the operator).
                reason = entry.sandbox.exit_reason or "it stopped answering"
                stopped = f"your sandbox stopped ({reason}); starting it again with your workspace"
                await notice("warning", stopped)
                await waiting(stopped)
                entry.sandbox = await self._started("restart", self._backend.revive(entry.sandbox))
            return entry.sandbox

    async def _started(self, kind: StartKind, start: Awaitable[Sandbox]) -> Sandbox:
        """Await a sandbox's start and tell `on_started` how long it took (a failed start tells nothing)."""
        began = time.monotonic()
        sandbox = await start
        if self._on_started is not None:
            self._on_started(kind, time.monotonic() - began)
        return sandbox

    @contextlib.asynccontextmanager
    async def use(
        self, key: str, notice: Notice = _no_notice, waiting: Waiting = _no_waiting
    ) -> AsyncIterator[Sandbox]:
        """Hold a session's sandbox for one call; a sandbox that dies under it becomes a clear error."""
        sandbox = await self.acquire(key, notice, waiting)
        entry = self._entries[key]
        entry.calls_in_flight += 1
        try:
            await self._backend.touch(sandbox)
            yield sandbox
        except AgentUnreachable as exc:
            # Nothing reached the agent: mark it stopped so the next acquire revives it; callers may retry.
            sandbox.alive = False
            sandbox.exit_reason = sandbox.exit_reason or str(exc)
            raise
        except SandboxUnavailable as exc:
            if sandbox.alive and await sandbox.client.healthy():
                raise
            sandbox.alive = False
            reason = sandbox.exit_reason or "it stopped answering"
            raise SandboxUnavailable(
                f"your sandbox stopped during this call ({reason}); it restarts with your workspace intact "
                "on your next call, but running tasks were lost"
            ) from exc
        finally:
            entry.calls_in_flight -= 1
            entry.last_used = time.monotonic()

    async def close(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            if self._backend.shared:  # the session may have a sandbox that another coordinator started
                await self._backend.close_unopened(key)
            return
        if self._on_close is not None:
            self._on_close(key)
        async with entry.lock:  # an open in progress ends first, so whatever it made is closed too
            sandbox, entry.sandbox = entry.sandbox, None
            if sandbox is not None:
                log.info("closing sandbox %s of session %s", sandbox.sandbox_id, key)
                await self._backend.close(sandbox)
            else:
                log.info("session %s ends without a working sandbox; removing what its open left", key)
                await self._backend.close_unopened(key)

    async def _suspend(self, entry: SessionEntry) -> None:
        """Suspend a session still idle (checked under its lock: a call may have come meanwhile)."""
        assert self._suspend_after_s is not None
        async with entry.lock:
            sandbox = entry.sandbox
            if entry.suspended or sandbox is None or not sandbox.alive or entry.calls_in_flight:
                return
            idle_s = time.monotonic() - entry.last_used
            if idle_s <= self._suspend_after_s or self._entries.get(entry.key) is not entry:
                return
            if await sandbox.client.running_tasks():
                return  # a task still runs (started with a short wait_s): the session is busy, not idle
            log.info("session %s idle for over %.0f s; suspending its sandbox", entry.key, self._suspend_after_s)
            await self._backend.suspend(sandbox)
            entry.suspended = True

    async def _busy_elsewhere(self, key: str, idle_s_needed: float) -> bool:
        """Whether another coordinator served the session within `idle_s_needed` (its idleness counts from there)."""
        entry = self._entries.get(key)
        if not self._backend.shared or entry is None or entry.sandbox is None:
            return False
        try:
            idle_s = await self._backend.idle_for(entry.sandbox)
        except Exception:
            log.exception("could not tell when session %s was last used elsewhere", key)
            return False
        if idle_s is None or idle_s > idle_s_needed:
            return False
        entry.last_used = time.monotonic() - idle_s
        return True

    async def _reap_idle(self) -> None:
        shortest = min(self._idle_timeout_s, self._suspend_after_s or self._idle_timeout_s)
        interval = max(0.5, min(60.0, shortest / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if self._suspend_after_s is not None:
                for entry in list(self._entries.values()):
                    if not entry.suspended and now - entry.last_used > self._suspend_after_s:
                        if await self._busy_elsewhere(entry.key, self._suspend_after_s):
                            continue
                        try:
                            await self._suspend(entry)
                        except Exception:
                            log.exception("suspending idle session %s failed", entry.key)
            idle = [
                key
                for key, e in self._entries.items()
                if e.calls_in_flight == 0 and now - e.last_used > self._idle_timeout_s
            ]
            for key in idle:
                if await self._busy_elsewhere(key, self._idle_timeout_s):
                    continue
                log.info("session %s idle for over %.0f s; closing its sandbox", key, self._idle_timeout_s)
                try:
                    await self.close(key)
                except Exception:
                    log.exception("closing idle session %s failed", key)


EndFn = Callable[[], Awaitable[None]]


@dataclass(eq=False)
class Handshake:
    """An MCP session that has no sandbox yet: `initialize` done, no tool call has got one."""

    session_id: str
    client: str
    end: EndFn
    last_seen: float = field(default_factory=time.monotonic)
    busy: int = 0  # requests of the session being served right now


class Handshakes:
    """MCP sessions without a sandbox, bounded so that bare `initialize` requests cannot pile up.

    Such a session takes no session slot (those are for sandboxes, see `SessionManager`). One client
    (remote address and bearer token) holds at most `per_client` of them and the whole server `total`: a
    new one ends the oldest first. One idle for `idle_timeout_s` (no request in progress, none started) is
    ended too; its client then gets 404 and, as the MCP spec says, initializes again. A session leaves this
    registry for good once one of its tool calls holds a sandbox (`promote`). With shared sessions (`records`),
    one whose tool calls another replica served is only let go here, not ended.
    """

    def __init__(
        self, *, per_client: int, total: int, idle_timeout_s: float, records: SessionRecords | None = None
    ) -> None:
        self._per_client = per_client
        self._total = total
        self._idle_timeout_s = idle_timeout_s
        self._records = records
        self._open: dict[str, Handshake] = {}  # oldest first
        self.ended: Counter[str] = Counter()  # by reason (evicted, expired), for /metrics
        self._sweeper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._open)

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_idle(), name="handshake-sweeper")

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self._open.clear()

    async def make_room(self, client: str) -> None:
        """Before `client` opens one more: end its oldest beyond the bounds (and the server's oldest)."""
        # Oldest first, and the ones serving a request (a first call waiting for its sandbox) last.
        held = sorted(self._open.values(), key=lambda h: h.busy > 0)
        mine = [h for h in held if h.client == client]
        doomed = mine[: max(0, len(mine) - self._per_client + 1)]
        others = [h for h in held if h not in doomed]
        doomed += others[: max(0, len(others) - self._total + 1)]
        if doomed:
            log.info(
                "client %s opens another MCP session without a sandbox: ending %d held too long", client, len(doomed)
            )
        await asyncio.gather(*(self._end(h, "evicted") for h in doomed))

    def opened(self, session_id: str, client: str, end: EndFn) -> None:
        self._open[session_id] = Handshake(session_id, client, end)

    def promote(self, session_id: str | None) -> None:
        """The session holds a sandbox now: it is a working session, no longer a handshake."""
        if session_id is not None:
            self._open.pop(session_id, None)

    def forget(self, session_id: str) -> None:
        self._open.pop(session_id, None)

    @contextlib.contextmanager
    def serving(self, session_id: str | None) -> Iterator[None]:
        """One request of the session is being served: it is not idle meanwhile."""
        handshake = self._open.get(session_id) if session_id is not None else None
        if handshake is None:
            yield
            return
        handshake.busy += 1
        try:
            yield
        finally:
            handshake.busy -= 1
            handshake.last_seen = time.monotonic()

    def seen(self, session_id: str) -> None:
        handshake = self._open.get(session_id)
        if handshake is not None:
            handshake.last_seen = time.monotonic()

    async def _end(self, handshake: Handshake, reason: str) -> None:
        if self._open.pop(handshake.session_id, None) is None:
            return  # promoted or ended meanwhile
        if self._records is not None and await self._records.working(handshake.session_id):
            log.info("MCP session %s works on another replica; this one lets it go", handshake.session_id)
            return
        self.ended[reason] += 1
        try:
            await handshake.end()
        except Exception:
            log.exception("ending MCP session %s (%s) failed", handshake.session_id, reason)

    async def _sweep_idle(self) -> None:
        interval = max(0.2, min(30.0, self._idle_timeout_s / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            idle = [h for h in self._open.values() if h.busy == 0 and now - h.last_seen > self._idle_timeout_s]
            for handshake in idle:
                log.info(
                    "MCP session %s of %s made no tool call for %.0f s; ending it",
                    handshake.session_id,
                    handshake.client,
                    self._idle_timeout_s,
                )
                await self._end(handshake, "expired")
