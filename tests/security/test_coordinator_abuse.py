"""The coordinator under abuse, tried as an attacker would: a real coordinator process, the official MCP client
over real HTTP on loopback, and real sandbox agents.

- a full disk under the state folder must not fail tool calls (finding C of issue 10);
- bare `initialize` handshakes must not take session slots or pile up (D);
- results and requests bigger than the transport carries must arrive cut, with a pointer, or be refused in one
  clear sentence (E).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.integration.test_http_security import HEADERS
from tests.support.attacks import CLIENT_EVENT_LIMIT, bare_initialize, metric, wire_size
from tests.support.coordinator import (
    CoordinatorProcess,
    print_log_tail,
    start_coordinator,
    state_root,
    stop_process,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(180)


def text_of(result: Any) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


async def call(session: ClientSession, tool: str, **arguments: Any) -> Any:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, f"{tool} failed: {text_of(result)}"
    return result


@contextlib.asynccontextmanager
async def mcp_session(cp: CoordinatorProcess) -> AsyncIterator[ClientSession]:
    async with (
        streamable_http_client(f"{cp.url}/mcp") as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@contextlib.contextmanager
def running_coordinator(state: Path, env: dict[str, str] | None = None) -> Iterator[CoordinatorProcess]:
    cp = start_coordinator(state, env=env)
    try:
        yield cp
    finally:
        stop_process(cp.proc)
        print_log_tail(cp)


@pytest.fixture(scope="module")
def coordinator() -> Iterator[CoordinatorProcess]:
    for root in state_root():
        state = root / "state"
        state.mkdir()
        with running_coordinator(state) as cp:
            yield cp


# --- C: a full disk under the state folder ---------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (needs root), unmounted afterwards."""
    path.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0711", "tmpfs", str(path)], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(reason=f"cannot mount a small tmpfs to fill (needs root): {exc}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(path)], check=False)


FILL_THE_DISK = """
import errno
written = 0
with open('filler.bin', 'wb') as f:
    try:
        while True:
            f.write(b'x' * 65536)
            f.flush()
            written += 65536
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
print('disk full after', written, 'bytes')
"""


async def health(cp: CoordinatorProcess) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=cp.url, timeout=10) as http:
        response = await http.get("/healthz")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_a_full_state_disk_degrades_the_audit_log_loudly_but_every_call_still_answers() -> None:
    for root in state_root():
        with small_filesystem(root / "state", "24m") as state, running_coordinator(state) as cp:
            async with mcp_session(cp) as s:
                await call(s, "run.python", code="print('venv ready')")  # the venv exists before the disk fills
                filled = await call(s, "run.python", code=FILL_THE_DISK)
                assert "disk full after" in text_of(filled), "the run that filled the disk lost its own result"
                # tmpfs hands out whole pages: write well over one page of audit lines so one must fail.
                for n in range(40):
                    assert text_of(await call(s, "echo", message=f"still here {n}")) == f"still here {n}"
                problem = await eventually(
                    lambda: _audit_problem(cp), timeout=10, what="/healthz reporting the audit log's problem"
                )
                assert "No space left on device" in problem
                assert await metric(cp, "codegen_mcp_audit_write_failures_total") >= 1
                assert "the audit sink (file" in cp.log_tail(200) and "events wait in a buffer" in cp.log_tail(200)

                # Room again: the audit log recovers by itself, says so, and writes what waited, in order.
                await call(s, "fs.write", path="filler.bin", content="")
                await call(s, "echo", message="recorded again")
                await eventually(lambda: _audit_ok(cp), timeout=15, what="/healthz ok again")
                events: dict[str, dict[str, Any]] = {}  # by event id: a line torn by the full disk is written again
                for line in (state / "audit.jsonl").read_text().splitlines():
                    with contextlib.suppress(json.JSONDecodeError):  # the torn part
                        event = json.loads(line)
                        events.setdefault(event["event_id"], event)
                echoed = [e["args"]["message"] for e in events.values() if e["tool"] == "echo"]
                assert echoed == [f"still here {n}" for n in range(40)] + ["recorded again"]
                assert await metric(cp, "codegen_mcp_audit_dropped_total") == 0


async def _audit_problem(cp: CoordinatorProcess) -> str | None:
    body = await health(cp)
    if body["status"] != "degraded":
        return None
    return str(body["problems"]["audit"])


