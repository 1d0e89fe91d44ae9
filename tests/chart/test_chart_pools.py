"""The chart's warm pools: `pools` renders CodegenSandboxPool objects whose sandboxes the coordinator's sessions fit.

A pool is only useful when the sessions the coordinator creates (from `sessions.*`, through its CODEGEN_K8S_*
env) match the pool's template in every field that shapes a sandbox; the operator compares `sandbox_hash`.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import yaml

from codegen_mcp.api import pool
from codegen_mcp.api.session import SessionSpec
from codegen_mcp.coordinator.backends.kubernetes import build_session_manifest
from codegen_mcp.coordinator.settings import KubernetesBackendSettings
from tests.chart.conftest import CHART_DIR, NAMESPACE, Renderer, find, find_all, plain_env


def coordinator_session_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The spec the rendered coordinator would write for a new session (its env → its settings → the manifest)."""
    deployment = next(d for d in find_all(docs, "Deployment") if "coordinator" in d["metadata"]["name"])
    env = {
        k.removeprefix("CODEGEN_K8S_").lower(): v
        for k, v in plain_env(deployment).items()
        if k.startswith("CODEGEN_K8S_")
    }
    settings = KubernetesBackendSettings.model_validate(env)
    spec: dict[str, Any] = build_session_manifest("mcp-x", NAMESPACE, "key", settings)["spec"]
    return spec


def test_no_pools_by_default_and_the_coordinator_names_none(render: Renderer) -> None:
    docs = render()
    assert find_all(docs, pool.POOL_KIND) == []
    assert "poolRef" not in coordinator_session_spec(docs)


def test_a_pool_from_values_fits_the_coordinators_sessions(render: Renderer) -> None:
    values = {
        "pools": [{"name": "warm", "replicas": 3}],
        "sessions": {"poolRef": "warm", "packages": ["rich"], "runtimeClassName": "gvisor"},
    }
    docs = render(values)
    found = find(docs, pool.POOL_KIND, "warm", NAMESPACE)
    assert found["apiVersion"] == "codegen-mcp.io/v1alpha1" and found["spec"]["replicas"] == 3
    crd = yaml.safe_load((CHART_DIR / "crds" / "codegensandboxpool.yaml").read_text())
    jsonschema.validate(found, crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    spec = pool.PoolSpec.model_validate(found["spec"])

    session = coordinator_session_spec(docs)
    assert session["poolRef"] == "warm"
    assert pool.sandbox_hash(SessionSpec.model_validate(session)) == pool.sandbox_hash(spec.template)


def test_a_pools_own_template_is_merged_over_the_session_defaults(render: Renderer) -> None:
    values = {
        "pools": [{"name": "big", "namespace": "work", "replicas": 1, "template": {"workspace": {"size": "5Gi"}}}]
    }
    found = find(render(values), pool.POOL_KIND, "big", "work")
    template = found["spec"]["template"]
    assert template["workspace"]["size"] == "5Gi"
    assert template["network"] == {"egress": "packages"} and template["image"].startswith("ghcr.io/")
