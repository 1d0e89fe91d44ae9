"""The audit log: one JSON line per tool call, never with file contents or code in it.

Lines are written by one thread, off the event loop. A write that fails (a full disk, a read-only or gone
folder) never fails the tool call it records: the record is counted as lost, the failure is logged, reported
by `/healthz` and `/metrics`, and the log recovers by itself once it can be written again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import queue
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Arguments whose values are content, not metadata: the log keeps only their size.
_CONTENT_FIELDS = frozenset({"content", "contents", "code", "stdin"})
_MAX_VALUE_CHARS = 200
# Records waiting for the writer; past this the disk is far behind and new records are counted as lost.
QUEUE_LIMIT = 10_000
# While writes keep failing, the failure is logged again at most this often (with the count lost so far).
REMIND_EVERY_S = 60.0


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
    """Appends JSON lines to a file (0600, O_APPEND) from a writer thread; failures degrade, never raise."""

    def __init__(self, path: Path, *, queue_limit: int = QUEUE_LIMIT) -> None:
        self.path = path
        # A record's line and the future told when it is written; None stops the writer.
        self._queue: queue.Queue[tuple[bytes, concurrent.futures.Future[bool]] | None] = queue.Queue(queue_limit)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the counters and the problem, changed by the loop and the writer
        self._fd: int | None = None
        self._torn = False  # the last write stopped mid-line: the next one starts on a new line
        # Read by the event loop, written by the writer thread: plain values, replaced whole.
        self.written = 0
        self.lost = 0
        self._problem: str | None = None
        self._last_reminder = 0.0

    # -- lifecycle -----------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the file now (so a problem shows at start), and start the writer."""
        if self._thread is not None:
            return
        try:
            self._open_file()
        except OSError as exc:
            self._failed(f"cannot open {self.path}: {exc}", lost=0)
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (for at most `timeout_s`), then stop the writer."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            log.error("the audit writer is stuck; %d queued records are lost", self._queue.qsize())
        thread.join(timeout_s)

    # -- recording -----------------------------------------------------------------------------------

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
    ) -> concurrent.futures.Future[bool]:
        """Queue one record; the future says (True/False) whether it reached the file. Never raises."""
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
        done: concurrent.futures.Future[bool] = concurrent.futures.Future()
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
        if self._thread is None:
            log.debug("audit log closed; dropped %s", entry)
            done.set_result(False)
            return done
        try:
            self._queue.put_nowait((line, done))
        except queue.Full:
            self._failed(f"{QUEUE_LIMIT} records are waiting for the disk")
            done.set_result(False)
        return done

    async def written_within(self, done: concurrent.futures.Future[bool], timeout_s: float) -> bool:
        """Wait (without blocking the loop) until a record is on disk, at most `timeout_s`; never raises."""
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(done)), timeout_s)
        return False

    # -- health ----------------------------------------------------------------------------------------

    @property
    def problem(self) -> str | None:
        """Why records are being lost right now, or None while the log is written."""
        return self._problem

    def render_metrics(self) -> str:
        return "\n".join(
            [
                "# HELP codegen_mcp_audit_records_total Audit records written.",
                "# TYPE codegen_mcp_audit_records_total counter",
                f"codegen_mcp_audit_records_total {self.written}",
                "# HELP codegen_mcp_audit_write_failures_total Audit records lost (the tool calls still answered).",
                "# TYPE codegen_mcp_audit_write_failures_total counter",
                f"codegen_mcp_audit_write_failures_total {self.lost}",
                "# HELP codegen_mcp_audit_healthy 1 while the audit log is written, 0 while records are lost.",
                "# TYPE codegen_mcp_audit_healthy gauge",
                f"codegen_mcp_audit_healthy {0 if self._problem else 1}",
            ]
        )

    # -- the writer thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                line, done = item
                done.set_result(self._write(line))
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _write(self, line: bytes) -> bool:
        try:
            fd = self._open_file()
            data = memoryview(b"\n" + line if self._torn else line)
            while data:
                written = os.write(fd, data)
                self._torn = True
                data = data[written:]
            self._torn = False
        except OSError as exc:
            self._failed(f"cannot write {self.path}: {exc}")
            if self._fd is not None and not self.path.exists():
                # The file was removed under us: open a new one on the next record.
                os.close(self._fd)
                self._fd = None
            return False
        with self._lock:
            self.written += 1
            if self._problem is not None:
                log.warning("the audit log %s is written again; %d records were lost", self.path, self.lost)
                self._problem = None
        return True

    def _open_file(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    def _failed(self, reason: str, *, lost: int = 1) -> None:
        with self._lock:
            self.lost += lost
            now = time.monotonic()
            if self._problem is None:
                since = datetime.now(UTC).isoformat(timespec="seconds")
                log.error(
                    "the audit log cannot be written (%s); tool calls go on unaudited, and each lost record is counted "
                    "in codegen_mcp_audit_write_failures_total",
                    reason,
                )
                self._problem = f"{reason} (since {since})"
                self._last_reminder = now
            elif now - self._last_reminder >= REMIND_EVERY_S:
                log.error("the audit log still cannot be written (%s); %d records lost so far", reason, self.lost)
                self._last_reminder = now