async def _audit_ok(cp: CoordinatorProcess) -> bool:
    body = await health(cp)
    return body["status"] == "ok" and "audit" not in body.get("problems", {})


# --- D: bare handshakes ------------------------------------------------------------------------------------------

# Issue 10 saw 92 take every slot of a server with 100; the bound below is the default 16 per client.
BARE_HANDSHAKES = 100
PER_CLIENT = 16


@pytest.fixture(scope="module")
def two_slot_coordinator() -> Iterator[CoordinatorProcess]:
    """Two sandbox slots, and the default bounds on handshakes."""
    for root in state_root():
        state = root / "state"
        state.mkdir()
        env = {"CODEGEN_MAX_SESSIONS": "2"}
        with running_coordinator(state, env=env) as cp:
            yield cp


async def still_open(http: httpx.AsyncClient, session_id: str) -> bool:
    request = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    response = await http.post(
        "/mcp",
        json=request,
        headers={**HEADERS, "Mcp-Session-Id": session_id, "Mcp-Protocol-Version": "2025-11-25"},
    )
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


async def test_bare_handshakes_take_no_session_slot_and_are_bounded_per_client(
    two_slot_coordinator: CoordinatorProcess,
) -> None:
    cp = two_slot_coordinator
    async with httpx.AsyncClient(base_url=cp.url, timeout=10) as http:
        attacker = [await bare_initialize(http) for _ in range(BARE_HANDSHAKES)]

        # Another client still gets a session and a sandbox.
        async with mcp_session(cp) as s:
            assert text_of(await call(s, "echo", message="not locked out")) == "not locked out"

        # The attacker holds only its newest handshakes (one fewer: the other client took the room of one).
        newest = attacker[-PER_CLIENT - 2 :]
        alive = [sid for sid in newest if await still_open(http, sid)]
        assert alive == attacker[-(PER_CLIENT - 1) :]
        assert not await still_open(http, attacker[0])
        evicted = await metric(cp, 'codegen_mcp_handshakes_ended_total{reason="evicted"}')
        assert evicted == BARE_HANDSHAKES - PER_CLIENT + 1


async def test_slots_are_taken_only_by_sessions_with_a_sandbox(two_slot_coordinator: CoordinatorProcess) -> None:
    cp = two_slot_coordinator
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(mcp_session(cp))
        second = await stack.enter_async_context(mcp_session(cp))
        third = await stack.enter_async_context(mcp_session(cp))  # initialize alone takes no slot
        await call(first, "echo", message="one")
        await call(second, "echo", message="two")
        refused = await third.call_tool("echo", {"message": "three"})
        assert refused.is_error and "maximum of 2 sessions" in text_of(refused)
        await call(first, "echo", message="the first still works")


async def test_idle_handshakes_expire_but_sessions_with_a_sandbox_stay() -> None:
    for root in state_root():
        state = root / "state"
        state.mkdir()
        with running_coordinator(state, env={"CODEGEN_HANDSHAKE_IDLE_TIMEOUT_S": "2"}) as cp:
            async with httpx.AsyncClient(base_url=cp.url, timeout=10) as http, mcp_session(cp) as working:
                await call(working, "echo", message="has a sandbox")
                bare = await bare_initialize(http)
                assert await still_open(http, bare)

                # Watch from outside (a request on the session is activity): /metrics counts held handshakes.
                await eventually(lambda: _no_handshakes_held(cp), timeout=20, what="the idle handshake to expire")
                assert not await still_open(http, bare)
                assert await metric(cp, 'codegen_mcp_handshakes_ended_total{reason="expired"}') == 1
                assert text_of(await call(working, "echo", message="still mine")) == "still mine"


async def test_an_sse_connection_is_a_handshake_until_a_call_gets_it_a_sandbox() -> None:
    for root in state_root():
        state = root / "state"
        state.mkdir()
        with running_coordinator(state) as cp:
            async with sse_client(f"{cp.url}/sse") as (read, write), ClientSession(read, write) as s:
                await s.initialize()
                assert await metric(cp, "codegen_mcp_handshakes") == 1
                await call(s, "echo", message="over SSE")
                assert await metric(cp, "codegen_mcp_handshakes") == 0
            async with contextlib.AsyncExitStack() as stack:  # the per-client bound holds on SSE too
                for _ in range(PER_CLIENT + 2):
                    read, write = await stack.enter_async_context(sse_client(f"{cp.url}/sse"))
                await eventually(
                    lambda: _handshakes_held(cp, PER_CLIENT), what=f"{PER_CLIENT} SSE handshakes held, no more"
                )
                assert await metric(cp, 'codegen_mcp_handshakes_ended_total{reason="evicted"}') == 2


