"""The audit log's writer: events reach the sink in order, and a failing sink degrades (buffered, retried,
counted, reported), never raises and never slows a call down."""

from __future__ import annotations

import asyncio
import json
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import codegen_mcp.coordinator.audit.log as audit_log
from codegen_mcp.api.call_id import call_scope
from codegen_mcp.coordinator.audit import AuditEvent, AuditLog, FileSink, SinkDown, StdoutSink
from tests.support.waiting import eventually


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog(FileSink(tmp_path / "logs" / "audit.jsonl"))
    log.open()
    yield log
    log.close()


def record(audit: AuditLog, n: int) -> Future[bool]:
    return audit.record(
        AuditEvent.of_call(
            session="s1", sandbox="sb", tool="echo", arguments={"message": f"m{n}"}, outcome="ok", duration_s=0.001
        )
    )


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def samples(audit: AuditLog) -> dict[str, float]:
    text = generate_latest(audit.registry).decode()
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))}


class FlakySink:
    """A sink that fails while `down` is set, and records what it took."""

    def __init__(self) -> None:
        self.down: str | None = None
        self.taken: list[AuditEvent] = []
        self.gate = threading.Event()  # cleared: the next write blocks (a sink that hangs)
        self.gate.set()

    def describe(self) -> str:
        return "flaky"

    def connect(self) -> None:
        pass

    def write(self, events: Sequence[AuditEvent]) -> None:
        self.gate.wait()
        if self.down:
            raise SinkDown(self.down)
        self.taken.extend(events)

    def close(self) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[tuple[AuditLog, FlakySink]]:
    sink = FlakySink()
    log = AuditLog(sink, queue_limit=5)
    log.open()
    yield log, sink
    sink.gate.set()
    log.close()


async def test_events_reach_the_file_in_order_off_the_loop(audit: AuditLog) -> None:
    path = audit.sink.path  # type: ignore[attr-defined]
    for n in range(20):
        done = record(audit, n)
    assert await audit.written_within(done, 5)
    events = lines(path)
    assert [e["args"] for e in events] == [{"message": f"m{n}"} for n in range(20)]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert audit.problem is None and audit.written == 20 and audit.dropped == 0
    metrics = samples(audit)
    assert metrics["codegen_mcp_audit_healthy"] == 1 and metrics["codegen_mcp_audit_records_total"] == 20
    assert metrics["codegen_mcp_audit_backlog"] == 0 and metrics["codegen_mcp_audit_dropped_total"] == 0


def test_an_event_carries_the_call_id_and_a_digest_never_contents() -> None:
    secret = "print('TOP SECRET')"
    with call_scope("call-123"):
        event = AuditEvent.of_call(
            session="mcp-1",
            sandbox="cs-abc",
            tool="run.python",
            arguments={"code": secret, "timeout_s": 5},
            outcome="error",
            duration_s=0.25,
            error_code="timeout",
        )
    other = AuditEvent.of_call(session="mcp-1", sandbox=None, tool="echo", arguments={}, outcome="ok", duration_s=0)
    line = json.loads(event.json_line())
    assert line["call_id"] == "call-123" and other.call_id and other.call_id != "call-123"
    assert line["session"] == "mcp-1" and line["sandbox"] == "cs-abc" and line["tool"] == "run.python"
    assert line["outcome"] == "error" and line["error_code"] == "timeout" and line["duration_ms"] == 250.0
    assert line["args"] == {"code": f"<{len(secret)} bytes>", "timeout_s": 5} and len(line["args_sha256"]) == 64
    assert secret not in event.json_line().decode() and line["time"].endswith("+00:00")
    assert event.event_id != other.event_id  # unique per event: what a retrying sink deduplicates on


def test_an_event_stays_small_whatever_the_client_sent() -> None:
    # A refused call is audited too, with the arguments as sent: up to a 4 MiB request of fields.
    sent = {f"field_{n}_{'k' * 100}": "v" for n in range(50_000)}
    event = AuditEvent.of_call(
        session="s", sandbox=None, tool="fs.write", arguments=sent, outcome="error", duration_s=0
    )
    assert len(event.json_line()) < 8_000
    assert len(event.args) == 33 and event.args["…"] == "<49968 more fields>"
    assert all(len(name) <= 65 for name in event.args)


def test_an_event_never_keeps_the_credentials_of_a_url() -> None:
    # git.clone refuses such a URL, but the refused call is audited: its token must not reach the trail.
    url = "https://alice:ghp_SECRET@github.com/alice/private.git"
    event = AuditEvent.of_call(
        session="s", sandbox=None, tool="git.clone", arguments={"url": url}, outcome="error", duration_s=0
    )
    assert event.args == {"url": "https://***@github.com/alice/private.git"}
    assert "ghp_SECRET" not in event.json_line().decode()


