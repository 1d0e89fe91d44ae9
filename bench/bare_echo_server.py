"""A bare MCP SDK server with one `echo` tool: the baseline that `bench/roundtrip.py` compares against.

Run as its own process: `python bench/bare_echo_server.py [--host H] [--port P]`. It serves streamable
HTTP at `/mcp` and prints `LISTENING http://H:PORT` (flushed) once uvicorn accepts connections — the same
readiness line as the coordinator, so one launcher drives both.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer


def create_server() -> MCPServer:
    server = MCPServer("bare-echo", log_level="WARNING")

    @server.tool()
    def echo(message: str) -> str:
        """Return the message unchanged."""
        return message

    return server


class _AnnouncingServer(uvicorn.Server):
    """Prints the readiness line only after uvicorn has started listening."""

    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self._url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(f"LISTENING {self._url}", flush=True)


async def serve(host: str, port: int, event_store: Any = None) -> None:
    """Serve until stopped; with `event_store` (bench/streams.py), streams are resumable as the coordinator's."""
    # Bind first so that `--port 0` yields a real port we can announce.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_host, bound_port = sock.getsockname()[:2]
    app: Any = create_server().streamable_http_app(host=host, event_store=event_store, retry_interval=1000)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    await _AnnouncingServer(config, f"http://{bound_host}:{bound_port}").serve(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
