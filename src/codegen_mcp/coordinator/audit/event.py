"""One audit event: what a tool call did, never with file contents or code in it.

Every sink stores the same fields: a JSON line for the file and stdout sinks, a row for PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from codegen_mcp.api.call_id import current_call_id

# Arguments whose values are content, not metadata: the event keeps only their size.
_CONTENT_FIELDS = frozenset({"content", "contents", "code", "stdin"})
_MAX_VALUE_CHARS = 200
# A refused call is audited with the arguments as sent, which may be any fields (a request of up to 4 MiB): the
# summary keeps the first fields (a tool takes at most 8), names cut short, so a buffered event stays small.
_MAX_FIELDS = 32
_MAX_NAME_CHARS = 64
# The `user:password@` of a URL (git.clone refuses one, but the refused call is audited): never stored.
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
# The host that wrote an event: in a cluster, the coordinator Pod's name (two replicas, one trail).
_HOST = socket.gethostname()


def summarize_arguments(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Return (a loggable summary, sha256 of the canonical arguments)."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    summary: dict[str, Any] = {}
    for count, (key, value) in enumerate(arguments.items()):
        if count == _MAX_FIELDS:
            summary["…"] = f"<{len(arguments) - count} more fields>"
            break
        name = _cut(key, _MAX_NAME_CHARS)
        if key in _CONTENT_FIELDS and isinstance(value, str):
            summary[name] = f"<{len(value.encode())} bytes>"
        elif isinstance(value, str):
            summary[name] = _cut(_URL_CREDENTIALS.sub("***@", value), _MAX_VALUE_CHARS)
        elif isinstance(value, int | float | bool) or value is None:
            summary[name] = value
        else:
            summary[name] = f"<{type(value).__name__}>"
    return summary, digest


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True)
class AuditEvent:
    """The record of one tool call. `event_id` is unique per event: a sink retrying a write never doubles it."""

    time: datetime
    call_id: str
    session: str  # the MCP session's key
    sandbox: str | None  # the sandbox id (the CodegenSession's name on the kubernetes backend)
    tool: str
    args: dict[str, Any]  # a summary: content fields by size only
    args_sha256: str
    outcome: str
    error_code: str | None
    duration_ms: float
    coordinator: str
    event_id: str

    @classmethod
    def of_call(
        cls,
        *,
        session: str,
        sandbox: str | None,
        tool: str,
        arguments: dict[str, Any],
        outcome: str,
        duration_s: float,
        error_code: str | None = None,
    ) -> AuditEvent:
        """The event of the call being handled now (its id from `call_scope`, a fresh one outside any)."""
        summary, digest = summarize_arguments(arguments)
        return cls(
            time=datetime.now(UTC),
            call_id=current_call_id() or secrets.token_hex(8),
            session=session,
            sandbox=sandbox,
            tool=tool,
            args=summary,
            args_sha256=digest,
            outcome=outcome,
            error_code=error_code,
            duration_ms=round(duration_s * 1000, 2),
            coordinator=_HOST,
            event_id=secrets.token_hex(16),
        )

    def json_line(self) -> bytes:
        fields = asdict(self)
        fields["time"] = self.time.isoformat(timespec="milliseconds")
        return (json.dumps(fields, ensure_ascii=False) + "\n").encode()
