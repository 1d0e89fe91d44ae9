"""coordinator.audit reaches the coordinator's env: stdout by default, PostgreSQL with its DSN from a Secret
(never a value in values.yaml) and a way out through the NetworkPolicy."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import NAMESPACE, RELEASE, Renderer, env_entry, plain_env
from .test_chart_event_store import coordinator_policy
from .test_chart_render import coordinator


def egress_ports(docs: list[dict[str, Any]]) -> list[int]:
    return [p["port"] for rule in coordinator_policy(docs)["spec"]["egress"] for p in rule.get("ports", [])]


def test_stdout_is_the_cluster_default(render: Renderer) -> None:
    docs = render()
    env = plain_env(coordinator(docs))
    assert env["CODEGEN_AUDIT_SINK"] == "stdout" and env["CODEGEN_AUDIT_BUFFER_EVENTS"] == "10000"
    assert env_entry(coordinator(docs), "CODEGEN_AUDIT_POSTGRES_DSN") is None
    assert 5432 not in egress_ports(docs)


def test_postgres_gets_its_dsn_from_a_secret_and_a_way_out(render: Renderer) -> None:
    secret = {"name": "audit-db", "key": "dsn"}
    audit = {"sink": "postgres", "postgres": {"dsnSecret": secret, "port": 6432}, "bufferEvents": 500}
    docs = render({"coordinator": {"audit": audit}})
    env = plain_env(coordinator(docs))
    assert env["CODEGEN_AUDIT_SINK"] == "postgres" and env["CODEGEN_AUDIT_BUFFER_EVENTS"] == "500"
    entry = env_entry(coordinator(docs), "CODEGEN_AUDIT_POSTGRES_DSN")
    assert entry == {"name": "CODEGEN_AUDIT_POSTGRES_DSN", "valueFrom": {"secretKeyRef": secret}}
    assert 6432 in egress_ports(docs)


def test_the_file_sink_keeps_its_path(render: Renderer) -> None:
    env = plain_env(coordinator(render({"coordinator": {"audit": {"sink": "file", "file": "/data/audit.jsonl"}}})))
    assert env["CODEGEN_AUDIT_SINK"] == "file" and env["CODEGEN_AUDIT_LOG"] == "/data/audit.jsonl"


@pytest.mark.parametrize(
    "audit",
    [
        {"sink": "postgres"},  # no Secret to read the DSN from
        {"sink": "postgres", "postgres": {"dsnSecret": {"name": "audit-db"}}},  # no key
        {"sink": "postgres", "postgres": {"dsn": "postgresql://audit:pw@db/codegen"}},  # a DSN inline
        {"sink": "s3"},
    ],
)
def test_an_audit_setting_that_cannot_work_is_refused(chart: Any, helm: Any, audit: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError) as refused:
        chart.render(values={"coordinator": {"audit": audit}}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    assert "audit" in str(refused.value)
