"""Live output: what a task's processes print, kept as they print it, for readers that follow it.

Each task has one `LiveOutput`: the stdout and stderr chunks of its children in arrival order, decoded, in a
bounded buffer (the last `limit` characters). Writers never wait for readers, so a slow reader cannot slow a
run down or make the agent's memory grow: a reader that fell behind the buffer is told how many characters it
skipped and continues at the oldest text still kept. Offsets count characters since the task started, so a
reader that reconnects with the offset it reached continues where it left.

This is the live view only. The result's output (`process.Captured`, under the sandbox's output caps) is
captured as before, and stays the authority on what a run printed.

Children do not get the buffer as an argument: `TaskManager` makes it the current one for everything its
task runs (`CURRENT`), and `process.supervise` copies each chunk it reads into it. So every tool's processes
(run.python, pip, pytest, ruff, git) are live without each tool passing it along.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
from collections import deque
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass

from aiohttp import web

from codegen_mcp.api.errors import InvalidArgument
from codegen_mcp.api.task_results import OutputChunk, OutputStream

# The live buffer of a running task; what a reader that falls behind by more has skipped.
LIVE_OUTPUT_CHARS = 64 * 1024
# What a finished task keeps (for a reader that reconnects late, and for its tail): it has its result too.
FINISHED_OUTPUT_CHARS = 8 * 1024
# The most one chunk sent to a reader carries; more is sent in several.
MAX_CHUNK_CHARS = 16 * 1024
# A follower that sees no output for this long gets an empty line: a reader that went away is noticed then.
HEARTBEAT_S = 15.0
# The short tail `task.get_status` shows of a running task.
TAIL_LINES = 10
TAIL_CHARS = 2000


@dataclass(frozen=True)
class _Piece:
    offset: int
    stream: OutputStream
    text: str


class LiveOutput:
    """One task's live output: appended to by its processes, read by any number of followers."""

    def __init__(self, limit: int = LIVE_OUTPUT_CHARS) -> None:
        self._limit = limit
        self._pieces: deque[_Piece] = deque()
        self._kept = 0
        self.end = 0  # the offset just past the last character written
        self.closed = False
        self._decoders: dict[OutputStream, codecs.IncrementalDecoder] = {
            "stdout": codecs.getincrementaldecoder("utf-8")(errors="replace"),
            "stderr": codecs.getincrementaldecoder("utf-8")(errors="replace"),
        }
        self._changed = asyncio.Event()

    @property
    def start(self) -> int:
        """The offset of the oldest character still kept."""
        return self.end - self._kept

    @property
    def kept(self) -> int:
        """How many characters the buffer holds now (never more than its limit)."""
        return self._kept

    def write(self, stream: OutputStream, data: bytes) -> None:
        """Add a chunk a process printed (a multi-byte character split between chunks is joined)."""
        self._append(stream, self._decoders[stream].decode(data))

    def close(self) -> None:
        """The task finished: nothing more comes, and only a short tail is kept from now on."""
        if self.closed:
            return
        for stream, decoder in self._decoders.items():
            self._append(stream, decoder.decode(b"", final=True))
        self.closed = True
        self._limit = min(self._limit, FINISHED_OUTPUT_CHARS)
        self._trim()
        self._wake()

    def read(self, offset: int) -> OutputChunk | None:
        """What follows `offset` (up to `MAX_CHUNK_CHARS`, one stream), or None when nothing does yet."""
        skipped = max(0, self.start - offset)
        offset += skipped
        for piece in self._pieces:
            if piece.offset + len(piece.text) <= offset:
                continue
            at = offset - piece.offset
            return OutputChunk(
                offset=offset, skipped=skipped, stream=piece.stream, text=piece.text[at : at + MAX_CHUNK_CHARS]
            )
        return None

    async def changed(self, offset: int) -> None:
        """Return once there is text past `offset`, or the output is closed."""
        while self.end <= offset and not self.closed:
            await self._changed.wait()

    def tail(self) -> str:
        """The last few lines, for a status line; empty once finished (the result has the output then)."""
        if self.closed:
            return ""
        text = "".join(p.text for p in self._pieces)[-TAIL_CHARS:]
        return "\n".join(text.splitlines()[-TAIL_LINES:])

    def _append(self, stream: OutputStream, text: str) -> None:
        if not text:
            return
        self._pieces.append(_Piece(self.end, stream, text))
        self.end += len(text)
        self._kept += len(text)
        self._trim()
        self._wake()

    def _trim(self) -> None:
        while self._kept > self._limit:
            first = self._pieces[0]
            excess = self._kept - self._limit
            if len(first.text) <= excess:
                self._pieces.popleft()
                self._kept -= len(first.text)
            else:
                self._pieces[0] = _Piece(first.offset + excess, first.stream, first.text[excess:])
                self._kept -= excess

    def _wake(self) -> None:
        # Every waiter wakes, and later ones wait on a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()


