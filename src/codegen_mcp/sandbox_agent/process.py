"""Supervised child processes: output read concurrently and capped, a timeout, cancellation, the group killed.

Every child the agent starts for a session (run.python, pip, pytest, ruff, mypy, git) goes through
`supervise`: it gets its own session (so the whole process group can be killed, also when the agent itself
is cancelled), its stdout and stderr are read concurrently, the first (or last) bytes kept and the rest only
counted; each chunk is also copied, as it arrives, to the live output of the task it runs for (`output_stream`).
`run_quiet` is the small version for the agent's own short helpers (building a venv, asking the
base interpreter where it lives).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from codegen_mcp.api.errors import CodegenError, ErrorCode
from codegen_mcp.api.task_results import OutputStream
from codegen_mcp.api.tools import TaskState
from codegen_mcp.sandbox_agent import diskquota
from codegen_mcp.sandbox_agent.output_stream import CURRENT


def start_failure(what: str, err: OSError | subprocess.SubprocessError) -> CodegenError:
    """The one sentence for a process that could not even be started in the sandbox."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return CodegenError(f"could not start {what}: {reason}", code=ErrorCode.SANDBOX_UNAVAILABLE)


LOG_TAIL_BYTES = 4096
# After the main process exits, how long leftover readers may take to drain the pipes.
DRAIN_GRACE_S = 2.0


@dataclass
class Captured:
    """One output stream: the first `cap` bytes kept (or the last ones with `keep_tail`), the rest counted."""

    cap: int
    keep_tail: bool = False
    data: bytearray = field(default_factory=bytearray)
    total: int = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.keep_tail:
            self.data += chunk
            if len(self.data) > 2 * self.cap:
                del self.data[: len(self.data) - self.cap]
        elif len(self.data) < self.cap:
            self.data += chunk[: self.cap - len(self.data)]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.kept())

    def kept(self) -> bytes:
        return bytes(self.data[-self.cap :]) if self.keep_tail else bytes(self.data)

    def text(self) -> str:
        return self.kept().decode("utf-8", errors="replace")


@dataclass
class ProcessOutcome:
    exit_code: int | None
    stdout: Captured
    stderr: Captured
    duration_s: float
    timed_out: bool = False
    cancelled: bool = False
    disk_full: bool = False


async def _pump(
    stream: asyncio.StreamReader | None, out: Captured, on_bytes: Callable[[int], None], name: OutputStream
) -> None:
    if stream is None:
        return
    live = CURRENT.get()
    while chunk := await stream.read(65536):
        out.add(chunk)
        on_bytes(len(chunk))
        if live is not None:
            live.write(name, chunk)


async def _feed(writer: asyncio.StreamWriter | None, data: bytes | None) -> None:
    if writer is None:
        return
    try:
        if data:
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the program did not read all of its stdin; that is its business


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def supervise(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    stdin: bytes | None,
    timeout_s: float,
    cancel: asyncio.Event,
    stdout: Captured,
    stderr: Captured | None,
    popen_kwargs: Mapping[str, object],
    on_stdout: Callable[[int], None] = lambda n: None,
    on_stderr: Callable[[int], None] = lambda n: None,
    quota_dir: Path | None = None,
) -> ProcessOutcome:
    """Run one child to completion, timeout or cancellation; its whole process group dies with it.

    `stderr=None` merges stderr into stdout (for pip's log). With `quota_dir` (a folder on the session's quota
    disk), the child is also stopped when it fills that disk (`disk_full`; see `diskquota`).
    """
    start = time.monotonic()
    # A child that starts on a disk already full (to delete files, say) is not stopped for it: the kernel still
    # refuses its writes, and freeing space must stay possible.
    watched = quota_dir if quota_dir is not None and not await asyncio.to_thread(diskquota.is_full, quota_dir) else None
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE if stderr is not None else asyncio.subprocess.STDOUT,
        cwd=str(cwd),
        env=dict(env),
        **popen_kwargs,  # type: ignore[arg-type]
    )
    err_capture = stderr if stderr is not None else Captured(cap=0)
    io_tasks = [
        asyncio.create_task(_pump(proc.stdout, stdout, on_stdout, "stdout")),
        asyncio.create_task(_pump(proc.stderr, err_capture, on_stderr, "stderr")),
        asyncio.create_task(_feed(proc.stdin, stdin)),
    ]
    exited = asyncio.create_task(proc.wait())
    cancelled = asyncio.create_task(cancel.wait())
    filled = asyncio.create_task(diskquota.filled(watched))
    timed_out = was_cancelled = disk_full = False
    try:
        done, _ = await asyncio.wait(
            {exited, cancelled, filled}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if exited not in done:
            was_cancelled = cancelled in done
            disk_full = filled in done and not was_cancelled
            timed_out = not (was_cancelled or disk_full)
            kill_group(proc.pid)
        await exited
    finally:
        # Also on our own cancellation (agent shutdown): nothing of the run may outlive it.
        kill_group(proc.pid)
        cancelled.cancel()
        filled.cancel()
        if not exited.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(exited)
        _, pending = await asyncio.wait(io_tasks, timeout=DRAIN_GRACE_S)
        for t in pending:
            t.cancel()
        await asyncio.gather(*io_tasks, return_exceptions=True)
    return ProcessOutcome(
        exit_code=proc.returncode,
        stdout=stdout,
        stderr=err_capture,
        duration_s=round(time.monotonic() - start, 3),
        timed_out=timed_out,
        cancelled=was_cancelled,
        # Filled and exited between two looks: still the quota's doing.
        disk_full=disk_full or (watched is not None and await asyncio.to_thread(diskquota.is_full, watched)),
    )


def stopped(
    result: ProcessOutcome, what: str, timeout_s: float, quota_dir: Path | None
) -> tuple[TaskState, str] | None:
    """The task state and sentence of a child that did not end on its own; None when it did.

    One rule for every tool: a full disk quota first (the run was stopped for it, or failed on it), then a
    cancellation, then the timeout.
    """
    if result.disk_full and quota_dir is not None:
        return TaskState.FAILED, diskquota.message(quota_dir)
    if result.cancelled:
        return TaskState.CANCELLED, "cancelled on request"
    if result.timed_out:
        return TaskState.TIMED_OUT, f"{what} was killed after {timeout_s:g} s"
    return None


@dataclass
class ProgressCaptured(Captured):
    """A captured stream that also hands each chunk's text to `on_text` (for progress messages)."""

    on_text: Callable[[str], None] | None = None

    def add(self, chunk: bytes) -> None:
        super().add(chunk)
        if self.on_text is not None:
            self.on_text(chunk.decode("utf-8", errors="replace"))


async def run_quiet(argv: Sequence[str], *, timeout_s: float, merge_stderr: bool = False) -> tuple[int | None, bytes]:
    """(exit code, stdout) of one of the agent's own helpers, with a minimal environment and a timeout.

    Raises TimeoutError after killing its process group; cancellation (agent shutdown) kills it too.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    except (TimeoutError, asyncio.CancelledError):
        kill_group(proc.pid)
        await proc.wait()
        raise
    return proc.returncode, out
