"""One call id and one trace across the coordinator → agent hop, with a real coordinator (in-process, the MCP
SDK's client) calling a real agent over loopback HTTP.

The span test serves the agent in this process too, so the SDK's in-memory exporter sees both sides' spans; the
log test runs the agent as its own process and reads its JSON lines from its stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from codegen_mcp.api.agent_settings import AgentSettings
from codegen_mcp.coordinator.agent_client import AgentClient, AgentEndpoint
from codegen_mcp.coordinator.backends.base import Backend, Sandbox
from codegen_mcp.sandbox_agent.app import create_app
from tests.support.coordinator import print_log_tail, private_uid_registry, start_coordinator, state_root, stop_process
from tests.support.mcp_client import call, in_process_coordinator, in_process_session, mcp_session
from tests.support.telemetry import json_lines, recorded_spans
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(120)

TOKEN = "tracing-test-token-0123456789"


class OneAgent(Backend):
    """Every session's sandbox is the one agent listening at `url`."""

    name = "one-agent"

    def __init__(self, url: str) -> None:
        self.url = url
        self.clients: list[AgentClient] = []

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()

    async def open(self, session_key: str) -> Sandbox:
        client = AgentClient(AgentEndpoint(self.url, TOKEN))
        self.clients.append(client)
        return Sandbox(sandbox_id="sandbox-1", client=client, where=self.url)

    async def revive(self, sandbox: Sandbox) -> Sandbox:
        return sandbox

    async def close(self, sandbox: Sandbox) -> None:
        pass

    def describe(self) -> str:
        return f"one agent at {self.url}"


@pytest.fixture
def root() -> Iterator[Path]:
    yield from state_root()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with recorded_spans() as exporter:
        yield exporter


