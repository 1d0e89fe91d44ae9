"""Live output: a running task's output, followed on its agent and handed on in batches as it is printed.

While a tool call waits for its task, a `Follower` reads the agent's output stream (reconnecting from the
offset it reached when the connection drops) and hands the text to a sink — the MCP server turns it into
progress and log notifications. A print loop must not flood the client: text is batched, one hand-over at
most every `interval_s`, and a batch the client is too slow to take is cut to its tail with a note of what
was left out, so nothing grows without bound here either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from codegen_mcp.api.errors import CodegenError
from codegen_mcp.api.task_results import OutputStream
from codegen_mcp.coordinator.agent_client import AgentClient, AgentUnreachable

log = logging.getLogger(__name__)

# (stream, text): a batch of output, in the order it was printed; one call per stream of the batch.
OutputSink = Callable[[OutputStream, str], Awaitable[None]]

# At most one batch per this many seconds: a print loop costs the client ~20 notifications a second.
BATCH_INTERVAL_S = 0.05
# The most one batch carries; more output in the same interval is cut to its end.
MAX_BATCH_CHARS = 16 * 1024
# How long the end of a finished task's output may take to arrive before its result is sent anyway.
DRAIN_S = 2.0
# Reconnects after a dropped stream, and the pause before each.
RECONNECTS = 5
RECONNECT_PAUSE_S = 0.2


def skipped_note(chars: int) -> str:
    return f"[… {chars} characters of output skipped …]\n"


class Batcher:
    """Collects output and hands it to `sink` at most every `interval_s`, cut to `MAX_BATCH_CHARS`.

    A line printed in parts (`print` writes its text, then the newline) is handed on whole when its end
    follows within `interval_s`; a line still without its end after that goes as it is.
    """

    def __init__(self, sink: OutputSink, interval_s: float = BATCH_INTERVAL_S) -> None:
        self._sink = sink
        self._interval_s = interval_s
        self._pending: list[tuple[OutputStream, str]] = []
        self._size = 0
        self._skipped = 0
        self._last = float("-inf")
        self._fragment_since: float | None = None  # since when the pending text ends inside a line
        self._added = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    def add(self, stream: OutputStream, text: str, skipped: int = 0) -> None:
        self._skipped += skipped
        if text:
            self._pending.append((stream, text))
            self._size += len(text)
            if text.endswith("\n"):
                self._fragment_since = None
            elif self._fragment_since is None:
                self._fragment_since = asyncio.get_running_loop().time()
            self._added.set()
        while self._size > MAX_BATCH_CHARS:
            first_stream, first = self._pending[0]
            cut = min(len(first), self._size - MAX_BATCH_CHARS)
            self._pending[0] = (first_stream, first[cut:])
            if not self._pending[0][1]:
                self._pending.pop(0)
            self._size -= cut
            self._skipped += cut
        if (self._pending or self._skipped) and self._sender is None:
            self._sender = asyncio.create_task(self._send_batches(), name="live-output-batches")

    async def flush(self) -> None:
        """Hand on what is pending now (waiting out the interval), and return once it is handed on."""
        while self._sender is not None:
            await asyncio.shield(self._sender)

    async def aclose(self) -> None:
        """Drop what is pending: the call ends without it."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender

    async def _send_batches(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending or self._skipped:
                await asyncio.sleep(max(0.0, self._last + self._interval_s - loop.time()))
                since = self._fragment_since
                young = since is not None and loop.time() - since < self._interval_s
                batch, skipped = self._take(hold_fragment=young)
                if not batch and not skipped:
                    # Only the start of a line: wait for more of it, until it is `interval_s` old.
                    assert since is not None
                    self._added.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(since + self._interval_s - loop.time()):
                            await self._added.wait()
                    continue
                self._last = loop.time()
                for stream, text in batch or [("stdout", skipped_note(skipped))]:
                    try:
                        await self._sink(stream, text)
                    except Exception as exc:  # output is advisory: a client gone must not fail the call
                        log.debug("live output not handed on: %s", exc)
        finally:
            self._sender = None

    def _take(self, *, hold_fragment: bool) -> tuple[list[tuple[OutputStream, str]], int]:
        """What is pending (less the start of a line, with `hold_fragment`), consecutive text of one stream
        joined; the note of what was skipped leads its batch."""
        held: list[tuple[OutputStream, str]] = []
        pending = self._pending
        if hold_fragment and pending:
            stream, text = pending[-1]
            cut = text.rfind("\n") + 1
            held = [(stream, text[cut:])]
            pending = pending[:-1] + ([(stream, text[:cut])] if cut else [])
        batch: list[tuple[OutputStream, str]] = []
        for stream, text in pending:
            if batch and batch[-1][0] == stream:
                batch[-1] = (stream, batch[-1][1] + text)
            else:
                batch.append((stream, text))
        if batch and self._skipped:
            batch[0] = (batch[0][0], skipped_note(self._skipped) + batch[0][1])
        skipped = self._skipped
        self._pending, self._size, self._skipped = held, sum(len(t) for _, t in held), 0
        if not held:
            self._fragment_since = None
        return batch, skipped


class Follower:
    """Follows one task's live output on its agent, in the background, until `close`."""

    def __init__(self, client: AgentClient, task_id: str, sink: OutputSink, offset: int = 0) -> None:
        self._client = client
        self._task_id = task_id
        self._batcher = Batcher(sink)
        self._offset = offset
        self._reader = asyncio.create_task(self._read(), name=f"live-output-{task_id}")

    async def close(self, *, finished: bool) -> None:
        """Stop following. For a task that `finished`, its last output is handed on first (within `DRAIN_S`)."""
        if finished:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_S):
                    await asyncio.wait({self._reader})  # it ends at the output's end, or when it gives up
                    await self._batcher.flush()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._batcher.aclose()

    async def _read(self) -> None:
        reconnects = 0
        while True:
            try:
                async with contextlib.aclosing(self._client.output(self._task_id, self._offset)) as chunks:
                    async for chunk in chunks:
                        reconnects = 0
                        self._batcher.add(chunk.stream, chunk.text, chunk.skipped)
                        self._offset = chunk.next_offset
                        if chunk.end:
                            return
            except AgentUnreachable as exc:
                log.debug("live output of %s: %s", self._task_id, exc.message)
            except CodegenError as exc:
                if exc.code.http_status < 500:  # refused (a task forgotten, too many streams): nothing to resume
                    log.debug("live output of %s ends: %s", self._task_id, exc.message)
                    return
                log.debug("live output of %s dropped: %s", self._task_id, exc.message)
            except Exception as exc:  # a stream the agent garbled: the call's result still comes
                log.warning("live output of %s stopped: %r", self._task_id, exc)
                return
            reconnects += 1
            if reconnects > RECONNECTS:
                return
            await asyncio.sleep(RECONNECT_PAUSE_S)
