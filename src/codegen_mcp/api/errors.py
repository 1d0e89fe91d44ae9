"""One error family for the whole project.

Every failure a user can cause or meet is a `CodegenError` with a stable `code` and one human sentence.
Each edge maps it once: the sandbox agent to `{"error": {"code", "message"}}` with `code.http_status`,
the coordinator to an MCP tool result with `isError: true`, the operator to a kopf error plus a status
condition.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any


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
