"""Tool argument and result models, shared by the coordinator (MCP schemas) and the sandbox agent (HTTP API).

One model, two views: the coordinator publishes `model_json_schema()` of each `*Args` model as the MCP
tool's input schema and validates calls with it; the agent validates the same JSON body again at its
own edge (it must never trust its caller blindly). Field descriptions are written for an LLM to act on.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

# Limits that apply on both sides. Per-session settings may lower (never raise) the runtime ones.
MAX_PATH_LENGTH = 4096
MAX_WRITE_BYTES = 16 * 1024 * 1024
DEFAULT_READ_LIMIT = 1024 * 1024
MAX_READ_LIMIT = 16 * 1024 * 1024
MAX_TIMEOUT_S = 3600.0
# Where the coordinator saves a run's whole stdout/stderr when its result had to be cut (in the workspace; the
# agent keeps it out of git.commit like its other own folders).
OUTPUT_FOLDER = ".codegen-output"
MAX_WAIT_S = 300.0
DEFAULT_RUN_TIMEOUT_S = 60.0
DEFAULT_WAIT_S = 30.0
DEFAULT_INSTALL_TIMEOUT_S = 600.0
MAX_LIST_ENTRIES = 10_000
DEFAULT_TEST_TIMEOUT_S = 300.0
DEFAULT_LINT_TIMEOUT_S = 300.0
DEFAULT_CLONE_TIMEOUT_S = 300.0
DEFAULT_GIT_TIMEOUT_S = 60.0
MAX_URL_LENGTH = 2048
MAX_COMMIT_MESSAGE = 20_000


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Result(BaseModel):
    model_config = ConfigDict(extra="ignore")


# The ids the agent hands out (sandbox_agent/tasks.py and artifacts.py: a prefix and 8 random bytes in hex).
# An id from a caller goes into the agent's URL (/v1/tasks/{task_id}), so it is checked against exactly this
# format first, on both sides: `../../healthz` must never become a request.
TASK_ID_PATTERN = r"^task_[0-9a-f]{16}$"
ARTIFACT_ID_PATTERN = r"^art_[0-9a-f]{16}$"


def _id_format(pattern: str, kind: str, prefix: str) -> AfterValidator:
    def check(value: str) -> str:
        if re.fullmatch(pattern, value) is None:
            shown = value if len(value) <= 40 else value[:40] + "…"
            raise ValueError(
                f"must be {kind} id as a tool returned it: {prefix} and 16 hex digits, e.g. {prefix}3f2a9c0d1b4e5f67 "
                f"(not {shown!r})"
            )
        return value

    return AfterValidator(check)


TaskId = Annotated[
    str, Field(json_schema_extra={"pattern": TASK_ID_PATTERN}), _id_format(TASK_ID_PATTERN, "a task", "task_")
]
ArtifactId = Annotated[
    str,
    Field(json_schema_extra={"pattern": ARTIFACT_ID_PATTERN}),
    _id_format(ARTIFACT_ID_PATTERN, "an artifact", "art_"),
]

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
        description=(
            "What to write: text, or base64 when `encoding` is base64. `contents` is accepted too. At most 3 MiB "
            "per call over MCP; write a bigger file in parts with `append`."
        ),
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
    TEST_RUN = "test.run"
    LINT_CHECK = "lint.check"
    GIT_CLONE = "git.clone"


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
    uri: str | None = Field(None, description="Where artifact.upload last stored it (s3://… or file://…), if it did.")


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
    test: PytestResult | None = Field(None, description="The result of a test.run task.")
    lint: LintResult | None = Field(None, description="The result of a lint.check task.")
    clone: GitCloneResult | None = Field(None, description="The result of a git.clone task.")
    error: str | None = Field(None, description="Why the task failed to run at all (not the program's own error).")


class TaskIdArgs(_Args):
    task_id: TaskId = Field(
        description="The task_id returned by run.python, pkg.install, test.run, lint.check or git.clone.",
    )


class TaskResultArgs(TaskIdArgs):
    wait_s: float = Field(DEFAULT_WAIT_S, ge=0, le=MAX_WAIT_S, description="How long to wait for it to finish.")


# --- artifacts -------------------------------------------------------------------------------------


class ArtifactGetArgs(_Args):
    artifact_id: ArtifactId = Field(description="An artifact_id from a run.python result or artifact.list.")


class ArtifactContent(_Result):
    artifact: ArtifactInfo
    content: str
    encoding: Encoding
    truncated: bool = False


# --- test.run --------------------------------------------------------------------------------------


def _one_or_many(value: Any) -> Any:
    """Accept a single string where a list of strings is expected (`"tests"` means `["tests"]`)."""
    return [value] if isinstance(value, str) else value


class PytestArgs(_Args):
    paths: list[Annotated[str, Field(min_length=1, max_length=MAX_PATH_LENGTH)]] = Field(
        default_factory=list,
        max_length=100,
        validation_alias=AliasChoices("paths", "path"),
        description=(
            "Test files, folders or node ids relative to the workspace, e.g. ['tests/test_app.py::test_login']; "
            "default: pytest's own discovery from the workspace root. `path` (one string) is accepted too."
        ),
    )
    keyword: str | None = Field(
        None,
        min_length=1,
        max_length=1000,
        validation_alias=AliasChoices("keyword", "k"),
        description="Only run tests matching this pytest -k expression, e.g. 'login and not slow'. `k` works too.",
    )
    markers: str | None = Field(
        None, min_length=1, max_length=1000, description="Only run tests matching this -m marker expression."
    )
    timeout_s: float = Field(
        DEFAULT_TEST_TIMEOUT_S, gt=0, le=MAX_TIMEOUT_S, description="Wall-clock limit; pytest is killed after it."
    )
    wait_s: float = Field(
        DEFAULT_WAIT_S,
        ge=0,
        le=MAX_WAIT_S,
        description="How long to wait for the result; a longer run returns a task_id for task.get_result.",
    )

    _paths = field_validator("paths", mode="before")(_one_or_many)


class PytestFailure(_Result):
    node_id: str = Field(description="pytest node id, e.g. 'tests/test_app.py::TestLogin::test_bad_password'.")
    outcome: Literal["failed", "error"] = Field(
        description="failed: an assertion or exception in the test; error: in a fixture, setup/teardown or collection."
    )
    message: str = Field(description="The one-line reason pytest gave, e.g. 'AssertionError: assert 1 == 2'.")
    traceback: str = Field(description="pytest's short traceback (--tb=short), capped.")
    duration_s: float = 0.0


class PytestResult(_Result):
    exit_code: int | None = Field(
        description="pytest's exit code: 0 all passed, 1 some failed, 2 interrupted, 3 internal error, "
        "4 usage error, 5 no tests collected; None if it never ran."
    )
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    total: int = Field(0, description="passed + failed + errors + skipped.")
    failures: list[PytestFailure] = Field(default_factory=list, description="Each failed or erroring test.")
    failures_truncated: bool = Field(False, description="True when more failures happened than are listed.")
    duration_s: float = 0.0
    timed_out: bool = False
    output_tail: str = Field("", description="The end of pytest's console output.")
    output_truncated: bool = Field(False, description="True when output_tail is not the whole output.")
    pytest_version: str | None = None


# --- lint.check ------------------------------------------------------------------------------------


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


class LintArgs(_Args):
    path: str = Field(
        ".", min_length=1, max_length=MAX_PATH_LENGTH, description="File or folder to check (default: the workspace)."
    )
    fix: bool = Field(
        False,
        description="Apply ruff's safe fixes (and reformat, if `format` is true) and report what changed.",
    )
    format: bool = Field(False, description="Also check formatting with `ruff format --check`.")
    mypy: bool = Field(False, description="Also type-check with mypy (installed into the session venv on first use).")
    select: list[Annotated[str, Field(pattern=r"^[A-Z]{1,8}[0-9]{0,5}$")]] = Field(
        default_factory=list,
        max_length=100,
        description="Ruff rule codes or prefixes to check instead of the project's own selection, e.g. ['E', 'F', "
        "'I', 'UP'].",
    )
    timeout_s: float = Field(
        DEFAULT_LINT_TIMEOUT_S, gt=0, le=MAX_TIMEOUT_S, description="Wall-clock limit for all linters together."
    )
    wait_s: float = Field(
        DEFAULT_WAIT_S,
        ge=0,
        le=MAX_WAIT_S,
        description="How long to wait for the result; a longer check returns a task_id for task.get_result.",
    )


class LintDiagnostic(_Result):
    tool: Literal["ruff", "ruff-format", "mypy"]
    file: str = Field(description="Workspace-relative path.")
    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None
    code: str = Field(description="Rule code, e.g. 'F401' (ruff) or 'arg-type' (mypy).")
    message: str
    severity: Severity = Field(
        description="ruff findings are errors (as ruff reports them), unformatted files warnings, mypy gives errors "
        "and notes."
    )
    fixable: bool = Field(False, description="True when `fix: true` would fix it (ruff's safe fixes).")
    url: str | None = Field(None, description="Documentation of the rule, when known.")


class LintFix(_Result):
    file: str
    code: str
    message: str = Field(description="What was fixed.")


class LintResult(_Result):
    diagnostics: list[LintDiagnostic] = Field(default_factory=list, description="What is left to fix, by file/line.")
    truncated: bool = Field(False, description="True when more diagnostics were found than are listed.")
    errors: int = 0
    warnings: int = 0
    notes: int = 0
    fixable: int = Field(0, description="How many of the diagnostics `fix: true` would fix.")
    by_code: dict[str, int] = Field(default_factory=dict, description="Diagnostic count per rule code.")
    fixed: list[LintFix] = Field(default_factory=list, description="What `fix: true` fixed.")
    changed_files: list[str] = Field(default_factory=list, description="Files `fix: true` rewrote.")
    tools: dict[str, str] = Field(default_factory=dict, description="The linters that ran and their versions.")
    duration_s: float = 0.0
    timed_out: bool = False
    output_tail: str = Field("", description="Messages the linters printed besides diagnostics (config errors…).")


# --- git.clone / git.commit ------------------------------------------------------------------------


class GitCloneArgs(_Args):
    url: str = Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="https:// URL of a public repository, e.g. 'https://github.com/pallets/click.git'. No "
        "credentials, ssh, file:// or local paths.",
    )
    dest: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_PATH_LENGTH,
        description="Workspace folder to clone into (must not exist, or be empty); default: the repository's name.",
    )
    branch: str | None = Field(
        None, min_length=1, max_length=255, description="Branch or tag to check out; default: the remote's HEAD."
    )
    depth: int | None = Field(None, ge=1, le=1_000_000, description="Shallow clone with this many commits.")
    timeout_s: float = Field(DEFAULT_CLONE_TIMEOUT_S, gt=0, le=MAX_TIMEOUT_S, description="Limit for the clone.")
    wait_s: float = Field(
        DEFAULT_WAIT_S, ge=0, le=MAX_WAIT_S, description="How long to wait before returning a task_id instead."
    )


class GitCloneResult(_Result):
    url: str
    dest: str = Field(description="Workspace-relative folder of the clone.")
    commit: str | None = Field(None, description="The checked-out commit; None for an empty repository.")
    branch: str | None = Field(None, description="The checked-out branch; None when detached (a tag).")
    depth: int | None = None
    duration_s: float = 0.0
    timed_out: bool = False
    log_tail: str = Field("", description="The end of git's own output.")


class GitCommitArgs(_Args):
    message: str = Field(min_length=1, max_length=MAX_COMMIT_MESSAGE, description="The commit message.")
    paths: list[Annotated[str, Field(min_length=1, max_length=MAX_PATH_LENGTH)]] | None = Field(
        None,
        max_length=1000,
        description="Files or folders to stage (relative to the workspace, inside the repository), deletions "
        "included; default: every change in the repository.",
    )
    repo: str = Field(
        ".",
        min_length=1,
        max_length=MAX_PATH_LENGTH,
        description="The repository's top folder in the workspace (where .git is); default: the workspace root.",
    )
    init: bool = Field(False, description="Create the repository (git init) if `repo` is not one yet.")
    author_name: str | None = Field(
        None, min_length=1, max_length=200, description="Author name; default: the session's configured author."
    )
    author_email: str | None = Field(
        None, min_length=3, max_length=320, description="Author e-mail; default: the session's configured author."
    )
    timeout_s: float = Field(DEFAULT_GIT_TIMEOUT_S, gt=0, le=MAX_TIMEOUT_S, description="Limit for the commit.")

    _paths = field_validator("paths", mode="before")(_one_or_many)


class GitFileChange(_Result):
    path: str = Field(description="Path relative to the repository.")
    status: Literal["added", "modified", "deleted", "renamed", "copied", "type_changed", "other"]
    old_path: str | None = Field(None, description="The previous path of a renamed or copied file.")
    insertions: int | None = Field(None, description="Lines added; None for binary files.")
    deletions: int | None = Field(None, description="Lines removed; None for binary files.")


class GitCommitResult(_Result):
    commit: str = Field(description="The new commit id (full SHA).")
    branch: str | None = Field(None, description="The branch it was committed on; None when HEAD is detached.")
    repo: str = Field(description="Workspace-relative folder of the repository.")
    initialized: bool = Field(False, description="True when this call created the repository.")
    author: str = Field(description="'Name <email>'.")
    files: list[GitFileChange]
    files_changed: int
    insertions: int
    deletions: int
    diffstat: str = Field(description="e.g. '2 files changed, 10 insertions(+), 1 deletion(-)'.")


# --- artifact.list / artifact.upload ---------------------------------------------------------------


class ArtifactListArgs(_Args):
    task_id: TaskId | None = Field(None, description="Only the artifacts this task produced.")
    limit: int = Field(100, ge=1, le=1000, description="At most this many, newest first.")


class ArtifactListResult(_Result):
    artifacts: list[ArtifactInfo] = Field(description="Newest first.")
    total: int = Field(0, description="How many artifacts match, listed or not.")
    truncated: bool = False


class ArtifactUploadArgs(_Args):
    artifact_id: ArtifactId | None = Field(
        None, description="The artifact to upload. Give exactly one of this or `path`."
    )
    path: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_PATH_LENGTH,
        description="A workspace file to upload instead (it becomes an artifact first).",
    )
    timeout_s: float = Field(300.0, gt=0, le=MAX_TIMEOUT_S, description="Limit for the upload.")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ArtifactUploadArgs:
        if (self.artifact_id is None) == (self.path is None):
            raise ValueError("give exactly one of `artifact_id` or `path`")
        return self


class ArtifactUploadResult(_Result):
    artifact: ArtifactInfo
    uri: str = Field(description="Stable reference to the stored copy, e.g. s3://bucket/key or file:///path.")
    sha256: str = Field(description="SHA-256 of the uploaded bytes (hex).")
    size: int
    store: str = Field(description="The kind of store: local or s3.")
    changed_since_recorded: bool = Field(
        False, description="True when the file differed from the artifact's recorded checksum (it was re-recorded)."
    )


# TaskView names the result models above before they are defined.
TaskView.model_rebuild()


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
    starts_task: bool = False  # the agent answers with a TaskView; the coordinator waits on it with progress
    open_world: bool = False  # reaches outside the sandbox (package index, git hosts, artifact store)
    destructive: bool = False  # may overwrite or delete the user's files

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
        destructive=True,
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
        starts_task=True,
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
            "Wait up to wait_s seconds for a task to finish and return its result (the same result run.python, "
            "pkg.install, test.run, lint.check or git.clone gives); if still running, returns its status again."
        ),
        args=TaskResultArgs,
        method="GET",
        path="/v1/tasks/{task_id}",
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
        method="POST",
        path="/v1/test/run",
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
        method="POST",
        path="/v1/lint/check",
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
        method="POST",
        path="/v1/git/clone",
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
        method="POST",
        path="/v1/git/commit",
    ),
    ToolSpec(
        name="artifact.list",
        title="List artifacts",
        description=(
            "List this session's artifacts (files runs produced, or you uploaded), newest first: id, name, path, "
            "size, media type, checksum, creation time, producing task, and upload URI if uploaded."
        ),
        args=ArtifactListArgs,
        method="GET",
        path="/v1/artifacts",
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
        method="POST",
        path="/v1/artifacts/upload",
        open_world=True,
    ),
)

TOOLS_BY_NAME: dict[str, ToolSpec] = {t.name: t for t in TOOLS}
