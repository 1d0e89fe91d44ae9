"""Suspend and resume on the kubernetes backend: a coordinator process, the real kopf operator and the kubelet
harness, on the API emulator and on the real API server.

An idle session is suspended (its Pod goes, its workspace stays) and its next call is served on the same
workspace without the client doing anything, with MCP progress saying it resumes; a session suspended behind
the coordinator's back (by hand, or by the operator for a named workspace nobody serves) resumes the same way.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from codegen_mcp.api import session as api
from tests.support.k8s import ClusterEmulator
from tests.support.kubelet import FakeKubelet
from tests.support.mcp_client import call, text_of
from tests.support.operator import OperatorThread
from tests.support.waiting import eventually

from ..conftest import mcp_session, stop_process
from .conftest import NS, Kubectl, StartCoordinator
from .test_kubernetes_backend import sessions

pytestmark = pytest.mark.timeout(150)


def suspended(kubectl: Kubectl, name: str) -> bool:
    """Suspended, its Pod gone and its workspace claim kept."""
    return (
        kubectl.status(name).phase == api.Phase.SUSPENDED
        and kubectl.child("pods", api.sandbox_pod_name(name)) is None
        and kubectl.child("persistentvolumeclaims", api.workspace_claim_name(name)) is not None
    )


async def test_an_idle_session_is_suspended_and_its_next_call_resumes_it(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl, k8s_coordinator: StartCoordinator
) -> None:
    # The coordinator suspends after 1 s idle; the operator's backstop (suspendAfterSeconds) comes much later.
    cp = await k8s_coordinator(CODEGEN_SUSPEND_AFTER_S="1", CODEGEN_K8S_ACTIVITY_INTERVAL_S="5")
    async with mcp_session(cp) as s:
        await call(s, "fs.write", path="notes.txt", content="written before the suspension")
        [cr] = sessions(kubectl.cluster)
        name = cr["metadata"]["name"]
        assert cr["spec"]["suspendAfterSeconds"] == 7
        old_token = kubectl.status(name).token_secret_name

        await eventually(lambda: suspended(kubectl, name), timeout=30, what="the idle session to be suspended")
        assert (kubectl.session(name) or {})["spec"]["suspend"] is True
        await eventually(lambda: kubelet.runtime(NS, api.sandbox_pod_name(name)) is None, what="the agent to stop")

        messages: list[str | None] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            messages.append(message)

        started = time.monotonic()
        read = await s.call_tool("fs.read", {"path": "notes.txt"}, progress_callback=on_progress)
        resumed_in = time.monotonic() - started
        assert not read.is_error, text_of(read)
        assert text_of(read) == "written before the suspension"
        assert any("resuming your suspended sandbox" in (m or "") for m in messages), messages
        status = kubectl.status(name)
        assert status.phase == api.Phase.READY and status.restart_count == 0
        assert (kubectl.session(name) or {})["spec"]["suspend"] is False
        assert status.token_secret_name == old_token  # same name, a new token: the coordinator read it again
        where = "emulator" if isinstance(kubectl.cluster, ClusterEmulator) else "real API server"
        print(f"a suspended session's first call was served in {resumed_in:.2f} s ({where}, harness node)")
        assert text_of(await call(s, "echo", message="still here")) == "still here"


async def test_a_session_suspended_behind_the_coordinators_back_resumes_on_its_next_call(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl, k8s_coordinator: StartCoordinator
) -> None:
    cp = await k8s_coordinator(CODEGEN_SUSPEND_AFTER_S="0")  # the coordinator itself never suspends here
    async with mcp_session(cp) as s:
        await call(s, "fs.write", path="keep.txt", content="on the workspace")
        [cr] = sessions(kubectl.cluster)
        name = cr["metadata"]["name"]
        assert "suspendAfterSeconds" not in cr["spec"]
        await kubectl.patch(name, {"spec": {"suspend": True}})  # as `kubectl patch` (or the operator) does
        await eventually(lambda: suspended(kubectl, name), timeout=30, what="the session to be suspended")

        messages: list[str | None] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            messages.append(message)

        read = await s.call_tool("fs.read", {"path": "keep.txt"}, progress_callback=on_progress)
        assert text_of(read) == "on the workspace"
        assert any("it was suspended while idle" in (m or "") for m in messages), messages
        assert kubectl.status(name).phase == api.Phase.READY


async def test_a_named_workspace_nobody_serves_is_suspended_by_the_operator_and_found_again(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl, k8s_coordinator: StartCoordinator
) -> None:
    headers = {"Codegen-Workspace": "thesis"}
    first = await k8s_coordinator(CODEGEN_SUSPEND_AFTER_S="1")
    async with mcp_session(first, headers=headers) as s:
        await call(s, "fs.write", path="draft.md", content="chapter 1")
    await asyncio.to_thread(stop_process, first.proc)  # the workspace outlives it, and nobody serves it now
    [cr] = sessions(kubectl.cluster)
    name = cr["metadata"]["name"]
    await eventually(lambda: suspended(kubectl, name), timeout=30, what="the operator to suspend it")

    second = await k8s_coordinator(CODEGEN_SUSPEND_AFTER_S="600")
    async with mcp_session(second, headers=headers) as s:
        assert text_of(await call(s, "fs.read", path="draft.md")) == "chapter 1"
    assert [c["metadata"]["uid"] for c in sessions(kubectl.cluster)] == [cr["metadata"]["uid"]]


async def test_a_session_whose_task_still_runs_is_not_suspended_by_the_operator(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl, k8s_coordinator: StartCoordinator
) -> None:
    # spec.suspendAfterSeconds is 3 here; the task runs for 8 s after its call returned.
    cp = await k8s_coordinator(CODEGEN_SUSPEND_AFTER_S="1", CODEGEN_K8S_ACTIVITY_INTERVAL_S="0.5")
    async with mcp_session(cp) as s:
        started = await call(s, "run.python", code="import time; time.sleep(8)", wait_s=0.1)
        assert started.structured_content is not None and started.structured_content["state"] == "running"
        [cr] = sessions(kubectl.cluster)
        name = cr["metadata"]["name"]
        assert cr["spec"]["suspendAfterSeconds"] == 3
        await asyncio.sleep(6)  # idle twice over by its calls, but busy: its activity is kept fresh
        assert kubectl.status(name).phase == api.Phase.READY
        await eventually(lambda: suspended(kubectl, name), timeout=30, what="the suspension once the task ended")
