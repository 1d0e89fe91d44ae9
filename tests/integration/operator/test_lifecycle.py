"""Issue 3's scenarios against the real kopf operator, the API emulator and real sandbox agents.

create → Ready with four correct children; the agent answers with the Secret's token; a deleted or failed
Pod is replaced on the same workspace; Failed with the Pod's reason when it cannot recover; TTL and idle
expiry; delete → children gone; a retained workspace survives; invalid and immutable changes are refused.
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from codegen_mcp.api import session as api
from codegen_mcp.operator.settings import OperatorSettings
from tests.integration.operator.conftest import NS, SCHEDULE_TIMEOUT, Kubectl
from tests.support.kubelet import FakeKubelet
from tests.support.operator import OperatorThread
from tests.support.waiting import eventually

PODS = f"/api/v1/namespaces/{NS}/pods"
CHILDREN = (
    ("secrets", "demo-agent-token", "", "v1"),
    ("persistentvolumeclaims", "demo-workspace", "", "v1"),
    ("networkpolicies", "demo", "networking.k8s.io", "v1"),
    ("pods", "demo-sandbox", "", "v1"),
)


async def wait_phase(kubectl: Kubectl, name: str, phase: api.Phase, timeout: float = 20) -> api.SessionStatus:
    def reached() -> api.SessionStatus | None:
        status = kubectl.status(name)
        return status if status.phase == phase else None

    return await eventually(reached, timeout=timeout, what=f"{name} to be {phase}")


def token_of(kubectl: Kubectl, name: str) -> str:
    secret = kubectl.child("secrets", api.token_secret_name(name))
    assert secret is not None
    return base64.b64decode(secret["data"][api.TOKEN_SECRET_KEY]).decode()


async def agent(endpoint: str, token: str | None, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.post(f"{endpoint}{path}", json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


def event_reasons(kubectl: Kubectl, name: str) -> list[str]:
    return [e["reason"] for e in kubectl.events(name)]


async def test_create_becomes_ready_with_four_children(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl, agent_port: int
) -> None:
    created = await kubectl.apply("demo", {"ttlSeconds": 3600, "owner": "alice"})
    status = await wait_phase(kubectl, "demo", api.Phase.READY)

    uid = created["metadata"]["uid"]
    for plural, name, group, version in CHILDREN:
        child = kubectl.child(plural, name, group, version)
        assert child is not None, f"{plural}/{name} missing"
        assert child["metadata"]["labels"][api.LABEL_SESSION] == "demo"
        assert child["metadata"]["labels"][api.LABEL_MANAGED_BY] == api.MANAGED_BY
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid
        assert child["metadata"]["annotations"][api.ANNOTATION_OWNER] == "alice"

    pod = kubectl.child("pods", "demo-sandbox")
    assert pod is not None
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "demo-workspace"

    assert status.endpoint == f"http://{pod['status']['podIP']}:{agent_port}"
    assert status.pod_name == "demo-sandbox"
    assert status.token_secret_name == "demo-agent-token"
    assert status.workspace_claim_name == "demo-workspace"
    assert status.image == "codegen-mcp-sandbox:test"
    assert status.observed_generation == 1
    assert status.started_at is not None and status.ready_at is not None
    assert status.expires_at is not None
    created_at = datetime.fromisoformat(created["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    assert status.expires_at == created_at + timedelta(seconds=3600)
    conditions = {c.type: c for c in status.conditions}
    assert {t.value for t in api.ConditionType} == set(conditions)
    assert all(c.status == api.ConditionStatus.TRUE for c in conditions.values())
    assert conditions["Ready"].reason == api.Reason.SANDBOX_READY

    reasons = await eventually(
        lambda: (r := event_reasons(kubectl, "demo")) and api.Reason.SANDBOX_READY in r and r,
        what="the SandboxReady Event",
    )
    for reason in ("SecretCreated", "PersistentVolumeClaimCreated", "NetworkPolicyCreated", "PodCreated"):
        assert reason in reasons
    # Status moved Pending → Starting → Ready: the pod was seen before it was ready.
    assert pod["status"]["phase"] == "Running"


async def test_agent_answers_with_the_token_from_the_secret(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    await kubectl.apply("demo")
    status = await wait_phase(kubectl, "demo", api.Phase.READY)
    assert status.endpoint is not None
    token = token_of(kubectl, "demo")

    assert await agent(status.endpoint, token, "/v1/echo", {"message": "hi"}) == (200, {"message": "hi"})
    code, body = await agent(status.endpoint, None, "/v1/echo", {"message": "hi"})
    assert code == 401 and body["error"]["code"] == "unauthorized"
    code, _ = await agent(status.endpoint, "not-the-token", "/v1/echo", {"message": "hi"})
    assert code == 401


async def test_deleted_pod_is_recreated_on_the_same_workspace(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    await kubectl.apply("demo")
    first = await wait_phase(kubectl, "demo", api.Phase.READY)
    assert first.endpoint is not None
    token = token_of(kubectl, "demo")
    code, _ = await agent(first.endpoint, token, "/v1/fs/write", {"path": "notes/keep.txt", "content": "still here"})
    assert code == 200

    await kubectl.delete(PODS, "demo-sandbox")

    def replaced() -> api.SessionStatus | None:
        s = kubectl.status("demo")
        return s if s.phase == api.Phase.READY and s.pod_uid != first.pod_uid else None

    second = await eventually(replaced, timeout=20, what="a new Ready Pod")
    assert second.restart_count == 1
    assert second.endpoint is not None and second.endpoint != first.endpoint  # a new Pod has a new IP
    code, body = await agent(second.endpoint, token, "/v1/fs/read", {"path": "notes/keep.txt"})
    assert (code, body["content"]) == (200, "still here")
    assert api.Reason.POD_RECREATED in event_reasons(kubectl, "demo")


async def test_failed_pod_is_replaced_then_failed_with_its_reason(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl, operator_settings: OperatorSettings
) -> None:
    await kubectl.apply("demo")
    await wait_phase(kubectl, "demo", api.Phase.READY)
    for restart in range(1, operator_settings.max_pod_restarts + 1):
        await kubelet.crash(NS, "demo-sandbox", reason="OOMKilled")
        await eventually(
            lambda r=restart: (
                kubectl.status("demo").restart_count == r and kubectl.status("demo").phase == api.Phase.READY
            ),
            timeout=20,
            what=f"restart {restart}",
        )
    await kubelet.crash(NS, "demo-sandbox", reason="OOMKilled")

    status = await wait_phase(kubectl, "demo", api.Phase.FAILED)
    assert status.message is not None and "OOMKilled" in status.message
    ready = status.condition(api.ConditionType.READY)
    assert ready is not None and ready.status == api.ConditionStatus.FALSE and ready.reason == "OOMKilled"
    assert status.restart_count == operator_settings.max_pod_restarts
    assert kubectl.child("pods", "demo-sandbox") is not None  # kept for `kubectl logs`
    await eventually(lambda: api.Reason.RESTART_LIMIT in event_reasons(kubectl, "demo"), what="RestartLimit Event")


async def test_unpullable_image_and_unschedulable_pod_fail_with_the_pods_reason(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    kubelet.image_errors["nowhere/sandbox:missing"] = "ImagePullBackOff"
    await kubectl.apply("pull", {"image": "nowhere/sandbox:missing"})
    status = await wait_phase(kubectl, "pull", api.Phase.FAILED)
    assert status.message is not None and status.message.startswith("ImagePullBackOff")

    # Unschedulable is waited for, with the scheduler's reason, and fails only after the schedule timeout.
    await kubelet.set_unschedulable(True)
    await kubectl.apply("sched")
    waiting = await eventually(
        lambda: (s := kubectl.status("sched")).message and s.message.startswith("Unschedulable: ") and s,
        timeout=SCHEDULE_TIMEOUT,
        what="the scheduler's reason in status.message",
    )
    assert waiting.phase == api.Phase.STARTING and "waiting up to" in (waiting.message or "")
    status = await wait_phase(kubectl, "sched", api.Phase.FAILED)
    assert status.message is not None
    assert status.message.startswith(f"Unschedulable: no node could run the sandbox Pod within {SCHEDULE_TIMEOUT:g} s")
    sandbox = status.condition(api.ConditionType.SANDBOX_READY)
    assert sandbox is not None and sandbox.reason == "Unschedulable"


async def test_a_pod_that_becomes_schedulable_in_time_gets_ready(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    await kubelet.set_unschedulable(True)
    await kubectl.apply("later")
    await eventually(
        lambda: (kubectl.status("later").message or "").startswith("Unschedulable: "), what="waiting to be scheduled"
    )
    await kubelet.set_unschedulable(False)
    if not kubelet.real:  # the stand-in scheduler decides once per Pod: replace it, as a rescheduling would
        await kubectl.delete(PODS, "later-sandbox")
    status = await wait_phase(kubectl, "later", api.Phase.READY)
    assert status.message == "the sandbox agent is ready"


async def test_ttl_expiry_deletes_the_session_and_its_children(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    await kubectl.apply("demo", {"ttlSeconds": 2})
    await eventually(lambda: kubectl.child("pods", "demo-sandbox"), what="the sandbox Pod")
    await eventually(lambda: kubectl.session("demo") is None, timeout=10, what="the expired session to go")
    for plural, name, group, version in CHILDREN:  # garbage collection is asynchronous on a real server
        gone = lambda p=plural, n=name, g=group, v=version: kubectl.child(p, n, g, v) is None  # noqa: E731
        await eventually(gone, what=f"{plural}/{name} to go")
    assert api.Reason.EXPIRED in event_reasons(kubectl, "demo")
    await eventually(lambda: kubelet.runtime(NS, "demo-sandbox") is None, what="the agent process to stop")


async def test_idle_expiry_follows_last_activity(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    await kubectl.apply("demo", {"idleTimeoutSeconds": 600})
    ready = await wait_phase(kubectl, "demo", api.Phase.READY)
    assert ready.ready_at is not None
    await eventually(
        lambda: kubectl.status("demo").expires_at == ready.ready_at + timedelta(seconds=600),  # type: ignore[operator]
        what="expiresAt from readiness",
    )
    # The coordinator reports a tool call: the deadline moves.
    activity = datetime.now(UTC).replace(microsecond=0)
    await kubectl.patch("demo", {"status": {"lastActivityAt": activity.isoformat()}}, status=True)
    await eventually(
        lambda: kubectl.status("demo").expires_at == activity + timedelta(seconds=600), what="expiresAt from activity"
    )
    # A shorter idle timeout (mutable) puts the deadline in the past: the session goes.
    await kubectl.patch("demo", {"spec": {"idleTimeoutSeconds": 1}})
    await eventually(
        lambda: (e := kubectl.events("demo")) and any(x["reason"] == api.Reason.IDLE for x in e),
        what="the IdleTimeout Event",
    )
    await eventually(lambda: kubectl.session("demo") is None, timeout=10, what="the idle session to go")
    assert datetime.now(UTC) >= activity + timedelta(seconds=1)


async def test_delete_removes_children_but_a_retained_workspace_survives(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    await kubectl.apply("demo", {"workspace": {"retain": True}})
    ready = await wait_phase(kubectl, "demo", api.Phase.READY)
    assert ready.endpoint is not None
    token = token_of(kubectl, "demo")
    await agent(ready.endpoint, token, "/v1/fs/write", {"path": "result.txt", "content": "42"})
    claim = kubectl.child("persistentvolumeclaims", "demo-workspace")
    assert claim is not None and not claim["metadata"].get("ownerReferences")

    await kubectl.delete(f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{NS}/{api.PLURAL}", "demo")
    await eventually(lambda: kubectl.child("pods", "demo-sandbox") is None, what="the Pod to be collected")
    await eventually(lambda: kubectl.child("secrets", "demo-agent-token") is None, what="the Secret to be collected")
    await eventually(
        lambda: kubectl.child("networkpolicies", "demo", "networking.k8s.io") is None, what="the policy to go"
    )
    assert kubectl.child("persistentvolumeclaims", "demo-workspace") is not None

    # A new session of the same name finds its workspace again.
    await kubectl.apply("demo", {"workspace": {"retain": True}})
    again = await wait_phase(kubectl, "demo", api.Phase.READY)
    assert again.endpoint is not None
    code, body = await agent(again.endpoint, token_of(kubectl, "demo"), "/v1/fs/read", {"path": "result.txt"})
    assert (code, body["content"]) == (200, "42")


async def test_without_retain_the_workspace_goes_and_retain_is_mutable(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    await kubectl.apply("demo")
    await wait_phase(kubectl, "demo", api.Phase.READY)
    claim = kubectl.child("persistentvolumeclaims", "demo-workspace")
    assert claim is not None and claim["metadata"]["ownerReferences"]

    await kubectl.patch("demo", {"spec": {"workspace": {"retain": True}}})
    await eventually(
        lambda: (
            not (kubectl.child("persistentvolumeclaims", "demo-workspace") or {})["metadata"].get("ownerReferences")
        ),
        what="the ownerReference to be removed",
    )
    await kubectl.patch("demo", {"spec": {"workspace": {"retain": False}, "ttlSeconds": 1}})
    await eventually(lambda: kubectl.session("demo") is None, timeout=10, what="expiry")
    # Garbage collection is asynchronous on a real server.
    await eventually(
        lambda: kubectl.child("persistentvolumeclaims", "demo-workspace") is None, what="the claim to be collected"
    )


async def test_retained_workspace_survives_expiry(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    await kubectl.apply("demo", {"workspace": {"retain": True}, "ttlSeconds": 2})
    await eventually(lambda: kubectl.session("demo") is None, timeout=15, what="expiry")
    await eventually(lambda: kubectl.child("pods", "demo-sandbox") is None, what="the Pod to be collected")
    assert kubectl.child("persistentvolumeclaims", "demo-workspace") is not None


async def test_invalid_spec_is_failed_with_a_clear_message(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    bad = {"workspace": {"size": "lots"}, "network": {"egress": "everywhere"}}
    if kubelet.real:  # the real server judges the CRD's schema itself: the session is never stored
        code, refusal = await kubectl.try_apply("bad", bad)
        assert code == 422, refusal
        assert "spec.workspace.size in body should match" in refusal["message"]
        assert 'spec.network.egress: Unsupported value: "everywhere"' in refusal["message"]
        assert kubectl.session("bad") is None
        return
    # Where the schema was not enforced (an older CRD, an emulator), the operator is the judge.
    await kubectl.apply("bad", bad)
    status = await wait_phase(kubectl, "bad", api.Phase.FAILED)
    assert status.message is not None
    assert "`spec.workspace.size`: 'lots' is not a Kubernetes quantity" in status.message
    assert "spec.network.egress" in status.message
    ready = status.condition(api.ConditionType.READY)
    assert ready is not None and ready.reason == api.Reason.INVALID_SPEC
    await eventually(lambda: api.Reason.INVALID_SPEC in event_reasons(kubectl, "bad"), what="a Warning Event")
    assert kubectl.child("pods", "bad-sandbox") is None
    assert kubectl.child("secrets", "bad-agent-token") is None


async def test_spec_changes_mutable_applied_immutable_refused(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    created = await kubectl.apply("demo", {"ttlSeconds": 600})
    await wait_phase(kubectl, "demo", api.Phase.READY)
    pod_before = kubectl.child("pods", "demo-sandbox")
    assert pod_before is not None

    if kubelet.real:  # the CRD's CEL rules refuse the immutable change; the mutable one goes through alone
        code, refusal = await kubectl.try_patch("demo", {"spec": {"ttlSeconds": 1200, "image": "other:1"}})
        assert code == 422 and "spec.image is immutable: create a new session instead" in refusal["message"]
        await kubectl.patch("demo", {"spec": {"ttlSeconds": 1200}})
    else:  # without CEL (an emulator, an older CRD) the operator refuses it and says so in an Event
        await kubectl.patch("demo", {"spec": {"ttlSeconds": 1200, "image": "other:1"}})
    created_at = datetime.fromisoformat(created["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    await eventually(
        lambda: kubectl.status("demo").expires_at == created_at + timedelta(seconds=1200), what="the new TTL"
    )
    if not kubelet.real:
        await eventually(lambda: api.Reason.IMMUTABLE_FIELD in event_reasons(kubectl, "demo"), what="a Warning")
    await eventually(lambda: kubectl.status("demo").observed_generation == 2, what="observedGeneration 2")
    pod_after = kubectl.child("pods", "demo-sandbox")
    assert pod_after is not None and pod_after["metadata"]["uid"] == pod_before["metadata"]["uid"]
    assert pod_after["spec"]["containers"][0]["image"] == "codegen-mcp-sandbox:test"


async def test_a_failed_pod_is_recreated_only_after_a_backoff(
    kubelet: FakeKubelet, kubectl: Kubectl, operator_settings: OperatorSettings
) -> None:
    backoff = 2.0
    async with OperatorThread(operator_settings.model_copy(update={"restart_backoff_seconds": backoff})):
        await kubectl.apply("demo")
        first = await wait_phase(kubectl, "demo", api.Phase.READY)
        crashed_at = time.monotonic()
        await kubelet.crash(NS, "demo-sandbox")
        waiting = await eventually(
            lambda: "recreating it in" in ((s := kubectl.status("demo")).message or "") and s,
            what="the backoff in status.message",
        )
        assert waiting.phase == api.Phase.STARTING
        assert waiting.message is not None and waiting.message.startswith("the sandbox Pod failed (Error: exit code")
        pod = kubectl.child("pods", "demo-sandbox")
        assert pod is not None and pod["metadata"]["uid"] == first.pod_uid  # kept until the backoff is over

        def replaced() -> api.SessionStatus | None:
            s = kubectl.status("demo")
            return s if s.phase == api.Phase.READY and s.pod_uid != first.pod_uid else None

        await eventually(replaced, timeout=20, what="the replacement Pod")
        # finishedAt has whole seconds: the wait measured here can be up to a second shorter than the backoff.
        assert time.monotonic() - crashed_at >= backoff - 1.0
