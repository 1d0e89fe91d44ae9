"""Persistent Python contexts (run.python's `context`): one long-lived, jailed interpreter per name and session.

A session holds at most `MAX_CONTEXTS` named contexts; each starts its interpreter (`interpreter`) with its
first cell and keeps it, so globals, imports and loaded data survive between calls. Cells of one context run
one at a time (a lock per context; a call cancelled while it waits its turn ends without running). When an
interpreter died, or the agent stopped since (suspend, restart: the names are kept in the agent's state
folder), the next cell runs in a fresh one and its result says why the state was lost. `reset` ends a context's
interpreter on purpose, and without a cell ends the context. Files a cell creates or changes become the run's
artifacts, as for a stateless run (a matplotlib `savefig` included).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

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
from codegen_mcp.sandbox_agent.interpreter import (
    INTERRUPT_GRACE_S,
    CellEnd,
    Interpreter,
    death_reason,
    start_interpreter,
)
from codegen_mcp.sandbox_agent.tasks import Outcome, Task

if TYPE_CHECKING:
    from codegen_mcp.sandbox_agent.executor import Executor

log = logging.getLogger(__name__)

CONTEXTS_FILE = "contexts.json"
AGENT_STOPPED = "the sandbox stopped since its last cell: suspended when idle, or restarted"


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
            context.interpreter = await start_interpreter(self.executor, name)
            context.lost = None
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
