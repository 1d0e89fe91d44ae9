"""Suspend and resume against the real kopf operator, on the API emulator and on the real API server (whose
garbage collector takes the token Secret with its Pod), with the kubelet harness running real agents.

spec.suspend stops the sandbox (Pod and token Secret go) and keeps its workspace claim and NetworkPolicy,
phase Suspended, and nothing recreates the Pod meanwhile; spec.suspend false starts a new Pod with a new token
on the same workspace; suspendAfterSeconds suspends an idle session by itself, and the idle timeout still
deletes a suspended one.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from codegen_mcp.api import session as api
from tests.integration.operator.conftest import NS, Kubectl
from tests.integration.operator.test_lifecycle import agent, event_reasons, token_of, wait_phase
from tests.integration.operator.test_pool import SESSION, TEMPLATE, filled, members, token_in
from tests.support.kubelet import FakeKubelet
from tests.support.operator import OperatorThread
from tests.support.waiting import eventually

POLICIES = ("networkpolicies", "demo", "networking.k8s.io", "v1")


def stopped(kubectl: Kubectl, name: str) -> bool:
    """Suspended, and the operator has seen the Pod gone (the Pod's last event was handled)."""
    status = kubectl.status(name)
    return status.phase == api.Phase.SUSPENDED and (status.message or "").startswith("suspended: no sandbox Pod runs")


async def test_suspend_keeps_the_workspace_and_resume_starts_a_new_pod_on_it(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    await kubectl.apply("demo")
    ready = await wait_phase(kubectl, "demo", api.Phase.READY)
    assert ready.endpoint is not None
    token = token_of(kubectl, "demo")
    code, _ = await agent(ready.endpoint, token, "/v1/fs/write", {"path": "notes/keep.txt", "content": "kept"})
    assert code == 200
    claim = kubectl.child("persistentvolumeclaims", "demo-workspace")
    policy = kubectl.child(*POLICIES)
    assert claim is not None and policy is not None

    await kubectl.patch("demo", {"spec": {"suspend": True}})
    suspended = await wait_phase(kubectl, "demo", api.Phase.SUSPENDED)
    assert suspended.endpoint is None and suspended.pod_name is None and suspended.token_secret_name is None
    assert suspended.workspace_claim_name == "demo-workspace" and suspended.suspended_at is not None
    condition = suspended.condition(api.ConditionType.READY)
    assert condition is not None and condition.reason == api.Reason.SUSPENDED
    await eventually(lambda: kubectl.child("pods", "demo-sandbox") is None, what="the Pod to go")
    await eventually(lambda: kubelet.runtime(NS, "demo-sandbox") is None, what="the agent process to stop")
    # The Secret was handed to the Pod: the garbage collector takes it with the Pod.
    await eventually(lambda: kubectl.child("secrets", "demo-agent-token") is None, what="the token Secret to go")
    kept_claim = kubectl.child("persistentvolumeclaims", "demo-workspace")
    kept_policy = kubectl.child(*POLICIES)
    assert kept_claim is not None and kept_claim["metadata"]["uid"] == claim["metadata"]["uid"]
    assert kept_policy is not None and kept_policy["metadata"]["uid"] == policy["metadata"]["uid"]
    assert (kubelet.claim_dir(NS, "demo-workspace") / "notes" / "keep.txt").read_text() == "kept"

    # The Pod's deletion was handled (the status says no Pod runs), and no Pod is made while suspended.
    await eventually(lambda: stopped(kubectl, "demo"), what="the status to say no sandbox Pod runs")
    await asyncio.sleep(1.5)  # many sweeps (every 0.1 s) and the Pod's last events: still nothing
    assert kubectl.child("pods", "demo-sandbox") is None
    assert kubectl.status("demo").phase == api.Phase.SUSPENDED
    await eventually(lambda: api.Reason.SUSPENDED in event_reasons(kubectl, "demo"), what="the Suspended Event")

    await kubectl.patch("demo", {"spec": {"suspend": False}})
    resumed = await wait_phase(kubectl, "demo", api.Phase.READY)
    assert resumed.endpoint is not None and resumed.pod_uid not in (None, ready.pod_uid)
    assert resumed.restart_count == 0 and resumed.suspended_at is None
    new_token = token_of(kubectl, "demo")
    assert new_token != token
    code, body = await agent(resumed.endpoint, new_token, "/v1/fs/read", {"path": "notes/keep.txt"})
    assert (code, body["content"]) == (200, "kept")
    code, _ = await agent(resumed.endpoint, token, "/v1/fs/read", {"path": "notes/keep.txt"})
    assert code == 401  # the old token opens nothing
    await eventually(lambda: api.Reason.RESUMED in event_reasons(kubectl, "demo"), what="the Resumed Event")
    assert api.Reason.POD_RECREATED not in event_reasons(kubectl, "demo")  # a resume is not a restart


async def test_a_session_created_suspended_gets_its_workspace_but_no_sandbox(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    await kubectl.apply("demo", {"suspend": True})
    await eventually(lambda: stopped(kubectl, "demo"), what="Suspended without a Pod")
    assert kubectl.child("persistentvolumeclaims", "demo-workspace") is not None
    assert kubectl.child(*POLICIES) is not None
    assert kubectl.child("pods", "demo-sandbox") is None and kubectl.child("secrets", "demo-agent-token") is None

    await kubectl.patch("demo", {"spec": {"suspend": False}})
    ready = await wait_phase(kubectl, "demo", api.Phase.READY)
    assert ready.endpoint is not None
    code, _ = await agent(ready.endpoint, token_of(kubectl, "demo"), "/v1/echo", {"message": "hi"})
    assert code == 200


async def test_an_idle_session_is_suspended_and_still_deleted_at_its_idle_timeout(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    await kubectl.apply("demo", {"suspendAfterSeconds": 1, "idleTimeoutSeconds": 8})
    await wait_phase(kubectl, "demo", api.Phase.READY)
    await wait_phase(kubectl, "demo", api.Phase.SUSPENDED, timeout=15)
    assert (kubectl.session("demo") or {})["spec"]["suspend"] is True  # the operator set it, as a user would
    await eventually(lambda: kubectl.child("pods", "demo-sandbox") is None, what="the Pod to go")
    assert api.Reason.IDLE_SUSPEND in event_reasons(kubectl, "demo")
    assert kubectl.child("persistentvolumeclaims", "demo-workspace") is not None

    await eventually(lambda: kubectl.session("demo") is None, timeout=20, what="the idle timeout to delete it")
    assert api.Reason.IDLE in event_reasons(kubectl, "demo")
    await eventually(
        lambda: kubectl.child("persistentvolumeclaims", "demo-workspace") is None, what="the workspace to go with it"
    )


async def test_a_session_in_use_is_not_suspended(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    await kubectl.apply("demo", {"suspendAfterSeconds": 3})
    await wait_phase(kubectl, "demo", api.Phase.READY)
    for _ in range(5):  # the coordinator reports a tool call every second, for five seconds
        activity = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        await kubectl.patch("demo", {"status": {"lastActivityAt": activity}}, status=True)
        await asyncio.sleep(1)
    assert kubectl.status("demo").phase == api.Phase.READY
    await wait_phase(kubectl, "demo", api.Phase.SUSPENDED, timeout=15)  # and once the calls stop, it is


async def test_an_adopted_sandbox_suspends_as_the_sessions_and_the_pool_keeps_its_own(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    await kubectl.apply_pool("warm", {"replicas": 1, "template": TEMPLATE})
    await filled(kubectl, 1)
    await kubectl.apply("demo", SESSION)
    adopted = await wait_phase(kubectl, "demo", api.Phase.READY)
    sandbox = str(adopted.sandbox_name)
    assert adopted.endpoint is not None and sandbox.startswith("warm-")
    token = token_in(kubectl, api.token_secret_name(sandbox))
    code, _ = await agent(adopted.endpoint, token, "/v1/fs/write", {"path": "pooled.txt", "content": "from the pool"})
    assert code == 200
    await filled(kubectl, 1, claimed=1)  # refilled: a new unclaimed sandbox beside the adopted one

    await kubectl.patch("demo", {"spec": {"suspend": True}})
    await eventually(lambda: stopped(kubectl, "demo"), what="the adopted sandbox to stop")
    assert kubectl.child("pods", api.sandbox_pod_name(sandbox)) is None
    assert kubectl.status("demo").workspace_claim_name == api.workspace_claim_name(sandbox)
    # The pool's own sandbox is untouched: a pooled sandbox never suspends.
    [member] = members(kubectl)
    assert not member["metadata"].get("deletionTimestamp") and kubectl.pool_status("warm").ready == 1

    await kubectl.patch("demo", {"spec": {"suspend": False}})
    resumed = await wait_phase(kubectl, "demo", api.Phase.READY)
    assert resumed.pod_name == api.sandbox_pod_name(sandbox) and resumed.endpoint is not None
    token = token_in(kubectl, api.token_secret_name(sandbox))
    code, body = await agent(resumed.endpoint, token, "/v1/fs/read", {"path": "pooled.txt"})
    assert (code, body["content"]) == (200, "from the pool")
    assert [m["metadata"]["uid"] for m in members(kubectl)] == [member["metadata"]["uid"]]  # not adopted again
