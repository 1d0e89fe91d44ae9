"""End-to-end tests against a kind cluster with the chart installed (`make e2e`).

Skipped, with the exact reason, where docker (with an engine), kind, kubectl or helm is missing, and unless
CODEGEN_E2E=1 (set by `make e2e`). The cluster comes from the Makefile targets, named by:
CODEGEN_E2E_CONTEXT (kind-codegen-mcp), CODEGEN_E2E_NAMESPACE (codegen-mcp), CODEGEN_E2E_RELEASE (codegen-mcp).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .cluster import Cluster, KubectlError, skip_reason

E2E_DIR = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [item for item in items if E2E_DIR in Path(str(item.path)).parents]
    if not mine:
        return
    reason = skip_reason()
    if reason:
        for item in mine:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    found = Cluster(
        context=os.environ.get("CODEGEN_E2E_CONTEXT", "kind-codegen-mcp"),
        namespace=os.environ.get("CODEGEN_E2E_NAMESPACE", "codegen-mcp"),
        release=os.environ.get("CODEGEN_E2E_RELEASE", "codegen-mcp"),
    )
    try:
        found.kubectl("get", "--raw", "/readyz", timeout=30)
        found.kubectl("get", "crd", "codegensessions.codegen-mcp.io", timeout=30)
        for component in ("operator", "coordinator"):
            name = found.deployment(component)["metadata"]["name"]
            found.kubectl(
                "rollout", "status", f"deployment/{name}", "-n", found.namespace, "--timeout=180s", timeout=200
            )
    except (KubectlError, ValueError) as exc:
        pytest.fail(
            f"the kind cluster {found.context} with release {found.release} in {found.namespace} is not ready: {exc}\n"
            "prepare it with `make kind-up images kind-load deploy` (or just `make e2e`)",
            pytrace=False,
        )
    return found
