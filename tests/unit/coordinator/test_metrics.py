"""The coordinator's Prometheus metrics: prometheus_client on a registry per coordinator."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx2 as httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from codegen_mcp.coordinator.agent_client import AgentClient, AgentEndpoint
from codegen_mcp.coordinator.backends.base import Backend, Sandbox
from codegen_mcp.coordinator.metrics import Metrics
from codegen_mcp.coordinator.server import create_app
from codegen_mcp.coordinator.sessions import SessionManager
from codegen_mcp.coordinator.settings import CoordinatorSettings


def lines(metrics: Metrics) -> set[str]:
    return set(generate_latest(metrics.registry).decode().splitlines())


def test_counts_and_cumulative_histogram() -> None:
    metrics = Metrics(sessions=lambda: 3)
    metrics.observe_call("echo", "ok", 0.002)
    metrics.observe_call("echo", "ok", 0.03)
    metrics.observe_call("run.python", "error", 400.0)  # beyond the last bucket: only +Inf counts it
    exposed = lines(metrics)
    assert "codegen_mcp_sessions 3.0" in exposed
    assert 'codegen_mcp_tool_calls_total{outcome="ok",tool="echo"} 2.0' in exposed
    assert 'codegen_mcp_tool_calls_total{outcome="error",tool="run.python"} 1.0' in exposed
    assert 'codegen_mcp_tool_call_duration_seconds_bucket{le="0.005",tool="echo"} 1.0' in exposed
    assert 'codegen_mcp_tool_call_duration_seconds_bucket{le="0.05",tool="echo"} 2.0' in exposed
    assert 'codegen_mcp_tool_call_duration_seconds_bucket{le="+Inf",tool="echo"} 2.0' in exposed
    assert 'codegen_mcp_tool_call_duration_seconds_bucket{le="300.0",tool="run.python"} 0.0' in exposed
    assert 'codegen_mcp_tool_call_duration_seconds_bucket{le="+Inf",tool="run.python"} 1.0' in exposed
    assert 'codegen_mcp_tool_call_duration_seconds_count{tool="run.python"} 1.0' in exposed
    assert not [line for line in exposed if "_created" in line]  # no extra series per counter


def test_label_values_are_escaped() -> None:
    metrics = Metrics(sessions=lambda: 0)
    metrics.observe_call('we"ird\\tool', "ok", 0.1)
    assert 'codegen_mcp_tool_calls_total{outcome="ok",tool="we\\"ird\\\\tool"} 1.0' in lines(metrics)


def test_each_coordinator_has_a_registry_of_its_own() -> None:
    first, second = Metrics(sessions=lambda: 1), Metrics(sessions=lambda: 2)  # the global registry would refuse
    first.observe_call("echo", "ok", 0.1)
    assert "codegen_mcp_sessions 2.0" in lines(second)
    assert not [line for line in lines(second) if line.startswith("codegen_mcp_tool_calls_total{")]


class Handshakes:
    def __init__(self) -> None:
        self.ended: Counter[str] = Counter(evicted=2)

    def __len__(self) -> int:
        return 4


def test_handshakes_and_the_warm_pool_are_read_when_scraped() -> None:
    pool = [(1, 3)]
    metrics = Metrics(sessions=lambda: 0, handshakes=Handshakes(), warm_pool=lambda: pool[0])
    pool[0] = (2, 3)
    exposed = lines(metrics)
    assert {
        "codegen_mcp_handshakes 4.0",
        'codegen_mcp_handshakes_ended_total{reason="evicted"} 2.0',
        'codegen_mcp_handshakes_ended_total{reason="expired"} 0.0',
        "codegen_mcp_warm_pool_ready 2.0",
        "codegen_mcp_warm_pool_size 3.0",
    } <= exposed


def test_a_backend_without_a_warm_pool_exposes_no_pool_gauges() -> None:
    metrics = Metrics(sessions=lambda: 0, warm_pool=lambda: None)
    assert not [line for line in lines(metrics) if "warm_pool" in line]


class FlakyBackend(Backend):
    """Opens at once; `revive` brings back a sandbox that was found stopped."""

    name = "flaky"
    suspends = True

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def describe(self) -> str:
        return self.name

    async def open(self, session_key: str) -> Sandbox:
        return Sandbox(session_key, AgentClient(AgentEndpoint("http://127.0.0.1:9", "token")), session_key)

    async def revive(self, sandbox: Sandbox) -> Sandbox:
        sandbox.alive = True
        return sandbox

    async def suspend(self, sandbox: Sandbox) -> None:
        sandbox.alive = False

    async def close(self, sandbox: Sandbox) -> None:
        await sandbox.client.aclose()


async def test_sandbox_starts_and_agent_restarts_are_counted_by_kind() -> None:
    metrics = Metrics(sessions=lambda: 1)
    manager = SessionManager(FlakyBackend(), idle_timeout_s=3600, max_sessions=10, on_started=metrics.sandbox_started)
    try:
        sandbox = await manager.acquire("s1")
        await manager.acquire("s1")  # running: no start
        assert "codegen_mcp_agent_restarts_total 0.0" in lines(metrics)
        sandbox.alive = False  # its agent died
        await manager.acquire("s1")
        sandbox.alive = False
        await manager.acquire("s1")
    finally:
        await manager.aclose()
    exposed = lines(metrics)
    assert 'codegen_mcp_sandbox_start_seconds_count{kind="new"} 1.0' in exposed
    assert 'codegen_mcp_sandbox_start_seconds_count{kind="restart"} 2.0' in exposed
    assert 'codegen_mcp_sandbox_start_seconds_bucket{kind="new",le="0.05"} 1.0' in exposed  # it opened at once
    assert "codegen_mcp_agent_restarts_total 2.0" in exposed


async def test_the_coordinator_serves_every_part_from_one_registry(tmp_path: Path) -> None:
    app = create_app(CoordinatorSettings(state_dir=tmp_path))
    coordinator = app.state.coordinator
    assert coordinator.audit.registry is coordinator.metrics.registry  # the audit log reports on it too
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        response = await http.get("/metrics")
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    families = {f.name for f in text_string_to_metric_families(response.text)}
    assert {
        "codegen_mcp_sessions",
        "codegen_mcp_handshakes",
        "codegen_mcp_audit_healthy",
        "codegen_mcp_warm_pool_size",
    } <= families
    assert response.text.count("# TYPE codegen_mcp_audit_healthy gauge") == 1
