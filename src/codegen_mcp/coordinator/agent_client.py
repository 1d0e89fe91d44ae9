"""HTTP client for one sandbox agent, over loopback TCP or a Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from codegen_mcp.api import routes
from codegen_mcp.api.errors import CodegenError, ErrorCode, SandboxUnavailable
from codegen_mcp.api.propagation import outgoing_headers
from codegen_mcp.api.task_results import OutputChunk
from codegen_mcp.coordinator.settings import DEFAULT_AGENT_CONNECT_TIMEOUT_S

# The agent sends a live-output follower an empty line after 15 s without output: a stream silent for this
# long has lost its agent.
OUTPUT_SILENCE_S = 45.0
# Longer than any line the agent sends (16 Ki characters of output, JSON-escaped).
MAX_OUTPUT_LINE_BYTES = 1024 * 1024
# Output streams open to one agent at once. Each holds a connection for its task's life, and the session's
# other requests need theirs (a pooled session has 32 per agent); calls past this get no live output.
MAX_OUTPUT_STREAMS = 8


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
        self._output_streams = 0
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
        with self._errors():
            async with self._session.request(
                method, self._base + path, json=body, params=params, timeout=timeout, headers=self._call_headers()
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise _refusal(resp.status, raw)
                data = _json(raw)
                if not isinstance(data, dict):
                    raise CodegenError("the sandbox answered with something that is not a JSON object")
                return data

    async def output(self, task_id: str, offset: int = 0) -> AsyncGenerator[OutputChunk, None]:
        """A task's live output from `offset` on, as the agent streams it, up to its `end` chunk."""
        if self._output_streams >= MAX_OUTPUT_STREAMS:
            raise CodegenError(
                f"{MAX_OUTPUT_STREAMS} output streams are open to this sandbox already", code=ErrorCode.CONFLICT
            )
        path = routes.TASK_OUTPUT.path.format(task_id=task_id)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout_s, sock_read=OUTPUT_SILENCE_S)
        self._output_streams += 1
        try:
            with self._errors():
                async with self._session.get(
                    self._base + path, params={"offset": str(offset)}, timeout=timeout, headers=self._call_headers()
                ) as resp:
                    if resp.status >= 400:
                        raise _refusal(resp.status, await resp.read())
                    while line := await _next_line(resp):
                        if line.strip():  # an empty line is the agent's heartbeat
                            chunk = OutputChunk.model_validate_json(line)
                            yield chunk
                            if chunk.end:
                                return
                    raise SandboxUnavailable("the sandbox ended the output stream before the task's end")
        finally:
            self._output_streams -= 1

    def _call_headers(self) -> dict[str, str]:
        """The bearer token, and the call this request serves (id, session, trace context) for the agent's logs."""
        return {**self._headers, **outgoing_headers()}

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Connection failures and timeouts as the coordinator's errors (unreachable: nothing was sent)."""
        try:
            yield
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


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return None


def _refusal(status: int, raw: bytes) -> CodegenError:
    """The agent's error answer as the error it names."""
    return CodegenError.from_dict(_json(raw), fallback=f"the sandbox answered HTTP {status} without an explanation")


async def _next_line(resp: aiohttp.ClientResponse) -> bytes:
    try:
        return await resp.content.readline(max_line_length=MAX_OUTPUT_LINE_BYTES)
    except aiohttp.ClientPayloadError as exc:  # the connection broke off mid-stream: a reader may resume
        raise SandboxUnavailable("the output stream broke off") from exc
