"""The durable audit trail end to end: a real coordinator process writing to a real PostgreSQL.

What the issue asks: killing the coordinator loses no event whose call's result was already returned, and a
database that is down fails no call, shows in /healthz and the metrics, and gets every event once it is back.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import psycopg
import pytest

from codegen_mcp.coordinator.audit.postgres import PostgresSink
from tests.support import postgres
from tests.support.attacks import metric
from tests.support.coordinator import CoordinatorProcess, print_log_tail, start_coordinator, state_root, stop_process
from tests.support.mcp_client import call, mcp_session, text_of
from tests.support.postgres import PostgresServer, start_postgres
from tests.support.waiting import eventually

postgres_server = postgres.postgres_server  # fixtures
postgres_dsn = postgres.postgres_dsn

pytestmark = pytest.mark.timeout(240)
TIMEOUT = httpx.Timeout(60)


def stored_messages(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        found = conn.execute("SELECT args->>'message' FROM codegen_mcp_audit WHERE tool = 'echo' ORDER BY time")
        return [row[0] for row in found.fetchall()]


def stored_rows(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM codegen_mcp_audit ORDER BY time").fetchall()


@contextlib.contextmanager
def coordinator_on(dsn: str) -> Iterator[CoordinatorProcess]:
    """A coordinator process whose audit sink is the PostgreSQL at `dsn`."""
    for root in state_root():
        state = root / "state"
        state.mkdir()
        cp = start_coordinator(state, "--audit-sink", "postgres", env={"CODEGEN_AUDIT_POSTGRES_DSN": dsn})
        try:
            yield cp
        finally:
            stop_process(cp.proc)
            print_log_tail(cp)


async def health(cp: CoordinatorProcess) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=cp.url, timeout=10) as http:
        body: dict[str, Any] = (await http.get("/healthz")).json()
    return body


def slow_down_commits(dsn: str, seconds: float) -> None:
    """Each insert takes `seconds` (a store far away, or with synchronous replicas): slower than a result's way
    back to the client, so an event not waited for would still be on its way when the coordinator dies."""
    sink = PostgresSink(dsn)
    sink.connect()  # the table, as the coordinator creates it
    sink.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM pg_sleep({seconds}); RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER slow_insert BEFORE INSERT ON codegen_mcp_audit FOR EACH ROW EXECUTE FUNCTION slow_insert()"
        )


async def test_killing_the_coordinator_loses_no_event_whose_result_was_returned(postgres_dsn: str) -> None:
    slow_down_commits(postgres_dsn, 0.3)
    answered: list[str] = []
    with coordinator_on(postgres_dsn) as cp:
        try:
            async with mcp_session(cp.url, timeout=TIMEOUT) as s:
                for n in range(8):
                    answered.append(text_of(await call(s, "echo", message=f"m{n}")))
                    if n == 7:
                        cp.proc.send_signal(signal.SIGKILL)  # the instant the last result arrived
        except Exception:  # noqa: S110 - the client's goodbye to a killed server fails; what was answered counts
            pass
        assert cp.proc.wait(timeout=10) == -signal.SIGKILL
    assert answered == [f"m{n}" for n in range(8)]
    assert stored_messages(postgres_dsn) == answered
    row = stored_rows(postgres_dsn)[-1]
    assert row["tool"] == "echo" and row["outcome"] == "ok" and row["session"] and row["sandbox"]
    assert row["call_id"] and len(row["args_sha256"]) == 64 and row["duration_ms"] > 0


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own: it goes down and comes back."""
    with start_postgres() as server:
        yield server


async def test_a_database_that_is_down_fails_no_call_and_shows_until_it_is_back(own_postgres: PostgresServer) -> None:
    dsn = own_postgres.dsn()
    with coordinator_on(dsn) as cp:
        async with mcp_session(cp.url, timeout=TIMEOUT) as s:
            await call(s, "echo", message="before")
            own_postgres.stop()
            started = time.monotonic()
            for n in range(5):
                assert text_of(await call(s, "echo", message=f"down {n}")) == f"down {n}"
            # The first call waited its bounded second at most; the rest did not wait for a sink known down.
            assert time.monotonic() - started < 4
            body = await health(cp)
            assert body["status"] == "degraded" and "PostgreSQL" in body["problems"]["audit"]
            assert await metric(cp, "codegen_mcp_audit_backlog") == 5
            assert await metric(cp, "codegen_mcp_audit_healthy") == 0
            assert await metric(cp, "codegen_mcp_audit_write_failures_total") >= 1
            assert "the audit sink (postgresql postgres@127.0.0.1" in cp.log_tail(200)

            own_postgres.start()
            await eventually(lambda: _healthy(cp), timeout=20, interval=0.2, what="/healthz ok once PostgreSQL is back")
            assert await metric(cp, "codegen_mcp_audit_backlog") == 0
            assert await metric(cp, "codegen_mcp_audit_dropped_total") == 0
            await call(s, "echo", message="after")
    assert stored_messages(dsn) == ["before", *(f"down {n}" for n in range(5)), "after"]


async def _healthy(cp: CoordinatorProcess) -> bool:
    return bool((await health(cp))["status"] == "ok")
