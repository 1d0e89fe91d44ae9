"""The sandbox agent's HTTP routes, in one table.

The agent builds its router from `AGENT_ROUTES` (one handler per route, checked at start), the coordinator
calls the same constants (through each tool's `ToolSpec.route`), and the operator probes `HEALTHZ`. A route
written anywhere else is a route that can drift.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from codegen_mcp.api.session import AGENT_HEALTH_PATH


class Route(NamedTuple):
    method: Literal["GET", "POST"]
    path: str  # `{task_id}` / `{artifact_id}` are filled from the call's arguments


HEALTHZ = Route("GET", AGENT_HEALTH_PATH)
ECHO = Route("POST", "/v1/echo")
FS_READ = Route("POST", "/v1/fs/read")
FS_WRITE = Route("POST", "/v1/fs/write")
FS_LIST = Route("POST", "/v1/fs/list")
RUN_PYTHON = Route("POST", "/v1/run/python")
RUN_CONTEXTS = Route("GET", "/v1/run/contexts")
PKG_INSTALL = Route("POST", "/v1/pkg/install")
TASK = Route("GET", "/v1/tasks/{task_id}")
TASK_CANCEL = Route("POST", "/v1/tasks/{task_id}/cancel")
# A task's output as it is printed: newline-delimited `OutputChunk`s from `?offset=` on, until the task ends.
TASK_OUTPUT = Route("GET", "/v1/tasks/{task_id}/output")
ARTIFACTS = Route("GET", "/v1/artifacts")
ARTIFACT_REGISTER = Route("POST", "/v1/artifacts")
ARTIFACT = Route("GET", "/v1/artifacts/{artifact_id}")
ARTIFACT_UPLOAD = Route("POST", "/v1/artifacts/upload")
TEST_RUN = Route("POST", "/v1/test/run")
LINT_CHECK = Route("POST", "/v1/lint/check")
GIT_CLONE = Route("POST", "/v1/git/clone")
GIT_COMMIT = Route("POST", "/v1/git/commit")

AGENT_ROUTES: tuple[Route, ...] = (
    HEALTHZ,
    ECHO,
    FS_READ,
    FS_WRITE,
    FS_LIST,
    RUN_PYTHON,
    RUN_CONTEXTS,
    PKG_INSTALL,
    TASK,
    TASK_CANCEL,
    TASK_OUTPUT,
    ARTIFACTS,
    ARTIFACT_REGISTER,
    ARTIFACT,
    ARTIFACT_UPLOAD,
    TEST_RUN,
    LINT_CHECK,
    GIT_CLONE,
    GIT_COMMIT,
)