async def test_a_sink_that_cannot_be_written_keeps_the_events_retries_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_log, "MAX_RETRY_S", 0.2)
    blocker = tmp_path / "state"
    blocker.write_text("a file where the log's folder should be")
    audit = AuditLog(FileSink(blocker / "audit.jsonl"))
    audit.open()  # does not raise: the problem is reported instead
    try:
        assert audit.problem is not None and "File exists" in audit.problem
        first = record(audit, 1)
        started = time.monotonic()
        assert await audit.written_within(first, 5) is False
        assert time.monotonic() - started < 0.5  # a sink known to be down does not slow the call
        await eventually(lambda: audit.failures >= 2, what="retries")
        metrics = samples(audit)
        assert metrics["codegen_mcp_audit_healthy"] == 0 and metrics["codegen_mcp_audit_backlog"] == 1
        assert metrics["codegen_mcp_audit_write_failures_total"] >= 2
        assert metrics["codegen_mcp_audit_dropped_total"] == 0
        assert "the audit sink (file" in caplog.text and "events wait in a buffer" in caplog.text

        blocker.unlink()  # room again
        second = record(audit, 2)
        assert await asyncio.wrap_future(first) is True and await asyncio.wrap_future(second) is True
        assert audit.problem is None and "takes events again; 0 were lost" in caplog.text
        assert [e["args"] for e in lines(blocker / "audit.jsonl")] == [{"message": "m1"}, {"message": "m2"}]
        assert samples(audit)["codegen_mcp_audit_backlog"] == 0
    finally:
        audit.close()


async def test_a_full_buffer_drops_new_events_and_counts_them(flaky: tuple[AuditLog, FlakySink]) -> None:
    audit, sink = flaky
    sink.down = "the database is down"
    recorded = [record(audit, 0)]
    await eventually(lambda: audit.failures >= 1, what="a failed write")
    recorded += [record(audit, n) for n in range(1, 12)]
    # One event is being retried, five wait in the buffer: the other six were dropped at once.
    assert audit.backlog == 6 and audit.dropped == 6
    assert [f.done() for f in recorded] == [False] * 6 + [True] * 6
    assert "database is down" in str(audit.problem)
    assert samples(audit)["codegen_mcp_audit_dropped_total"] == audit.dropped
    sink.down = None
    kept = [f for f in recorded if not (f.done() and f.result() is False)]
    for future in kept:
        assert await asyncio.wrap_future(future) is True
    assert len(sink.taken) == 12 - audit.dropped
    assert [e.args["message"] for e in sink.taken] == sorted(
        (e.args["message"] for e in sink.taken), key=lambda m: int(m[1:])
    )


async def test_closing_with_the_sink_down_loses_the_buffered_events_and_counts_them(
    flaky: tuple[AuditLog, FlakySink], caplog: pytest.LogCaptureFixture
) -> None:
    audit, sink = flaky
    sink.down = "the database is down"
    recorded = [record(audit, n) for n in range(3)]
    await eventually(lambda: audit.failures >= 1, what="a failed write")
    started = time.monotonic()
    audit.close(timeout_s=5)
    assert time.monotonic() - started < 2
    assert audit.dropped == 3 and audit.backlog == 0 and not sink.taken
    assert all(f.result(timeout=0) is False for f in recorded)
    assert "down at shutdown: 3 events are lost" in caplog.text


async def test_a_sink_that_hangs_is_reported(
    flaky: tuple[AuditLog, FlakySink], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_log, "STALLED_AFTER_S", 0.1)
    audit, sink = flaky
    sink.gate.clear()
    done = record(audit, 1)
    assert await audit.written_within(done, 0.3) is False  # the call waited its bounded time, then answered
    assert "has not answered a write for" in str(audit.problem)
    assert samples(audit)["codegen_mcp_audit_healthy"] == 0
    sink.gate.set()
    assert await asyncio.wrap_future(done) is True and audit.problem is None


async def test_a_closed_log_drops_events_without_raising(tmp_path: Path) -> None:
    audit = AuditLog(FileSink(tmp_path / "audit.jsonl"))
    done = record(audit, 1)
    assert await audit.written_within(done, 1) is False
    assert audit.dropped == 1


def test_metrics_go_to_the_registry_given() -> None:
    registry = CollectorRegistry()
    audit = AuditLog(FileSink(Path("/nonexistent/audit.jsonl")), registry=registry)
    text = generate_latest(registry).decode()
    for name in ("records_total", "write_failures_total", "dropped_total", "backlog", "healthy"):
        assert f"codegen_mcp_audit_{name} " in text, name
    assert audit.registry is registry


async def test_the_stdout_sink_writes_one_json_line_per_event(capfd: pytest.CaptureFixture[str]) -> None:
    audit = AuditLog(StdoutSink())
    audit.open()
    try:
        assert await audit.written_within(record(audit, 7), 5)
    finally:
        audit.close()
    out = capfd.readouterr().out
    assert [json.loads(line)["args"] for line in out.splitlines()] == [{"message": "m7"}]
