"""The PostgreSQL audit sink: the durable, queryable provenance store, shared by every coordinator replica.

Each batch is one transaction, committed before the tool calls it records answer (see AuditLog.written_within).
`event_id` is the primary key and rows go in with ON CONFLICT DO NOTHING: a batch retried after a commit whose
acknowledgement was lost is not stored twice. The coordinator needs only SELECT and INSERT on the table (it never
updates or deletes), and CREATE on the schema only if the table does not exist yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from codegen_mcp.coordinator.audit.event import AuditEvent
from codegen_mcp.coordinator.audit.sinks import SinkDown

TABLE: Final = "codegen_mcp_audit"
# A database that stops answering (a network partition, a hung server) must not hold the writer forever: the
# connection gives up after these (unless the DSN says otherwise), and the batch stays buffered for a new one.
_CONNECTION_DEFAULTS: Final[dict[str, Any]] = {
    "connect_timeout": 5,
    "tcp_user_timeout": 30_000,  # ms unacknowledged data may wait
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "application_name": "codegen-mcp audit",
}
_STATEMENT_TIMEOUT: Final = "-c statement_timeout=30s"
# Two replicas starting at once create the table under this lock, one after the other.
_SCHEMA_LOCK: Final = 0x636F6465_67656E  # "codegen"
_SCHEMA: Final = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        event_id text PRIMARY KEY,
        time timestamptz NOT NULL,
        call_id text NOT NULL,
        session text NOT NULL,
        sandbox text,
        tool text NOT NULL,
        args jsonb NOT NULL,
        args_sha256 text NOT NULL,
        outcome text NOT NULL,
        error_code text,
        duration_ms double precision NOT NULL,
        coordinator text NOT NULL
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_time ON {TABLE} (time)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_call_id ON {TABLE} (call_id)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_session ON {TABLE} (session, time)",
)
_COLUMNS: Final = (
    "event_id",
    "time",
    "call_id",
    "session",
    "sandbox",
    "tool",
    "args",
    "args_sha256",
    "outcome",
    "error_code",
    "duration_ms",
    "coordinator",
)
_INSERT: Final = (
    "INSERT INTO codegen_mcp_audit (event_id, time, call_id, session, sandbox, tool, args, args_sha256, outcome, "
    "error_code, duration_ms, coordinator) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (event_id) DO NOTHING"
)


def _row(event: AuditEvent) -> tuple[Any, ...]:
    return tuple(Jsonb(event.args) if column == "args" else getattr(event, column) for column in _COLUMNS)


def dsn_problem(dsn: str) -> str | None:
    """A sentence when `dsn` is no PostgreSQL connection string, else None. It never quotes the DSN (a password)."""
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return (
            "the audit DSN (CODEGEN_AUDIT_POSTGRES_DSN) does not parse: give "
            "postgresql://user:password@host:port/dbname or key=value pairs"
        )
    return None


def _reason(exc: psycopg.Error) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"PostgreSQL: {first_line}"


class PostgresSink:
    """Appends events to the table `codegen_mcp_audit` (created when missing) over one connection."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None

    def describe(self) -> str:
        if dsn_problem(self._dsn):
            return "postgresql (a DSN that does not parse)"
        info = conninfo_to_dict(self._dsn)
        user = f"{info['user']}@" if info.get("user") else ""
        where = f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname') or ''}"
        return f"postgresql {user}{where} table {TABLE}"

    def connect(self) -> None:
        try:
            self._connection()
        except psycopg.Error as exc:
            raise SinkDown(_reason(exc)) from exc

    def write(self, events: Sequence[AuditEvent]) -> None:
        rows = [_row(event) for event in events]
        for attempt in (1, 2):
            reused = self._conn is not None
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cursor:
                    cursor.executemany(_INSERT, rows)
                return
            except psycopg.Error as exc:
                self.close()
                # A connection the server dropped while idle (a restart, a failover) is opened anew at once.
                if attempt == 2 or not reused or not isinstance(exc, psycopg.OperationalError):
                    raise SinkDown(_reason(exc)) from exc

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            problem = dsn_problem(self._dsn)
            if problem:
                raise SinkDown(problem)
            conn = psycopg.connect(self._dsn, autocommit=True, **self._connection_parameters())
            try:
                self._ensure_table(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _connection_parameters(self) -> dict[str, Any]:
        """The defaults the DSN does not set itself; its `options` (say, a search_path) kept after our statement
        timeout, so that a `-c statement_timeout=…` of its own wins (the last one given counts)."""
        given = conninfo_to_dict(self._dsn)
        parameters = {key: value for key, value in _CONNECTION_DEFAULTS.items() if key not in given}
        parameters["options"] = f"{_STATEMENT_TIMEOUT} {given.get('options') or ''}".strip()
        return parameters

    @staticmethod
    def _ensure_table(conn: psycopg.Connection[Any]) -> None:
        # Only when missing: a role allowed INSERT alone on an existing table must not need CREATE.
        if conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone() != (None,):
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA:
                conn.execute(statement)
