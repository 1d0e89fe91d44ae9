"""Running confined code over the workspace: run.python's code, pytest, ruff, mypy and git all go through here.

`confine` decides the confinement: the jail when it is in force (the workspace read-write, the venv
read-only, the agent's state hidden except the files named in `read_only_after`), else the sandbox uid;
rlimits and a process group either way. `run_sandboxed` adds what every such run needs around it: a clean
environment, a wall-clock timeout, cancellation through the task, output capture and one-sentence errors,
and, when the jail has the network, the same user-mode network as pip's (`netns`): out to the world, but
not to the host's loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from codegen_mcp.api.agent_settings import AgentSettings
from codegen_mcp.sandbox_agent.isolation import CPU_SLACK_S, Limits, child_env
from codegen_mcp.sandbox_agent.jail import Bind, JailCommand, Mount
from codegen_mcp.sandbox_agent.netns import resolv_conf_mounts, user_network
from codegen_mcp.sandbox_agent.process import Captured, ProcessOutcome, start_failure, supervise
from codegen_mcp.sandbox_agent.tasks import Task

if TYPE_CHECKING:
    from codegen_mcp.sandbox_agent.executor import Executor


def run_limits(settings: AgentSettings, timeout_s: float) -> Limits:
    """The limits of code run over the workspace, for a run of `timeout_s` seconds."""
    return Limits(
        memory_bytes=settings.memory_bytes,
        cpu_seconds=int(timeout_s) + CPU_SLACK_S,
        file_bytes=settings.max_file_bytes,
        open_files=settings.max_open_files,
        processes=settings.max_processes,
    )


def sandbox_home(executor: Executor) -> Path:
    """HOME as sandboxed code sees it (the jail's private /tmp, else the agent's per-session home)."""
    return Path("/tmp") if executor.sandbox.jail is not None else executor.home_dir  # noqa: S108


@contextlib.contextmanager
def confine(
    executor: Executor, argv: Sequence[str], limits: Limits, *, read_only_after: Sequence[Path] = ()
) -> Iterator[tuple[list[str], dict[str, object]]]:
    """argv and popen kwargs for code run over the workspace; start the process inside the block."""
    sandbox = executor.sandbox
    command: JailCommand | Sequence[str] = argv
    if sandbox.jail is not None:
        binds: list[Mount] = [*executor.python_mounts(), Bind(executor.root, writable=True)]
        if executor.venv_dir.exists():
            binds.append(Bind(executor.venv_dir))
        if sandbox.jail.network:
            binds += resolv_conf_mounts(executor.state_dir)
        command = sandbox.jail_command(
            argv, binds=binds, chdir=executor.root, hidden_inside=[executor.state_dir], read_only_after=read_only_after
        )
    with sandbox.spawn(command, limits) as spawned:
        yield spawned


async def run_sandboxed(
    executor: Executor,
    task: Task | None,
    argv: Sequence[str],
    *,
    timeout_s: float,
    stdout: Captured,
    stderr: Captured | None,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    bind_files: Sequence[Path] = (),
    what: str = "the tool",
) -> ProcessOutcome:
    """Run `argv` in the workspace as sandboxed code. `bind_files` are agent files it may read (CA bundles,
    run.python's script).

    `stderr=None` merges stderr into `stdout`. Cancelling `task` (or the caller) kills the process group.
    """
    limits = run_limits(executor.settings, timeout_s)
    extra = {**executor.settings.run_env, **(env or {})}
    child = child_env(venv=executor.venv_dir, home=sandbox_home(executor), extra=extra)

    def count_out(n: int) -> None:
        if task is not None:
            task.stdout_bytes += n

    def count_err(n: int) -> None:
        if task is not None:
            task.stderr_bytes += n

    jail = executor.sandbox.jail
    try:
        with confine(executor, argv, limits, read_only_after=[p for p in bind_files if p.exists()]) as spawned:
            # Without the jail (or its network) there is no namespace to give, and nothing changes.
            network = jail is not None and jail.network
            async with user_network(*spawned, jailed=jail is not None, network=network) as (command, popen_kwargs):
                return await supervise(
                    command,
                    env=child,
                    cwd=executor.root,
                    stdin=stdin,
                    timeout_s=timeout_s,
                    cancel=task.cancel_requested if task is not None else asyncio.Event(),
                    stdout=stdout,
                    stderr=stderr,
                    popen_kwargs=popen_kwargs,
                    on_stdout=count_out,
                    on_stderr=count_err,
                    quota_dir=executor.settings.tmp_dir,
                )
    except (OSError, subprocess.SubprocessError) as err:
        raise start_failure(f"{what} in the sandbox", err) from None
