"""run.python: code or a workspace file run by the session venv's interpreter, as sandboxed code.

The code is written to a script in the agent's state (shown read-only in the jail, where the rest of the
state is hidden), run like every confined tool, and the files it made or changed become the run's artifacts.
A run that fills the session's disk quota is stopped and its stderr says so (see `diskquota`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from codegen_mcp.api.tools import RunResult, TaskState
from codegen_mcp.sandbox_agent.artifacts import take_snapshot
from codegen_mcp.sandbox_agent.process import Captured, stopped
from codegen_mcp.sandbox_agent.sandboxed import run_sandboxed
from codegen_mcp.sandbox_agent.tasks import Outcome, Task

if TYPE_CHECKING:
    from codegen_mcp.sandbox_agent.executor import Executor


async def run_python(
    executor: Executor,
    task: Task,
    *,
    code: str | None,
    file: Path | None,
    args: Sequence[str],
    stdin: str | None,
    timeout_s: float,
) -> Outcome:
    python = await executor.ensure_venv()
    settings = executor.settings
    script: Path | None = None
    if code is not None:
        script = executor.runs_dir / f"{task.task_id}.py"
        script.write_text(code, encoding="utf-8")
        os.chmod(script, 0o644)
        target = script
    else:
        assert file is not None
        target = file
    before = await asyncio.to_thread(take_snapshot, executor.root)
    cap = settings.output_cap_bytes
    try:
        result = await run_sandboxed(
            executor,
            task,
            [str(python), str(target), *args],
            timeout_s=timeout_s,
            stdout=Captured(cap=cap),
            stderr=Captured(cap=cap),
            stdin=stdin.encode("utf-8", errors="replace") if stdin is not None else None,
            bind_files=[script] if script is not None else [],
            what="Python",
        )
    finally:
        if script is not None:
            with contextlib.suppress(OSError):
                script.unlink()
    artifacts = await asyncio.to_thread(executor.artifacts.collect, before, task.task_id)
    ended = stopped(result, "the run", timeout_s, settings.tmp_dir)
    stderr = result.stderr.text()
    if result.disk_full and ended is not None:
        stderr = f"{stderr.rstrip()}\n{ended[1]}\n".lstrip()  # where a reader of the output looks first
    run = RunResult(
        exit_code=result.exit_code,
        stdout=result.stdout.text(),
        stderr=stderr,
        stdout_truncated=result.stdout.truncated,
        stderr_truncated=result.stderr.truncated,
        duration_s=result.duration_s,
        timed_out=result.timed_out,
        artifacts=artifacts,
    )
    if ended is not None:
        return Outcome(ended[0], run=run, error=ended[1])
    state = TaskState.SUCCEEDED if result.exit_code == 0 else TaskState.FAILED
    return Outcome(state, run=run)
