"""Scenarios of issue 3 against the real operator: create → Ready, token, Pod replacement, expiry, delete."""

from __future__ import annotations

import aiohttp

from codegen_mcp.api import session as api
from tests.integration.operator.conftest import Kubectl
from tests.support.kubelet import FakeKubelet
from tests.support.operator import OperatorThread
from tests.support.waiting import eventually


async def wait_ready(kubectl: Kubectl, name: str, timeout: float = 20) -> api.SessionStatus:
    def ready() -> api.SessionStatus | None:
        status = kubectl.status(name)
        return status if status.phase == api.Phase.READY else None

    return await eventually(ready, timeout=timeout, what=f"{name} to be Ready")


async def test_create_becomes_ready(operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl) -> None:
    await kubectl.apply("demo", {"ttlSeconds": 3600})
    status = await wait_ready(kubectl, "demo")
    print(status)
    print(kubectl.events("demo"))
