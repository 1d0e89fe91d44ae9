"""The operator's Prometheus metrics: handler runs by result, sessions by phase, pooled sandboxes by state."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import kopf
import pytest
from prometheus_client import generate_latest

from codegen_mcp.api import pool
from codegen_mcp.api import session as api
from codegen_mcp.operator.__main__ import parse_args
from codegen_mcp.operator.metrics import OperatorMetrics, counted
from codegen_mcp.operator.settings import OperatorSettings


def lines(metrics: OperatorMetrics) -> set[str]:
    return set(generate_latest(metrics.registry).decode().splitlines())


async def test_handler_runs_are_counted_by_result() -> None:
    metrics = OperatorMetrics()
    memo = kopf.Memo(metrics=metrics)

    @counted("session", "create")
    async def works(**_: Any) -> None:
        pass

    @counted("session", "create")
    async def conflicts(**_: Any) -> None:
        raise kopf.TemporaryError("the API server is busy", delay=1)

    @counted("pool", "update")
    async def refuses(**_: Any) -> None:
        raise kopf.PermanentError("spec.replicas must be a number")

    @counted("session", "pod")
    async def gives_up(**_: Any) -> bool:
        return False  # an event handler that stopped retrying (kopf never retries those)

    @counted("session", "pod")
    async def interrupted(**_: Any) -> None:
        raise asyncio.CancelledError

    await works(memo=memo)
    await works(memo=memo)
    with pytest.raises(kopf.TemporaryError):
        await conflicts(memo=memo)
    with pytest.raises(kopf.PermanentError):
        await refuses(memo=memo)
    # kopf would patch a returned value into the Pod's status (forbidden to the operator): nothing is returned.
    assert await gives_up(memo=memo) is None
    with pytest.raises(asyncio.CancelledError):
        await interrupted(memo=memo)
    exposed = lines(metrics)
    assert 'codegen_operator_reconciles_total{resource="session",result="ok",trigger="create"} 2.0' in exposed
    assert 'codegen_operator_reconciles_total{resource="session",result="retry",trigger="create"} 1.0' in exposed
    assert 'codegen_operator_reconciles_total{resource="pool",result="error",trigger="update"} 1.0' in exposed
    assert 'codegen_operator_reconciles_total{resource="session",result="error",trigger="pod"} 1.0' in exposed
    assert 'codegen_operator_reconcile_duration_seconds_count{resource="session"} 4.0' in exposed  # not the cancelled
    assert works.__name__ == "works"  # kopf ids a handler by its wrapped function's name: progress stays valid


async def test_an_exception_is_a_retry_where_kopf_retries_it_and_an_error_where_it_does_not() -> None:
    """kopf runs a change handler (create, resume, update) again after any exception but PermanentError; an event
    handler's exception it only logs."""
    metrics = OperatorMetrics()

    @counted("session", "update")
    async def api_error(**_: Any) -> None:
        raise RuntimeError("the API server closed the connection")

    @counted("session", "claim")
    async def event_error(**_: Any) -> None:
        raise RuntimeError("the API server closed the connection")

    for handler in (api_error, event_error):
        with pytest.raises(RuntimeError):
            await handler(memo=kopf.Memo(metrics=metrics))
    exposed = lines(metrics)
    assert 'codegen_operator_reconciles_total{resource="session",result="retry",trigger="update"} 1.0' in exposed
    assert 'codegen_operator_reconciles_total{resource="session",result="error",trigger="claim"} 1.0' in exposed


def test_sessions_by_phase_and_pool_sandboxes_by_state_come_from_the_indices() -> None:
    metrics = OperatorMetrics()
    sessions: dict[tuple[str, str], list[dict[str, str | None]]] = {
        ("a", "s1"): [{"phase": "Ready"}],
        ("a", "s2"): [{"phase": "Ready"}],
        ("b", "s3"): [{"phase": "Suspended"}],
        ("b", "s4"): [{"phase": None}],  # created, no status yet
    }

    def pod(ready: bool, claimed: bool = False) -> dict[str, Any]:
        labels = {pool.LABEL_POOL: "warm", **({api.LABEL_SESSION: "s1"} if claimed else {})}
        container = {"name": "agent", "ready": ready, "state": {"running": {}}}
        conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
        status = {"phase": "Running", "containerStatuses": [container], "conditions": conditions}
        return {"metadata": {"name": "p", "labels": labels}, "status": status}

    pool_pods = {("a", "warm"): [pod(True), pod(True), pod(False), pod(True, claimed=True)]}
    metrics.watch(sessions, pool_pods)
    exposed = lines(metrics)
    assert {
        'codegen_operator_sessions{phase="Ready"} 2.0',
        'codegen_operator_sessions{phase="Suspended"} 1.0',
        'codegen_operator_sessions{phase="Unknown"} 1.0',
        'codegen_operator_sessions{phase="Failed"} 0.0',
        'codegen_operator_pool_sandboxes{pool="warm",pool_namespace="a",state="ready"} 2.0',
        'codegen_operator_pool_sandboxes{pool="warm",pool_namespace="a",state="starting"} 1.0',
    } <= exposed
    sessions[("a", "s1")] = [{"phase": "Failed"}]  # the watch changed the index: the next scrape sees it
    assert 'codegen_operator_sessions{phase="Failed"} 1.0' in lines(metrics)


async def test_metrics_are_served_over_http() -> None:
    metrics = OperatorMetrics()
    metrics.watch({}, {})
    await metrics.serve("127.0.0.1", 0)
    try:
        assert metrics.port
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{metrics.port}/metrics") as resp,
        ):
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
    finally:
        await metrics.close()
    assert "# TYPE codegen_operator_reconciles_total counter" in text
    assert 'codegen_operator_sessions{phase="Ready"} 0.0' in text


def test_metrics_port_from_env_and_flag(monkeypatch: pytest.MonkeyPatch, settings: OperatorSettings) -> None:
    assert settings.metrics_port == 0  # off unless asked: tests and laptops run several operators
    monkeypatch.setenv("CODEGEN_OPERATOR_METRICS_PORT", "8082")
    assert OperatorSettings().metrics_port == 8082
    parsed, _ = parse_args(["--metrics-port", "9102"])
    assert parsed.metrics_port == 9102
    monkeypatch.setenv("CODEGEN_OPERATOR_METRICS_PORT", "70000")
    with pytest.raises(ValueError, match="65535"):
        OperatorSettings()
