"""A session whose sandbox never starts still has its CodegenSession deleted when the MCP session closes."""

from __future__ import annotations

import pytest

from codegen_mcp.api import session as api
from tests.integration.test_mcp_tools import text_of
from tests.support.k8s import ClusterEmulator
from tests.support.kubelet import FakeKubelet
from tests.support.operator import OperatorThread
from tests.support.waiting import eventually

from ..conftest import mcp_session
from .conftest import Kubectl, StartCoordinator
from .test_kubernetes_backend import sessions

pytestmark = pytest.mark.timeout(150)

MISSING_IMAGE = "registry.example/not-there:1"


async def test_closing_a_session_whose_sandbox_never_started_deletes_its_codegensession(
    operator: OperatorThread,
    kubelet: FakeKubelet,
    kubectl: Kubectl,
    cluster: ClusterEmulator,
    k8s_coordinator: StartCoordinator,
) -> None:
    # What a node does with `imagePullPolicy: Never` and an image it does not have.
    kubelet.image_errors[MISSING_IMAGE] = "ErrImageNeverPull"
    cp = await k8s_coordinator(CODEGEN_K8S_IMAGE=MISSING_IMAGE, CODEGEN_K8S_IMAGE_PULL_POLICY="Never")
    async with mcp_session(cp) as s:
        result = await s.call_tool("echo", {"message": "hi"})
        assert result.is_error
        assert "could not start" in text_of(result)
        [cr] = sessions(cluster)
        name = cr["metadata"]["name"]
        assert cr["spec"]["imagePullPolicy"] == "Never"
        assert kubectl.status(name).phase == api.Phase.FAILED
    await eventually(lambda: not sessions(cluster), timeout=20, what="the failed session's resource to be deleted")
