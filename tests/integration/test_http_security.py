"""Bearer tokens on the MCP endpoints and Host/Origin validation against DNS rebinding."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2 as httpx
import pytest

from .conftest import CoordinatorProcess, mcp_session, print_log_tail, start_coordinator, state_root, stop_process
from .test_mcp_tools import call, text_of

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def secured() -> Iterator[CoordinatorProcess]:
    for root in state_root():
        state = root / "state"
        state.mkdir()
        env = {"CODEGEN_AUTH_TOKENS": "tok-one,tok-two", "CODEGEN_ALLOWED_HOSTS": "mcp.tools.svc:8765"}
        cp = start_coordinator(state, env=env)
        try:
            yield cp
        finally:
            stop_process(cp.proc)
            print_log_tail(cp)


async def test_mcp_endpoints_need_a_configured_bearer_token(secured: CoordinatorProcess) -> None:
    async with httpx.AsyncClient(base_url=secured.url, timeout=10) as http:
        for auth in (None, "Bearer wrong", "Basic tok-one", "tok-one"):
            headers = {**HEADERS, **({"Authorization": auth} if auth else {})}
            resp = await http.post("/mcp", json=INIT, headers=headers)
            assert resp.status_code == 401, auth
            assert resp.headers["www-authenticate"].startswith("Bearer")
        resp = await http.get("/sse", headers={"Accept": "text/event-stream"})
        assert resp.status_code == 401
        health = await http.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"


async def test_a_valid_token_opens_a_session(secured: CoordinatorProcess) -> None:
    async with mcp_session(secured, headers={"Authorization": "Bearer tok-two"}) as s:
        assert text_of(await call(s, "echo", message="authorised")) == "authorised"


async def test_host_header_is_validated(secured: CoordinatorProcess) -> None:
    auth = {**HEADERS, "Authorization": "Bearer tok-one"}
    async with httpx.AsyncClient(base_url=secured.url, timeout=10) as http:
        rebound = await http.post("/mcp", json=INIT, headers={**auth, "Host": "evil.example:8765"})
        assert rebound.status_code == 421
        allowed = await http.post("/mcp", json=INIT, headers={**auth, "Host": "mcp.tools.svc:8765"})
        assert allowed.status_code == 200
        bad_origin = await http.post("/mcp", json=INIT, headers={**auth, "Origin": "http://evil.example"})
        assert bad_origin.status_code == 403


async def test_metrics_are_open_and_count_calls(secured: CoordinatorProcess) -> None:
    async with mcp_session(secured, headers={"Authorization": "Bearer tok-one"}) as s:
        await call(s, "echo", message="counted")
        await s.call_tool("fs.read", {"path": "../outside"})
    async with httpx.AsyncClient(base_url=secured.url, timeout=10) as http:
        resp = await http.get("/metrics")  # no token: scrapes carry no session data
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    samples = dict(line.rsplit(" ", 1) for line in resp.text.splitlines() if line and not line.startswith("#"))
    assert float(samples['codegen_mcp_tool_calls_total{outcome="ok",tool="echo"}']) >= 1
    assert float(samples['codegen_mcp_tool_calls_total{outcome="error",tool="fs.read"}']) >= 1
    assert float(samples['codegen_mcp_tool_call_duration_seconds_count{tool="echo"}']) >= 1
    assert float(samples['codegen_mcp_sandbox_start_seconds_count{kind="new"}']) >= 1  # each session's sandbox