async def serve_agent(workspace: Path) -> AsyncIterator[str]:
    workspace.mkdir()
    settings = AgentSettings(workspace=workspace, token=TOKEN, sandbox="none")
    runner = web.AppRunner(create_app(settings), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def agent_url(root: Path) -> AsyncIterator[str]:
    async for url in serve_agent(root / "workspace"):
        yield url


async def test_the_agents_span_is_the_child_of_the_coordinators(
    root: Path, agent_url: str, spans: InMemorySpanExporter
) -> None:
    async with (
        in_process_coordinator(root / "state", OneAgent(agent_url)) as coordinator,
        in_process_session(coordinator) as session,
    ):
        await call(session, "fs.write", path="a.txt", content="hello")
    finished = spans.get_finished_spans()
    (tool,) = [s for s in finished if s.name == "tools/call fs.write"]
    (request,) = [s for s in finished if s.name == "POST /v1/fs/write"]
    assert tool.context is not None and request.parent is not None
    assert request.parent.span_id == tool.context.span_id
    assert request.context.trace_id == tool.context.trace_id
    assert tool.attributes is not None and request.attributes is not None
    call_id = tool.attributes["codegen.call_id"]
    assert request.attributes["codegen.call_id"] == call_id
    assert tool.attributes["codegen.outcome"] == "ok" and tool.attributes["codegen.tool"] == "fs.write"
    assert request.attributes["codegen.session"] == tool.attributes["codegen.session"]
    assert request.attributes["http.response.status_code"] == 200


async def test_a_failed_call_is_an_error_span(root: Path, agent_url: str, spans: InMemorySpanExporter) -> None:
    async with (
        in_process_coordinator(root / "state", OneAgent(agent_url)) as coordinator,
        in_process_session(coordinator) as session,
    ):
        result = await session.call_tool("fs.read", {"path": "missing.txt"})
    assert result.is_error
    (tool,) = [s for s in spans.get_finished_spans() if s.name == "tools/call fs.read"]
    assert tool.attributes is not None and tool.attributes["codegen.outcome"] == "error"
    assert not tool.status.is_ok


def start_agent_process(workspace: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m codegen_mcp.sandbox_agent` with JSON logs at DEBUG into `log_path`; its URL once listening."""
    workspace.mkdir()
    env = {
        **os.environ,
        "CODEGEN_LOG_FORMAT": "json",
        "CODEGEN_AGENT_TOKEN": TOKEN,
        "CODEGEN_AGENT_WORKSPACE": str(workspace),
        "CODEGEN_AGENT_SANDBOX": "none",
    }
    cmd = [sys.executable, "-m", "codegen_mcp.sandbox_agent", "--port", "0", "--log-level", "DEBUG"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    assert line.startswith("LISTENING "), f"the agent did not start: {line!r}; {log_path.read_text()}"
    return proc, "http://" + line.removeprefix("LISTENING ")


def parsed(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_the_coordinators_and_the_agents_log_lines_share_the_call_id(root: Path) -> None:
    proc, url = start_agent_process(root / "workspace", root / "agent.log")
    try:
        async with (
            in_process_coordinator(root / "state", OneAgent(url)) as coordinator,
            in_process_session(coordinator) as session,
        ):
            with json_lines("codegen_mcp") as coordinator_log:
                await call(session, "fs.list", path=".")
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        assert proc.stdout is not None
        proc.stdout.close()
    (line,) = [r for r in coordinator_log.records() if r["message"].startswith("tools/call fs.list:")]
    assert line["call_id"] and line["session"] and line["logger"] == "codegen_mcp.coordinator.tracing"

    agent_lines = parsed((root / "agent.log").read_text())  # complete: the agent has exited
    (found,) = [r for r in agent_lines if r["message"].startswith("POST /v1/fs/list answered 200")]
    assert (found["call_id"], found["session"]) == (line["call_id"], line["session"])
    assert found["logger"] == "codegen_mcp.sandbox_agent.calls" and found["level"] == "DEBUG"


async def test_a_coordinator_writing_json_lines_gets_json_lines_from_its_local_agents(root: Path) -> None:
    (root / "state").mkdir()
    env = {**private_uid_registry(root / "uids"), "CODEGEN_LOG_FORMAT": "json", "CODEGEN_LOCAL_WARM_POOL": "0"}
    cp = start_coordinator(root / "state", env=env)
    try:
        async with mcp_session(cp.url, timeout=httpx.Timeout(60)) as session:
            await call(session, "fs.write", path="a.txt", content="hello")
            (agent_log,) = (root / "state" / "sessions").glob("*/agent.log")  # while the session lasts
            text = agent_log.read_text()
    finally:
        stop_process(cp.proc)
        print_log_tail(cp)
    lines = parsed(text)  # every line a JSON object, or this raises
    assert lines and all({"time", "level", "logger", "message", "call_id", "session"} <= line.keys() for line in lines)


class Collector:
    """An OTLP/HTTP trace receiver: what processes export to `url`, decoded into spans."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    async def receive(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource in export.resource_spans:
            service = next(a.value.string_value for a in resource.resource.attributes if a.key == "service.name")
            for scope in resource.scope_spans:
                self.spans += [(service, span) for span in scope.spans]
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    def named(self, name: str) -> tuple[str, Any] | None:
        return next(((service, span) for service, span in self.spans if span.name == name), None)


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    received = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", received.receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield received, f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def test_coordinator_and_agent_processes_export_one_trace_over_otlp(
    root: Path, collector: tuple[Collector, str]
) -> None:
    """The real deployment path: `OTEL_EXPORTER_OTLP_ENDPOINT` alone turns tracing on in the coordinator and in the
    agents it starts (they inherit OTEL_*), and their spans reach the collector as one trace."""
    received, endpoint = collector
    (root / "state").mkdir()
    env = {
        **private_uid_registry(root / "uids"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s rather than 5 s
        "CODEGEN_LOCAL_WARM_POOL": "0",
    }
    cp = start_coordinator(root / "state", env=env)
    try:
        async with mcp_session(cp.url, timeout=httpx.Timeout(60)) as session:
            await call(session, "fs.write", path="a.txt", content="hello")
        tool = await eventually(lambda: received.named("tools/call fs.write"), timeout=30)
        request = await eventually(lambda: received.named("POST /v1/fs/write"), timeout=30)
    finally:
        stop_process(cp.proc)
        print_log_tail(cp)
    (tool_service, tool_span), (agent_service, agent_span) = tool, request
    assert (tool_service, agent_service) == ("codegen-mcp-coordinator", "codegen-mcp-agent")
    assert agent_span.trace_id == tool_span.trace_id and agent_span.parent_span_id == tool_span.span_id
    sdk_spans = [s for service, s in received.spans if s.span_id == tool_span.parent_span_id]
    assert [s.name for s in sdk_spans] == ["tools/call fs.write"]  # the MCP SDK's own server span, its parent
    attributes = {a.key: a.value.string_value for a in tool_span.attributes}
    assert attributes["codegen.outcome"] == "ok"
    agent_attributes = {a.key: a.value.string_value for a in agent_span.attributes}
    assert agent_attributes["codegen.call_id"] == attributes["codegen.call_id"]
