"""Tasks: every run.python, pkg.install, test.run, lint.check and git.clone is a task with an id, a state,
progress and a result.

Callers wait on an `asyncio.Event` that is set when the task finishes (never a sleep loop). Finished tasks
are kept up to a retention count, oldest forgotten first. What a task's processes print is also kept live, in
a bounded buffer readers can follow (`output_stream`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from codegen_mcp.api.call_id import current_call_id
from codegen_mcp.api.errors import CodegenError, ErrorCode
from codegen_mcp.api.logs import current_session
from codegen_mcp.api.tools import (
    GitCloneResult,
    LintResult,
    PkgInstallResult,
    PytestResult,
    RunResult,
    TaskKind,
    TaskProgress,
    TaskState,
    TaskView,
)
from codegen_mcp.sandbox_agent.output_stream import CURRENT, LiveOutput

log = logging.getLogger(__name__)

# How long a cancel request waits for the killed process to be reaped before answering.
CANCEL_GRACE_S = 10.0


@dataclass
class Outcome:
    state: TaskState
    run: RunResult | None = None
    install: PkgInstallResult | None = None
    error: str | None = None
    test: PytestResult | None = None
    lint: LintResult | None = None
    clone: GitCloneResult | None = None


@dataclass
class Task:
    task_id: str
    kind: TaskKind
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    state: TaskState = TaskState.QUEUED
    started_at: datetime | None = None
    finished_at: datetime | None = None
    started_mono: float | None = None
    finished_mono: float | None = None
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    message: str = ""
    run: RunResult | None = None
    install: PkgInstallResult | None = None
    test: PytestResult | None = None
    lint: LintResult | None = None
    clone: GitCloneResult | None = None
    error: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event)
    runner: asyncio.Task[None] | None = None
    output: LiveOutput = field(default_factory=LiveOutput)
    # The call (and session) that started the task: requests about it that name no call of their own join it.
    call_id: str | None = field(default_factory=current_call_id)
    session: str | None = field(default_factory=current_session)

    def view(self) -> TaskView:
        elapsed = 0.0
        if self.started_mono is not None:
            end = self.finished_mono if self.finished_mono is not None else time.monotonic()
            elapsed = round(end - self.started_mono, 3)
        return TaskView(
            task_id=self.task_id,
            kind=self.kind,
            state=self.state,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            progress=TaskProgress(
                elapsed_s=elapsed,
                stdout_bytes=self.stdout_bytes,
                stderr_bytes=self.stderr_bytes,
                message=self.message,
                output_tail=self.output.tail(),
                output_chars=self.output.end,
            ),
            run=self.run,
            install=self.install,
            test=self.test,
            lint=self.lint,
            clone=self.clone,
            error=self.error,
        )


Work = Callable[[Task], Awaitable[Outcome]]


class TaskManager:
    """Starts, tracks, waits on, cancels and forgets tasks."""

    def __init__(self, retention: int, max_concurrent_runs: int = 8) -> None:
        self.retention = retention
        self._tasks: dict[str, Task] = {}
        self._run_gate = asyncio.Semaphore(max_concurrent_runs)
        # pip runs one at a time: two installs into one venv at once can corrupt it.
        self._install_gate = asyncio.Semaphore(1)
        self._closed = False

    @property
    def install_gate(self) -> asyncio.Semaphore:
        """Held while anything writes the session venv (pkg.install tasks, first-use tool installs)."""
        return self._install_gate

    def submit(self, kind: TaskKind, work: Work) -> Task:
        if self._closed:
            raise CodegenError("the agent is shutting down", code=ErrorCode.SANDBOX_UNAVAILABLE)
        task = Task(task_id=f"task_{secrets.token_hex(8)}", kind=kind)
        gate = self._install_gate if kind is TaskKind.PKG_INSTALL else self._run_gate
        self._tasks[task.task_id] = task
        task.runner = asyncio.create_task(self._drive(task, work, gate), name=task.task_id)
        return task

    async def _drive(self, task: Task, work: Work, gate: asyncio.Semaphore) -> None:
        try:
            async with gate:
                task.state = TaskState.RUNNING
                task.started_at = datetime.now(UTC)
                task.started_mono = time.monotonic()
                CURRENT.set(task.output)  # this runner's own context: what its processes print goes there
                outcome = await work(task)
            task.state, task.run, task.install, task.error = outcome.state, outcome.run, outcome.install, outcome.error
            task.test, task.lint, task.clone = outcome.test, outcome.lint, outcome.clone
        except asyncio.CancelledError:
            task.state = TaskState.CANCELLED
            task.error = task.error or "the task was cancelled"
            raise
        except CodegenError as err:
            task.state, task.error = TaskState.FAILED, err.message
        except Exception:
            log.exception("task %s failed inside the agent", task.task_id)
            task.state, task.error = TaskState.FAILED, "the task failed inside the agent (see the agent log)"
        finally:
            task.finished_at = datetime.now(UTC)
            task.finished_mono = time.monotonic()
            if task.started_mono is None:
                task.started_mono = task.finished_mono
            task.output.close()
            task.done.set()
            self._forget_old()

    def _forget_old(self) -> None:
        finished = [t for t in self._tasks.values() if t.done.is_set()]
        for old in finished[: max(0, len(finished) - self.retention)]:
            del self._tasks[old.task_id]

    def get(self, task_id: str) -> Task:
        task = self._tasks.get(task_id)
        if task is None:
            raise CodegenError(
                f"there is no task `{task_id}` (unknown, or finished long enough ago to be forgotten)",
                code=ErrorCode.TASK_NOT_FOUND,
            )
        return task

    async def wait(self, task: Task, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the task to finish; returns either way."""
        if task.done.is_set() or timeout_s <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await task.done.wait()

    async def cancel(self, task_id: str) -> Task:
        task = self.get(task_id)
        if task.done.is_set():
            return task
        task.cancel_requested.set()
        if task.state is TaskState.QUEUED and task.runner is not None:
            # Still waiting for its turn: nothing to kill.
            task.runner.cancel()
        await self.wait(task, CANCEL_GRACE_S)
        return task

    def running(self) -> list[Task]:
        return [t for t in self._tasks.values() if not t.done.is_set()]

    async def shutdown(self) -> None:
        """Stop everything still running (their process groups are killed by the executor)."""
        self._closed = True
        runners = [t.runner for t in self.running() if t.runner is not None]
        for runner in runners:
            runner.cancel()
        if runners:
            await asyncio.gather(*runners, return_exceptions=True)
