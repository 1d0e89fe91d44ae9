"""HTTP client for one sandbox agent, over loopback TCP or a Unix socket."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from codegen_mcp.api import routes
from codegen_mcp.api.errors import CodegenError, ErrorCode, SandboxUnavailable
from codegen_mcp.coordinator.settings import DEFAULT_AGENT_CONNECT_TIMEOUT_S


@dataclass(frozen=True)
class AgentEndpoint:
    """Where an agent listens: `base_url` over TCP, or a Unix socket path (then base_url is nominal)."""

    base_url: str
    token: str
    unix_socket: str | None = None


class AgentUnreachable(SandboxUnavailable):
    """No connection to the agent could be made: the request was never sent, so retrying is safe."""


class AgentClient:
    """Talks to one agent, over a shared pooled `session` (TCP) or a session of its own (Unix socket)."""

    def __init__(
        self,
        endpoint: AgentEndpoint,
        *,
        request_timeout_s: float = 30.0,
        connect_timeout_s: float = DEFAULT_AGENT_CONNECT_TIMEOUT_S,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._request_timeout_s = request_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._base = endpoint.base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {endpoint.token}"}
        self._owns_session = session is None
        if session is None:
            connector: aiohttp.BaseConnector
            if endpoint.unix_socket:
                connector = aiohttp.UnixConnector(path=endpoint.unix_socket)
            else:
                connector = aiohttp.TCPConnector(limit=32)
            session = aiohttp.ClientSession(connector=connector)
        self._session = session

    async def aclose(self) -> None:
        if self._owns_session:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        extra_wait_s: float = 0.0,
    ) -> dict[str, Any]:
        """One JSON request. Agent errors come back as `CodegenError` with the agent's code and message."""
        # sock_connect, not connect: waiting for a free connection of the shared pool is not a dead endpoint.
        timeout = aiohttp.ClientTimeout(
            total=self._request_timeout_s + extra_wait_s, sock_connect=self._connect_timeout_s
        )
        try:
            async with self._session.request(
                method, self._base + path, json=body, params=params, timeout=timeout, headers=self._headers
            ) as resp:
                raw = await resp.read()
                try:
                    data = json.loads(raw) if raw else {}
                except ValueError:
                    data = None
                if resp.status >= 400:
                    raise CodegenError.from_dict(
                        data, fallback=f"the sandbox answered HTTP {resp.status} without an explanation"
                    )
                if not isinstance(data, dict):
                    raise CodegenError("the sandbox answered with something that is not a JSON object")
                return data
        except aiohttp.ClientConnectorError as exc:
            raise AgentUnreachable(f"the sandbox is not reachable ({type(exc).__name__})") from exc
        except aiohttp.ConnectionTimeoutError as exc:
            # No connection within the connect timeout: nothing was sent, so this is unreachable, not a timeout.
            raise AgentUnreachable(
                f"the sandbox is not reachable (no connection within {self._connect_timeout_s:g} s)"
            ) from exc
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:
            raise SandboxUnavailable(f"the sandbox is not reachable ({type(exc).__name__})") from exc
        except TimeoutError as exc:
            raise CodegenError(
                "the sandbox did not answer in time; the call was abandoned", code=ErrorCode.TIMEOUT
            ) from exc

    async def running_tasks(self) -> int:
        """How many tasks the agent has queued or running (0 when it cannot say)."""
        try:
            data = await self.request(routes.HEALTHZ.method, routes.HEALTHZ.path)
        except CodegenError:
            return 0
        count = data.get("running_tasks", 0)
        return count if isinstance(count, int) else 0

    async def healthy(self, timeout_s: float = 2.0) -> bool:
        try:
            async with asyncio.timeout(timeout_s), self._session.get(self._base + routes.HEALTHZ.path) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False
