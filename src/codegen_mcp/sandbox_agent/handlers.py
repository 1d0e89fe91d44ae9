"""The agent's views, one per route of `api.routes`: validate the arguments, then delegate to the parts.

Long work (runs, installs, tests, lint, clones) is a task: the view submits it and answers with its view
after `wait_s`, or at once with its task_id.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Protocol

from aiohttp import web

from codegen_mcp import __version__
from codegen_mcp.api import routes
from codegen_mcp.api.arguments import ArtifactRegisterArgs
from codegen_mcp.api.call_id import CALL_ID_HEADER, join_call, valid_call_id
from codegen_mcp.api.errors import InvalidArgument
from codegen_mcp.api.logs import bind_session
from codegen_mcp.api.routes import Route
from codegen_mcp.api.tools import (
    MAX_WAIT_S,
    ArtifactGetArgs,
    ArtifactListArgs,
    ArtifactListResult,
    ArtifactUploadArgs,
    EchoArgs,
    EchoResult,
    FsListArgs,
    FsReadArgs,
    FsWriteArgs,
    GitCloneArgs,
    GitCommitArgs,
    HealthView,
    LintArgs,
    PkgInstallArgs,
    PytestArgs,
    RunPythonArgs,
    TaskIdArgs,
    TaskKind,
)
from codegen_mcp.sandbox_agent.agent import AGENT, PLANNED, Agent
from codegen_mcp.sandbox_agent.contexts import CellRequest
from codegen_mcp.sandbox_agent.http import model_response, read_args, validated
from codegen_mcp.sandbox_agent.output_stream import follow, offset_of
from codegen_mcp.sandbox_agent.requirements import parse_requirements
from codegen_mcp.sandbox_agent.tasks import Outcome, Task
from codegen_mcp.sandbox_agent.toolruns import lint_target, pytest_targets


async def healthz(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    python = agent.executor.base_python
    return model_response(
        HealthView(
            version=__version__,
            workspace=str(agent.workspace.root),
            isolation=agent.sandbox.describe(),
            python=f"{agent.python_version} ({python})" if agent.python_version else python,
            running_tasks=len(agent.tasks.running()),
        )
    )


async def echo(request: web.Request) -> web.Response:
    args = await read_args(request, EchoArgs)
    return model_response(EchoResult(message=args.message))


async def fs_read(request: web.Request) -> web.Response:
    args = await read_args(request, FsReadArgs)
    ws = request.app[AGENT].workspace
    return model_response(await asyncio.to_thread(ws.read, args.path, args.offset, args.limit))


async def fs_write(request: web.Request) -> web.Response:
    args = await read_args(request, FsWriteArgs)
    ws = request.app[AGENT].workspace
    return model_response(await asyncio.to_thread(ws.write, args.path, args.content, args.encoding, args.append))


async def fs_list(request: web.Request) -> web.Response:
    args = await read_args(request, FsListArgs)
    ws = request.app[AGENT].workspace
    return model_response(await asyncio.to_thread(ws.list, args.path, args.recursive))


class _TimedArgs(Protocol):
    timeout_s: float

    @property
    def model_fields_set(self) -> set[str]: ...


def _timeout(agent: Agent, args: _TimedArgs) -> float:
    """The call's timeout under this sandbox's ceiling (a default is lowered, an explicit value refused)."""
    ceiling = agent.settings.max_timeout_s
    if "timeout_s" not in args.model_fields_set:
        return min(args.timeout_s, ceiling)
    if args.timeout_s > ceiling:
        raise InvalidArgument(f"`timeout_s` must be at most {ceiling:g} on this sandbox")
    return args.timeout_s


async def _respond_after(agent: Agent, task: Task, wait_s: float) -> web.Response:
    await agent.tasks.wait(task, wait_s)
    return model_response(task.view())


async def run_python(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    args = await read_args(request, RunPythonArgs)
    timeout_s = _timeout(agent, args)
    file: Path | None = None
    if args.file is not None:
        file, fd = await asyncio.to_thread(agent.workspace.open_regular_file, args.file)
        os.close(fd)

    context = args.context
    if context is not None:
        agent.executor.contexts.claim(context)  # past the cap: refused now, in one sentence

    async def work(task: Task) -> Outcome:
        if context is not None:
            reset_only = args.code is None and file is None
            cell = None if reset_only else CellRequest(args.code, file, args.args, args.stdin, timeout_s)
            return await agent.executor.contexts.run(task, context, cell, reset=args.reset)
        return await agent.executor.run_python(
            task, code=args.code, file=file, args=args.args, stdin=args.stdin, timeout_s=timeout_s
        )

    task = agent.tasks.submit(TaskKind.RUN_PYTHON, work)
    return await _respond_after(agent, task, args.wait_s)


async def run_contexts(request: web.Request) -> web.Response:
    return model_response(request.app[AGENT].executor.contexts.listing())


async def pkg_install(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    args = await read_args(request, PkgInstallArgs)
    timeout_s = _timeout(agent, args)
    requirements = parse_requirements(args.packages)
    agent.executor.offline_install_folders()  # no egress and no local wheels: refuse now, not after pip's retries

    async def work(task: Task) -> Outcome:
        return await agent.executor.pkg_install(task, requirements=requirements, timeout_s=timeout_s)

    task = agent.tasks.submit(TaskKind.PKG_INSTALL, work)
    return await _respond_after(agent, task, args.wait_s)


def _task(request: web.Request) -> Task:
    """The task a request names. A request naming no call of its own (MCP's tasks/get and tasks/cancel, which
    the coordinator serves outside any tool call) is handled as part of the call, and session, that started it."""
    task = request.app[AGENT].tasks.get(validated(TaskIdArgs, request.match_info).task_id)
    if task.call_id is not None and valid_call_id(request.headers.get(CALL_ID_HEADER)) is None:
        join_call(task.call_id)
        if task.session is not None:
            bind_session(task.session)
    return task


def _wait_s(query: Mapping[str, str]) -> float:
    raw = query.get("wait_s", "0")
    try:
        value = float(raw)
    except ValueError:
        raise InvalidArgument("`wait_s` must be a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument("`wait_s` must be a finite number of seconds, 0 or more")
    return min(value, MAX_WAIT_S)


async def get_task(request: web.Request) -> web.Response:
    wait_s = _wait_s(request.query)
    task = _task(request)
    return await _respond_after(request.app[AGENT], task, wait_s)


async def task_output(request: web.Request) -> web.StreamResponse:
    task = _task(request)
    return await follow(request, task.output, offset_of(request.query))


async def cancel_task(request: web.Request) -> web.Response:
    task = await request.app[AGENT].tasks.cancel(_task(request).task_id)
    return model_response(task.view())


async def list_artifacts(request: web.Request) -> web.Response:
    args = validated(ArtifactListArgs, request.query)
    items = request.app[AGENT].artifacts.list()
    if args.task_id is not None:
        items = [a for a in items if a.task_id == args.task_id]
    items.reverse()  # newest first
    listed = items[: args.limit]
    return model_response(ArtifactListResult(artifacts=listed, total=len(items), truncated=len(items) > len(listed)))


async def get_artifact(request: web.Request) -> web.Response:
    store = request.app[AGENT].artifacts
    artifact_id = validated(ArtifactGetArgs, request.match_info).artifact_id
    return model_response(await asyncio.to_thread(store.content, artifact_id))


async def register_artifact(request: web.Request) -> web.Response:
    store = request.app[AGENT].artifacts
    args = await read_args(request, ArtifactRegisterArgs)
    return model_response(await asyncio.to_thread(store.register, args.path), status=201)


async def upload_artifact(request: web.Request) -> web.Response:
    args = await read_args(request, ArtifactUploadArgs)
    timeout_s = _timeout(request.app[AGENT], args)
    return model_response(await request.app[PLANNED].uploader.upload(args, timeout_s))


async def run_tests(request: web.Request) -> web.Response:
    agent, planned = request.app[AGENT], request.app[PLANNED]
    args = await read_args(request, PytestArgs)
    timeout_s = _timeout(agent, args)
    targets = await asyncio.to_thread(pytest_targets, agent.workspace, args.paths)

    async def work(task: Task) -> Outcome:
        return await planned.devtools.run_tests(task, args, targets, timeout_s)

    task = agent.tasks.submit(TaskKind.TEST_RUN, work)
    return await _respond_after(agent, task, args.wait_s)


async def lint_check(request: web.Request) -> web.Response:
    agent, planned = request.app[AGENT], request.app[PLANNED]
    args = await read_args(request, LintArgs)
    timeout_s = _timeout(agent, args)
    target = await asyncio.to_thread(lint_target, agent.workspace, args.path)

    async def work(task: Task) -> Outcome:
        return await planned.devtools.lint(task, args, target, timeout_s)

    task = agent.tasks.submit(TaskKind.LINT_CHECK, work)
    return await _respond_after(agent, task, args.wait_s)


async def git_clone(request: web.Request) -> web.Response:
    agent, planned = request.app[AGENT], request.app[PLANNED]
    args = await read_args(request, GitCloneArgs)
    timeout_s = _timeout(agent, args)
    url, dest = await asyncio.to_thread(planned.git.prepare_clone, args)

    async def work(task: Task) -> Outcome:
        return await planned.git.clone(task, args, url, dest, timeout_s)

    task = agent.tasks.submit(TaskKind.GIT_CLONE, work)
    return await _respond_after(agent, task, args.wait_s)


async def git_commit(request: web.Request) -> web.Response:
    agent, planned = request.app[AGENT], request.app[PLANNED]
    args = await read_args(request, GitCommitArgs)
    return model_response(await planned.git.commit(args, _timeout(agent, args)))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The agent's router, built from this: one view per route of the one table (a test holds them equal).
HANDLERS: dict[Route, Handler] = {
    routes.HEALTHZ: healthz,
    routes.ECHO: echo,
    routes.FS_READ: fs_read,
    routes.FS_WRITE: fs_write,
    routes.FS_LIST: fs_list,
    routes.RUN_PYTHON: run_python,
    routes.RUN_CONTEXTS: run_contexts,
    routes.PKG_INSTALL: pkg_install,
    routes.TASK: get_task,
    routes.TASK_CANCEL: cancel_task,
    routes.TASK_OUTPUT: task_output,
    routes.ARTIFACTS: list_artifacts,
    routes.ARTIFACT_REGISTER: register_artifact,
    routes.ARTIFACT: get_artifact,
    routes.ARTIFACT_UPLOAD: upload_artifact,
    routes.TEST_RUN: run_tests,
    routes.LINT_CHECK: lint_check,
    routes.GIT_CLONE: git_clone,
    routes.GIT_COMMIT: git_commit,
}
