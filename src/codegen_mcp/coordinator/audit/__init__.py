"""The audit trail: one event per tool call, to the sink the settings choose (file, stdout or PostgreSQL)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from codegen_mcp.coordinator.audit.event import AuditEvent, summarize_arguments
from codegen_mcp.coordinator.audit.log import AuditLog
from codegen_mcp.coordinator.audit.sinks import FileSink, Sink, SinkDown, StdoutSink
from codegen_mcp.coordinator.settings import CoordinatorSettings

__all__ = [
    "AuditEvent",
    "AuditLog",
    "FileSink",
    "Sink",
    "SinkDown",
    "StdoutSink",
    "create_audit_log",
    "summarize_arguments",
]


def create_audit_log(settings: CoordinatorSettings, *, registry: CollectorRegistry | None = None) -> AuditLog:
    """The audit log of `settings.audit_sink`, its metrics on `registry` (a registry of its own when None)."""
    sink: Sink
    if settings.audit_sink == "postgres":
        from codegen_mcp.coordinator.audit.postgres import PostgresSink  # psycopg: the `postgres` extra

        assert settings.audit_postgres_dsn is not None  # the settings refuse postgres without a DSN
        sink = PostgresSink(settings.audit_postgres_dsn.get_secret_value())
    elif settings.audit_sink == "stdout":
        sink = StdoutSink()
    else:
        sink = FileSink(settings.audit_path)
    return AuditLog(sink, registry=registry, queue_limit=settings.audit_buffer_events)
