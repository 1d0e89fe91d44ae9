"""The operator's reconcile steps are spans naming their CodegenSession, and every log line about a session
(its own, and kopf's per-object ones) names it as `session`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from codegen_mcp.operator import builders
from codegen_mcp.operator.reconcile import SessionReconciler
from codegen_mcp.operator.settings import OperatorSettings
from codegen_mcp.operator.tracing import name_kopf_objects, step
from tests.support.telemetry import JsonLines, json_lines, recorded_spans
from tests.unit.operator.test_builders import env_of, ref


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with recorded_spans() as exporter:
        yield exporter


@pytest.fixture
def lines() -> Iterator[JsonLines]:
    with json_lines(level=logging.INFO, log_filter=name_kopf_objects) as out:
        yield out


class GoneKube:
    """The API server as the expiry check sees it when the session was deleted meanwhile."""

    async def get(self, kind: Any, namespace: str, name: str) -> None:
        logging.getLogger("codegen_mcp.operator.kube").info("reading %s/%s", namespace, name)
        return None


async def test_a_reconcile_step_is_a_span_and_its_lines_name_the_session(
    settings: OperatorSettings, spans: InMemorySpanExporter, lines: JsonLines
) -> None:
    reconciler = SessionReconciler(kube=GoneKube(), settings=settings)  # type: ignore[arg-type]
    await reconciler.check_expiry("team-a", "alice", datetime.now(UTC))
    (span,) = spans.get_finished_spans()
    assert span.name == "reconcile check_expiry"
    assert span.attributes == {"k8s.namespace.name": "team-a", "codegen.session": "alice"}
    (line,) = lines.records()
    assert (line["message"], line["session"]) == ("reading team-a/alice", "alice")


class Steps:
    @step
    async def _observe(self, body: dict[str, Any], extra: int = 0) -> str:
        return f"{body['metadata']['name']}+{extra}"


async def test_a_step_finds_its_session_in_a_body(spans: InMemorySpanExporter) -> None:
    body = {"kind": "CodegenSession", "metadata": {"name": "bob", "namespace": "ns"}}
    assert await Steps()._observe(body, extra=1) == "bob+1"
    (span,) = spans.get_finished_spans()
    assert span.name == "reconcile observe" and span.attributes == {
        "k8s.namespace.name": "ns",
        "codegen.session": "bob",
    }


def test_kopfs_lines_about_a_session_name_it(lines: JsonLines) -> None:
    kopf_log = logging.getLogger("kopf.objects")
    ref = {"kind": "CodegenSession", "name": "carol", "namespace": "ns"}
    kopf_log.info("Handler 'session_created' succeeded.", extra={"k8s_ref": ref})
    kopf_log.info("about a Pod", extra={"k8s_ref": {"kind": "Pod", "name": "carol-sandbox", "namespace": "ns"}})
    first, second = lines.records()
    assert (first["session"], first["object"]) == ("carol", "ns/carol")
    assert (second["session"], second["object"]) == (None, "ns/carol-sandbox")


def test_sandbox_agents_in_pods_write_json_lines(settings: OperatorSettings) -> None:
    env = env_of(builders.build_sandbox_pod(ref(), settings))
    assert env["CODEGEN_LOG_FORMAT"] == "json"
