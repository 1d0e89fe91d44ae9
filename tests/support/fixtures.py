"""Pytest fixtures for tests that need a Kubernetes API and a node (the kubelet harness).

`cluster` is parametrized: every scenario runs on the API emulator (fast, and the only place for some failure
injection) and on the real kube-apiserver + controller-manager + scheduler (`cluster` marker; skipped, saying
why, without KUBEBUILDER_ASSETS). The same scenario code serves both.

Import them into a conftest.py: `from tests.support.fixtures import cluster, kubeconfig_path, kubelet`.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import kmock
import pytest
import yaml

from tests.support.control_plane import ControlPlane
from tests.support.k8s import ClusterEmulator, kubeconfig
from tests.support.kubelet import FakeKubelet
from tests.support.real_cluster import RealCluster, drain_namespace, prepare_for_sessions

CLUSTERS = ["emulator", pytest.param("real", marks=pytest.mark.cluster)]


@pytest.fixture(params=CLUSTERS)
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[ClusterEmulator | RealCluster]:
    """A Kubernetes API on 127.0.0.1: the in-memory emulator, or the real control plane (CRD installed)."""
    if request.param == "emulator":
        async with ClusterEmulator() as emulator, kmock.Server(emulator):
            yield emulator
        return
    plane: ControlPlane = request.getfixturevalue("control_plane")
    async with RealCluster(plane) as real:
        prepare_for_sessions(real)
        yield real


async def emulator_cluster() -> AsyncIterator[ClusterEmulator]:
    """For modules that test the emulator itself: `cluster = pytest.fixture(emulator_cluster)`."""
    async with ClusterEmulator() as emulator, kmock.Server(emulator):
        yield emulator


@pytest.fixture
def kubeconfig_path(cluster: ClusterEmulator | RealCluster, tmp_path: Path) -> Path:
    if isinstance(cluster, RealCluster):
        return cluster.plane.kubeconfig
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(kubeconfig(str(cluster.url))))
    return path


@pytest.fixture
async def kubelet(cluster: ClusterEmulator | RealCluster) -> AsyncIterator[FakeKubelet]:
    """A node that runs a real sandbox agent for every sandbox Pod.

    Its root is traversable by other uids, like a node's /var/lib/kubelet: agents run as root here and drop
    run code to the sandbox uid, which must reach its workspace (pytest's own temp root is 0700).
    On the real server it is a Node of its own name, and at the end it stays up until every session of the
    test is gone (the server needs the node to confirm its Pods' deletion).
    """
    root = Path(tempfile.mkdtemp(prefix="codegen-mcp-node-"))
    root.chmod(0o711)
    real = isinstance(cluster, RealCluster)
    try:
        async with FakeKubelet(
            str(cluster.url),
            root / "node",
            node_name=f"harness-{uuid.uuid4().hex[:8]}" if real else None,
            ssl_context=cluster.ssl if isinstance(cluster, RealCluster) else None,
        ) as node:
            try:
                yield node
            finally:
                if isinstance(cluster, RealCluster):
                    await drain_namespace(cluster, "default")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def agent_port() -> int:
    """A TCP port that is free on the loopback addresses the kubelet gives to Pods."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
