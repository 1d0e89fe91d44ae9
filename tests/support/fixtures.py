"""Pytest fixtures for tests that need a Kubernetes API (the emulator) and a node (the kubelet harness).

Import them into a conftest.py: `from tests.support.fixtures import cluster, kubeconfig_path, kubelet`.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import kmock
import pytest
import yaml

from tests.support.k8s import ClusterEmulator, kubeconfig
from tests.support.kubelet import FakeKubelet


@pytest.fixture
async def cluster() -> AsyncIterator[ClusterEmulator]:
    """An in-memory Kubernetes API server on 127.0.0.1 (real HTTP); `cluster.url` is its address."""
    async with ClusterEmulator() as emulator, kmock.Server(emulator):
        yield emulator


@pytest.fixture
def kubeconfig_path(cluster: ClusterEmulator, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(kubeconfig(str(cluster.url))))
    return path


@pytest.fixture
async def kubelet(cluster: ClusterEmulator) -> AsyncIterator[FakeKubelet]:
    """A node that runs a real sandbox agent for every sandbox Pod.

    Its root is traversable by other uids, like a node's /var/lib/kubelet: agents run as root here and drop
    run code to the sandbox uid, which must reach its workspace (pytest's own temp root is 0700).
    """
    root = Path(tempfile.mkdtemp(prefix="codegen-mcp-node-"))
    root.chmod(0o711)
    try:
        async with FakeKubelet(str(cluster.url), root / "node") as node:
            yield node
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def agent_port() -> int:
    """A TCP port that is free on the loopback addresses the kubelet gives to Pods."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
