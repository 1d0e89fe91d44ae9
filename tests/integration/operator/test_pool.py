"""The warm pool on Kubernetes (issue 11, item 2), on the API emulator and on the real API server.

A pool fills to `replicas` Ready sandboxes; a session naming it adopts one in one reconcile (the same Pod,
its labels and owners moved, no new Pod); the pool refills; two sessions racing for one sandbox: one adopts,
the other gets a fresh sandbox; a pooled Pod that dies is replaced; an invalid template makes nothing.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from codegen_mcp.api import pool
from codegen_mcp.api import session as api
from codegen_mcp.operator.settings import OperatorSettings
from tests.integration.operator.conftest import NS, Kubectl
from tests.integration.operator.test_lifecycle import PODS, agent, event_reasons, wait_phase
from tests.support.kubelet import FakeKubelet
from tests.support.operator import OperatorThread
from tests.support.waiting import eventually

TEMPLATE: dict[str, Any] = {"env": [{"name": "POOLED", "value": "yes"}]}
# A session whose sandbox-shaping fields equal TEMPLATE's (ttl and owner are the session's own).
SESSION = {**TEMPLATE, "poolRef": "warm", "ttlSeconds": 3600, "owner": "alice"}


def members(kubectl: Kubectl, name: str = "warm") -> list[dict[str, Any]]:
    """The pool's unclaimed sandbox Pods."""
    return [p for p in kubectl.pods({pool.LABEL_POOL: name}) if api.LABEL_SESSION not in p["metadata"]["labels"]]


async def filled(
    kubectl: Kubectl, ready: int, name: str = "warm", timeout: float = 30, claimed: int = 0
) -> pool.PoolStatus:
    def reached() -> pool.PoolStatus | None:
        status = kubectl.pool_status(name)
        return status if (status.ready, status.replicas, status.claimed) == (ready, ready, claimed) else None

    return await eventually(reached, timeout=timeout, what=f"pool {name} to have {ready} ready sandboxes")


def token_in(kubectl: Kubectl, secret: str) -> str:
    found = kubectl.child("secrets", secret)
    assert found is not None
    return base64.b64decode(found["data"][api.TOKEN_SECRET_KEY]).decode()


async def test_pool_fills_and_a_session_adopts_a_ready_sandbox_then_the_pool_refills(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    created_pool = await kubectl.apply_pool("warm", {"replicas": 2, "template": TEMPLATE})
    status = await filled(kubectl, 2)
    ready = status.condition(api.ConditionType.READY.value)
    assert ready is not None and ready.status == api.ConditionStatus.TRUE and status.claimed == 0
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in members(kubectl)}
    assert len(before) == 2
    for owner in (p["metadata"]["ownerReferences"] for p in members(kubectl)):
        assert owner == [{**owner[0], "kind": pool.POOL_KIND, "uid": created_pool["metadata"]["uid"]}]

    created = await kubectl.apply("demo", SESSION)
    session = await wait_phase(kubectl, "demo", api.Phase.READY)

    # The same Pod, now the session's: no `demo-sandbox` was made.
    assert session.pod_name in before and session.pod_uid == before[session.pod_name]
    assert kubectl.child("pods", "demo-sandbox") is None
    sandbox = str(session.pod_name).removesuffix("-sandbox")
    assert session.sandbox_name == sandbox
    await eventually(
        lambda: (
            ((kubectl.session("demo") or {})["metadata"].get("annotations") or {}).get(pool.ANNOTATION_SANDBOX)
            == sandbox
        ),
        what="the session annotated with its sandbox",
    )
    children = (
        ("pods", api.sandbox_pod_name(sandbox), "", "v1"),
        ("secrets", api.token_secret_name(sandbox), "", "v1"),
        ("persistentvolumeclaims", api.workspace_claim_name(sandbox), "", "v1"),
        ("networkpolicies", api.network_policy_name(sandbox), "networking.k8s.io", "v1"),
    )
    for plural, name, group, version in children:
        child = kubectl.child(plural, name, group, version)
        assert child is not None, f"{plural}/{name} missing"
        labels = child["metadata"]["labels"]
        assert labels[api.LABEL_SESSION] == "demo" and pool.LABEL_TEMPLATE_HASH not in labels, (plural, labels)
        assert [(r["kind"], r["uid"]) for r in child["metadata"]["ownerReferences"]] == [
            (api.KIND, created["metadata"]["uid"])
        ], plural
        assert child["metadata"]["annotations"][api.ANNOTATION_OWNER] == "alice"
    assert session.token_secret_name == api.token_secret_name(sandbox)
    assert session.workspace_claim_name == api.workspace_claim_name(sandbox)
    assert session.endpoint is not None
    token = token_in(kubectl, session.token_secret_name)
    assert await agent(session.endpoint, token, "/v1/echo", {"message": "hi"}) == (200, {"message": "hi"})
    await eventually(
        lambda: pool.PoolReason.ADOPTED in event_reasons(kubectl, "demo"), what="the AdoptedFromPool Event"
    )

    # The pool makes a replacement and counts the claimed one.
    await filled(kubectl, 2, claimed=1)
    after = {p["metadata"]["name"] for p in members(kubectl)}
    assert session.pod_name not in after and len(after - set(before)) == 1


