"""Which sandbox serves which MCP session: created on first use, revived when it died, closed when done."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from codegen_mcp.api.errors import CodegenError, ErrorCode, SandboxUnavailable
from codegen_mcp.coordinator.agent_client import AgentUnreachable
from codegen_mcp.coordinator.backends.base import Backend, Sandbox

log = logging.getLogger(__name__)


@dataclass(eq=False)
class SessionEntry:
    key: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sandbox: Sandbox | None = None
    last_used: float = field(default_factory=time.monotonic)
    calls_in_flight: int = 0


class SessionManager:
    """Maps MCP session keys to sandboxes. One per coordinator process."""

    def __init__(self, backend: Backend, *, idle_timeout_s: float, max_sessions: int) -> None:
        self._backend = backend
        self._idle_timeout_s = idle_timeout_s
        self._max_sessions = max_sessions
        self._entries: dict[str, SessionEntry] = {}
        self._reaper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_idle(), name="session-reaper")

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(*(self._detach(key) for key in list(self._entries)), return_exceptions=True)

    async def _detach(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and entry.sandbox is not None:
            await self._backend.detach(entry.sandbox)

    def sandbox_id(self, key: str) -> str | None:
        entry = self._entries.get(key)
        return entry.sandbox.sandbox_id if entry and entry.sandbox else None

    async def acquire(self, key: str) -> Sandbox:
        """The session's working sandbox: created on first use, revived (same workspace) if it stopped."""
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self._max_sessions:
                raise CodegenError(
                    f"this server already runs its maximum of {self._max_sessions} sessions; try again later",
                    code=ErrorCode.SANDBOX_UNAVAILABLE,
                )
            entry = self._entries[key] = SessionEntry(key)
        entry.last_used = time.monotonic()
        async with entry.lock:
            if entry.sandbox is None:
                log.info("opening a sandbox for session %s", key)
                # A failed open keeps the entry: the backend may have made something for the session (on
                # kubernetes its CodegenSession) that closing the session must delete. The next call retries.
                entry.sandbox = await self._backend.open(key)
                log.info("session %s → sandbox %s (%s)", key, entry.sandbox.sandbox_id, entry.sandbox.where)
            elif not entry.sandbox.alive:
                entry.sandbox = await self._backend.revive(entry.sandbox)
            return entry.sandbox

    @contextlib.asynccontextmanager
    async def use(self, key: str) -> AsyncIterator[Sandbox]:
        """Hold a session's sandbox for one call; a sandbox that dies under it becomes a clear error."""
        sandbox = await self.acquire(key)
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
            return
        async with entry.lock:  # an open in progress ends first, so whatever it made is closed too
            sandbox, entry.sandbox = entry.sandbox, None
            if sandbox is not None:
                log.info("closing sandbox %s of session %s", sandbox.sandbox_id, key)
                await self._backend.close(sandbox)
            else:
                log.info("session %s ends without a working sandbox; removing what its open left", key)
                await self._backend.close_unopened(key)

    async def _reap_idle(self) -> None:
        interval = max(1.0, min(60.0, self._idle_timeout_s / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            idle = [
                key
                for key, e in self._entries.items()
                if e.calls_in_flight == 0 and now - e.last_used > self._idle_timeout_s
            ]
            for key in idle:
                log.info("session %s idle for over %.0f s; closing its sandbox", key, self._idle_timeout_s)
                try:
                    await self.close(key)
                except Exception:
                    log.exception("closing idle session %s failed", key)
