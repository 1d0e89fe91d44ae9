"""One error family for the whole project.

Every failure a user can cause or meet is a `CodegenError` with a stable `code` and one human sentence.
Each edge maps it once: the sandbox agent to `{"error": {"code", "message"}}` with `code.http_status`,
the coordinator to an MCP tool result with `isError: true`, the operator to a kopf error plus a status
condition.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum, StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails


class ErrorCode(StrEnum):
    INVALID_ARGUMENT = "invalid_argument"
    PATH_OUTSIDE_WORKSPACE = "path_outside_workspace"
    NOT_FOUND = "not_found"
    IS_A_DIRECTORY = "is_a_directory"
    NOT_A_DIRECTORY = "not_a_directory"
    TOO_LARGE = "too_large"
    UNAUTHORIZED = "unauthorized"
    TASK_NOT_FOUND = "task_not_found"
    ARTIFACT_NOT_FOUND = "artifact_not_found"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    CONFLICT = "conflict"
    INSTALL_FAILED = "install_failed"
    SANDBOX_UNAVAILABLE = "sandbox_unavailable"
    SESSION_REQUIRED = "session_required"
    NETWORK_DISABLED = "network_disabled"
    GIT_FAILED = "git_failed"
    STORE_FAILED = "store_failed"
    INTERNAL = "internal"

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self]


_HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.PATH_OUTSIDE_WORKSPACE: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.IS_A_DIRECTORY: 400,
    ErrorCode.NOT_A_DIRECTORY: 400,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.TASK_NOT_FOUND: 404,
    ErrorCode.ARTIFACT_NOT_FOUND: 404,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.CANCELLED: 409,
    ErrorCode.CONFLICT: 409,
    ErrorCode.INSTALL_FAILED: 422,
    ErrorCode.SANDBOX_UNAVAILABLE: 503,
    ErrorCode.SESSION_REQUIRED: 400,
    ErrorCode.NETWORK_DISABLED: 403,
    ErrorCode.GIT_FAILED: 422,
    ErrorCode.STORE_FAILED: 502,
    ErrorCode.INTERNAL: 500,
}


class AgentExitCode(IntEnum):
    """How the sandbox agent process ends when it cannot start (the operator reads it from the Pod's status).

    The sentence explaining it goes to stderr and, in a Pod, to the termination message.
    """

    FAILED = 1  # any other start-up failure (a refused setting, cannot listen, ...)
    USAGE = 2  # bad flags or settings (argparse)
    WORKSPACE_NOT_WRITABLE = 73  # sysexits.h EX_CANTCREAT: the workspace volume does not let the agent write


class CodegenError(Exception):
    """A failure with a stable code and a message fit to show an LLM or a person."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code.value, "message": self.message}}

    @classmethod
    def from_dict(cls, body: Any, *, fallback: str = "the sandbox returned an unexpected error") -> CodegenError:
        """Rebuild an error from an agent's JSON body, keeping its code when known."""
        err = body.get("error") if isinstance(body, dict) else None
        if not isinstance(err, dict):
            return cls(fallback)
        message = str(err.get("message") or fallback)
        try:
            code = ErrorCode(str(err.get("code")))
        except ValueError:
            code = ErrorCode.INTERNAL
        return cls(message, code=code)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value!r}, {self.message!r})"


class InvalidArgument(CodegenError):
    code = ErrorCode.INVALID_ARGUMENT


class WorkspaceEscape(CodegenError):
    code = ErrorCode.PATH_OUTSIDE_WORKSPACE


class NotFound(CodegenError):
    code = ErrorCode.NOT_FOUND


class SandboxUnavailable(CodegenError):
    code = ErrorCode.SANDBOX_UNAVAILABLE


# pydantic's messages that read as a rule once "`field` must" replaces their start.
_RULE_STARTS = ("Input should", "String should", "Value should", "List should", "Dictionary should", "Tuple should")
MAX_PROBLEMS = 5  # a body with a thousand wrong keys still gets a sentence, not a page


def validation_sentence(exc: ValidationError, *, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """One line saying what is wrong with each field pydantic refused, e.g. "`timeout_s` must be greater than 0".

    The one formatter for every edge: the agent's and the coordinator's tool arguments (`model` lists the accepted
    names after an unknown one), the operator's session spec (`prefix="spec"`), the agent's own settings.
    Problems are joined by "; ", one per field, at most `MAX_PROBLEMS`.
    """
    problems: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        where = _location((prefix, *error["loc"]) if prefix else error["loc"])
        if where not in problems:
            problems[where] = _problem(error, where)
            if model is not None and error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
                accepted = ", ".join(f"`{name}`" for name in model.model_fields)
                problems[where] += f" (accepted: {accepted})" if accepted else " (this tool takes no arguments)"
                model = None  # said once
    shown = list(problems.values())[:MAX_PROBLEMS]
    hidden = len(problems) - len(shown)
    return "; ".join(shown) + (f"; and {hidden} more" if hidden else "")


def _location(loc: Sequence[int | str]) -> str:
    """`a.b[0].c`: how a reader writes a path into nested JSON."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{_name(part)}" if text else _name(part))
    return text


def _name(key: str) -> str:
    """A key as sent, but printable and short: it may be anything a caller typed."""
    shown = key if key.isprintable() else key.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= 60 else shown[:60] + "…"


def _problem(error: ErrorDetails, where: str) -> str:
    message = " ".join(str(error["msg"]).removeprefix("Value error, ").split())  # one line, whatever it says
    if error["type"] == "missing":
        return f"`{where}` is required"
    if error["type"] == "extra_forbidden":
        return f"`{where}` is unknown"
    if not where:
        return message
    for start in _RULE_STARTS:
        if message.startswith(start):
            return f"`{where}` must{message[len(start) :]}"
    if message.startswith("must "):
        return f"`{where}` {message}"
    return f"`{where}`: {message}"
