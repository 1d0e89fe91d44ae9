"""Spans and JSON log lines as a test sees them: an in-memory span exporter, and a logger's lines formatted as
they are logged (in the logging call's context, where its call id and session are)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from codegen_mcp.api import tracing
from codegen_mcp.api.logs import JsonFormatter


@contextlib.contextmanager
def recorded_spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory, for the block (this process's global tracer provider is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_tracer_provider(None)


class JsonLines:
    """What a logger wrote, as JSON lines."""

    def __init__(self, out: io.StringIO) -> None:
        self.out = out

    def text(self) -> str:
        return self.out.getvalue()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.getvalue().splitlines() if line.strip()]


@contextlib.contextmanager
def json_lines(
    logger_name: str = "", level: int = logging.DEBUG, log_filter: Callable[[logging.LogRecord], bool] | None = None
) -> Iterator[JsonLines]:
    """The lines of `logger_name` (root: "") at `level` and above, as JSON, for the block."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    if log_filter is not None:
        handler.addFilter(log_filter)
    logger = logging.getLogger(logger_name)
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield JsonLines(out)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)
