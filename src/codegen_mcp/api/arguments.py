"""Tool arguments: what each tool accepts, checked on both sides of the agent API.

One model, two views: the coordinator publishes `model_json_schema()` of each `*Args` model as the MCP
tool's input schema and validates calls with it; the agent validates the same JSON body again at its
own edge (it must never trust its caller blindly). Field descriptions are written for an LLM to act on.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

# Limits that apply on both sides. Per-session settings may lower (never raise) the runtime ones.
MAX_PATH_LENGTH = 4096
# fs.write content per call, as sent (UTF-8 text or base64): what one 4 MiB MCP request carries with its JSON.
# The agent checks the decoded bytes against it too, so there is one limit, the one the transport allows.
MAX_WRITE_BYTES = 3 * 1024 * 1024
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
# Persistent Python contexts (run.python's `context`): how many one session may hold at once, and how much of a
# cell's last expression (its repr) a result carries.
MAX_CONTEXTS = 4
MAX_VALUE_CHARS = 8192
CONTEXT_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


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


class FsListArgs(_Args):
    path: str = Field(".", max_length=MAX_PATH_LENGTH, description="Folder to list, relative to the workspace.")
    recursive: bool = Field(False, description="List the whole tree below `path`.")


# --- run.python, pkg.install, task.* --------------------------------------------------------------


def _context_name(value: str) -> str:
    if re.fullmatch(CONTEXT_NAME_PATTERN, value) is None:
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise ValueError(
            "must be a short name: a lowercase letter, then up to 31 lowercase letters, digits, '_' or '-' "
            f"(e.g. 'main'), not {shown!r}"
        )
    return value


ContextName = Annotated[str, Field(json_schema_extra={"pattern": CONTEXT_NAME_PATTERN}), AfterValidator(_context_name)]


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
    context: ContextName | None = Field(
        None,
        description=(
            "Run in this persistent Python context (e.g. 'main'), like a notebook kernel: its variables, imports "
            f"and loaded data stay for the next call with the same context. At most {MAX_CONTEXTS} per session; "
            "run.contexts lists them. A timeout interrupts the cell (KeyboardInterrupt) and keeps the state. "
            "Default: a fresh interpreter for this call only."
        ),
    )
    reset: bool = Field(
        False,
        description=(
            "With `context`: discard that context's state first (its interpreter is stopped). Without `code` or "
            "`file`, just end the context and free its place."
        ),
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> RunPythonArgs:
        if self.reset and self.context is None:
            raise ValueError("`reset` needs the `context` to reset")
        if self.code is not None and self.file is not None:
            raise ValueError("give exactly one of `code` or `file`")
        if self.code is None and self.file is None and not self.reset:
            raise ValueError("give exactly one of `code` or `file`")
        return self


class RunContextsArgs(_Args):
    """run.contexts takes no arguments."""


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


class TaskIdArgs(_Args):
    task_id: TaskId = Field(
        description="The task_id returned by run.python, pkg.install, test.run, lint.check or git.clone.",
    )


class TaskResultArgs(TaskIdArgs):
    wait_s: float = Field(DEFAULT_WAIT_S, ge=0, le=MAX_WAIT_S, description="How long to wait for it to finish.")


# --- test.run -------------------------------------------------------------------------------------


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


# --- lint.check -----------------------------------------------------------------------------------


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


# --- git.clone / git.commit -----------------------------------------------------------------------


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


# --- artifact.* -----------------------------------------------------------------------------------


class ArtifactGetArgs(_Args):
    artifact_id: ArtifactId = Field(description="An artifact_id from a run.python result or artifact.list.")


class ArtifactListArgs(_Args):
    task_id: TaskId | None = Field(None, description="Only the artifacts this task produced.")
    limit: int = Field(100, ge=1, le=1000, description="At most this many, newest first.")


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


class ArtifactRegisterArgs(_Args):
    """Body of `POST /v1/artifacts`: make a workspace file an artifact (the agent's own route, no tool)."""

    path: WorkspacePath
