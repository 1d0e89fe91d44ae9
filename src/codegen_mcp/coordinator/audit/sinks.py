"""Where audit events go: a sink appends a batch in order, or says how far it got before it failed.

The file sink is the local default; the stdout sink is the cluster default (the container log, read by the log
collector the cluster already runs); PostgreSQL (audit/postgres.py) is the durable, queryable store.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from codegen_mcp.coordinator.audit.event import AuditEvent


class SinkDown(Exception):
    """A write failed after the first `delivered` events of the batch were stored; the rest are to be retried."""

    def __init__(self, reason: str, delivered: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delivered = delivered


class Sink(Protocol):
    def describe(self) -> str:
        """Where events go, for the start-up log (never a password)."""
        ...

    def connect(self) -> None:
        """Get ready now (open, connect), so a problem shows at start; raise SinkDown when it cannot."""
        ...

    def write(self, events: Sequence[AuditEvent]) -> None:
        """Store `events` in order, durably as the sink can; raise SinkDown on failure. Called by one thread."""
        ...

    def close(self) -> None: ...


class _LineSink:
    """JSON lines appended to a file descriptor. A write cut short leaves a torn line: the next starts anew."""

    def __init__(self) -> None:
        self._torn = False

    def _fd(self) -> int:
        raise NotImplementedError

    def _failed(self, exc: OSError) -> str:
        raise NotImplementedError

    def connect(self) -> None:
        try:
            self._fd()
        except OSError as exc:
            raise SinkDown(self._failed(exc)) from exc

    def write(self, events: Sequence[AuditEvent]) -> None:
        for delivered, event in enumerate(events):
            line = event.json_line()
            try:
                fd = self._fd()
                data = memoryview(b"\n" + line if self._torn else line)
                while data:
                    written = os.write(fd, data)
                    self._torn = True
                    data = data[written:]
                self._torn = False
            except OSError as exc:
                raise SinkDown(self._failed(exc), delivered) from exc


class FileSink(_LineSink):
    """Appends to a file (0600, O_APPEND), created with its folder; a file removed under it is created again."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._open: int | None = None

    def describe(self) -> str:
        return f"file {self.path}"

    def _fd(self) -> int:
        if self._open is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._open

    def _failed(self, exc: OSError) -> str:
        if self._open is not None and not self.path.exists():
            self.close()  # removed under us: open a new one on the next write
        return f"cannot write {self.path}: {exc}"

    def close(self) -> None:
        if self._open is not None:
            os.close(self._open)
            self._open = None


class StdoutSink(_LineSink):
    """Writes to standard output, one whole line per write: the container log a cluster's collector ships."""

    def describe(self) -> str:
        return "stdout (JSON lines)"

    def _fd(self) -> int:
        return sys.stdout.fileno()

    def _failed(self, exc: OSError) -> str:
        return f"cannot write to stdout: {exc}"

    def close(self) -> None:
        pass
