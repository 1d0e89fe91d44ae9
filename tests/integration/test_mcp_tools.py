"""The MCP hop itself, end to end: every transport (streamable HTTP, SSE, stdio) against a real coordinator process.

What each tool does is tested in-process (`test_in_process_mcp.py`): the same server without the HTTP hop.
"""

from __future__ import annotations

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from tests.support.mcp_client import call, text_of

from .conftest import TRANSPORTS, CoordinatorProcess, mcp_session

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_write_list_read_round_trip(coordinator: CoordinatorProcess, transport: str) -> None:
    async with mcp_session(coordinator, transport) as s:
        assert text_of(await call(s, "echo", message="héllo")) == "héllo"
        written = await call(s, "fs.write", path="pkg/hello.py", content="print('hi from the sandbox')\n")
        assert written.structured_content["bytes_written"] == 29
        listing = (await call(s, "fs.list", recursive=True)).structured_content
        names = {e["name"]: e["type"] for e in listing["entries"]}
        assert names["pkg"] == "directory"
        assert names["pkg/hello.py"] == "file"
        read = (await call(s, "fs.read", path="pkg/hello.py")).structured_content
        assert read["content"] == "print('hi from the sandbox')\n"
        assert read["encoding"] == "utf-8" and read["truncated"] is False
        ran = await call(s, "run.python", file="pkg/hello.py")
        assert "hi from the sandbox" in text_of(ran)


async def test_an_unknown_tool_is_a_protocol_error(coordinator: CoordinatorProcess) -> None:
    async with mcp_session(coordinator) as s:
        with pytest.raises(MCPError) as info:
            await s.call_tool("no.such.tool", {})
        assert info.value.error.code == INVALID_PARAMS
        assert "no.such.tool" in info.value.error.message
        assert text_of(await call(s, "echo", message="alive")) == "alive"


async def test_auto_negotiating_client_gets_a_session(coordinator: CoordinatorProcess) -> None:
    # `Client` probes the stateless 2026 protocol first; the coordinator steers it to a session.
    async with Client(f"{coordinator.url}/mcp") as client:
        await client.call_tool("fs.write", {"path": "kept.txt", "content": "same workspace"})
        result = await client.call_tool("fs.read", {"path": "kept.txt"})
        assert not result.is_error and text_of(result) == "same workspace"
