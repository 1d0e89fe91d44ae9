"""Run a tool (pytest, ruff, mypy, git) over the workspace under the same confinement as run.python.

`Executor.confine` decides the confinement (the jail when it is in force: workspace read-write, venv
read-only, the agent's state hidden; else the sandbox uid; rlimits and a process group either way); this
module adds what every tool call needs around it: a clean environment, a wall-clock timeout, cancellation
through the task, output capture and one-sentence errors.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from codegen_mcp.sandbox_agent.executor import Captured, Executor, ProcessOutcome, start_failure, supervise
from codegen_mcp.sandbox_agent.isolation import CPU_SLACK_S, Limits, child_env
from codegen_mcp.sandbox_agent.tasks import Task


@dataclass
class ProgressCaptured(Captured):
    """A captured stream that also hands each chunk's text to `on_text` (for progress messages)."""

    on_text: Callable[[str], None] | None = None

    def add(self, chunk: bytes) -> None:
        super().add(chunk)
        if self.on_text is not None:
            self.on_text(chunk.decode("utf-8", errors="replace"))


def sandbox_limits(executor: Executor, timeout_s: float) -> Limits:
    """run.python's limits, for a run of `timeout_s` seconds."""
    s = executor.settings
    return Limits(
        memory_bytes=s.memory_bytes,
        cpu_seconds=int(timeout_s) + CPU_SLACK_S,
        file_bytes=s.max_file_bytes,
        open_files=s.max_open_files,
        processes=s.max_processes,
    )


async def run_sandboxed(
    executor: Executor,
    task: Task | None,
    argv: Sequence[str],
    *,
    timeout_s: float,
    stdout: Captured,
    stderr: Captured | None,
    env: Mapping[str, str] | None = None,
    bind_files: Sequence[Path] = (),
    what: str = "the tool",
) -> ProcessOutcome:
    """Run `argv` in the workspace as sandboxed code. `bind_files` are agent files it may read (CA bundles…).

    `stderr=None` merges stderr into `stdout`. Cancelling `task` (or the caller) kills the process group.
    """
    command, popen_kwargs, home = executor.confine(
        argv, sandbox_limits(executor, timeout_s), read_only_after=[p for p in bind_files if p.exists()]
    )
    child = child_env(venv=executor.venv_dir, home=home, extra={**executor.settings.run_env, **(env or {})})

    def count_out(n: int) -> None:
        if task is not None:
            task.stdout_bytes += n

    def count_err(n: int) -> None:
        if task is not None:
            task.stderr_bytes += n

    try:
        return await supervise(
            command,
            env=child,
            cwd=executor.root,
            stdin=None,
            timeout_s=timeout_s,
            cancel=task.cancel_requested if task is not None else asyncio.Event(),
            stdout=stdout,
            stderr=stderr,
            popen_kwargs=popen_kwargs,
            on_stdout=count_out,
            on_stderr=count_err,
        )
    except (OSError, subprocess.SubprocessError) as err:
        raise start_failure(f"{what} in the sandbox", err) from None


def sandbox_home(executor: Executor) -> Path:
    """HOME as sandboxed code sees it (the jail's private /tmp, else the agent's per-session home)."""
    return Path("/tmp") if executor.sandbox.jail is not None else executor.home_dir  # noqa: S108
