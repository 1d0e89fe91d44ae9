"""The shipped CodegenSandboxPool CRD on the real kube-apiserver: Established, defaulted, its CEL rules judged by
the server; and a session's spec.poolRef is immutable there (tests/unit/operator/test_pool.py checks offline)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from codegen_mcp.api import pool
from codegen_mcp.api import session as api
from tests.cluster.test_crd_real import create, patch
from tests.cluster.test_printer_columns_real import TABLE, send
from tests.support.control_plane import ControlPlane
from tests.support.real_cluster import POOL_CRD_FILE, RealCluster, api_path, apply_crd_file, module_namespace

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def real(control_plane: ControlPlane) -> Iterator[RealCluster]:
    with module_namespace(control_plane, "poolcrd") as cluster:
        apply_crd_file(cluster, POOL_CRD_FILE)
        yield cluster


def create_pool(cluster: RealCluster, name: str, spec: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
    return create(cluster, name, spec, pool.POOL_KIND, pool.POOL_PLURAL)


def test_a_specless_pool_is_accepted_and_defaulted(real: RealCluster) -> None:
    code, body = create_pool(real, "bare", None)
    assert code == 201, body
    assert body["spec"]["replicas"] == 1
    assert body["spec"]["template"]["workspace"]["size"] == "1Gi" and body["spec"]["template"]["packages"] == []


CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("plain", {"replicas": 3, "template": {"image": "a:1", "env": [{"name": "X", "value": "1"}]}}, None),
    ("too-many", {"replicas": 65}, "should be less than or equal to 64"),
    ("negative", {"replicas": -1}, "should be greater than or equal to 0"),
    ("pool-ref", {"template": {"poolRef": "other"}}, "template.poolRef belongs on the session, not on a pool"),
    ("ttl", {"template": {"ttlSeconds": 60}}, "template.ttlSeconds belongs on the session, not on a pool"),
    ("retain", {"template": {"workspace": {"retain": True}}}, "template.workspace.retain belongs on the session"),
    ("suspend", {"template": {"suspend": True}}, "template.suspend belongs on the session, not on a pool"),
    ("suspend-after", {"template": {"suspendAfterSeconds": 60}}, "template.suspendAfterSeconds belongs on the session"),
    ("env-reserved", {"template": {"env": [{"name": "CODEGEN_AGENT_X"}]}}, "reserved for the agent"),
    ("x" * 58, {}, "metadata.name must be at most 57 characters"),
]


@pytest.mark.parametrize(("name", "spec", "refusal"), CASES, ids=[c[0][:20] for c in CASES])
def test_every_pool_rule_on_create(real: RealCluster, name: str, spec: dict[str, Any], refusal: str | None) -> None:
    code, body = create_pool(real, name, spec)
    if refusal is None:
        assert code == 201, body.get("message")
    else:
        assert code == 422, body
        assert refusal in body["message"]


def test_a_pools_template_may_change_but_a_sessions_pool_ref_may_not(real: RealCluster) -> None:
    code, _ = create_pool(real, "changing", {"template": {"image": "a:1"}})
    assert code == 201
    path = api_path(api.GROUP, api.VERSION, pool.POOL_PLURAL, real.namespace, "changing")
    assert patch(real, path, {"spec": {"template": {"image": "a:2"}, "replicas": 2}})["spec"]["replicas"] == 2

    code, body = create(real, "pooled", {"poolRef": "changing"})
    assert code == 201, body.get("message")
    session = api_path(api.GROUP, api.VERSION, api.PLURAL, real.namespace, "pooled")
    with pytest.raises(AssertionError, match="spec.poolRef is immutable"):
        patch(real, session, {"spec": {"poolRef": "other"}})


def test_kubectl_get_shows_replicas_ready_claimed_and_age(real: RealCluster) -> None:
    """What `kubectl get cgsp` prints, as the real server renders it (kubectl asks for a Table)."""
    code, _ = create_pool(real, "shown", {"replicas": 3})
    assert code == 201
    path = api_path(api.GROUP, api.VERSION, pool.POOL_PLURAL, real.namespace, "shown")
    status = {"status": {"replicas": 3, "ready": 2, "claimed": 5, "message": "2 of 3 sandboxes ready"}}
    send(real, "PATCH", f"{path}/status", status, "application/merge-patch+json", "application/json")

    table = send(real, "GET", path, None, "application/json", TABLE)
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names[:5] == ["Name", "Replicas", "Ready", "Claimed", "Age"]
    [row] = table["rows"]
    cells = dict(zip(names, row["cells"], strict=True))
    assert (cells["Replicas"], cells["Ready"], cells["Claimed"]) == (3, 2, 5)
    assert cells["Message"] == "2 of 3 sandboxes ready"  # -o wide
