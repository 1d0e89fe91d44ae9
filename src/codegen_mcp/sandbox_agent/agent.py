"""What one sandbox agent shares between requests: it lives in the aiohttp app, never in a module global."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from codegen_mcp.api.agent_settings import AgentSettings
from codegen_mcp.sandbox_agent.artifacts import ArtifactStore
from codegen_mcp.sandbox_agent.devtools import DevTools
from codegen_mcp.sandbox_agent.executor import Executor
from codegen_mcp.sandbox_agent.gitops import GitOps
from codegen_mcp.sandbox_agent.isolation import Sandbox
from codegen_mcp.sandbox_agent.store import Uploader
from codegen_mcp.sandbox_agent.tasks import TaskManager
from codegen_mcp.sandbox_agent.workspace import Workspace


@dataclass
class Agent:
    """Everything one agent shares between requests."""

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
