"""Idempotence and recovery: a retry after a partial failure, an operator restart, a name taken by a stranger."""

from __future__ import annotations

import base64
from pathlib import Path

import aiohttp

from codegen_mcp.api import session as api
from codegen_mcp.operator.builders import SessionRef, build_token_secret, build_workspace_claim
from codegen_mcp.operator.settings import OperatorSettings
from tests.integration.operator.conftest import NS, Kubectl
from tests.support.k8s import ClusterEmulator
from tests.support.kubelet import FakeKubelet
from tests.support.operator import OperatorThread
from tests.support.waiting import eventually


async def create(cluster: ClusterEmulator, body: dict) -> dict:
    kind = body["kind"]
    plural = {"Secret": "secrets", "PersistentVolumeClaim": "persistentvolumeclaims"}[kind]
    async with cluster.post(f"/api/v1/namespaces/{NS}/{plural}", json=body) as resp:
        assert resp.status in (200, 201), await resp.text()
        return dict(await resp.json())


async def test_retry_after_a_partial_failure_reuses_what_exists(
    cluster: ClusterEmulator, kubelet: FakeKubelet, kubectl: Kubectl, operator_settings: OperatorSettings
) -> None:
    # A first attempt made the Secret and the claim, then died before the rest.
    session = await kubectl.apply("demo")
    ref = SessionRef(name="demo", namespace=NS, uid=session["metadata"]["uid"], spec=api.SessionSpec())
    await create(cluster, build_token_secret(ref, "first-token"))
    await create(cluster, build_workspace_claim(ref, operator_settings))

    async with OperatorThread(operator_settings):
        status = await eventually(
            lambda: (s := kubectl.status("demo")).phase == api.Phase.READY and s, timeout=20, what="Ready"
        )
    secret = kubectl.child("secrets", "demo-agent-token")
    assert secret is not None
    assert base64.b64decode(secret["data"]["token"]).decode() == "first-token"  # not replaced
    assert len(cluster.list_objects("", "v1", "secrets", NS)) == 1
    assert len(cluster.list_objects("", "v1", "pods", NS)) == 1
    assert status.endpoint is not None
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{status.endpoint}/v1/echo", json={"message": "ok"}, headers={"Authorization": "Bearer first-token"}
        ) as resp,
    ):
        assert resp.status == 200


async def test_restarted_operator_resumes_and_replaces_a_pod_deleted_meanwhile(
    cluster: ClusterEmulator, kubelet: FakeKubelet, kubectl: Kubectl, operator_settings: OperatorSettings
) -> None:
    async with OperatorThread(operator_settings):
        await kubectl.apply("demo")
        first = await eventually(lambda: (s := kubectl.status("demo")).phase == api.Phase.READY and s, timeout=20)
    await kubectl.delete(f"/api/v1/namespaces/{NS}/pods", "demo-sandbox")
    async with OperatorThread(operator_settings):
        second = await eventually(
            lambda: (s := kubectl.status("demo")).phase == api.Phase.READY and s.pod_uid != first.pod_uid and s,
            timeout=20,
            what="the Pod to be replaced on resume",
        )
    assert second.restart_count == 1


async def test_a_name_taken_by_a_stranger_fails_the_session(
    operator: OperatorThread, cluster: ClusterEmulator, kubectl: Kubectl, tmp_path: Path
) -> None:
    stranger = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "taken-agent-token", "namespace": NS},
        "data": {"token": base64.b64encode(b"theirs").decode()},
    }
    await create(cluster, stranger)
    await kubectl.apply("taken")
    status = await eventually(lambda: (s := kubectl.status("taken")).phase == api.Phase.FAILED and s, timeout=10)
    assert status.message is not None and "Secret named taken-agent-token already exists" in status.message
    ready = status.condition(api.ConditionType.READY)
    assert ready is not None and ready.reason == api.Reason.CONFLICT
    secret = kubectl.child("secrets", "taken-agent-token")
    assert secret is not None and secret["data"] == stranger["data"]  # left alone
    assert kubectl.child("pods", "taken-sandbox") is None


async def test_liveness_endpoint(
    cluster: ClusterEmulator, kubelet: FakeKubelet, operator_settings: OperatorSettings, agent_port: int
) -> None:
    url = f"http://127.0.0.1:{agent_port}/healthz"
    async with (
        OperatorThread(operator_settings.model_copy(update={"liveness_endpoint": url})),
        aiohttp.ClientSession() as http,
    ):

        async def healthy() -> bool:
            try:
                async with http.get(url) as resp:
                    return resp.status == 200 and "session_count" in await resp.json()
            except aiohttp.ClientError:
                return False

        assert await eventually(healthy, timeout=10, what="the liveness endpoint")
