"""The sandbox agent's HTTP API: thin aiohttp views that validate, then delegate.

`create_app(settings)` is the one factory (tests and `__main__` both use it). Errors are mapped once, in a
middleware, to `{"error": {"code", "message"}}` with the code's HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from aiohttp import web
from packaging.requirements import Requirement
from pydantic import BaseModel, ConfigDict, ValidationError

from codegen_mcp import __version__
from codegen_mcp.api.errors import (
    CodegenError,
    ErrorCode,
    InvalidArgument,
    NotFound,
    SandboxUnavailable,
    validation_sentence,
)
from codegen_mcp.api.tools import (
    DEFAULT_INSTALL_TIMEOUT_S,
    MAX_WAIT_S,
    MAX_WRITE_BYTES,
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
    WorkspacePath,
)
from codegen_mcp.sandbox_agent.artifacts import ArtifactStore
from codegen_mcp.sandbox_agent.devtools import DevTools, default_wheelhouse, lint_target, pytest_targets
from codegen_mcp.sandbox_agent.executor import Executor, parse_requirements
from codegen_mcp.sandbox_agent.gitops import GitOps
from codegen_mcp.sandbox_agent.isolation import (
    Jail,
    Sandbox,
    choose_identity,
    find_bwrap,
    probe_bwrap,
    unreachable_parent,
)
from codegen_mcp.sandbox_agent.settings import AgentSettings
from codegen_mcp.sandbox_agent.store import Uploader, create_durable_store
from codegen_mcp.sandbox_agent.tasks import Outcome, Task, TaskManager
from codegen_mcp.sandbox_agent.workspace import Owner, Workspace, claim_workspace

log = logging.getLogger(__name__)

# Base64 makes a 16 MiB write about 22 MiB of JSON.
CLIENT_MAX_SIZE = MAX_WRITE_BYTES * 2
# Environment variables pip may inherit from the agent (index, proxy and CA configuration, never the token).
PIP_ENV_PREFIXES = ("PIP_",)
PIP_ENV_NAMES = frozenset(
    {
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
    }
)

M = TypeVar("M", bound=BaseModel)


class ArtifactRegisterArgs(BaseModel):
    """Body of `POST /v1/artifacts`: make a workspace file an artifact."""

    model_config = ConfigDict(extra="forbid")

    path: WorkspacePath


@dataclass
class Agent:
    """Everything one agent shares between requests (lives in the app, never in a module global)."""

    settings: AgentSettings
    token: str | None
    workspace: Workspace
    artifacts: ArtifactStore
    executor: Executor
    tasks: TaskManager
    sandbox: Sandbox
    python_version: str = ""


AGENT = web.AppKey("codegen_agent", Agent)


@dataclass
class PlannedTools:
    """test.run, lint.check, git.* and artifact.upload: their helpers, shared between requests."""

    devtools: DevTools
    git: GitOps
    uploader: Uploader


PLANNED = web.AppKey("codegen_planned_tools", PlannedTools)


# --- errors ---------------------------------------------------------------------------------------------


def error_response(err: CodegenError) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if err.code is ErrorCode.UNAUTHORIZED else None
    return web.json_response(err.to_dict(), status=err.code.http_status, headers=headers)


def _http_error(exc: web.HTTPException, request: web.Request) -> CodegenError:
    if exc.status == 404:
        return NotFound(f"there is no endpoint {request.method} {request.path}")
    if exc.status == 405:
        return InvalidArgument(f"{request.method} is not allowed on {request.path}")
    if exc.status == 413:
        return CodegenError(f"the request body is larger than {CLIENT_MAX_SIZE} bytes", code=ErrorCode.TOO_LARGE)
    return CodegenError(exc.reason or "the request failed", code=ErrorCode.INVALID_ARGUMENT)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except CodegenError as err:
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_http_error(exc, request))
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return error_response(CodegenError("the agent failed unexpectedly; the details are in its log"))


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    token = request.app[AGENT].token
    if token is not None and request.path != "/healthz":
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise CodegenError(
                "a valid bearer token is required (Authorization: Bearer <token>)", code=ErrorCode.UNAUTHORIZED
            )
    return await handler(request)


async def read_args(request: web.Request, model: type[M]) -> M:
    """The JSON body validated as `model`; errors become one-sentence invalid_argument errors."""
    raw = await request.read()
    if not raw.strip():
        body: Any = {}
    else:
        try:
            body = json.loads(raw)
        except ValueError:  # also bytes that are not UTF-8
            raise InvalidArgument("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise InvalidArgument(validation_sentence(err, model=model)) from None


def model_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(text=model.model_dump_json(), status=status)


# --- views ----------------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    python = agent.executor.base_python
    return model_response(
        HealthView(
            version=__version__,
            workspace=str(agent.workspace.root),
            isolation=agent.sandbox.describe(),
            python=f"{agent.python_version} ({python})" if agent.python_version else python,
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

    async def work(task: Task) -> Outcome:
        return await agent.executor.run_python(
            task, code=args.code, file=file, args=args.args, stdin=args.stdin, timeout_s=timeout_s
        )

    task = agent.tasks.submit(TaskKind.RUN_PYTHON, work)
    return await _respond_after(agent, task, args.wait_s)


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


def _task_id(request: web.Request) -> str:
    try:
        return TaskIdArgs(task_id=request.match_info["task_id"]).task_id
    except ValidationError as err:
        raise InvalidArgument(validation_sentence(err)) from None


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
    agent = request.app[AGENT]
    task_id, wait_s = _task_id(request), _wait_s(request.query)
    return await _respond_after(agent, agent.tasks.get(task_id), wait_s)


async def cancel_task(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    task = await agent.tasks.cancel(_task_id(request))
    return model_response(task.view())


async def list_artifacts(request: web.Request) -> web.Response:
    query = dict(request.query)
    try:
        args = ArtifactListArgs.model_validate(query)
    except ValidationError as err:
        raise InvalidArgument(validation_sentence(err, model=ArtifactListArgs)) from None
    items = request.app[AGENT].artifacts.list()
    if args.task_id is not None:
        items = [a for a in items if a.task_id == args.task_id]
    items.reverse()  # newest first
    listed = items[: args.limit]
    return model_response(ArtifactListResult(artifacts=listed, total=len(items), truncated=len(items) > len(listed)))


async def get_artifact(request: web.Request) -> web.Response:
    store = request.app[AGENT].artifacts
    try:
        artifact_id = ArtifactGetArgs(artifact_id=request.match_info["artifact_id"]).artifact_id
    except ValidationError as err:
        raise InvalidArgument(validation_sentence(err)) from None
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


# --- lifecycle ------------------------------------------------------------------------------------------


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


async def _python_version(python: str) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(
            python,
            "-c",
            "import platform; print(platform.python_version())",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin"},
        )
        async with asyncio.timeout(10):
            out, _ = await proc.communicate()
    except (OSError, TimeoutError):
        return ""
    return out.decode().strip()


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
    agent.python_version = await _python_version(executor.base_python)
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


async def planned_tools_lifecycle(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[PLANNED].devtools.aclose()


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


def create_app(settings: AgentSettings, *, environ: Mapping[str, str] | None = None) -> web.Application:
    """The agent's aiohttp application; `environ` (default os.environ) feeds pip's, git's and the stores'
    configuration (proxies, CA bundles, AWS credentials, cache folders), never code the agent runs."""
    token = settings.token_value()
    check_listen_safety(settings, token)
    settings.workspace.mkdir(parents=True, exist_ok=True)
    identity = choose_identity(os.geteuid(), settings.sandbox_uid, settings.sandbox_gid)
    owner = Owner(identity.uid, identity.gid) if identity is not None else None
    state_dir = Path(os.path.realpath(settings.state_path))
    venv_dir = Path(os.path.realpath(settings.venv_path))
    workspace = Workspace(settings.workspace, owner=owner, protected=(venv_dir, state_dir))
    artifacts = ArtifactStore(workspace, state_dir / "artifacts.json")
    env = os.environ if environ is None else environ
    pip_env = {k: v for k, v in env.items() if k in PIP_ENV_NAMES or k.startswith(PIP_ENV_PREFIXES)}
    sandbox = Sandbox(identity=identity, jail=None)
    executor = Executor(
        settings,
        workspace_root=workspace.root,
        state_dir=state_dir,
        venv_dir=venv_dir,
        sandbox=sandbox,
        artifacts=artifacts,
        owner=owner,
        pip_env=pip_env,
    )
    agent = Agent(
        settings=settings,
        token=token,
        workspace=workspace,
        artifacts=artifacts,
        executor=executor,
        tasks=TaskManager(settings.task_retention),
        sandbox=sandbox,
    )
    app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=CLIENT_MAX_SIZE)
    app[AGENT] = agent
    app.cleanup_ctx.append(agent_lifecycle)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/v1/echo", echo)
    app.router.add_post("/v1/fs/read", fs_read)
    app.router.add_post("/v1/fs/write", fs_write)
    app.router.add_post("/v1/fs/list", fs_list)
    app.router.add_post("/v1/run/python", run_python)
    app.router.add_post("/v1/pkg/install", pkg_install)
    app.router.add_get("/v1/tasks/{task_id}", get_task)
    app.router.add_post("/v1/tasks/{task_id}/cancel", cancel_task)
    app.router.add_get("/v1/artifacts", list_artifacts)
    app.router.add_post("/v1/artifacts", register_artifact)
    app.router.add_get("/v1/artifacts/{artifact_id}", get_artifact)
    # The planned tools (issue 6).
    app[PLANNED] = create_planned_tools(settings, agent, env, state_dir)
    app.cleanup_ctx.append(planned_tools_lifecycle)
    app.router.add_post("/v1/test/run", run_tests)
    app.router.add_post("/v1/lint/check", lint_check)
    app.router.add_post("/v1/git/clone", git_clone)
    app.router.add_post("/v1/git/commit", git_commit)
    app.router.add_post("/v1/artifacts/upload", upload_artifact)
    return app
