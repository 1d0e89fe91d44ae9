"""logs.format and tracing reach the coordinator's and the operator's env; with a collector, the coordinator's
NetworkPolicy lets it reach the collector."""

from __future__ import annotations

from typing import Any

from .conftest import Renderer, plain_env
from .test_chart_event_store import coordinator_policy
from .test_chart_render import coordinator, operator


def egress_ports(docs: list[dict[str, Any]]) -> list[int]:
    return [p.get("port") for rule in coordinator_policy(docs)["spec"]["egress"] for p in rule.get("ports", [])]


def test_json_lines_and_no_traces_by_default(render: Renderer) -> None:
    docs = render()
    for env in (plain_env(coordinator(docs)), plain_env(operator(docs))):
        assert env["CODEGEN_LOG_FORMAT"] == "json" and "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    assert 4318 not in egress_ports(docs)


def test_a_collector_gets_the_traces_of_both(render: Renderer) -> None:
    values = {"logs": {"format": "text"}, "tracing": {"otlpEndpoint": "http://otel.observability:4318"}}
    docs = render(values)
    for env in (plain_env(coordinator(docs)), plain_env(operator(docs))):
        assert env["CODEGEN_LOG_FORMAT"] == "text"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel.observability:4318"
    assert {"ports": [{"port": 4318, "protocol": "TCP"}]} in coordinator_policy(docs)["spec"]["egress"]
