"""A tour of CodeGen-MCP with the official MCP Python SDK.

    make run                                  # in one terminal
    .venv/bin/python examples/mcp_client.py   # in another (URL and token from the arguments/environment)

Usage: mcp_client.py [URL]   (default http://127.0.0.1:8765/mcp; CODEGEN_MCP_TOKEN adds a bearer token)
"""

from __future__ import annotations

import asyncio
import os
import sys

import httpx2 as httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


def show(title: str, result: object) -> None:
    text = "\n".join(getattr(c, "text", "") for c in getattr(result, "content", []))
    flag = " (error)" if getattr(result, "is_error", False) else ""
    print(f"--- {title}{flag}\n{text}\n")


async def main(url: str) -> None:
    token = os.environ.get("CODEGEN_MCP_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=300)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = await session.list_tools()
        print("tools:", ", ".join(t.name for t in tools.tools), "\n")

        show(
            "fs.write",
            await session.call_tool(
                "fs.write",
                {
                    "path": "stats.py",
                    "content": "import statistics, sys\nnums = [float(x) for x in sys.argv[1:]]\n"
                    "print('mean', statistics.mean(nums), 'stdev', round(statistics.stdev(nums), 3))\n"
                    "open('summary.txt', 'w').write(str(statistics.mean(nums)))\n",
                },
            ),
        )
        run = await session.call_tool("run.python", {"file": "stats.py", "args": ["3", "5", "8", "13"]})
        show("run.python", run)
        artifacts = (run.structured_content or {}).get("run", {}).get("artifacts", [])
        if artifacts:
            show("artifact.get", await session.call_tool("artifact.get", {"artifact_id": artifacts[0]["artifact_id"]}))
        show("fs.list", await session.call_tool("fs.list", {"recursive": True}))

        # A long run comes back as a task; progress notifications arrive while we wait for it.
        async def progress(done: float, total: float | None, message: str | None) -> None:
            print(f"    progress: {message}")

        started = await session.call_tool(
            "run.python",
            {"code": "import time\nfor i in range(3):\n    print(i, flush=True); time.sleep(1)", "wait_s": 0.5},
        )
        show("run.python (long, wait_s=0.5)", started)
        task_id = (started.structured_content or {}).get("task_id")
        if task_id:
            show(
                "task.get_result",
                await session.call_tool(
                    "task.get_result", {"task_id": task_id, "wait_s": 30}, progress_callback=progress
                ),
            )
        show("a bad path is a clear error", await session.call_tool("fs.read", {"path": "../../etc/passwd"}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8765/mcp"))