async def test_two_sessions_racing_for_one_sandbox_one_adopts_the_other_starts_fresh(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    await kubectl.apply_pool("warm", {"replicas": 1, "template": TEMPLATE})
    await filled(kubectl, 1)
    (only,) = members(kubectl)

    await asyncio.gather(kubectl.apply("one", SESSION), kubectl.apply("two", SESSION))
    first, second = await asyncio.gather(
        wait_phase(kubectl, "one", api.Phase.READY), wait_phase(kubectl, "two", api.Phase.READY)
    )

    pods = {first.pod_name, second.pod_name}
    assert only["metadata"]["name"] in pods and len(pods) == 2
    winner, loser = ("one", "two") if first.pod_name == only["metadata"]["name"] else ("two", "one")
    assert kubectl.child("pods", f"{loser}-sandbox") is not None
    assert kubectl.child("pods", f"{winner}-sandbox") is None
    claimed = kubectl.child("pods", only["metadata"]["name"]) or {}
    assert claimed["metadata"]["labels"][api.LABEL_SESSION] == winner
    await eventually(
        lambda: pool.PoolReason.POOL_EMPTY in event_reasons(kubectl, loser), what="the PoolEmpty Event on the loser"
    )
    assert pool.PoolReason.ADOPTED not in event_reasons(kubectl, loser)


async def test_a_missing_pool_or_another_template_means_a_fresh_sandbox(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    await kubectl.apply("nopool", {"poolRef": "nowhere"})
    status = await wait_phase(kubectl, "nopool", api.Phase.READY)
    assert status.pod_name == "nopool-sandbox"
    await eventually(lambda: pool.PoolReason.POOL_MISSING in event_reasons(kubectl, "nopool"), what="PoolMissing")

    await kubectl.apply_pool("warm", {"replicas": 1, "template": TEMPLATE})
    await filled(kubectl, 1)
    await kubectl.apply("other", {"poolRef": "warm", "env": [{"name": "POOLED", "value": "no"}]})
    status = await wait_phase(kubectl, "other", api.Phase.READY)
    assert status.pod_name == "other-sandbox" and len(members(kubectl)) == 1
    await eventually(
        lambda: pool.PoolReason.POOL_MISMATCH in event_reasons(kubectl, "other"), what="PoolTemplateMismatch"
    )


async def test_a_pooled_sandbox_whose_pod_dies_is_replaced(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    await kubectl.apply_pool("warm", {"replicas": 1, "template": TEMPLATE})
    await filled(kubectl, 1)
    (first,) = members(kubectl)
    sandbox = first["metadata"]["labels"][pool.LABEL_SANDBOX]

    await kubelet.crash("default", first["metadata"]["name"], reason="OOMKilled")

    def replaced() -> list[dict[str, Any]] | None:
        now = members(kubectl)
        ready = kubectl.pool_status("warm").ready == 1
        return now if ready and [p["metadata"]["uid"] for p in now] not in ([], [first["metadata"]["uid"]]) else None

    (second,) = await eventually(replaced, timeout=30, what="a new Ready sandbox in the pool")
    assert second["metadata"]["labels"][pool.LABEL_SANDBOX] != sandbox
    # The dead sandbox's other children went with it.
    await eventually(lambda: kubectl.child("secrets", api.token_secret_name(sandbox)) is None, what="its Secret gone")
    await eventually(lambda: pool.PoolReason.SANDBOX_REPLACED in event_reasons(kubectl, "warm"), what="the Event")


async def test_a_pool_with_an_invalid_template_fails_clearly_and_makes_nothing(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    # Accepted by the CRD's schema (no CEL rule compares quantities), refused by the model.
    template = {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}
    await kubectl.apply_pool("broken", {"replicas": 2, "template": template})

    def failed() -> pool.PoolStatus | None:
        status = kubectl.pool_status("broken")
        ready = status.condition(api.ConditionType.READY.value)
        return status if ready is not None and ready.reason == pool.PoolReason.INVALID_TEMPLATE else None

    status = await eventually(failed, timeout=20, what="the pool to report its invalid template")
    expected = "`spec.template.resources`: requests.cpu (2) must not exceed limits.cpu (1)"
    assert status.message is not None and expected in status.message, status.message
    await eventually(
        lambda: pool.PoolReason.INVALID_TEMPLATE in event_reasons(kubectl, "broken"), what="the InvalidTemplate Event"
    )
    assert kubectl.pods({pool.LABEL_POOL: "broken"}) == []
    assert status.replicas == 0 and status.ready == 0


async def test_deleting_a_pooled_pod_by_hand_is_repaired(
    operator: OperatorThread, kubelet: FakeKubelet, kubectl: Kubectl
) -> None:
    await kubectl.apply_pool("warm", {"replicas": 1, "template": TEMPLATE})
    await filled(kubectl, 1)
    (first,) = members(kubectl)
    await kubectl.delete(PODS, first["metadata"]["name"])
    await eventually(
        lambda: (now := members(kubectl)) and now[0]["metadata"]["uid"] != first["metadata"]["uid"] and now,
        timeout=30,
        what="a replacement Pod",
    )
    await filled(kubectl, 1)


async def test_a_restarted_operator_finishes_an_adoption_it_was_stopped_in(
    kubelet: FakeKubelet, kubectl: Kubectl, operator_settings: OperatorSettings
) -> None:
    async with OperatorThread(operator_settings):
        await kubectl.apply_pool("warm", {"replicas": 1, "template": TEMPLATE})
        await filled(kubectl, 1)
        created = await kubectl.apply("demo", SESSION)
        session = await wait_phase(kubectl, "demo", api.Phase.READY)
    # As if the operator had died after claiming the Pod and writing the status: the other children still the pool's.
    sandbox = str(session.sandbox_name)
    pool_labels = {api.LABEL_SESSION: None, pool.LABEL_TEMPLATE_HASH: "old"}
    moved_back = {"metadata": {"labels": pool_labels, "ownerReferences": None}}
    for path in (f"/api/v1/namespaces/{NS}/secrets/{api.token_secret_name(sandbox)}",
                 f"/api/v1/namespaces/{NS}/persistentvolumeclaims/{api.workspace_claim_name(sandbox)}"):  # fmt: skip
        async with kubectl.cluster.patch(
            path, json=moved_back, headers={"Content-Type": "application/merge-patch+json"}
        ) as resp:
            assert resp.status == 200, await resp.text()

    async with OperatorThread(operator_settings):  # kopf resumes the session
        for plural, name in (("secrets", api.token_secret_name(sandbox)),
                             ("persistentvolumeclaims", api.workspace_claim_name(sandbox))):  # fmt: skip
            await eventually(
                lambda p=plural, n=name: (
                    (child := kubectl.child(p, n)) is not None
                    and child["metadata"]["labels"].get(api.LABEL_SESSION) == "demo"
                    and [r["uid"] for r in child["metadata"].get("ownerReferences") or []]
                    == [created["metadata"]["uid"]]
                ),
                timeout=20,
                what=f"{plural}/{name} moved to the session again",
            )
        assert kubectl.status("demo").phase == api.Phase.READY
