"""Traces are off unless asked for; asked for without the otel extra, the process runs untraced; spans nest and
their trace context crosses a hop in headers."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from codegen_mcp.api import tracing
from codegen_mcp.api.call_id import CALL_ID_HEADER, call_scope
from codegen_mcp.api.logs import SESSION_HEADER, current_session, session_scope
from codegen_mcp.api.propagation import incoming, outgoing_headers
from tests.support.telemetry import recorded_spans


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"CODEGEN_TRACING": "otlp"}, True),
        ({"CODEGEN_TRACING": "off", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
        ({"CODEGEN_TRACING": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_on_only_when_asked_for(environ: dict[str, str], wanted: bool) -> None:
    assert tracing.tracing_wanted(environ) is wanted


def test_a_bad_choice_is_one_sentence() -> None:
    with pytest.raises(tracing.TracingError, match=r"^CODEGEN_TRACING must be otlp or off, not 'zipkin'$"):
        tracing.tracing_wanted({"CODEGEN_TRACING": "zipkin"})


def test_without_the_extra_the_process_runs_untraced(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # what `import` finds when it is missing
    with caplog.at_level(logging.WARNING):
        assert tracing.configure_tracing("test", {"CODEGEN_TRACING": "otlp"}) is False
    assert not tracing.tracing_on()
    assert "pip install 'codegen-mcp[otel]'" in caplog.text
    with tracing.span("nothing") as span:
        span.set("codegen.tool", "echo")  # a no-op, not an error


def test_off_means_no_headers_but_the_call() -> None:
    with call_scope("c1"), session_scope("s1"):
        assert outgoing_headers() == {CALL_ID_HEADER: "c1", SESSION_HEADER: "s1"}
    assert outgoing_headers() == {}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with recorded_spans() as exporter:
        yield exporter


def test_the_receiver_joins_the_senders_call_and_trace(spans: InMemorySpanExporter) -> None:
    with call_scope("c2"), session_scope("s2"), tracing.span("tools/call echo") as sender:
        sender.set("codegen.tool", "echo")
        headers = outgoing_headers()
    assert "traceparent" in headers
    with incoming(headers, "POST /echo", {"http.route": "/echo"}) as receiver:
        receiver.set("http.response.status_code", 200)
        assert current_session() == "s2"
    tool, request = sorted(spans.get_finished_spans(), key=lambda s: s.name, reverse=True)
    assert tool.name == "tools/call echo" and request.name == "POST /echo"
    assert request.parent is not None and tool.context is not None
    assert request.parent.span_id == tool.context.span_id and request.context.trace_id == tool.context.trace_id
    assert request.attributes is not None
    assert (request.attributes["codegen.call_id"], request.attributes["codegen.session"]) == ("c2", "s2")
    assert request.attributes["http.response.status_code"] == 200


def test_a_malformed_call_id_is_replaced(spans: InMemorySpanExporter) -> None:
    with incoming({CALL_ID_HEADER: "bad id\n", SESSION_HEADER: "bad session!"}, "GET /healthz", {}):
        pass
    (span,) = spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["codegen.call_id"] != "bad id\n" and "codegen.session" not in span.attributes


def test_the_agent_imports_nothing_of_opentelemetry_while_tracing_is_off() -> None:
    """The sandbox image has no otel extra: the agent must start without it."""
    code = (
        "import sys, codegen_mcp.sandbox_agent.__main__, codegen_mcp.sandbox_agent.app\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