async def _handshakes_held(cp: CoordinatorProcess, n: int) -> bool:
    return await metric(cp, "codegen_mcp_handshakes") == n


async def _no_handshakes_held(cp: CoordinatorProcess) -> bool:
    return await metric(cp, "codegen_mcp_handshakes") == 0


# --- E: results and requests bigger than the transport carries ---------------------------------------------------


async def test_a_600kB_print_arrives_cut_with_a_pointer_to_the_whole_output(coordinator: CoordinatorProcess) -> None:
    async with mcp_session(coordinator) as s:
        result = await call(s, "run.python", code="print('y' * 600000)")
        assert wire_size(result) < CLIENT_EVENT_LIMIT
        run = result.structured_content["run"]
        assert run["exit_code"] == 0 and run["stdout_truncated"] is True
        assert set(run["stdout"]) == {"y"}
        text = text_of(result)
        assert f"stdout cut at {len(run['stdout'])} of 600001 bytes" in text
        saved = f".codegen-output/{result.structured_content['task_id']}.stdout"
        assert f"fs.read path={saved} offset={len(run['stdout'])}" in text

        rest = await read_all(s, saved, offset=len(run["stdout"]))
        assert run["stdout"] + rest == "y" * 600000 + "\n"


async def read_all(s: ClientSession, path: str, offset: int = 0) -> str:
    parts = []
    while True:
        page = await call(s, "fs.read", path=path, offset=offset)
        assert wire_size(page) < CLIENT_EVENT_LIMIT
        content = page.structured_content
        parts.append(content["content"])
        offset += content["bytes_read"]
        if not content["truncated"]:
            return "".join(parts)
        assert f"offset={offset}" in text_of(page)


async def test_a_600kB_file_is_read_in_pages_that_arrive(coordinator: CoordinatorProcess) -> None:
    body = "".join(f"line {n:06d} of a big file\n" for n in range(24000))  # 600 kB
    async with mcp_session(coordinator) as s:
        await call(s, "fs.write", path="big.txt", content=body)
        first = await call(s, "fs.read", path="big.txt")
        assert wire_size(first) < CLIENT_EVENT_LIMIT and first.structured_content["truncated"] is True
        assert await read_all(s, "big.txt") == body
        binary = await call(s, "run.python", code="open('big.bin','wb').write(bytes(range(256)) * 2400)")
        assert binary.structured_content["run"]["exit_code"] == 0
        page = await call(s, "fs.read", path="big.bin")
        assert page.structured_content["encoding"] == "base64" and wire_size(page) < CLIENT_EVENT_LIMIT


async def test_a_3MB_echo_arrives_cut(coordinator: CoordinatorProcess) -> None:
    async with mcp_session(coordinator) as s:
        result = await call(s, "echo", message="z" * 3_000_000)
        assert wire_size(result) < CLIENT_EVENT_LIMIT
        kept = result.structured_content["message"]
        assert set(kept) == {"z"} and 100_000 < len(kept) < 3_000_000
        assert f"echo cut at {len(kept)} of 3000000 bytes" in text_of(result)


WRITE_LIMIT_SENTENCE = "fs.write takes at most 3 MiB (3145728 bytes) of content per call"


async def test_writes_up_to_the_documented_limit_work_and_bigger_ones_get_one_clear_sentence(
    coordinator: CoordinatorProcess,
) -> None:
    limit = 3 * 1024 * 1024
    async with mcp_session(coordinator) as s:
        written = await call(s, "fs.write", path="at-limit.txt", content="w" * limit)
        assert written.structured_content["size"] == limit

        over = await s.call_tool("fs.write", {"path": "over.txt", "content": "w" * (limit + 1)})
        assert over.is_error and WRITE_LIMIT_SENTENCE in text_of(over) and "append" in text_of(over)

        with pytest.raises(MCPError) as refused:  # too big for the transport: refused before it is parsed
            await s.call_tool("fs.write", {"path": "huge.txt", "content": "w" * 5_000_000})
        assert WRITE_LIMIT_SENTENCE in refused.value.error.message
        assert "append" in refused.value.error.message

        assert text_of(await call(s, "echo", message="session intact")) == "session intact"
