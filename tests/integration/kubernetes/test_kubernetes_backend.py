"""MCP sessions become CodegenSession resources; tool calls reach the agent in the (harness-run) Pod."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from codegen_mcp.api import session as api
from tests.integration.test_mcp_tools import call, text_of
from tests.support.k8s import ClusterEmulator
from tests.support.kubelet import FakeKubelet
from tests.support.operator import OperatorThread
from tests.support.waiting import eventually

from ..conftest import mcp_session, stop_process
from .conftest import NS, Kubectl, StartCoordinator

pytestmark = pytest.mark.timeout(150)


def sessions(cluster: ClusterEmulator) -> list[dict]:
    return cluster.list_objects(api.GROUP, api.VERSION, api.PLURAL, NS)


async def test_an_mcp_session_is_served_by_a_codegensession(
    operator: OperatorThread,
    kubelet: FakeKubelet,
    kubectl: Kubectl,
    cluster: ClusterEmulator,
    k8s_coordinator: StartCoordinator,
) -> None:
    cp = await k8s_coordinator()
    async with mcp_session(cp) as s:
        await call(s, "fs.write", path="answer.py", content="print(6 * 7)")
        ran = await call(s, "run.python", file="answer.py")
        assert ran.structured_content["run"]["stdout"] == "42\n"
        assert text_of(await call(s, "fs.read", path="answer.py")) == "print(6 * 7)"

        [cr] = sessions(cluster)
        name = cr["metadata"]["name"]
        assert cr["metadata"]["labels"][api.LABEL_MANAGED_BY] == api.MANAGED_BY
        assert cr["metadata"]["annotations"][api.ANNOTATION_MCP_SESSION]
        assert kubectl.status(name).phase == api.Phase.READY
        assert kubectl.child("pods", api.sandbox_pod_name(name)) is not None
        # Tool calls record activity (throttled) for idle expiry.
        await eventually(lambda: kubectl.status(name).last_activity_at, what="lastActivityAt")
        # The workspace is the Pod's volume: the file is on the claim's directory, not on the coordinator.
        claim_dir = kubelet.claim_dir(NS, api.workspace_claim_name(name))
        assert (claim_dir / "answer.py").read_text() == "print(6 * 7)"
    await eventually(lambda: not sessions(cluster), timeout=20, what="the session resource to be deleted")


async def test_a_deleted_sandbox_pod_is_reconnected_transparently(
    operator: OperatorThread,
    kubelet: FakeKubelet,
    kubectl: Kubectl,
    cluster: ClusterEmulator,
    k8s_coordinator: StartCoordinator,
) -> None:
    cp = await k8s_coordinator()
    async with mcp_session(cp) as s:
        await call(s, "fs.write", path="keep.txt", content="on the PVC")
        [cr] = sessions(cluster)
        name = cr["metadata"]["name"]
        old_ip = kubectl.status(name).pod_ip
        pod_name = api.sandbox_pod_name(name)
        old_uid = (kubectl.child("pods", pod_name) or {})["metadata"]["uid"]
        await kubectl.delete(f"/api/v1/namespaces/{NS}/pods", pod_name)
        # As `kubectl delete pod` does: wait until the Pod is gone (a real server first stops its containers).
        await eventually(
            lambda: (kubectl.child("pods", pod_name) or {}).get("metadata", {}).get("uid") != old_uid,
            what="the old Pod to be gone",
        )
        # The next call reconnects to the replacement Pod without an error, and the workspace is intact.
        result = await call(s, "fs.read", path="keep.txt")
        assert text_of(result) == "on the PVC"
        assert kubectl.status(name).pod_ip != old_ip
        assert kubectl.status(name).restart_count >= 1


async def test_a_call_in_flight_when_the_pod_dies_gets_a_clear_error(
    operator: OperatorThread,
    kubelet: FakeKubelet,
    kubectl: Kubectl,
    cluster: ClusterEmulator,
    k8s_coordinator: StartCoordinator,
) -> None:
    cp = await k8s_coordinator()
    async with mcp_session(cp) as s:
        await call(s, "echo", message="up")
        [cr] = sessions(cluster)
        name = cr["metadata"]["name"]
        results = []
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:

                async def long_call() -> None:
                    results.append(
                        await s.call_tool("run.python", {"code": "import time; time.sleep(60)", "wait_s": 90})
                    )

                tg.start_soon(long_call)
                await eventually(lambda: kubectl.status(name).phase == api.Phase.READY)
                await anyio.sleep(1.0)  # let the run start inside the Pod
                await kubelet.crash(NS, api.sandbox_pod_name(name))
        [result] = results
        assert result.is_error
        assert "sandbox" in text_of(result).lower()
        assert text_of(await call(s, "echo", message="back")) == "back"


async def test_a_restarted_coordinator_finds_a_named_workspace_again(
    operator: OperatorThread,
    kubelet: FakeKubelet,
    cluster: ClusterEmulator,
    k8s_coordinator: StartCoordinator,
) -> None:
    headers = {"Codegen-Workspace": "thesis"}
    first = await k8s_coordinator()
    async with mcp_session(first, headers=headers) as s:
        await call(s, "fs.write", path="draft.md", content="chapter 1")
    [cr] = sessions(cluster)  # a named workspace outlives its MCP session
    await asyncio.to_thread(stop_process, first.proc)
    second = await k8s_coordinator()
    async with mcp_session(second, headers=headers) as s:
        assert text_of(await call(s, "fs.read", path="draft.md")) == "chapter 1"
    assert [c["metadata"]["uid"] for c in sessions(cluster)] == [cr["metadata"]["uid"]]


async def test_a_failed_session_reports_the_operators_message(
    operator: OperatorThread,
    kubelet: FakeKubelet,
    cluster: ClusterEmulator,
    k8s_coordinator: StartCoordinator,
) -> None:
    kubelet.image_errors["registry.example/missing:1"] = "ImagePullBackOff"
    cp = await k8s_coordinator(CODEGEN_K8S_IMAGE="registry.example/missing:1")
    async with mcp_session(cp) as s:
        result = await s.call_tool("echo", {"message": "hi"})
    assert result.is_error
    text = text_of(result)
    assert "could not start" in text or "not ready" in text
    assert "ImagePullBackOff" in text or "registry.example/missing:1" in text
