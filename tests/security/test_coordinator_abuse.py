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
from mcp.client.streamable_http import streamable_http_client

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


# --- C: a full disk under the state folder ---------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (needs root), unmounted afterwards."""
    path.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0711", "tmpfs", str(path)], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {exc}")
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


async def metric(cp: CoordinatorProcess, name: str) -> float:
    async with httpx.AsyncClient(base_url=cp.url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return float(samples[name])


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
                assert "the audit log cannot be written" in cp.log_tail(200)

                # Room again: the audit log recovers by itself, and says so.
                await call(s, "fs.write", path="filler.bin", content="")
                await call(s, "echo", message="recorded again")
                await eventually(lambda: _audit_ok(cp), timeout=10, what="/healthz ok again")
                last = json.loads((state / "audit.jsonl").read_text().splitlines()[-1])
                assert last["tool"] == "echo" and last["args"] == {"message": "recorded again"}


async def _audit_problem(cp: CoordinatorProcess) -> str | None:
    body = await health(cp)
    if body["status"] != "degraded":
        return None
    return str(body["problems"]["audit"])


async def _audit_ok(cp: CoordinatorProcess) -> bool:
    body = await health(cp)
    return body["status"] == "ok" and "audit" not in body.get("problems", {})
