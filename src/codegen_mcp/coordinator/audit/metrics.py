"""The audit log's Prometheus metrics, read from its counters when scraped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from codegen_mcp.coordinator.audit.log import AuditLog


class AuditCollector(Collector):
    """Written, failed and dropped events, the backlog and health of one audit log."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    def collect(self) -> Iterator[Metric]:
        a = self._audit
        yield CounterMetricFamily("codegen_mcp_audit_records", "Audit events the sink took.", value=a.written)
        yield CounterMetricFamily(
            "codegen_mcp_audit_write_failures",
            "Failed writes to the audit sink (their events stay buffered and are retried).",
            value=a.failures,
        )
        yield CounterMetricFamily(
            "codegen_mcp_audit_dropped",
            "Audit events lost for good: the buffer was full, or the sink was down at shutdown.",
            value=a.dropped,
        )
        yield GaugeMetricFamily("codegen_mcp_audit_backlog", "Audit events waiting for the sink.", value=a.backlog)
        yield GaugeMetricFamily(
            "codegen_mcp_audit_healthy",
            "1 while the audit sink takes events, 0 while it fails (events wait or are lost).",
            value=0 if a.problem else 1,
        )
