"""Sandboxes started ahead of the sessions that will use them, so a new session's first call does not wait.

The pool only holds sandboxes its backend started for nobody: a claim hands one over as it is (bookkeeping,
no process start) and the pool starts a replacement in the background, one at a time. Nothing but the
coordinator has spoken to a pooled sandbox, so a claimed one is as fresh as one started for the session.

The pool never grows past the backend's room (`has_room`, e.g. the session cap minus what runs), and gives
room back on demand (`shrink`) so that a real client is never refused for the pool's sake.

A claim's replacement starts a moment later (`REFILL_AFTER_CLAIM_S`), not at once: the claiming session's first
call is under way then, and a start (folder, disk, cgroup, fork, the agent's own start-up) competing with it for
the CPU made that call slower (measured on 2 cores: 13 ms instead of 9 ms for an `echo`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from codegen_mcp.api.call_id import detached_task
from codegen_mcp.coordinator.backends.base import Sandbox

log = logging.getLogger(__name__)

# After a failed start the pool waits this long before the next one, so a broken host is not hammered.
RETRY_AFTER_S = 5.0
# How long after a claim its replacement starts (see the module's docstring).
REFILL_AFTER_CLAIM_S = 0.25


class WarmPool:
    def __init__(
        self,
        size: int,
        *,
        start: Callable[[], Coroutine[Any, Any, Sandbox]],
        discard: Callable[[Sandbox], Coroutine[Any, Any, None]],
        has_room: Callable[[], bool],
    ) -> None:
        self.size = size
        self._start = start
        self._discard = discard
        self._has_room = has_room
        self._ready: list[Sandbox] = []  # oldest first
        self._starting: asyncio.Task[Sandbox] | None = None
        self._wanted = asyncio.Event()
        self._refill_later: asyncio.TimerHandle | None = None
        self._refiller: asyncio.Task[None] | None = None
        self._discards: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> int:
        return len(self._ready)

    def sandbox_ids(self) -> list[str]:
        """The ready sandboxes, oldest (next claimed) first."""
        return [s.sandbox_id for s in self._ready]

    def begin(self) -> None:
        if self.size > 0:
            self._refiller = asyncio.create_task(self._refill(), name="warm-pool-refill")
            self._wanted.set()

    def claim(self) -> Sandbox | None:
        """A ready sandbox for a new session, no longer the pool's; None when the pool has none.

        Synchronous on purpose: with no await between finding a sandbox and taking it, two sessions claiming at
        once can never get the same one. A sandbox whose agent stopped is dropped here, never handed out.
        """
        if self._refill_later is None:
            self._refill_later = asyncio.get_running_loop().call_later(REFILL_AFTER_CLAIM_S, self._refill_now)
        while self._ready:
            sandbox = self._ready.pop(0)
            if sandbox.alive:
                return sandbox
            self._drop(sandbox)
        return None

    def _refill_now(self) -> None:
        self._refill_later = None
        self._wanted.set()

    def died(self, sandbox: Sandbox) -> None:
        """The backend noticed a sandbox's agent stop: if it was pooled, remove it and start another."""
        if sandbox in self._ready:
            self._ready.remove(sandbox)
            log.warning("pooled sandbox %s stopped (%s); replacing it", sandbox.sandbox_id, sandbox.exit_reason)
            self._drop(sandbox)
            self._wanted.set()

    def room_freed(self) -> None:
        """A sandbox ended: the pool may grow back to its size, if it is not full."""
        self._wanted.set()

    async def shrink(self) -> bool:
        """Give one sandbox's room back (the newest ready one, else the start in progress); False if none."""
        if self._ready:
            sandbox = self._ready.pop()
            log.info("session cap reached: stopping pooled sandbox %s to make room", sandbox.sandbox_id)
            await self._discard(sandbox)
            return True
        starting = self._starting
        if starting is not None and not starting.done():
            starting.cancel()  # the backend's start removes what it made when cancelled
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
            return True
        return False

    async def aclose(self) -> None:
        if self._refill_later is not None:
            self._refill_later.cancel()
        if self._refiller is not None:
            self._refiller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refiller
        ready, self._ready = self._ready, []
        await asyncio.gather(*(self._discard(s) for s in ready), *self._discards, return_exceptions=True)

    def _drop(self, sandbox: Sandbox) -> None:
        # Dropped during a claim (a session's call) or after an agent's end: the discard is no call's.
        task = detached_task(self._discard(sandbox), name=f"pool-drop-{sandbox.sandbox_id}")
        self._discards.add(task)
        task.add_done_callback(self._discards.discard)

    async def _refill(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            while len(self._ready) < self.size and self._has_room():
                self._starting = asyncio.create_task(self._start(), name="warm-pool-start")
                try:
                    sandbox = await self._starting
                except asyncio.CancelledError:
                    if self._starting.cancelled() and not self._refiller_cancelled():
                        continue  # shrink() cancelled the start to make room: look again
                    raise
                except Exception:
                    log.exception("could not start a sandbox for the warm pool; trying again in %g s", RETRY_AFTER_S)
                    await asyncio.sleep(RETRY_AFTER_S)
                    continue
                finally:
                    self._starting = None
                if sandbox.alive:
                    self._ready.append(sandbox)
                    log.info("warm pool: sandbox %s ready (%d/%d)", sandbox.sandbox_id, len(self._ready), self.size)
                else:
                    self._drop(sandbox)

    def _refiller_cancelled(self) -> bool:
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0
