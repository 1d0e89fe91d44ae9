"""Prometheus metrics of the coordinator, on a registry of its own (several coordinators may share a process).

Only counts and durations by tool, outcome and kind of start: no session ids, paths or arguments, so
`/metrics` can be scraped without the MCP bearer token. Parts that keep their own counts (the audit log, the
handshakes) are read when scraped, through collectors on the same registry.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Counters carry no `_created` series: dashboards and alerts never use them, and they double every counter.
disable_created_metrics()  # type: ignore[no-untyped-call]  # the library leaves it unannotated

# Seconds; tool calls range from a millisecond (echo) to minutes (pkg.install, test.run).
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Seconds; a sandbox from a warm pool is ready in tens of milliseconds, a new Pod pulling its image in minutes.
START_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)

# Why a sandbox started: a session's first call, a suspended one resumed, or one found stopped started again.
StartKind = Literal["new", "resume", "restart"]
# (ready, wanted) sandboxes started ahead for sessions to come, or None where the backend keeps none.
WarmPoolSize = Callable[[], tuple[int, int] | None]


class HandshakeCounts(Protocol):
    """What /metrics reads of the MCP sessions that have no sandbox yet (`sessions.Handshakes`)."""

    ended: Tally[str]

    def __len__(self) -> int: ...


class _HandshakeCollector(Collector):
    def __init__(self, handshakes: HandshakeCounts) -> None:
        self._handshakes = handshakes

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "codegen_mcp_handshakes", "MCP sessions held that have no sandbox yet.", value=len(self._handshakes)
        )
        ended = CounterMetricFamily(
            "codegen_mcp_handshakes_ended",
            "MCP sessions without a sandbox ended by the server, by reason.",
            labels=["reason"],
        )
        for reason in ("evicted", "expired"):
            ended.add_metric([reason], self._handshakes.ended[reason])
        yield ended


class _WarmPoolCollector(Collector):
    def __init__(self, size: WarmPoolSize) -> None:
        self._size = size

    def collect(self) -> Iterator[Metric]:
        size = self._size()
        if size is None:
            return
        ready, wanted = size
        yield GaugeMetricFamily(
            "codegen_mcp_warm_pool_ready", "Sandboxes started ahead and ready for the next new sessions.", value=ready
        )
        yield GaugeMetricFamily(
            "codegen_mcp_warm_pool_size", "Sandboxes the warm pool keeps ready (the warm_pool setting).", value=wanted
        )


class Metrics:
    """The coordinator's metrics; `registry` is what `/metrics` serves."""

    def __init__(
        self,
        sessions: Callable[[], int],
        *,
        handshakes: HandshakeCounts | None = None,
        warm_pool: WarmPoolSize | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        Gauge(
            "codegen_mcp_sessions", "Sandboxes this coordinator currently serves.", registry=self.registry
        ).set_function(sessions)
        self._calls = Counter(
            "codegen_mcp_tool_calls",
            "MCP tool calls, by tool and outcome (ok, error, cancelled).",
            ["tool", "outcome"],
            registry=self.registry,
        )
        self._durations = Histogram(
            "codegen_mcp_tool_call_duration_seconds",
            "Duration of MCP tool calls, by tool.",
            ["tool"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._starts = Histogram(
            "codegen_mcp_sandbox_start_seconds",
            "Time from asking the backend for a sandbox to its agent answering, by kind (new, resume, restart).",
            ["kind"],
            buckets=START_BUCKETS,
            registry=self.registry,
        )
        self._restarts = Counter(
            "codegen_mcp_agent_restarts",
            "Sandboxes found stopped (agent exited, Pod gone or suspended elsewhere) and started again.",
            registry=self.registry,
        )
        if handshakes is not None:
            self.registry.register(_HandshakeCollector(handshakes))
        if warm_pool is not None:
            self.registry.register(_WarmPoolCollector(warm_pool))

    def observe_call(self, tool: str, outcome: str, duration_s: float) -> None:
        self._calls.labels(tool=tool, outcome=outcome).inc()
        self._durations.labels(tool=tool).observe(duration_s)

    def sandbox_started(self, kind: StartKind, duration_s: float) -> None:
        """A sandbox is ready, `duration_s` after it was asked for (the session manager tells)."""
        self._starts.labels(kind=kind).observe(duration_s)
        if kind == "restart":
            self._restarts.inc()
