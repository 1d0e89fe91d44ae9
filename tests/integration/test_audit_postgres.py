"""The PostgreSQL audit sink against a real server (tests/support/postgres.py): rows, no duplicates on retry,
least privilege, and a database that restarts or is down for a while."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

import codegen_mcp.coordinator.audit.log as audit_log
from codegen_mcp.api.call_id import call_scope
from codegen_mcp.coordinator.audit import AuditEvent, AuditLog
from codegen_mcp.coordinator.audit.postgres import TABLE, PostgresSink
from tests.support import postgres
from tests.support.postgres import PostgresServer, start_postgres
from tests.support.waiting import eventually

postgres_server = postgres.postgres_server  # fixtures
postgres_dsn = postgres.postgres_dsn


def event(n: int) -> AuditEvent:
    with call_scope(f"call-{n}"):
        return AuditEvent.of_call(
            session="mcp-1",
            sandbox="cs-1",
            tool="fs.write",
            arguments={"path": f"f{n}.py", "content": "x = 1"},
            outcome="ok",
            duration_s=0.01,
            error_code=None,
        )


def rows(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(f"SELECT * FROM {TABLE} ORDER BY time, call_id").fetchall()


def record(audit: AuditLog, n: int) -> Future[bool]:
    return audit.record(
        AuditEvent.of_call(
            session="s", sandbox="sb", tool="echo", arguments={"message": f"m{n}"}, outcome="ok", duration_s=0.001
        )
    )


def test_the_sink_creates_its_table_and_stores_each_event_once(postgres_dsn: str) -> None:
    sink = PostgresSink(postgres_dsn)
    try:
        sink.connect()
        batch = [event(1), event(2)]
        sink.write(batch)
        sink.write(batch)  # a retry after a commit whose answer was lost: no duplicates
    finally:
        sink.close()
    stored = rows(postgres_dsn)
    assert [r["call_id"] for r in stored] == ["call-1", "call-2"]
    first = stored[0]
    assert first["event_id"] == batch[0].event_id and first["time"] == batch[0].time
    assert first["session"] == "mcp-1" and first["sandbox"] == "cs-1" and first["tool"] == "fs.write"
    assert first["args"] == {"path": "f1.py", "content": "<5 bytes>"} and first["args_sha256"] == batch[0].args_sha256
    assert first["outcome"] == "ok" and first["error_code"] is None and first["duration_ms"] == 10.0
    assert first["coordinator"] == batch[0].coordinator
    assert "postgres@127.0.0.1:" in sink.describe() and "password" not in sink.describe()


def test_a_role_allowed_only_to_insert_appends_to_an_existing_table(postgres_dsn: str) -> None:
    admin = PostgresSink(postgres_dsn)
    admin.connect()  # an administrator created the table
    admin.close()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE appender LOGIN")
        conn.execute(f"GRANT SELECT, INSERT ON {TABLE} TO appender")
    sink = PostgresSink(postgres_dsn.replace("postgres@", "appender@"))
    try:
        sink.connect()
        sink.write([event(3)])
        with psycopg.connect(postgres_dsn.replace("postgres@", "appender@")) as conn, pytest.raises(psycopg.Error):
            conn.execute(f"DELETE FROM {TABLE}")  # the trail cannot be rewritten by the coordinator's role
    finally:
        sink.close()
    assert [r["call_id"] for r in rows(postgres_dsn)] == ["call-3"]


def test_a_schema_and_timeouts_of_its_own_in_the_dsn_are_kept(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA audit")
    sink = PostgresSink(f"{postgres_dsn}?options=-csearch_path%3Daudit&connect_timeout=2")
    try:
        sink.connect()
        sink.write([event(4)])
        conn = sink._connection()
        assert conn.info.get_parameters()["connect_timeout"] == "2"
        assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
    finally:
        sink.close()
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute(f"SELECT call_id FROM audit.{TABLE}").fetchall() == [("call-4",)]
        assert conn.execute("SELECT to_regclass('public.codegen_mcp_audit')").fetchone() == (None,)


def test_a_statement_timeout_of_the_dsns_own_wins_over_the_default(postgres_dsn: str) -> None:
    sink = PostgresSink(f"{postgres_dsn}?options=-cstatement_timeout%3D5min")
    try:
        conn = sink._connection()
        assert conn.execute("SHOW statement_timeout").fetchone() == ("5min",)
    finally:
        sink.close()


def test_replicas_starting_together_create_the_table_once(postgres_dsn: str) -> None:
    sinks = [PostgresSink(postgres_dsn) for _ in range(4)]
    try:
        with ThreadPoolExecutor(len(sinks)) as pool:
            list(pool.map(lambda sink: sink.connect(), sinks))  # no "duplicate key" from two CREATE TABLEs
        for n, sink in enumerate(sinks):
            sink.write([event(10 + n)])
    finally:
        for sink in sinks:
            sink.close()
    assert sorted(r["call_id"] for r in rows(postgres_dsn)) == [f"call-{10 + n}" for n in range(4)]


def test_a_dsn_that_does_not_work_is_a_problem_at_start_not_a_crash(postgres_server: PostgresServer) -> None:
    audit = AuditLog(PostgresSink(postgres_server.dsn("no_such_database")))
    audit.open()
    try:
        assert audit.problem is not None and 'database "no_such_database" does not exist' in audit.problem
    finally:
        audit.close(timeout_s=1)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own: it is stopped and started again."""
    with start_postgres() as server:
        yield server


async def test_a_database_that_is_down_delays_events_and_they_arrive_once_it_is_back(
    own_postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_log, "MAX_RETRY_S", 0.3)
    dsn = own_postgres.dsn()
    audit = AuditLog(PostgresSink(dsn))
    audit.open()
    try:
        assert await audit.written_within(record(audit, 0), 5)
        own_postgres.stop()
        own_postgres.start()
        # The server restarted under an idle connection: the sink reconnects at once, nothing to report.
        assert await audit.written_within(record(audit, 1), 5)
        assert audit.failures == 0 and audit.problem is None

        own_postgres.stop()
        waiting = [record(audit, n) for n in range(2, 6)]
        await eventually(lambda: audit.problem, what="the sink's problem")
        assert "PostgreSQL" in str(audit.problem) and audit.backlog == 4 and audit.dropped == 0

        own_postgres.start()
        assert [await asyncio.wrap_future(f) for f in waiting] == [True] * 4
        assert audit.problem is None and audit.backlog == 0
    finally:
        audit.close()
    assert [r["args"]["message"] for r in rows(dsn)] == [f"m{n}" for n in range(6)]
