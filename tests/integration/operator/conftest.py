"""The real kopf operator against the API emulator, with the kubelet harness running real agents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from codegen_mcp.api import pool
from codegen_mcp.api import session as api
from codegen_mcp.operator.settings import OperatorSettings
from tests.support.fixtures import agent_port, cluster, kubeconfig_path, kubelet  # noqa: F401
from tests.support.k8s import ClusterEmulator
from tests.support.kubelet import FakeKubelet
from tests.support.operator import OperatorThread
from tests.support.real_cluster import RealCluster

NS = "default"
SCHEDULE_TIMEOUT = 4.0
SESSIONS = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{NS}/{api.PLURAL}"
POOLS = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{NS}/{pool.POOL_PLURAL}"


@pytest.fixture
def operator_settings(kubeconfig_path: Path, agent_port: int, kubelet: FakeKubelet) -> OperatorSettings:  # noqa: F811
    return OperatorSettings(
        namespaces=[NS],
        kubeconfig=kubeconfig_path,
        # On the real server kopf's peering CRDs are not installed: the operator must find that out by itself.
        standalone=None if kubelet.real else True,
        liveness_endpoint=None,
        default_image="codegen-mcp-sandbox:test",
        agent_port=agent_port,
        expiry_check_seconds=0.1,
        max_pod_restarts=2,
        restart_backoff_seconds=0.2,
        schedule_timeout_seconds=SCHEDULE_TIMEOUT,
        request_timeout_seconds=10,
        # The real scheduler may see other nodes (another test's real node): sandboxes go to this test's node.
        node_selector={"kubernetes.io/hostname": kubelet.node_name} if kubelet.node_name else {},
    )


@pytest.fixture
async def operator(
    cluster: ClusterEmulator,  # noqa: F811
    kubelet: FakeKubelet,  # noqa: F811
    operator_settings: OperatorSettings,
) -> AsyncIterator[OperatorThread]:
    async with OperatorThread(operator_settings) as running:
        yield running


class Kubectl:
    """What a user (or the coordinator) does through the API: plain HTTP, like kubectl."""

    def __init__(self, cluster: ClusterEmulator | RealCluster) -> None:  # noqa: F811
        self.cluster = cluster
        self.uids: dict[str, str] = {}  # name -> uid of the session this test made under that name

    async def apply(self, name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
        body = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name}, "spec": spec or {}}
        async with self.cluster.post(SESSIONS, json=body) as resp:
            assert resp.status in (200, 201), await resp.text()
            created = dict(await resp.json())
        self.uids[name] = created["metadata"]["uid"]
        return created

    async def try_apply(self, name: str, spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Create a session; (HTTP status, the body: the object, or the server's refusal)."""
        body = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name}, "spec": spec}
        async with self.cluster.post(SESSIONS, json=body) as resp:
            return resp.status, dict(await resp.json())

    async def try_patch(self, name: str, patch: dict[str, Any], *, status: bool = False) -> tuple[int, dict[str, Any]]:
        path = f"{SESSIONS}/{name}" + ("/status" if status else "")
        async with self.cluster.patch(
            path, json=patch, headers={"Content-Type": "application/merge-patch+json"}
        ) as resp:
            return resp.status, dict(await resp.json())

    async def patch(self, name: str, patch: dict[str, Any], *, status: bool = False) -> dict[str, Any]:
        code, body = await self.try_patch(name, patch, status=status)
        assert code == 200, body
        return body

    async def delete(self, kind_path: str, name: str) -> None:
        async with self.cluster.delete(f"{kind_path}/{name}") as resp:
            assert resp.status == 200, await resp.text()

    async def apply_pool(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": api.API_VERSION, "kind": pool.POOL_KIND, "metadata": {"name": name}, "spec": spec}
        async with self.cluster.post(POOLS, json=body) as resp:
            assert resp.status in (200, 201), await resp.text()
            created = dict(await resp.json())
        self.uids[name] = created["metadata"]["uid"]
        return created

    def pool_status(self, name: str) -> pool.PoolStatus:
        obj = self.cluster.read(api.GROUP, api.VERSION, pool.POOL_PLURAL, NS, name) or {}
        return pool.PoolStatus.model_validate(obj.get("status") or {})

    def pods(self, selector: dict[str, str]) -> list[dict[str, Any]]:
        """This namespace's live Pods whose labels include `selector`."""
        return [
            p
            for p in self.cluster.list_objects("", "v1", "pods", NS)
            if selector.items() <= (p["metadata"].get("labels") or {}).items()
            and not p["metadata"].get("deletionTimestamp")
        ]

    def session(self, name: str) -> dict[str, Any] | None:
        return self.cluster.read(api.GROUP, api.VERSION, api.PLURAL, NS, name)

    def status(self, name: str) -> api.SessionStatus:
        obj = self.session(name) or {}
        return api.SessionStatus.model_validate(obj.get("status") or {})

    def child(self, plural: str, name: str, group: str = "", version: str = "v1") -> dict[str, Any] | None:
        return self.cluster.read(group, version, plural, NS, name)

    def events(self, name: str) -> list[dict[str, Any]]:
        """Events about this test's session of that name (a real server keeps those of earlier namesakes)."""
        uid = self.uids.get(name)
        return [
            e
            for e in self.cluster.list_objects("", "v1", "events", NS)
            if e["involvedObject"].get("name") == name and (uid is None or e["involvedObject"].get("uid") == uid)
        ]


@pytest.fixture
def kubectl(cluster: ClusterEmulator | RealCluster) -> Kubectl:  # noqa: F811
    return Kubectl(cluster)
