"""Settings shared by every test suite."""

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# Import hypothesis here, in the main thread, before any test starts a thread: otherwise its pytest plugin
# imports it lazily at the end of the session, and pytest's assertion rewriter then parses it while other
# threads may still be importing too — CPython 3.11.7's ast module is not safe for that ("AST constructor
# recursion depth mismatch", seen once here with the kopf operator thread).
import hypothesis  # noqa: F401
import pytest
from pytest_kubernetes.providers.base import AClusterManager

from tests.support.control_plane import ASSETS_ENV, ControlPlane, assets_problem
from tests.support.k8s_providers import LOCAL_PROVIDER, LocalControlPlaneManager
from tests.support.node import real_node  # noqa: F401 - one node per test run, for every suite that needs one

REPO = Path(__file__).resolve().parents[1]

# Coordinators the tests start (in this process or as children, which inherit it) keep no warm pool unless the
# test asks for one: a pool of 2 beside every test coordinator would start agents nobody claims (on 2 cores), and
# tests that count a session's agents, folders or cgroups would count the pool's too. The pool's own tests
# (tests/integration/test_warm_pool.py) and a few end-to-end ones set it explicitly.
os.environ.setdefault("CODEGEN_LOCAL_WARM_POOL", "0")
ProviderFactory = Callable[[str | None], type[AClusterManager]]


def pytest_configure(config: pytest.Config) -> None:
    # pytest-kubernetes reads this marker but does not register it (--strict-markers would refuse it).
    config.addinivalue_line(
        "markers",
        "k8s(provider, cluster_name, keep): the cluster pytest-kubernetes' `k8s` fixture manages; "
        f"provider='{LOCAL_PROVIDER}' is the real control plane of tests/support (mark the test `cluster` too)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cluster` need a real control plane: skip them, saying why, where none can start."""
    problem = assets_problem()
    if problem is None:
        return
    skip = pytest.mark.skip(reason=f"needs a real Kubernetes control plane: {problem}")
    for item in items:
        if item.get_closest_marker("cluster") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """A real etcd + kube-apiserver + controller-manager + scheduler from KUBEBUILDER_ASSETS, once per test run."""
    problem = assets_problem()
    if problem is not None:
        pytest.skip(reason=f"needs a real Kubernetes control plane: {problem}")
    root = Path(tempfile.mkdtemp(prefix="codegen-mcp-k8s-"))
    plane = ControlPlane(Path(os.environ[ASSETS_ENV]), root, crds=(REPO / "crds" / "codegensession.yaml",))
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def k8s_manager(k8s_manager: ProviderFactory) -> ProviderFactory:
    """pytest-kubernetes' provider factory, plus `local`: the real control plane (tests/support/k8s_providers.py)."""

    def select(provider: str | None = None) -> type[AClusterManager]:
        return LocalControlPlaneManager if provider == LOCAL_PROVIDER else k8s_manager(provider)

    return select
