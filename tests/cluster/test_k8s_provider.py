"""The real control plane as a pytest-kubernetes cluster provider (tests/support/k8s_providers.py).

One test makes and deletes a cluster of its own through the plugin's `k8s` fixture (`@pytest.mark.k8s(provider=
"local")`, ~10 s); the others adopt the session's plane, as the end-to-end scenarios do, and leave it running.
"""

from __future__ import annotations

import io
import json
import os
import socket
import tarfile
from pathlib import Path

import pytest
from pytest_kubernetes.providers.base import AClusterManager

from tests.support.control_plane import ASSETS_ENV, ControlPlane
from tests.support.k8s_providers import LOCAL_PROVIDER, LocalControlPlaneManager
from tests.support.node import Node, pause_image_tar

CONFIG_MAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "provider-check", "namespace": "default"},
    # Not "42": the plugin pipes a dict's YAML through `echo '…'`, and YAML's quotes around '42' do not survive.
    "data": {"answer": "forty-two"},
}


@pytest.mark.cluster
@pytest.mark.k8s(provider=LOCAL_PROVIDER, cluster_name="local-provider")
def test_local_provider_creates_serves_and_deletes_a_real_cluster(k8s: AClusterManager) -> None:
    assert isinstance(k8s, LocalControlPlaneManager)
    k8s.create()
    plane, kubeconfig = k8s.plane, k8s.kubeconfig
    assert plane is not None and kubeconfig is not None
    assert plane.components == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]

    namespaces = k8s.kubectl(["get", "ns"])
    assert isinstance(namespaces, dict)
    assert {"default", "kube-system"} <= {n["metadata"]["name"] for n in namespaces["items"]}
    k8s.apply(CONFIG_MAP)
    got = k8s.kubectl(["get", "configmap", "provider-check", "-n", "default"])
    assert isinstance(got, dict) and got["data"] == CONFIG_MAP["data"]
    k8s.kubectl(["delete", "configmap", "provider-check", "-n", "default", "--wait=true"], as_dict=False)
    gone = k8s.kubectl(["get", "configmap", "provider-check", "-n", "default", "--ignore-not-found"], as_dict=False)
    assert gone == ""
    with pytest.raises(RuntimeError, match="has no node"):
        k8s.load_image("image.tar")

    k8s.delete()
    assert k8s.kubeconfig is None and not kubeconfig.exists()
    assert plane.components == [] and not plane.root.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", plane.port), timeout=5).close()


@pytest.mark.cluster
def test_local_provider_adopts_a_running_plane_and_leaves_it_running(control_plane: ControlPlane) -> None:
    manager = LocalControlPlaneManager("adopted", kubeconfig=control_plane.kubeconfig)
    manager.create()
    assert manager.plane is None, "a ready cluster is adopted, not made"
    found = manager.kubectl(["get", "namespace", "default"])
    assert isinstance(found, dict) and found["status"]["phase"] == "Active"

    manager.delete()
    assert control_plane.kubeconfig.is_file()
    assert control_plane.call("GET", "/readyz")[0] == 200


def test_local_provider_refuses_without_assets(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="has no executable etcd, kube-apiserver"):
        LocalControlPlaneManager("no-assets", assets=tmp_path)


@pytest.mark.cluster
@pytest.mark.node
def test_local_provider_loads_a_docker_archive_into_the_node(
    control_plane: ControlPlane, real_node: Node, tmp_path: Path
) -> None:
    pause = pause_image_tar(os.environ.get(ASSETS_ENV))
    assert pause is not None
    tag = f"localhost/provider-check:{os.urandom(3).hex()}"
    manager = LocalControlPlaneManager("with-node", kubeconfig=control_plane.kubeconfig, node=real_node)
    manager.create()
    try:
        manager.load_image(str(retagged(pause, tag, tmp_path / "image.tar")))
        assert tag in real_node.ctr("images", "ls", "-q").stdout.split()
        with pytest.raises(RuntimeError, match="not a file"):
            manager.load_image(tag)  # an image name: kind's way, not this provider's
    finally:
        real_node.ctr("images", "rm", tag, check=False)
        manager.delete()


def retagged(archive: Path, tag: str, out: Path) -> Path:
    """A copy of a docker-archive tarball that names its image `tag`."""
    with tarfile.open(archive) as source, tarfile.open(out, "w") as copy:
        for member in source.getmembers():
            if member.name == "repositories":  # the legacy tag index; manifest.json is the one importers read
                continue
            data = source.extractfile(member) if member.isfile() else None
            if member.name == "manifest.json" and data is not None:
                manifest = json.load(data)
                manifest[0]["RepoTags"] = [tag]
                raw = json.dumps(manifest).encode()
                member.size = len(raw)
                data = io.BytesIO(raw)
            copy.addfile(member, data)
    return out
