"""The audit log: one JSON line per tool call, never with file contents or code in it."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

# Arguments whose values are content, not metadata: the log keeps only their size.
_CONTENT_FIELDS = frozenset({"content", "contents", "code", "stdin"})
_MAX_VALUE_CHARS = 200


def summarize_arguments(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Return (a loggable summary, sha256 of the canonical arguments)."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    summary: dict[str, Any] = {}
    for key, value in arguments.items():
        if key in _CONTENT_FIELDS and isinstance(value, str):
            summary[key] = f"<{len(value.encode())} bytes>"
        elif isinstance(value, str) and len(value) > _MAX_VALUE_CHARS:
            summary[key] = value[:_MAX_VALUE_CHARS] + "…"
        elif isinstance(value, str | int | float | bool) or value is None:
            summary[key] = value
        else:
            summary[key] = f"<{type(value).__name__}>"
    return summary, digest


class AuditLog:
    """Appends JSON lines to a file (opened once, line-buffered, 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: IO[str] | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(mode=0o600, exist_ok=True)
        self._file = self.path.open("a", buffering=1, encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def record(
        self,
        *,
        session: str,
        sandbox: str | None,
        tool: str,
        arguments: dict[str, Any],
        outcome: str,
        duration_s: float,
        error_code: str | None = None,
    ) -> None:
        summary, digest = summarize_arguments(arguments)
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "session": session,
            "sandbox": sandbox,
            "tool": tool,
            "args": summary,
            "args_sha256": digest,
            "outcome": outcome,
            "error_code": error_code,
            "duration_ms": round(duration_s * 1000, 2),
        }
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            if self._file is None:
                log.debug("audit log closed; dropped %s", entry)
                return
            self._file.write(line)
