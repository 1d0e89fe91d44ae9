"""The warm pool's refill after a claim, with a fake start: the replacement waits until the claiming session's
first call had its moment, then comes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from codegen_mcp.coordinator.agent_client import AgentClient, AgentEndpoint
from codegen_mcp.coordinator.backends import warm_pool
from codegen_mcp.coordinator.backends.base import Sandbox
from codegen_mcp.coordinator.backends.warm_pool import WarmPool
from tests.support.waiting import eventually


class FakeStarts:
    def __init__(self) -> None:
        self.started: list[Sandbox] = []

    async def start(self) -> Sandbox:
        sandbox = Sandbox(f"s-{len(self.started)}", AgentClient(AgentEndpoint("http://sandbox", "token")), "nowhere")
        self.started.append(sandbox)
        return sandbox

    async def discard(self, sandbox: Sandbox) -> None:
        await sandbox.client.aclose()


@pytest.fixture
def starts() -> FakeStarts:
    return FakeStarts()


@pytest.fixture
async def full_pool(starts: FakeStarts) -> AsyncIterator[WarmPool]:
    pool = WarmPool(1, start=starts.start, discard=starts.discard, has_room=lambda: True)
    pool.begin()
    try:
        await eventually(lambda: pool.ready == 1, what="the pool's first start")
        yield pool
    finally:
        await pool.aclose()
        for sandbox in starts.started:
            await sandbox.client.aclose()


async def test_a_claims_replacement_does_not_start_at_once(
    monkeypatch: pytest.MonkeyPatch, starts: FakeStarts, full_pool: WarmPool
) -> None:
    monkeypatch.setattr(warm_pool, "REFILL_AFTER_CLAIM_S", 3600.0)
    assert full_pool.claim() is starts.started[0]
    for _ in range(20):  # the refiller gets every chance to run meanwhile
        await asyncio.sleep(0.01)
    assert len(starts.started) == 1 and full_pool.ready == 0


async def test_a_claims_replacement_comes_after_the_delay(
    monkeypatch: pytest.MonkeyPatch, starts: FakeStarts, full_pool: WarmPool
) -> None:
    monkeypatch.setattr(warm_pool, "REFILL_AFTER_CLAIM_S", 0.05)
    claimed = full_pool.claim()
    assert claimed is starts.started[0]
    # Claims in a row while the refill waits share one wake-up; the pool still refills to its size.
    assert full_pool.claim() is None
    await eventually(lambda: full_pool.ready == 1, what="the replacement")
    assert full_pool.sandbox_ids() == ["s-1"] and len(starts.started) == 2
