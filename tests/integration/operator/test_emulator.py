"""The test-support emulator's additions, and the operator's client against them.

These are the API-server behaviours kmock's emulator lacks and the operator relies on; each is checked
here so the scenario tests can trust them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from codegen_mcp.api import session as api
from codegen_mcp.operator.kube import PODS, SESSIONS, KubeClient, KubeError
from codegen_mcp.operator.settings import OperatorSettings
from tests.support.fixtures import emulator_cluster
from tests.support.k8s import ClusterEmulator, matches_label_selector

NS = "default"

# These check the emulator itself: the real server needs no such checks.
cluster = pytest.fixture(emulator_cluster)


@pytest.fixture
async def kube(kubeconfig_path: Path) -> Any:
    client = await KubeClient.connect(OperatorSettings(kubeconfig=kubeconfig_path))
    yield client
    await client.close()


def session_body(name: str) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name, "namespace": NS}, "spec": {}}


def pod_body(name: str, owner: dict[str, Any] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
            }
        ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": [{"name": "c", "image": "i"}]}}


async def test_server_assigned_metadata_and_idempotent_create(cluster: ClusterEmulator, kube: KubeClient) -> None:
    created, fresh = await kube.create(session_body("s1"))
    assert fresh and created["metadata"]["uid"] and created["metadata"]["generation"] == 1
    assert created["metadata"]["namespace"] == NS and created["metadata"]["creationTimestamp"]
    again, fresh_again = await kube.create(session_body("s1"))
    assert not fresh_again and again["metadata"]["uid"] == created["metadata"]["uid"]


async def test_status_subresource_and_generation(cluster: ClusterEmulator, kube: KubeClient) -> None:
    await kube.create(session_body("s1"))
    patched = await kube.patch(SESSIONS, NS, "s1", {"spec": {"ttlSeconds": 5}, "status": {"phase": "Ready"}})
    assert patched is not None and patched["metadata"]["generation"] == 2 and "status" not in patched
    patched = await kube.patch(
        SESSIONS, NS, "s1", {"spec": {"ttlSeconds": 9}, "status": {"phase": "Ready"}}, subresource="status"
    )
    assert patched is not None and patched["status"] == {"phase": "Ready"}
    assert patched["spec"]["ttlSeconds"] == 5 and patched["metadata"]["generation"] == 2


async def test_concurrent_status_writers_lose_nothing(cluster: ClusterEmulator, kube: KubeClient) -> None:
    await kube.create(session_body("s1"))

    def bump(_body: dict[str, Any], status: api.SessionStatus) -> api.SessionStatus:
        return status.model_copy(update={"restart_count": status.restart_count + 1})

    await asyncio.gather(*(kube.update_status(NS, "s1", bump) for _ in range(6)))
    stored = cluster.read(api.GROUP, api.VERSION, api.PLURAL, NS, "s1")
    assert stored is not None and stored["status"]["restartCount"] == 6


async def test_stale_resource_version_is_a_conflict(cluster: ClusterEmulator, kube: KubeClient) -> None:
    created, _ = await kube.create(session_body("s1"))
    await kube.patch(SESSIONS, NS, "s1", {"metadata": {"labels": {"a": "b"}}})
    with pytest.raises(KubeError) as info:
        await kube.patch(
            SESSIONS,
            NS,
            "s1",
            {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "status": {}},
            subresource="status",
        )
    assert info.value.status == 409


async def test_garbage_collection_follows_owner_references(cluster: ClusterEmulator, kube: KubeClient) -> None:
    owner, _ = await kube.create(session_body("s1"))
    await kube.create(pod_body("owned", owner))
    await kube.create(pod_body("free"))
    assert await kube.delete(SESSIONS, NS, "s1")
    assert await kube.get(PODS, NS, "owned") is None
    assert await kube.get(PODS, NS, "free") is not None
    assert not await kube.delete(SESSIONS, NS, "s1")  # already gone: not an error


async def test_label_selectors_on_list(cluster: ClusterEmulator, kube: KubeClient) -> None:
    await kube.create(pod_body("a", labels={"app": "x", "tier": "1"}))
    await kube.create(pod_body("b", labels={"app": "y"}))
    names = lambda items: sorted(i["metadata"]["name"] for i in items)  # noqa: E731
    assert names(await kube.list(PODS, NS, label_selector="app=x")) == ["a"]
    assert names(await kube.list(PODS, NS, label_selector="app in (x,y),!tier")) == ["b"]
    assert names(await kube.list(PODS, NS)) == ["a", "b"]


@pytest.mark.parametrize(
    ("labels", "selector", "match"),
    [
        ({"a": "1"}, "a=1", True),
        ({"a": "1"}, "a==1", True),
        ({"a": "1"}, "a!=1", False),
        ({}, "a!=1", True),
        ({"a": "1"}, "a", True),
        ({"a": "1"}, "!a", False),
        ({"a": "1", "b": "2"}, "a in (1,3), b notin (3)", True),
        ({"a": "2"}, "a in (1,3)", False),
        ({"a": "1"}, "", True),
    ],
)
def test_label_selector_semantics(labels: dict[str, str], selector: str, match: bool) -> None:
    assert matches_label_selector(labels, selector) is match


async def test_replace_keeps_identity(cluster: ClusterEmulator, kube: KubeClient) -> None:
    created, _ = await kube.create(session_body("s1"))
    body = {**session_body("s1"), "spec": {"ttlSeconds": 7}, "metadata": {**created["metadata"]}}
    async with cluster.put(f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{NS}/{api.PLURAL}/s1", json=body) as resp:
        assert resp.status == 200
        replaced = await resp.json()
    assert replaced["metadata"]["uid"] == created["metadata"]["uid"]
    assert replaced["spec"] == {"ttlSeconds": 7} and replaced["metadata"]["generation"] == 2
    async with cluster.put(f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{NS}/{api.PLURAL}/s1", json=body) as resp:
        assert resp.status == 409  # the resourceVersion it carried is stale now
