"""HTTP client for one sandbox agent, over loopback TCP or a Unix socket."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from codegen_mcp.api.errors import CodegenError, ErrorCode, SandboxUnavailable


@dataclass(frozen=True)
class AgentEndpoint:
    """Where an agent listens: `base_url` over TCP, or a Unix socket path (then base_url is nominal)."""

    base_url: str
    token: str
    unix_socket: str | None = None


class AgentClient:
    """Talks to one agent. Owns its aiohttp session; close it with `aclose()`."""

    def __init__(self, endpoint: AgentEndpoint, *, request_timeout_s: float = 30.0) -> None:
        self.endpoint = endpoint
        self._request_timeout_s = request_timeout_s
        connector: aiohttp.BaseConnector
        if endpoint.unix_socket:
            connector = aiohttp.UnixConnector(path=endpoint.unix_socket)
        else:
            connector = aiohttp.TCPConnector(limit=32)
        self._session = aiohttp.ClientSession(
            base_url=endpoint.base_url,
            connector=connector,
            headers={"Authorization": f"Bearer {endpoint.token}"},
        )

    async def aclose(self) -> None:
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
        timeout = aiohttp.ClientTimeout(total=self._request_timeout_s + extra_wait_s)
        try:
            async with self._session.request(method, path, json=body, params=params, timeout=timeout) as resp:
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
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:
            raise SandboxUnavailable(f"the sandbox is not reachable ({type(exc).__name__})") from exc
        except TimeoutError as exc:
            raise CodegenError(
                "the sandbox did not answer in time; the call was abandoned", code=ErrorCode.TIMEOUT
            ) from exc

    async def healthy(self, timeout_s: float = 2.0) -> bool:
        try:
            async with asyncio.timeout(timeout_s), self._session.get("/healthz") as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False
