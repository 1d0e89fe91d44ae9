"""Persistent Python contexts (run.python's `context`): one long-lived, jailed interpreter per name and session.

An interpreter is started lazily, by the first cell of its context, exactly as a run is confined (`confine`:
the same uid, jail, venv, rlimits and, through the agent's own cgroup, the session's memory cap; the same
user-mode network when the jail has one). Only the CPU rlimit is left out: it counts a process's whole
lifetime, so it would end a context after that many seconds of work in all its cells together; the wall-clock
timeout of each cell is enforced here instead. What runs is `interpreter_driver`, copied into the agent's state
folder and shown read-only in the jail; it speaks length-prefixed JSON over a socket pair given as its stdin.

Cells of one context run one at a time (a lock per context). A cell past its timeout (or cancelled) is
interrupted (SIGINT in the interpreter → KeyboardInterrupt) and the state stays; a cell that does not stop
within `grace_s` of that has its interpreter killed. An interpreter that dies (the memory cap's OOM killer,
a crash, `os._exit`) takes its state with it: that cell says so, and the next one starts a fresh interpreter and
says why the state was lost. The agent's shutdown (suspend, idle close, session end) stops them all.

Files a cell creates or changes become the run's artifacts, as for a stateless run (a matplotlib `savefig`
included).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import secrets
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from codegen_mcp.api.errors import CodegenError, ErrorCode
from codegen_mcp.api.tools import (
    CONTEXT_NAME_PATTERN,
    MAX_CONTEXTS,
    MAX_VALUE_CHARS,
    ContextCell,
    ContextInfo,
    ContextListResult,
    RunResult,
    TaskState,
)
from codegen_mcp.sandbox_agent import diskquota
from codegen_mcp.sandbox_agent.artifacts import take_snapshot
from codegen_mcp.sandbox_agent.isolation import child_env
from codegen_mcp.sandbox_agent.netns import user_network
from codegen_mcp.sandbox_agent.process import DRAIN_GRACE_S, Captured, kill_group, start_failure
from codegen_mcp.sandbox_agent.sandboxed import confine, run_limits, sandbox_home
from codegen_mcp.sandbox_agent.tasks import Outcome, Task

if TYPE_CHECKING:
    from codegen_mcp.sandbox_agent.executor import Executor

log = logging.getLogger(__name__)

DRIVER_FILE = "context-driver.py"
CONTEXTS_FILE = "contexts.json"
AGENT_STOPPED = "the sandbox stopped since its last cell: suspended when idle, or restarted"
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

    async def receive_reply(self) -> CellReply:
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
        await self.send({**request, "op": "run", "id": self._next_id, "marker": mark.encode().hex()})
        reply = asyncio.create_task(self.receive_reply())
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


@dataclass(frozen=True)
class CellRequest:
    """What one cell runs: code or a workspace file (resolved by the caller), its argv, stdin and time limit."""

    code: str | None
    file: Path | None
    args: Sequence[str]
    stdin: str | None
    timeout_s: float


@dataclass
class Context:
    name: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    interpreter: Interpreter | None = None
    lost: str | None = None  # why its last interpreter died, told to the next cell


class Contexts:
    """One session's named contexts: at most `max_contexts`, each cell run under its context's lock."""

    def __init__(
        self, executor: Executor, *, max_contexts: int = MAX_CONTEXTS, grace_s: float = INTERRUPT_GRACE_S
    ) -> None:
        self.executor = executor
        self.max_contexts = max_contexts
        self.grace_s = grace_s
        self._contexts: dict[str, Context] = {}
        self._loaded = False
        self._saved: frozenset[str] = frozenset()

    # The names of the contexts that hold (or lost) state live in the agent's state folder, so that after the agent
    # stopped (suspend, a restart) their next cell can say their state is gone rather than start silently afresh.

    @property
    def _names_file(self) -> Path:
        return self.executor.state_dir / CONTEXTS_FILE

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            names = json.loads(self._names_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(names, list):
            for name in names[: self.max_contexts]:
                if isinstance(name, str) and re.fullmatch(CONTEXT_NAME_PATTERN, name):
                    self._contexts[name] = Context(name, lost=AGENT_STOPPED)
            self._saved = frozenset(self._contexts)

    def _save(self) -> None:
        names = frozenset(n for n, c in self._contexts.items() if c.interpreter is not None or c.lost is not None)
        if names != self._saved:
            staged = self._names_file.with_suffix(".tmp")
            try:
                staged.write_text(json.dumps(sorted(names)), encoding="utf-8")
                staged.replace(self._names_file)
            except OSError as err:  # only the notice after a restart is lost
                log.warning("could not save the names of the Python contexts: %s", err)
                return
            self._saved = names

    def claim(self, name: str) -> Context:
        """The context `name`, made now if there is room (an InvalidArgument-like error when not)."""
        self._load()
        context = self._contexts.get(name)
        if context is not None:
            return context
        if len(self._contexts) >= self.max_contexts:
            names = ", ".join(f"'{n}'" for n in self._contexts)
            raise CodegenError(
                f"this session already has {len(self._contexts)} Python contexts ({names}), the most it may hold: "
                f"run in one of them, or end one with reset=true (and no code) first",
                code=ErrorCode.CONFLICT,
            )
        context = self._contexts[name] = Context(name)
        return context

    def listing(self) -> ContextListResult:
        self._load()
        infos = []
        for c in self._contexts.values():
            i = c.interpreter if c.interpreter is not None and c.interpreter.alive else None
            infos.append(
                ContextInfo(
                    name=c.name,
                    running=i is not None,
                    busy=c.lock.locked(),
                    started_at=i.started_at if i else None,
                    cells=i.cells if i else 0,
                    memory_bytes=i.memory_bytes if i else None,
                    lost=c.lost,
                )
            )
        return ContextListResult(contexts=infos, max_contexts=self.max_contexts)

    async def close(self) -> None:
        """Stop every interpreter (the agent is shutting down)."""
        for context in list(self._contexts.values()):
            await self._stop(context)

    async def run(self, task: Task, name: str, cell: CellRequest | None, *, reset: bool) -> Outcome:
        """Run `cell` in the context `name` (after discarding its state, with `reset`); no cell: end the context."""
        while True:
            context = self.claim(name)
            if not await _take_turn(context.lock, task.cancel_requested):
                return Outcome(TaskState.CANCELLED, error=f"cancelled while waiting for the context '{name}'")
            try:
                if self._contexts.get(name) is not context:
                    continue  # ended (reset) while this call waited its turn: run in the new one
                if reset:
                    await self._stop(context)
                    context.lost = None
                if cell is None:
                    del self._contexts[name]
                    return _reset_only(name)
                return await self._run_cell(task, context, cell)
            finally:
                self._save()
                context.lock.release()

    async def _stop(self, context: Context) -> None:
        if context.interpreter is not None:
            await context.interpreter.close()
            context.interpreter = None

    async def _run_cell(self, task: Task, context: Context, cell: CellRequest) -> Outcome:
        name = context.name
        interpreter = context.interpreter
        if interpreter is not None and not interpreter.alive:
            # It died between cells (killed from outside, a background thread's memory): the state went with it.
            context.lost = death_reason(interpreter.proc.returncode, out_of_memory=False, jailed=interpreter.jailed)
            await self._stop(context)
        restarted = None
        if context.interpreter is None:
            if context.lost is not None:
                restarted = f"the context '{name}' was restarted: its state was lost ({context.lost})"
            context.lost = None
            context.interpreter = await start_interpreter(self.executor, name)
        interpreter = context.interpreter
        executor = self.executor
        before = await asyncio.to_thread(take_snapshot, executor.root)

        def count_out(data: bytes) -> None:
            task.stdout_bytes += len(data)
            task.output.write("stdout", data)  # live, as a stateless run's (`output_stream`)

        def count_err(data: bytes) -> None:
            task.stderr_bytes += len(data)
            task.output.write("stderr", data)

        request = {"code": cell.code, "file": str(cell.file) if cell.file else None, "args": list(cell.args)}
        end = await interpreter.run_cell(
            {**request, "stdin": cell.stdin, "value_cap": MAX_VALUE_CHARS},
            timeout_s=cell.timeout_s,
            grace_s=self.grace_s,
            cancel=task.cancel_requested,
            on_stdout=count_out,
            on_stderr=count_err,
            quota_dir=executor.settings.tmp_dir,
        )
        artifacts = await asyncio.to_thread(executor.artifacts.collect, before, task.task_id)
        reply = end.reply
        ended = _ended_sentence(name, end, cell.timeout_s)
        if end.died is not None:
            context.lost = end.died
            context.interpreter = None
        stderr = end.stderr.text()
        if end.stopped_by == "disk" and executor.settings.tmp_dir is not None:
            stderr = f"{stderr.rstrip()}\n{diskquota.message(executor.settings.tmp_dir)}\n".lstrip()
        run = RunResult(
            exit_code=reply.exit_code if reply is not None else interpreter.proc.returncode,
            stdout=end.stdout.text(),
            stderr=stderr,
            stdout_truncated=end.stdout.truncated,
            stderr_truncated=end.stderr.truncated,
            duration_s=end.duration_s,
            timed_out=end.stopped_by == "timeout",
            artifacts=artifacts,
            value=reply.value if reply is not None else None,
            value_truncated=reply is not None and reply.value_truncated,
            context=ContextCell(
                name=name,
                cell=interpreter.cells,
                started_at=interpreter.started_at,
                restarted=restarted,
                ended=ended,
                state_kept=end.died is None,
            ),
        )
        if end.stopped_by == "timeout":
            return Outcome(TaskState.TIMED_OUT, run=run, error=ended)
        if end.stopped_by == "cancel":
            return Outcome(TaskState.CANCELLED, run=run, error=ended)
        if end.stopped_by == "disk" or end.died is not None:
            return Outcome(TaskState.FAILED, run=run, error=ended)
        return Outcome(TaskState.SUCCEEDED if run.exit_code == 0 else TaskState.FAILED, run=run)


async def _take_turn(lock: asyncio.Lock, cancel: asyncio.Event) -> bool:
    """Acquire `lock` (True), unless `cancel` is set first (False: the lock is not held)."""
    acquiring = asyncio.ensure_future(lock.acquire())
    cancelled = asyncio.ensure_future(cancel.wait())
    try:
        await asyncio.wait({acquiring, cancelled}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        _let_go(lock, acquiring)
        raise
    finally:
        cancelled.cancel()
    if acquiring.done() and not cancel.is_set():
        return True
    _let_go(lock, acquiring)
    return False


def _let_go(lock: asyncio.Lock, acquiring: asyncio.Future[Literal[True]]) -> None:
    """Give up a pending acquire of `lock`, or the lock it already got."""
    if not acquiring.done():
        acquiring.cancel()  # asyncio.Lock hands its turn on to the next waiter
    elif not acquiring.cancelled() and acquiring.exception() is None:
        lock.release()


def _ended_sentence(name: str, end: CellEnd, timeout_s: float) -> str | None:
    """What happened to the context when the cell did not end by itself, or None when it did."""
    lost = f"the context '{name}' lost its state: {end.died}; its next cell starts a fresh interpreter"
    if end.stopped_by is not None:
        when = {"timeout": f"after {timeout_s:g} s", "cancel": "on request"}.get(
            end.stopped_by, "because the session's disk quota is full (delete files to free space)"
        )
        if end.died is not None:
            return f"the cell was interrupted {when}, and {lost}"
        return f"the cell was interrupted {when} (KeyboardInterrupt); the context '{name}' keeps its state"
    return lost if end.died is not None else None


def _reset_only(name: str) -> Outcome:
    ended = f"the context '{name}' was reset: its interpreter and state are gone, and its place is free"
    run = RunResult(
        exit_code=0,
        stdout="",
        stderr="",
        duration_s=0.0,
        context=ContextCell(name=name, cell=0, started_at=datetime.now(UTC), ended=ended, state_kept=False),
    )
    return Outcome(TaskState.SUCCEEDED, run=run)
