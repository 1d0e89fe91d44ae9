"""The end-to-end scenarios' cluster (a pytest-kubernetes `AClusterManager`) and the release they talk to.

- `--k8s-provider=kind` (what `make e2e` passes, with `--k8s-cluster-name` and `--k8s-kubeconfig`): the kind
  cluster `make kind-up images kind-load deploy` prepared, taken by its kubeconfig through pytest-kubernetes' kind
  provider; the chart's release is CODEGEN_E2E_RELEASE (codegen-mcp) in CODEGEN_E2E_NAMESPACE (codegen-mcp).
  Skipped, with the exact reason, where docker (with an engine), kind, kubectl or helm is missing.
- no `--k8s-provider`: the local real control plane and node (tests/support) through `LocalControlPlaneManager`,
  with the chart installed at 0 replicas and the operator and the coordinator on the host, as its ServiceAccounts.
  The scenarios are then marked `cluster` and `node`, and skip, saying why, where those cannot start.

Either way the cluster is taken, never made: `create()` finds it ready and adopts it, so `delete()` leaves it alone.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_kubernetes.providers.base import AClusterManager

from tests.support.control_plane import ControlPlane
from tests.support.k8s_providers import KindClusterManager, LocalControlPlaneManager
from tests.support.node import Node
from tests.support.node_stack import STORAGE_CLASS, running_stack

from .release import ChartRelease, HostRelease, Release, kind_problem

E2E_DIR = Path(__file__).parent
KIND = "kind"
# Workspace volumes for the host release: one per session the scenarios make (a used one is never reused), and one
# of 2Gi for examples/codegensession.yaml.
HOST_VOLUMES = 5


@pytest.hookimpl(tryfirst=True)  # before tests/conftest.py's, which skips `cluster` tests where no plane can start
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [item for item in items if E2E_DIR in Path(str(item.path)).parents]
    if not mine:
        return
    provider = config.getoption("k8s_provider")
    if provider is None:
        for item in mine:
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.node)
        return
    if provider == KIND:
        reason = kind_problem()
    else:
        reason = (
            f"tests/e2e runs on kind (`--k8s-provider=kind`, see `make e2e`) or, without --k8s-provider, on the "
            f"local real cluster; not on --k8s-provider={provider}"
        )
    if reason:
        for item in mine:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[AClusterManager]:
    config = request.config
    manager: AClusterManager
    if config.getoption("k8s_provider") is None:
        plane: ControlPlane = request.getfixturevalue("control_plane")
        node: Node = request.getfixturevalue("real_node")
        manager = LocalControlPlaneManager("e2e", kubeconfig=plane.kubeconfig, node=node)
        where = f"the session's control plane ({plane.url})"
    else:
        name = config.getoption("k8s_cluster_name")
        kubeconfig = config.getoption("k8s_kubeconfig") or config.getoption("k8s_kubeconfig_override")
        if not kubeconfig or not Path(kubeconfig).is_file():
            pytest.fail(
                f"--k8s-provider=kind needs --k8s-kubeconfig naming the kind cluster's kubeconfig, not {kubeconfig!r} "
                "(`make e2e` writes it with `kind get kubeconfig`)",
                pytrace=False,
            )
        manager = KindClusterManager(name, kubeconfig=Path(kubeconfig))
        where = f"the kind cluster {name} (kubeconfig {kubeconfig}); prepare it with `make kind-up` (or `make e2e`)"
    # Checked first: create() on a cluster that is not ready would make a new one (without Calico or the chart).
    if not manager.ready(timeout=30):
        pytest.fail(f"not ready: {where}", pytrace=False)
    manager.create()
    try:
        yield manager
    finally:
        manager.delete()


@pytest.fixture(scope="module")
def release(cluster: AClusterManager) -> Iterator[Release]:
    if isinstance(cluster, LocalControlPlaneManager):
        yield from _host_release(cluster)
        return
    chart = ChartRelease(
        cluster,
        namespace=os.environ.get("CODEGEN_E2E_NAMESPACE", "codegen-mcp"),
        name=os.environ.get("CODEGEN_E2E_RELEASE", "codegen-mcp"),
    )
    try:
        chart.check()
        problem = None
    except (AssertionError, RuntimeError, subprocess.TimeoutExpired) as exc:
        problem = str(exc).strip()
    if problem:
        pytest.fail(
            f"release {chart.name} in {chart.namespace} is not ready on {cluster.cluster_name}: {problem}\n"
            "prepare it with `make kind-up images kind-load deploy` (or just `make e2e`)",
            pytrace=False,
        )
    yield chart


def _host_release(cluster: LocalControlPlaneManager) -> Iterator[HostRelease]:
    """The chart installed for the local node, its operator (fast expiry checks, like the kind values) and
    coordinator on the host with the chart's identities; `default` watched too, for examples/codegensession.yaml."""
    node = cluster.node
    assert node is not None, "the local e2e cluster comes with the session's real node"
    node.workspace_volumes(STORAGE_CLASS, 1, size="2Gi")
    values = {"operator": {"expiryCheckSeconds": 2}}
    with running_stack(node, volumes=HOST_VOLUMES - 1, values=values, extra_namespace="default") as stack:
        yield HostRelease(cluster, stack)
