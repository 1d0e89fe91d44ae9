"""Tasks that outlive the tool call starting them (a local agent's watcher, the warm pool's discard) log under
no call id and no session: a copy of the call's context would name that call in lines written long after it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from codegen_mcp.api.call_id import call_scope
from codegen_mcp.api.logs import JsonFormatter, session_scope
from codegen_mcp.coordinator.agent_client import AgentClient, AgentEndpoint
from codegen_mcp.coordinator.backends.base import Sandbox
from codegen_mcp.coordinator.backends.local import LocalBackend
from codegen_mcp.coordinator.backends.warm_pool import WarmPool
from codegen_mcp.coordinator.settings import CoordinatorSettings
from tests.support.waiting import eventually


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """What the coordinator's loggers write, as JSON lines formatted where each record is made."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("codegen_mcp.coordinator")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def line_with(out: io.StringIO, text: str) -> dict[str, object]:
    (line,) = [json.loads(line) for line in out.getvalue().splitlines() if text in line]
    return line  # type: ignore[no-any-return]


def a_sandbox(sandbox_id: str) -> Sandbox:
    return Sandbox(sandbox_id, AgentClient(AgentEndpoint("http://sandbox", "token")), "nowhere")


class EndsLater:
    """An agent process that ends when told."""

    def __init__(self) -> None:
        self.end = asyncio.Event()
        self.returncode: int | None = None

    async def wait(self) -> int:
        await self.end.wait()
        self.returncode = -9
        return -9


async def test_an_agent_that_dies_after_the_call_that_started_it_is_logged_under_no_call(
    tmp_path: Path, lines: io.StringIO
) -> None:
    backend = LocalBackend(CoordinatorSettings(state_dir=tmp_path))
    sandbox, agent = a_sandbox("s-watched"), EndsLater()
    with call_scope("call-that-started-it"), session_scope("its-session"):
        backend._follow(sandbox, agent, drain=None)  # type: ignore[arg-type]
    agent.end.set()
    await eventually(lambda: not sandbox.alive, what="the watcher to see the agent end")
    line = line_with(lines, "sandbox s-watched stopped unexpectedly")
    assert (line["call_id"], line["session"]) == (None, None)
    await sandbox.client.aclose()


async def test_a_pooled_sandbox_dropped_during_a_call_is_discarded_under_no_call(lines: io.StringIO) -> None:
    log = logging.getLogger("codegen_mcp.coordinator.backends.test")

    async def discard(sandbox: Sandbox) -> None:
        log.info("discarding %s", sandbox.sandbox_id)
        await sandbox.client.aclose()

    pool = WarmPool(0, start=lambda: asyncio.sleep(0, a_sandbox("s-unused")), discard=discard, has_room=lambda: True)
    dead = a_sandbox("s-dead")
    dead.alive = False
    pool._ready.append(dead)
    with call_scope("call-that-claimed"), session_scope("its-session"):
        assert pool.claim() is None  # the dead one is dropped, in the background
    await pool.aclose()
    line = line_with(lines, "discarding s-dead")
    assert (line["call_id"], line["session"]) == (None, None)
