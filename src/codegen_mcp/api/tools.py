"""Tool argument and result models, shared by the coordinator (MCP schemas) and the sandbox agent (HTTP API).

One model, two views: the coordinator publishes `model_json_schema()` of each `*Args` model as the MCP
tool's input schema and validates calls with it; the agent validates the same JSON body again at its
own edge (it must never trust its caller blindly). Field descriptions are written for an LLM to act on.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

# Limits that apply on both sides. Per-session settings may lower (never raise) the runtime ones.
MAX_PATH_LENGTH = 4096
MAX_WRITE_BYTES = 16 * 1024 * 1024
DEFAULT_READ_LIMIT = 1024 * 1024
MAX_READ_LIMIT = 16 * 1024 * 1024
MAX_TIMEOUT_S = 3600.0
MAX_WAIT_S = 300.0
DEFAULT_RUN_TIMEOUT_S = 60.0
DEFAULT_WAIT_S = 30.0
DEFAULT_INSTALL_TIMEOUT_S = 600.0
MAX_LIST_ENTRIES = 10_000


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Result(BaseModel):
    model_config = ConfigDict(extra="ignore")


WorkspacePath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_PATH_LENGTH,
        description="A path relative to the workspace root (absolute paths are read as relative to it).",
    ),
]


# --- echo -----------------------------------------------------------------------------------------


class EchoArgs(_Args):
    message: str = Field(description="Any text; it is returned unchanged.")


class EchoResult(_Result):
    message: str


# --- fs.* -----------------------------------------------------------------------------------------


class Encoding(StrEnum):
    UTF8 = "utf-8"
    BASE64 = "base64"


class FsReadArgs(_Args):
    path: WorkspacePath
    offset: int = Field(0, ge=0, description="Byte offset to start reading from.")
    limit: int = Field(
        DEFAULT_READ_LIMIT,
        ge=1,
        le=MAX_READ_LIMIT,
        description="Maximum number of bytes to return; the result says when the file was longer.",
    )


class FsReadResult(_Result):
    path: str
    content: str = Field(description="The bytes read: text, or base64 when `encoding` is base64.")
    encoding: Encoding
    size: int = Field(description="The whole file's size in bytes.")
    offset: int
    bytes_read: int
    truncated: bool = Field(description="True when bytes beyond offset+limit were not returned.")


class FsWriteArgs(_Args):
    path: WorkspacePath
    content: str = Field(
        validation_alias=AliasChoices("content", "contents"),
        description="What to write: text, or base64 when `encoding` is base64. `contents` is accepted too.",
    )
    encoding: Encoding = Field(Encoding.UTF8, description="How `content` is encoded: utf-8 (text) or base64.")
    append: bool = Field(False, description="Append to the file instead of replacing it.")


class FsWriteResult(_Result):
    path: str
    bytes_written: int
    size: int


class FsListArgs(_Args):
    path: str = Field(".", max_length=MAX_PATH_LENGTH, description="Folder to list, relative to the workspace.")
    recursive: bool = Field(False, description="List the whole tree below `path`.")


class EntryType(StrEnum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    OTHER = "other"


class FsEntry(_Result):
    name: str = Field(description="Path relative to the listed folder.")
    type: EntryType
    size: int
    mtime: datetime


class FsListResult(_Result):
    path: str
    entries: list[FsEntry]
    truncated: bool = False


# --- tasks, run.python, pkg.install ----------------------------------------------------------------


class TaskState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def finished(self) -> bool:
        return self not in (TaskState.QUEUED, TaskState.RUNNING)


class TaskKind(StrEnum):
    RUN_PYTHON = "run.python"
    PKG_INSTALL = "pkg.install"


class RunPythonArgs(_Args):
    code: str | None = Field(None, description="Python source to run. Give exactly one of `code` or `file`.")
    file: str | None = Field(
        None, max_length=MAX_PATH_LENGTH, description="A .py file in the workspace to run instead of `code`."
    )
    args: list[str] = Field(default_factory=list, description="Command-line arguments (sys.argv[1:]).")
    stdin: str | None = Field(None, description="Text fed to the program's standard input.")
    timeout_s: float = Field(
        DEFAULT_RUN_TIMEOUT_S,
        gt=0,
        le=MAX_TIMEOUT_S,
        description="Wall-clock limit; the run is killed after it.",
    )
    wait_s: float = Field(
        DEFAULT_WAIT_S,
        ge=0,
        le=MAX_WAIT_S,
        description="How long to wait for the result; a longer run returns a task_id for task.get_result.",
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> RunPythonArgs:
        if (self.code is None) == (self.file is None):
            raise ValueError("give exactly one of `code` or `file`")
        return self


class ArtifactInfo(_Result):
    artifact_id: str
    name: str
    path: str = Field(description="Workspace-relative path of the file.")
    size: int
    media_type: str
    sha256: str
    created_at: datetime
    task_id: str | None = Field(None, description="The task that produced it, if any.")


class RunResult(_Result):
    exit_code: int | None = Field(description="The process exit code; negative for a signal; None if it never ran.")
    stdout: str
    stderr: str
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_s: float
    timed_out: bool = False
    artifacts: list[ArtifactInfo] = Field(default_factory=list, description="Files the run created or changed.")


class PkgInstallArgs(_Args):
    packages: str = Field(
        min_length=1,
        max_length=4096,
        description="Requirement specifiers separated by spaces or commas, e.g. 'requests==2.32.3 rich'.",
    )
    timeout_s: float = Field(DEFAULT_INSTALL_TIMEOUT_S, gt=0, le=MAX_TIMEOUT_S, description="Limit for the install.")
    wait_s: float = Field(
        120.0, ge=0, le=MAX_WAIT_S, description="How long to wait before returning a task_id instead."
    )


class InstalledPackage(_Result):
    name: str
    version: str


class PkgInstallResult(_Result):
    exit_code: int | None
    installed: list[InstalledPackage] = Field(description="The requested packages and the versions now installed.")
    log_tail: str
    duration_s: float


class TaskProgress(_Result):
    elapsed_s: float = 0.0
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    message: str = ""


class TaskView(_Result):
    """What the agent says about a task: its state, and its result once it finished."""

    task_id: str
    kind: TaskKind
    state: TaskState
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: TaskProgress = Field(default_factory=TaskProgress)
    run: RunResult | None = None
    install: PkgInstallResult | None = None
    error: str | None = Field(None, description="Why the task failed to run at all (not the program's own error).")


class TaskIdArgs(_Args):
    task_id: str = Field(min_length=1, max_length=64, description="The task_id returned by run.python or pkg.install.")


class TaskResultArgs(TaskIdArgs):
    wait_s: float = Field(DEFAULT_WAIT_S, ge=0, le=MAX_WAIT_S, description="How long to wait for it to finish.")


# --- artifacts -------------------------------------------------------------------------------------


class ArtifactGetArgs(_Args):
    artifact_id: str = Field(min_length=1, max_length=64, description="An artifact_id from a run.python result.")


class ArtifactContent(_Result):
    artifact: ArtifactInfo
    content: str
    encoding: Encoding
    truncated: bool = False


# --- health ----------------------------------------------------------------------------------------


class HealthView(_Result):
    status: Literal["ok"] = "ok"
    version: str
    workspace: str
    isolation: str = Field(description="What confines code the agent runs, e.g. 'bwrap+rlimits' or 'rlimits'.")
    python: str


class ToolSpec(BaseModel):
    """How one MCP tool maps onto the agent API."""

    model_config = ConfigDict(frozen=True)

    name: str
    title: str
    description: str
    args: type[_Args]
    method: Literal["GET", "POST"]
    path: str  # agent route; `{task_id}` / `{artifact_id}` are filled from the arguments
    read_only: bool = False
    long_running: bool = False

    def input_schema(self) -> dict[str, Any]:
        return self.args.model_json_schema()


AGENT_API_PREFIX = "/v1"

TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="echo",
        title="Echo",
        description="Return the message unchanged. Useful to check the connection to your sandbox.",
        args=EchoArgs,
        method="POST",
        path="/v1/echo",
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
        method="POST",
        path="/v1/fs/read",
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
        method="POST",
        path="/v1/fs/write",
    ),
    ToolSpec(
        name="fs.list",
        title="List files",
        description="List a folder of your workspace (default: its root), optionally recursively.",
        args=FsListArgs,
        method="POST",
        path="/v1/fs/list",
        read_only=True,
    ),
    ToolSpec(
        name="run.python",
        title="Run Python",
        description=(
            "Run Python code (or a .py file) in your workspace's own virtual environment, with the workspace "
            "as working directory. Returns exit code, stdout and stderr, and any files the run produced as "
            "artifacts. If it is still running after wait_s seconds you get a task_id: fetch the result with "
            "task.get_result."
        ),
        args=RunPythonArgs,
        method="POST",
        path="/v1/run/python",
        long_running=True,
    ),
    ToolSpec(
        name="pkg.install",
        title="Install packages",
        description=(
            "pip-install packages into your workspace's virtual environment (visible to run.python from then "
            "on). Returns the installed versions."
        ),
        args=PkgInstallArgs,
        method="POST",
        path="/v1/pkg/install",
        long_running=True,
    ),
    ToolSpec(
        name="artifact.get",
        title="Get an artifact",
        description="Fetch an artifact (a file a run produced) by its artifact_id: metadata and content.",
        args=ArtifactGetArgs,
        method="GET",
        path="/v1/artifacts/{artifact_id}",
        read_only=True,
    ),
    ToolSpec(
        name="task.get_status",
        title="Task status",
        description="Report a task's state (queued, running, succeeded, failed, cancelled, timed_out) and progress.",
        args=TaskIdArgs,
        method="GET",
        path="/v1/tasks/{task_id}",
        read_only=True,
    ),
    ToolSpec(
        name="task.get_result",
        title="Task result",
        description=(
            "Wait up to wait_s seconds for a task to finish and return its result (the same result run.python "
            "or pkg.install gives); if still running, returns its status again."
        ),
        args=TaskResultArgs,
        method="GET",
        path="/v1/tasks/{task_id}",
        read_only=True,
        long_running=True,
    ),
)

TOOLS_BY_NAME: dict[str, ToolSpec] = {t.name: t for t in TOOLS}
