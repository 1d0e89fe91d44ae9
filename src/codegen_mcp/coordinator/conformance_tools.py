"""`test_reconnection`: the tool the MCP conformance suite's `server-sse-polling` scenario calls (SEP-1699).

The scenario checks that a server can close a POST SSE stream in the middle of a call and that the client,
resuming with `Last-Event-ID`, still gets the result. The tool does just that: it closes its own stream (the
transport offers this on a resumable stream only), then answers. Served only with `conformance_tools`
(`CODEGEN_CONFORMANCE_TOOLS=true`, which the conformance tests set), and never listed in `tools/list`.
"""

from __future__ import annotations

from typing import Any, Final

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.context import ServerRequestContext

RECONNECTION_TOOL: Final = "test_reconnection"
# Long enough that the answer comes after the stream closed, so it reaches the client on the resumed one.
ANSWER_AFTER_S: Final = 0.2


def install(server: Server[Any]) -> None:
    """Serve `test_reconnection` in front of `server`'s own tools/call handler."""
    entry = server.get_request_handler("tools/call")
    if entry is None:
        raise ValueError("the server has no tools/call handler to put test_reconnection in front of")
    tools_call = entry.handler

    async def call_tool(ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams) -> Any:
        if params.name != RECONNECTION_TOOL:
            return await tools_call(ctx, params)
        closed = ctx.close_sse_stream is not None
        if ctx.close_sse_stream is not None:
            await ctx.close_sse_stream()
        await anyio.sleep(ANSWER_AFTER_S)
        text = "the stream was closed mid-call" if closed else "this stream cannot be resumed, so it stayed open"
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    server.add_request_handler("tools/call", types.CallToolRequestParams, call_tool)
