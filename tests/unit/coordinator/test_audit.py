"""The audit log's writer: lines on disk in order, and failures that degrade (counted, reported), never raise."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from codegen_mcp.coordinator.audit import AuditLog


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog(tmp_path / "logs" / "audit.jsonl")
    log.open()
    yield log
    log.close()


def record(audit: AuditLog, n: int) -> Future[bool]:
    return audit.record(
        session="s1", sandbox="sb", tool="echo", arguments={"message": f"m{n}"}, outcome="ok", duration_s=0.001
    )


async def test_records_reach_the_file_in_order_off_the_loop(audit: AuditLog) -> None:
    for n in range(20):
        done = record(audit, n)
    assert await audit.written_within(done, 5)
    lines = [json.loads(x) for x in audit.path.read_text().splitlines()]
    assert [e["args"]["message"] for e in lines] == [f"m{n}" for n in range(20)]
    assert stat.S_IMODE(audit.path.stat().st_mode) == 0o600
    assert audit.problem is None and audit.written == 20 and audit.lost == 0
    assert "codegen_mcp_audit_healthy 1" in audit.render_metrics().splitlines()


async def test_a_log_that_cannot_be_written_loses_records_loudly_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the log's folder should be")
    audit = AuditLog(blocker / "audit.jsonl")
    audit.open()  # does not raise: the problem is reported instead
    try:
        assert audit.problem is not None and "File exists" in audit.problem
        done = record(audit, 1)
        assert await audit.written_within(done, 5) is False
        assert audit.lost == 1
        metrics = audit.render_metrics().splitlines()
        assert "codegen_mcp_audit_write_failures_total 1" in metrics
        assert "codegen_mcp_audit_healthy 0" in metrics
        assert "the audit log cannot be written" in caplog.text

        blocker.unlink()  # room again
        done = record(audit, 2)
        assert await audit.written_within(done, 5) is True
        assert audit.problem is None and "written again; 1 records were lost" in caplog.text
        assert json.loads(audit.path.read_text())["args"] == {"message": "m2"}
    finally:
        audit.close()


async def test_a_closed_log_drops_records_without_raising(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    done = record(audit, 1)
    assert await audit.written_within(done, 1) is False