# The live output of the task whose work is running in this context (None outside tasks).
CURRENT: ContextVar[LiveOutput | None] = ContextVar("live_output", default=None)
# Set once the agent begins to stop.
STOPPING = web.AppKey("live_output_stopping", asyncio.Event)


def end_streams_on_shutdown(app: web.Application) -> None:
    """Open output streams end when the agent begins to stop: aiohttp lets open requests finish before the
    agent stops its tasks, so a stream that waited for its task's end would hold the stop up (a minute)."""
    app[STOPPING] = asyncio.Event()

    async def stopping(app: web.Application) -> None:
        app[STOPPING].set()

    app.on_shutdown.append(stopping)


def offset_of(query: Mapping[str, str]) -> int:
    """The `offset` a follower asks to continue from (0: from the start)."""
    raw = query.get("offset", "0")
    if not raw.isdigit():
        raise InvalidArgument("`offset` must be a whole number of characters, 0 or more")
    return int(raw)


async def follow(request: web.Request, output: LiveOutput, offset: int) -> web.StreamResponse:
    """Stream `output` from `offset` as newline-delimited `OutputChunk`s, until it is closed (an `end` line).

    Backpressure: a write waits while the connection's send buffers are full (aiohttp drains every 64 KiB), and
    what was printed meanwhile is read from the bounded buffer when it returns. So a slow reader gets fewer,
    bigger chunks, then a `skipped` count, and neither the buffer nor the response grows past its bound.
    """
    if offset > output.end:
        raise InvalidArgument(f"`offset` {offset} is past the end of this task's output ({output.end} characters)")
    stopping = request.app[STOPPING]
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):  # the reader went away: it reconnects with its offset, or not
        while True:
            lines: list[str] = []
            while sum(map(len, lines)) < MAX_CHUNK_CHARS and (chunk := output.read(offset)) is not None:
                lines.append(chunk.model_dump_json())
                offset = chunk.next_offset
            if not lines and output.closed:
                await response.write(OutputChunk(offset=offset, end=True).model_dump_json().encode() + b"\n")
                await response.write_eof()
                break
            if lines:
                await response.write("".join(line + "\n" for line in lines).encode())
                continue
            if stopping.is_set():  # without an end line: the task did not end, a reader may ask again
                await response.write_eof()
                break
            if not await _more(output, offset, stopping):
                await response.write(b"\n")
    return response


async def _more(output: LiveOutput, offset: int, stopping: asyncio.Event) -> bool:
    """Whether something happened within `HEARTBEAT_S`: output past `offset`, its end, or the agent's stop."""
    waits = {asyncio.ensure_future(output.changed(offset)), asyncio.ensure_future(stopping.wait())}
    try:
        done, _ = await asyncio.wait(waits, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED)
        return bool(done)
    finally:
        for wait in waits:
            wait.cancel()
