"""The tool registry: each MCP tool's arguments, result, agent route and hints, in one entry of `TOOLS`.

The coordinator lists and calls tools from it; the agent serves the routes it names. Adding a tool is one
`ToolSpec` here, its `*Args` model (api/arguments.py), its result model with its text (api/results.py or
api/task_results.py), and its handler in the agent. The models are re-exported here, the one import for both.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from codegen_mcp.api import routes
from codegen_mcp.api.arguments import (
    ARTIFACT_ID_PATTERN,
    CONTEXT_NAME_PATTERN,
    DEFAULT_INSTALL_TIMEOUT_S,
    DEFAULT_READ_LIMIT,
    MAX_CONTEXTS,
    MAX_LIST_ENTRIES,
    MAX_PATH_LENGTH,
    MAX_VALUE_CHARS,
    MAX_WAIT_S,
    MAX_WRITE_BYTES,
    OUTPUT_FOLDER,
    TASK_ID_PATTERN,
    ArtifactGetArgs,
    ArtifactListArgs,
    ArtifactUploadArgs,
    EchoArgs,
    Encoding,
    FsListArgs,
    FsReadArgs,
    FsWriteArgs,
    GitCloneArgs,
    GitCommitArgs,
    LintArgs,
    PkgInstallArgs,
    PytestArgs,
    RunContextsArgs,
    RunPythonArgs,
    TaskIdArgs,
    TaskResultArgs,
    WorkspacePath,
    _Args,
)
from codegen_mcp.api.results import (
    ArtifactContent,
    ArtifactInfo,
    ArtifactListResult,
    ArtifactUploadResult,
    ContextInfo,
    ContextListResult,
    EchoResult,
    EntryType,
    FsEntry,
    FsListResult,
    FsReadResult,
    FsWriteResult,
    GitCommitResult,
    GitFileChange,
    HealthView,
    ToolResult,
)
from codegen_mcp.api.routes import Route
from codegen_mcp.api.task_results import (
    ContextCell,
    GitCloneResult,
    InstalledPackage,
    LintDiagnostic,
    LintFix,
    LintResult,
    PkgInstallResult,
    PytestFailure,
    PytestResult,
    RunResult,
    Severity,
    TaskKind,
    TaskProgress,
    TaskState,
    TaskStatus,
    TaskView,
)

__all__ = [
    "ARTIFACT_ID_PATTERN",
    "ArtifactContent",
    "ArtifactGetArgs",
    "ArtifactInfo",
    "ArtifactListArgs",
    "ArtifactListResult",
    "ArtifactUploadArgs",
    "ArtifactUploadResult",
    "CONTEXT_NAME_PATTERN",
    "ContextCell",
    "ContextInfo",
    "ContextListResult",
    "DEFAULT_INSTALL_TIMEOUT_S",
    "DEFAULT_READ_LIMIT",
    "EchoArgs",
    "EchoResult",
    "Encoding",
    "EntryType",
    "FsEntry",
    "FsListArgs",
    "FsListResult",
    "FsReadArgs",
    "FsReadResult",
    "FsWriteArgs",
    "FsWriteResult",
    "GitCloneArgs",
    "GitCloneResult",
    "GitCommitArgs",
    "GitCommitResult",
    "GitFileChange",
    "HealthView",
    "InstalledPackage",
    "LintArgs",
    "LintDiagnostic",
    "LintFix",
    "LintResult",
    "MAX_CONTEXTS",
    "MAX_LIST_ENTRIES",
    "MAX_PATH_LENGTH",
    "MAX_VALUE_CHARS",
    "MAX_WAIT_S",
    "MAX_WRITE_BYTES",
    "OUTPUT_FOLDER",
    "PkgInstallArgs",
    "PkgInstallResult",
    "PytestArgs",
    "PytestFailure",
    "PytestResult",
    "RunContextsArgs",
    "RunPythonArgs",
    "RunResult",
    "Severity",
    "TASK_ID_PATTERN",
    "TaskIdArgs",
    "TaskKind",
    "TaskProgress",
    "TaskState",
    "TaskView",
    "WorkspacePath",
]


class ToolSpec(BaseModel):
    """One MCP tool: what it takes, what it answers, and the agent route that does it."""

    model_config = ConfigDict(frozen=True)

    name: str
    title: str
    description: str
    args: type[_Args]
    result: type[ToolResult]
    route: Route  # `{task_id}` / `{artifact_id}` in its path are filled from the arguments
    read_only: bool = False
    long_running: bool = False
    starts_task: bool = False  # the agent answers with a TaskView; the coordinator waits on it with progress
    open_world: bool = False  # reaches outside the sandbox (package index, git hosts, artifact store)
    destructive: bool = False  # may overwrite or delete the user's files

    def input_schema(self) -> dict[str, Any]:
        return self.args.model_json_schema()


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="echo",
        title="Echo",
        description="Return the message unchanged. Useful to check the connection to your sandbox.",
        args=EchoArgs,
        route=routes.ECHO,
        result=EchoResult,
        read_only=True,
    ),
    ToolSpec(
        name="fs.read",
        title="Read a file",
        description=(
            "Read a file from your workspace. Text comes back as UTF-8; binary files come back base64-encoded "
            "(see `encoding`). Use offset/limit to page through large files."
        ),
        args=FsReadArgs,
        route=routes.FS_READ,
        result=FsReadResult,
        read_only=True,
    ),
    ToolSpec(
        name="fs.write",
        title="Write a file",
        description=(
            "Create or replace a file in your workspace (parent folders are created). Set encoding=base64 to "
            "write binary data, append=true to add to the end."
        ),
        args=FsWriteArgs,
        route=routes.FS_WRITE,
        result=FsWriteResult,
        destructive=True,
    ),
    ToolSpec(
        name="fs.list",
        title="List files",
        description="List a folder of your workspace (default: its root), optionally recursively.",
        args=FsListArgs,
        route=routes.FS_LIST,
        result=FsListResult,
        read_only=True,
    ),
    ToolSpec(
        name="run.python",
        title="Run Python",
        description=(
            "Run Python code (or a .py file) in your workspace's own virtual environment, with the workspace "
            "as working directory. Returns exit code, stdout and stderr, and any files the run produced as "
            "artifacts. If it is still running after wait_s seconds you get a task_id: fetch the result with "
            "task.get_result. With `context` (e.g. 'main') the code runs in a persistent interpreter whose "
            "variables and imports survive between calls, like a notebook; the repr of its last expression comes "
            "back as `value`."
        ),
        args=RunPythonArgs,
        route=routes.RUN_PYTHON,
        result=TaskView,
        long_running=True,
        starts_task=True,
    ),
    ToolSpec(
        name="run.contexts",
        title="List Python contexts",
        description=(
            "List this session's persistent Python contexts (run.python's `context`): name, when its interpreter "
            "started, cells run, memory, and whether it is running a cell or lost its state. run.python with "
            "reset=true ends one."
        ),
        args=RunContextsArgs,
        route=routes.RUN_CONTEXTS,
        result=ContextListResult,
        read_only=True,
    ),
    ToolSpec(
        name="pkg.install",
        title="Install packages",
        description=(
            "pip-install packages into your workspace's virtual environment (visible to run.python from then "
            "on). Returns the installed versions."
        ),
        args=PkgInstallArgs,
        route=routes.PKG_INSTALL,
        result=TaskView,
        long_running=True,
        starts_task=True,
        open_world=True,
    ),
    ToolSpec(
        name="artifact.get",
        title="Get an artifact",
        description=(
            "Fetch an artifact (a file a run produced) by its artifact_id: metadata and content. artifact.list "
            "shows the ids."
        ),
        args=ArtifactGetArgs,
        route=routes.ARTIFACT,
        result=ArtifactContent,
        read_only=True,
    ),
    ToolSpec(
        name="task.get_status",
        title="Task status",
        description="Report a task's state (queued, running, succeeded, failed, cancelled, timed_out) and progress.",
        args=TaskIdArgs,
        route=routes.TASK,
        result=TaskStatus,
        read_only=True,
    ),
    ToolSpec(
        name="task.get_result",
        title="Task result",
        description=(
            "Wait up to wait_s seconds for a task to finish and return its result (the same result run.python, "
            "pkg.install, test.run, lint.check or git.clone gives); if still running, returns its status again."
        ),
        args=TaskResultArgs,
        route=routes.TASK,
        result=TaskView,
        read_only=True,
        long_running=True,
    ),
    ToolSpec(
        name="test.run",
        title="Run tests",
        description=(
            "Run pytest in your workspace (pytest is installed into the session venv on first use). Give test "
            "files, folders or node ids in `paths`, a -k expression in `keyword`. Returns counts (passed, failed, "
            "errors, skipped) and, for each failure, its node id, message and short traceback, plus the end of "
            "pytest's output. Failing tests are a normal result, not an error. A run longer than wait_s returns "
            "a task_id for task.get_result."
        ),
        args=PytestArgs,
        route=routes.TEST_RUN,
        result=TaskView,
        long_running=True,
        starts_task=True,
    ),
    ToolSpec(
        name="lint.check",
        title="Lint and type-check",
        description=(
            "Check Python code in your workspace with ruff (and, on request, `ruff format --check` and mypy; "
            "installed into the session venv on first use). Returns each diagnostic (file, line, column, code, "
            "message, severity, fixable) and counts. fix=true applies ruff's safe fixes (and the formatter, with "
            "format=true) and reports what changed."
        ),
        args=LintArgs,
        route=routes.LINT_CHECK,
        result=TaskView,
        long_running=True,
        starts_task=True,
        destructive=True,
    ),
    ToolSpec(
        name="git.clone",
        title="Clone a git repository",
        description=(
            "Clone a public git repository over https into a workspace folder (optionally one branch or tag, "
            "optionally shallow with `depth`). Needs network egress: sandboxes without it refuse with an error. "
            "ssh, file:// and local paths, and URLs with credentials, are refused. Returns the folder and commit."
        ),
        args=GitCloneArgs,
        route=routes.GIT_CLONE,
        result=TaskView,
        long_running=True,
        starts_task=True,
        open_world=True,
    ),
    ToolSpec(
        name="git.commit",
        title="Commit to a git repository",
        description=(
            "Stage changes (the given `paths`, default all) in a workspace repository and commit them with a "
            "message; init=true creates the repository first. Returns the commit id, the changed files and a "
            "diffstat. Never pushes. Nothing to commit is an error."
        ),
        args=GitCommitArgs,
        route=routes.GIT_COMMIT,
        result=GitCommitResult,
    ),
    ToolSpec(
        name="artifact.list",
        title="List artifacts",
        description=(
            "List this session's artifacts (files runs produced, or you uploaded), newest first: id, name, path, "
            "size, media type, checksum, creation time, producing task, and upload URI if uploaded."
        ),
        args=ArtifactListArgs,
        route=routes.ARTIFACTS,
        result=ArtifactListResult,
        read_only=True,
    ),
    ToolSpec(
        name="artifact.upload",
        title="Upload an artifact",
        description=(
            "Copy an artifact (by artifact_id) or a workspace file (by path) to durable storage outside the "
            "sandbox, so it outlives the session. Returns a stable URI (s3://… or file://…) and its SHA-256."
        ),
        args=ArtifactUploadArgs,
        route=routes.ARTIFACT_UPLOAD,
        result=ArtifactUploadResult,
        open_world=True,
    ),
)


TOOLS_BY_NAME: dict[str, ToolSpec] = {t.name: t for t in TOOLS}
