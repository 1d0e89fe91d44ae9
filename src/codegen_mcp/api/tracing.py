"""OpenTelemetry traces, optional: off unless asked for, and nothing of OpenTelemetry imported until then.

The `otel` extra (`pip install 'codegen-mcp[otel]'`) brings the SDK and the OTLP/HTTP exporter. Tracing is on
when `CODEGEN_TRACING=otlp`, or when it is unset and the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is; `CODEGEN_TRACING=off` or `OTEL_SDK_DISABLED=true` turn it off. The
exporter reads the other `OTEL_*` variables itself (headers, protocol, timeouts, `OTEL_SERVICE_NAME`). A process
whose image lacks the extra (a slim sandbox image) logs one warning and runs untraced.

Spans are made through `span()` only, which costs nothing while tracing is off; `inject()` and `span(...,
parent=headers)` carry the W3C `traceparent` over the HTTP hop from the coordinator to the agent.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, Final, Literal

log = logging.getLogger(__name__)

TRACING_ENV: Final = "CODEGEN_TRACING"
_ENDPOINT_ENVS: Final = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
INSTRUMENTATION_NAME: Final = "codegen_mcp"
SpanKind = Literal["internal", "server", "client"]
AttributeValue = str | bool | int | float

# The OpenTelemetry tracer once tracing is on (`configure_tracing` or `use_tracer_provider`), else None.
_tracer: Any = None


class TracingError(ValueError):
    """A `CODEGEN_TRACING` value that is neither otlp nor off (the message is one sentence for the user)."""


def tracing_wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces (see the module's docstring). Raises TracingError."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    choice = environ.get(TRACING_ENV, "").strip().lower()
    if choice == "otlp":
        return True
    if choice == "off":
        return False
    if choice == "":
        return any(environ.get(name) for name in _ENDPOINT_ENVS)
    raise TracingError(f"{TRACING_ENV} must be otlp or off, not {environ[TRACING_ENV]!r}")


def configure_tracing(service_name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Export this process's spans over OTLP/HTTP when the environment asks for it; whether tracing is on.

    `service_name` names the process in the traces unless `OTEL_SERVICE_NAME` does. Raises TracingError.
    """
    env = os.environ if environ is None else environ
    if not tracing_wanted(env):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("traces were asked for but the otel extra is missing: pip install 'codegen-mcp[otel]'")
        return False
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)  # the MCP SDK's own spans (tools/call, per request) go there too
    use_tracer_provider(provider)
    log.info("traces are exported over OTLP/HTTP as service %s", attributes.get("service.name", "(OTEL_SERVICE_NAME)"))
    return True


def use_tracer_provider(provider: Any) -> None:
    """Make spans with `provider` (an OpenTelemetry TracerProvider; None: tracing off again)."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer(INSTRUMENTATION_NAME)


def tracing_on() -> bool:
    return _tracer is not None


class Span:
    """One span of ours, or nothing while tracing is off: callers set attributes either way."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def set(self, key: str, value: AttributeValue | None) -> None:
        if self._span is not None and value is not None:
            self._span.set_attribute(key, value)

    def failed(self, description: str) -> None:
        """The work ended in an error that raised nothing (say, a tool result with isError)."""
        if self._span is not None:
            from opentelemetry.trace import Status, StatusCode

            self._span.set_status(Status(StatusCode.ERROR, description))


@contextlib.contextmanager
def span(
    name: str,
    attributes: Mapping[str, AttributeValue | None] | None = None,
    *,
    kind: SpanKind = "internal",
    parent: Mapping[str, str] | None = None,
) -> Iterator[Span]:
    """A span around the block, the current one's child, or the child of the trace context in `parent`
    (a request's headers). Exceptions leaving the block are recorded on it."""
    if _tracer is None:
        yield Span()
        return
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind as OtelKind

    context = propagate.extract(parent) if parent is not None else None
    values = {k: v for k, v in (attributes or {}).items() if v is not None}
    with _tracer.start_as_current_span(name, context=context, kind=OtelKind[kind.upper()], attributes=values) as s:
        yield Span(s)


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current span's trace context (`traceparent`, `tracestate`) to a request's headers."""
    if _tracer is not None:
        from opentelemetry import propagate

        propagate.inject(headers)
