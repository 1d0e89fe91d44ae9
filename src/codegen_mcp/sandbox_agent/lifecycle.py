"""The agent's start and stop: where it may listen, which sandbox it runs code in, the venv made ahead.

Start-up decides once (bubblewrap if it works here, else rlimits; a refused `sandbox=bwrap` stops the agent),
claims the workspace for the sandbox user, and prepares the venv in the background; shutdown stops every task.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from aiohttp import web
from packaging.requirements import Requirement

from codegen_mcp.api.agent_settings import AgentSettings
from codegen_mcp.api.errors import CodegenError, SandboxUnavailable
from codegen_mcp.api.tools import DEFAULT_INSTALL_TIMEOUT_S, TaskKind
from codegen_mcp.sandbox_agent.agent import AGENT, Agent, PlannedTools
from codegen_mcp.sandbox_agent.devtools import DevTools, default_wheelhouse
from codegen_mcp.sandbox_agent.gitops import GitOps
from codegen_mcp.sandbox_agent.isolation import Sandbox, find_bwrap, unreachable_parent
from codegen_mcp.sandbox_agent.jail import Jail
from codegen_mcp.sandbox_agent.jailprobe import probe_bwrap
from codegen_mcp.sandbox_agent.requirements import parse_requirements
from codegen_mcp.sandbox_agent.store import Uploader, create_durable_store
from codegen_mcp.sandbox_agent.tasks import Outcome, Task
from codegen_mcp.sandbox_agent.venv import inspect_base_python
from codegen_mcp.sandbox_agent.workspace import claim_workspace

log = logging.getLogger(__name__)


def check_listen_safety(settings: AgentSettings, token: str | None) -> None:
    """Without a token the agent may only listen where nobody else can reach it."""
    if token is not None:
        return
    if settings.unix_socket is not None:
        log.warning("no token configured: anyone who can open %s controls this sandbox", settings.unix_socket)
        return
    try:
        loopback = settings.host == "localhost" or ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SandboxUnavailable(
            f"refusing to listen on {settings.host} without a token: set CODEGEN_AGENT_TOKEN or --token-file"
        )
    log.warning("no token configured: the agent accepts every request on %s (loopback only)", settings.host)


async def decide_sandbox(settings: AgentSettings, agent: Agent) -> Sandbox:
    identity = agent.sandbox.identity
    if settings.sandbox == "none":
        return Sandbox(identity=identity, jail=None)
    bwrap = find_bwrap()
    reason: str | None = "bwrap is not installed"
    jail: Jail | None = None
    if bwrap is not None:
        hide_files: tuple[Path, ...] = (settings.token_file,) if settings.token_file is not None else ()
        jail = Jail(
            bwrap=bwrap,
            network=settings.network,
            hide_paths=tuple(settings.hide_paths),
            hide_files=hide_files,
            tmp_dir=settings.tmp_dir,
        )
        reason = await probe_bwrap(jail, identity, agent.workspace.root)
    if reason is None:
        return Sandbox(identity=identity, jail=jail)
    if settings.sandbox == "bwrap":
        raise SandboxUnavailable(f"sandbox=bwrap was asked for but does not work here: {reason}")
    log.warning("bubblewrap is not usable here (%s); code runs with rlimits only", reason)
    return Sandbox(identity=identity, jail=None, notes=(reason,))


async def agent_lifecycle(app: web.Application) -> AsyncIterator[None]:
    agent = app[AGENT]
    settings = agent.settings
    executor = agent.executor
    await asyncio.to_thread(executor.prepare_dirs)
    if executor.owner is not None:
        owner = executor.owner
        await asyncio.to_thread(claim_workspace, agent.workspace.root, owner, agent.workspace.protected)
    await asyncio.to_thread(agent.artifacts.load)
    agent.sandbox = await decide_sandbox(settings, agent)
    executor.sandbox = agent.sandbox
    agent.python_version = (await inspect_base_python(executor.base_python)).version
    # In the jail a root agent stages the workspace itself, so only unjailed runs need a walkable path.
    blocked = (
        None if agent.sandbox.jail is not None else unreachable_parent(agent.workspace.root, agent.sandbox.identity)
    )
    if blocked is not None:
        log.warning(
            "code runs as uid %s but cannot traverse %s to reach the workspace; runs will fail",
            agent.sandbox.identity.uid if agent.sandbox.identity else "?",
            blocked,
        )
    log.info("sandbox agent ready: workspace %s, isolation %s", agent.workspace.root, agent.sandbox.describe())
    initial = parse_requirements(settings.packages) if settings.packages and settings.packages.strip() else []
    venv_task = asyncio.create_task(_prepare_venv(agent, initial))
    try:
        yield
    finally:
        await agent.tasks.shutdown()
        await agent.executor.contexts.close()
        venv_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await venv_task


async def _prepare_venv(agent: Agent, initial: list[Requirement]) -> None:
    """Create the venv ahead of the first run, then install the session's start-up packages as a task."""
    try:
        await agent.executor.ensure_venv()
    except CodegenError as err:
        log.warning("%s (the first run.python will try again)", err.message)
        return
    if initial:

        async def work(task: Task) -> Outcome:
            return await agent.executor.pkg_install(task, requirements=initial, timeout_s=DEFAULT_INSTALL_TIMEOUT_S)

        task = agent.tasks.submit(TaskKind.PKG_INSTALL, work)
        log.info("installing start-up packages %s as %s", " ".join(map(str, initial)), task.task_id)


def create_planned_tools(
    settings: AgentSettings, agent: Agent, environ: Mapping[str, str], state_dir: Path
) -> PlannedTools:
    wheelhouse = settings.devtools_wheelhouse or default_wheelhouse(environ, state_dir)
    store = create_durable_store(settings, environ, state_dir)
    return PlannedTools(
        devtools=DevTools(
            settings,
            executor=agent.executor,
            workspace=agent.workspace,
            tasks=agent.tasks,
            wheelhouse=Path(os.path.abspath(wheelhouse)),
        ),
        git=GitOps(settings, executor=agent.executor, workspace=agent.workspace, environ=environ),
        uploader=Uploader(
            settings,
            workspace=agent.workspace,
            artifacts=agent.artifacts,
            store=store,
            staging_dir=state_dir / "uploads",
        ),
    )
