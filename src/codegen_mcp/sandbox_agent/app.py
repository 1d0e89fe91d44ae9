"""The sandbox agent's HTTP API: `create_app(settings)`, the one factory (tests and `__main__` both use it).

It builds the agent's parts and routes every path of `api.routes.AGENT_ROUTES` to its view (handlers.py),
behind the edge of http.py (auth, one error mapping); lifecycle.py starts and stops the agent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from codegen_mcp.api.agent_settings import AgentSettings
from codegen_mcp.api.routes import AGENT_ROUTES
from codegen_mcp.api.tools import MAX_WRITE_BYTES
from codegen_mcp.sandbox_agent.agent import AGENT, PLANNED, Agent
from codegen_mcp.sandbox_agent.artifacts import ArtifactStore
from codegen_mcp.sandbox_agent.calls import call_middleware
from codegen_mcp.sandbox_agent.executor import Executor
from codegen_mcp.sandbox_agent.handlers import HANDLERS
from codegen_mcp.sandbox_agent.http import auth_middleware, error_middleware
from codegen_mcp.sandbox_agent.isolation import Sandbox, choose_identity
from codegen_mcp.sandbox_agent.lifecycle import (
    agent_lifecycle,
    check_listen_safety,
    create_planned_tools,
)
from codegen_mcp.sandbox_agent.output_stream import end_streams_on_shutdown
from codegen_mcp.sandbox_agent.tasks import TaskManager
from codegen_mcp.sandbox_agent.workspace import Owner, Workspace

# A write's content is at most MAX_WRITE_BYTES as sent; room for its JSON around it.
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
    app = web.Application(
        middlewares=[call_middleware, error_middleware, auth_middleware], client_max_size=CLIENT_MAX_SIZE
    )
    app[AGENT] = agent
    app[PLANNED] = create_planned_tools(settings, agent, env, state_dir)
    app.cleanup_ctx.append(agent_lifecycle)
    end_streams_on_shutdown(app)
    for route in AGENT_ROUTES:
        add = app.router.add_get if route.method == "GET" else app.router.add_post
        add(route.path, HANDLERS[route])
    return app
