"""One persistent Python interpreter of a context (see `contexts`): its jailed process, and a cell run in it.

An interpreter is started by the first cell of its context, exactly as a run is confined (`confine`:
the same uid, jail, venv, rlimits and, through the agent's own cgroup, the session's memory cap; the same
user-mode network when the jail has one). Only the CPU rlimit is left out: it counts a process's whole
lifetime, so it would end a context after that many seconds of work in all its cells together; the wall-clock
timeout of each cell is enforced here instead. What runs is `interpreter_driver`, copied into the agent's state
folder and shown read-only in the jail; it speaks length-prefixed JSON over a socket pair given as its stdin.

A cell past its timeout (or cancelled, or filling the disk quota) is interrupted (SIGINT in the interpreter →
KeyboardInterrupt) and the state stays; a cell that does not stop within `grace_s` of that has its interpreter
killed. An interpreter that dies (the memory cap's OOM killer, a crash, `os._exit`) takes its state with it;
`death_reason` says why, reading the memory cgroup's OOM-kill counter to tell the memory limit from the rest.
Output is cut into cells at end marks the driver writes (`CellStream`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from codegen_mcp.api.errors import CodegenError, ErrorCode
from codegen_mcp.api.tools import (
    MAX_VALUE_CHARS,
)
from codegen_mcp.sandbox_agent import diskquota
from codegen_mcp.sandbox_agent.isolation import child_env
from codegen_mcp.sandbox_agent.netns import user_network
from codegen_mcp.sandbox_agent.process import DRAIN_GRACE_S, Captured, kill_group, start_failure
from codegen_mcp.sandbox_agent.sandboxed import confine, run_limits, sandbox_home

if TYPE_CHECKING:
    from codegen_mcp.sandbox_agent.executor import Executor

log = logging.getLogger(__name__)

DRIVER_FILE = "context-driver.py"
HEADER = struct.Struct(">I")
# The driver's replies are small (the value is capped): anything bigger is not the driver speaking.
MAX_REPLY_BYTES = 64 * 1024 + 4 * MAX_VALUE_CHARS
INTERRUPT_GRACE_S = 5.0
START_TIMEOUT_S = 30.0
# How long the end-of-cell marks may take to come through the output pipes after the reply.
MARK_WAIT_S = 2.0
CGROUP_ROOT = Path("/sys/fs/cgroup")


class DriverError(Exception):
    """The interpreter's side of the socket said something that is not a driver's reply."""


def _ignore(data: bytes) -> None:
    pass


class CellStream:
    """One of the interpreter's output pipes, cut into cells at the end marks the driver writes.

    Output between two cells (a background thread's) is given to the next cell.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.ended = asyncio.Event()
        self._out = Captured(cap=cap)
        self._held = bytearray()  # bytes that may be the start of the mark
        self._mark: bytes | None = None
        self._on_data: Callable[[bytes], None] = _ignore

    def begin(self, mark: bytes, on_data: Callable[[bytes], None]) -> Captured:
        """Start a cell ending at `mark`; its output goes to the Captured returned."""
        between = self._out.kept()
        self._out = Captured(cap=self.cap)
        self._out.add(between)
        self._mark, self._on_data = mark, on_data
        self.ended.clear()
        return self._out

    def feed(self, chunk: bytes) -> None:
        data = self._held + chunk
        self._held = bytearray()
        if self._mark is not None:
            at = data.find(self._mark)
            if at >= 0:
                self._take(data[:at])
                data = data[at + len(self._mark) :]
                self.end()
            else:
                keep = _mark_start(data, self._mark)
                self._held = data[len(data) - keep :]
                data = data[: len(data) - keep]
        self._take(data)

    def end(self) -> None:
        """The cell's output is complete (its mark came, or will never come)."""
        self._take(self._held)
        self._held = bytearray()
        self._mark, self._on_data = None, _ignore
        self._out = Captured(cap=self.cap)
        self.ended.set()

    def _take(self, data: bytes | bytearray) -> None:
        if data:
            self._out.add(bytes(data))
            self._on_data(bytes(data))

    def leftover(self) -> str:
        return self._out.text()


def _mark_start(data: bytearray, mark: bytes) -> int:
    """How many bytes at the end of `data` may be the start of `mark` (held back; the rest is passed on at once)."""
    at = data.find(mark[:1], max(0, len(data) - len(mark) + 1))
    while at != -1:
        if mark.startswith(data[at:]):
            return len(data) - at
        at = data.find(mark[:1], at + 1)
    return 0


async def _pump(reader: asyncio.StreamReader | None, stream: CellStream) -> None:
    if reader is None:
        return
    while chunk := await reader.read(65536):
        stream.feed(chunk)


def oom_counter(pid: int) -> tuple[Path, int] | None:
    """The OOM-kill counter of the memory cgroup `pid` is in (v1 memory.oom_control, v2 memory.events)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    candidates: list[Path] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            candidates.insert(0, CGROUP_ROOT / "memory" / path.lstrip("/") / "memory.oom_control")
        elif controllers == "":
            candidates.append(CGROUP_ROOT / path.lstrip("/") / "memory.events")
    for counter in candidates:
        count = read_oom_kills(counter)
        if count is not None:
            return counter, count
    return None


def read_oom_kills(counter: Path) -> int | None:
    try:
        for line in counter.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def death_reason(returncode: int | None, *, out_of_memory: bool, jailed: bool) -> str:
    """Why an interpreter died, as the clause a user reads."""
    if out_of_memory:
        return "its interpreter was killed for going over the session's memory limit (out of memory)"
    rc = returncode if returncode is not None else 0
    # bwrap exits 128+N when the process it runs is killed by signal N.
    signum = -rc if rc < 0 else rc - 128 if jailed and 128 < rc <= 128 + 64 else None
    if signum == signal.SIGKILL:
        return "its interpreter was killed (SIGKILL), most likely for going over the session's memory limit"
    if signum is not None:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return f"its interpreter was killed by {name}"
    return f"its interpreter exited with code {rc}"


class CellReply(BaseModel):
    """The driver's answer to a cell, checked: the agent never trusts what comes out of the jail."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["ok", "error", "interrupted", "exit"]
    exit_code: int = Field(ge=-(2**31), lt=2**31)
    value: str | None = Field(None, max_length=MAX_VALUE_CHARS)
    value_truncated: bool = False
    cells: int = Field(ge=0)
    rss_bytes: int = Field(0, ge=0)


@dataclass
class CellEnd:
    """How one cell ended."""

    reply: CellReply | None
    stdout: Captured
    stderr: Captured
    duration_s: float
    stopped_by: str | None = None  # "timeout" or "cancel": the agent interrupted it
    died: str | None = None  # why the interpreter is gone (its state with it)


class Interpreter:
    """One running driver process and the agent's ends of its socket and pipes."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stack: contextlib.AsyncExitStack,
        cap: int,
        jailed: bool,
    ) -> None:
        self.proc, self._reader, self._writer, self._stack, self.jailed = proc, reader, writer, stack, jailed
        self.stdout, self.stderr = CellStream(cap), CellStream(cap)
        self._pumps = [
            asyncio.create_task(_pump(proc.stdout, self.stdout)),
            asyncio.create_task(_pump(proc.stderr, self.stderr)),
        ]
        self.exited = asyncio.create_task(proc.wait())
        self.started_at = datetime.now(UTC)
        self.cells = 0
        self.memory_bytes: int | None = None
        self._next_id = 0

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    async def send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode("utf-8")
        self._writer.write(HEADER.pack(len(body)) + body)
        await self._writer.drain()

    async def receive(self) -> dict[str, Any]:
        (size,) = HEADER.unpack(await self._reader.readexactly(HEADER.size))
        if size > MAX_REPLY_BYTES:
            raise DriverError(f"sent a reply of {size} bytes")
        try:
            message = json.loads(await self._reader.readexactly(size))
        except (ValueError, UnicodeDecodeError) as err:
            raise DriverError("sent a reply that is not JSON") from err
        if not isinstance(message, dict):
            raise DriverError("sent a reply that is not an object")
        return message

    async def ask(self, request: dict[str, Any]) -> CellReply:
        """Send a cell and wait for the driver's checked reply (OSError, EOF or DriverError when there is none)."""
        await self.send(request)
        try:
            return CellReply.model_validate(await self.receive())
        except ValidationError:
            raise DriverError("sent a reply that is not a cell's") from None

    async def wait_ready(self) -> str:
        """The driver's Python version once it said it is ready; CodegenError when it died or stayed silent."""
        ready = asyncio.create_task(self.receive())
        done, _ = await asyncio.wait({ready, self.exited}, timeout=START_TIMEOUT_S, return_when="FIRST_COMPLETED")
        if ready in done and ready.exception() is None and ready.result().get("ready") is True:
            return str(ready.result().get("python", ""))
        ready.cancel()
        await self.close()
        said = self.stderr.leftover().strip()[-1000:] or "no output"
        raise CodegenError(
            f"the Python context's interpreter did not start: {said}", code=ErrorCode.SANDBOX_UNAVAILABLE
        )

    async def run_cell(
        self,
        request: dict[str, Any],
        *,
        timeout_s: float,
        grace_s: float,
        cancel: asyncio.Event,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        quota_dir: Path | None,
    ) -> CellEnd:
        """Run one cell; interrupt it past `timeout_s`, on `cancel`, or when the disk holding `quota_dir` fills."""
        # As for a run: a cell that starts on a full disk (to delete files) is not stopped for it.
        watched = (
            quota_dir if quota_dir is not None and not await asyncio.to_thread(diskquota.is_full, quota_dir) else None
        )
        mark = f"\0codegen-cell-end:{secrets.token_hex(16)}\0"
        self._next_id += 1
        out = self.stdout.begin(mark.encode(), on_stdout)
        err = self.stderr.begin(mark.encode(), on_stderr)
        counter = oom_counter(self.proc.pid)
        start = time.monotonic()
        self.cells += 1
        reply = asyncio.create_task(
            self.ask({**request, "op": "run", "id": self._next_id, "marker": mark.encode().hex()})
        )
        cancelled = asyncio.create_task(cancel.wait())
        filled = asyncio.create_task(diskquota.filled(watched))
        stopped_by: str | None = None
        try:
            done, _ = await asyncio.wait(
                {reply, self.exited, cancelled, filled}, timeout=timeout_s, return_when="FIRST_COMPLETED"
            )
            if reply not in done and self.exited not in done:
                stopped_by = "cancel" if cancelled in done else "disk" if filled in done else "timeout"
                with contextlib.suppress(OSError):
                    await self.send({"op": "interrupt", "id": self._next_id})
                done, _ = await asyncio.wait({reply, self.exited}, timeout=grace_s, return_when="FIRST_COMPLETED")
        except BaseException:
            reply.cancel()  # the agent is stopping: close() ends the interpreter
            raise
        finally:
            cancelled.cancel()
            filled.cancel()
        duration = round(time.monotonic() - start, 3)
        answer: CellReply | None = None
        died: str | None = None
        if reply.done() and reply.exception() is None:
            answer = reply.result()
            await self._wait_marks()
            self.cells, self.memory_bytes = answer.cells, answer.rss_bytes or None
        else:
            if not reply.done():
                reply.cancel()
            problem = reply.exception() if reply.done() and not reply.cancelled() else None
            if problem is not None and not isinstance(problem, DriverError):
                await asyncio.wait({self.exited}, timeout=DRAIN_GRACE_S)  # the socket closed as the process died
            killed_by_us = self.alive
            await self.close()
            before = counter[1] if counter is not None else None
            after = read_oom_kills(counter[0]) if counter is not None else None
            oom = before is not None and after is not None and after > before
            if killed_by_us and problem is not None:
                said = problem if isinstance(problem, DriverError) else "closed its connection to the agent"
                died = f"its interpreter {said} and was stopped"
            elif killed_by_us:
                died = f"its cell did not stop within {grace_s:g} s of the interrupt, so its interpreter was killed"
            else:
                died = death_reason(self.proc.returncode, out_of_memory=oom, jailed=self.jailed)
        return CellEnd(answer, out, err, duration, stopped_by, died)

    async def _wait_marks(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(MARK_WAIT_S):
                await asyncio.gather(self.stdout.ended.wait(), self.stderr.ended.wait())
        for stream in (self.stdout, self.stderr):
            if not stream.ended.is_set():
                stream.end()

    async def close(self) -> None:
        """Stop the interpreter (its whole process group) and let go of its pipes, socket and jail."""
        kill_group(self.proc.pid)
        with contextlib.suppress(OSError):
            self._writer.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_GRACE_S):
                await asyncio.shield(self.exited)
        _, pending = await asyncio.wait(self._pumps, timeout=DRAIN_GRACE_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        for stream in (self.stdout, self.stderr):
            stream.end()
        await self._stack.aclose()


async def start_interpreter(executor: Executor, name: str) -> Interpreter:
    """A new interpreter for the context `name`, confined as a run is, ready for its first cell."""
    python = await executor.ensure_venv()
    settings = executor.settings
    driver = executor.runs_dir / DRIVER_FILE
    source = resources.files("codegen_mcp.sandbox_agent").joinpath("interpreter_driver.py").read_bytes()
    if not driver.exists() or driver.read_bytes() != source:
        driver.write_bytes(source)
        driver.chmod(0o644)
    limits = dataclasses.replace(run_limits(settings, 0), cpu_seconds=None)
    env = child_env(venv=executor.venv_dir, home=sandbox_home(executor), extra=dict(settings.run_env))
    jail = executor.sandbox.jail
    ours, theirs = socket.socketpair()
    stack = contextlib.AsyncExitStack()
    try:
        spawned = stack.enter_context(
            confine(executor, [str(python), str(driver), name], limits, read_only_after=[driver])
        )
        network = jail is not None and jail.network
        command, kwargs = await stack.enter_async_context(
            user_network(*spawned, jailed=jail is not None, network=network)
        )
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=theirs.fileno(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(executor.root),
            env=env,
            **kwargs,  # type: ignore[arg-type]
        )
    except (OSError, subprocess.SubprocessError) as err:
        ours.close()
        await stack.aclose()
        raise start_failure("the Python context's interpreter in the sandbox", err) from None
    finally:
        theirs.close()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    interpreter = Interpreter(proc, reader, writer, stack, settings.output_cap_bytes, jailed=jail is not None)
    await interpreter.wait_ready()
    return interpreter
