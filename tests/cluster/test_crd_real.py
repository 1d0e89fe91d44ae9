"""The shipped CRD on the real kube-apiserver: accepted, Established, and every CEL rule judged by the server.

The offline checks (tests/unit/operator/test_crd.py) evaluate the rules with cel-python; only the real server
also evaluates them against the schema's defaults when the CRD is created, which is how a rule reading an
optional field without has() once made the whole CRD invalid.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from codegen_mcp.api import session as api
from tests.support.control_plane import ControlPlane
from tests.support.real_cluster import RealCluster, api_path, module_namespace

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def real(control_plane: ControlPlane) -> Iterator[RealCluster]:
    """crds/codegensession.yaml applied (create or replace, then Established) and a namespace for this module."""
    with module_namespace(control_plane, "crd") as cluster:
        yield cluster


def create(
    cluster: RealCluster, name: str, spec: dict[str, Any] | None, kind: str = api.KIND, plural: str = api.PLURAL
) -> tuple[int, dict[str, Any]]:
    """POST a session (or another kind of ours); (status code, body) — the body is the Status object when refused."""
    body: dict[str, Any] = {"apiVersion": api.API_VERSION, "kind": kind, "metadata": {"name": name}}
    if spec is not None:
        body["spec"] = spec
    return cluster.call("POST", api_path(api.GROUP, api.VERSION, plural, cluster.namespace), body)


def test_the_shipped_crd_is_established(real: RealCluster) -> None:
    crd = real.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/codegensessions.codegen-mcp.io")
    assert crd["spec"]["names"]["shortNames"] == ["cgs"]


def test_a_specless_session_is_accepted_and_defaulted(real: RealCluster) -> None:
    code, body = create(real, "bare", None)
    assert code == 201, body
    spec = body["spec"]
    assert spec["packages"] == [] and spec["network"]["egress"] == "packages"
    assert spec["workspace"]["size"] == "1Gi"
    code, body = create(real, "empty", {})
    assert code == 201, body


# Each case: a spec and None when the server must accept it, or a fragment of the refusal it must give.
PACKAGES_MESSAGE = "spec.packages need network.egress 'packages' or 'open' to be installed"
CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("pkgs-default-network", {"packages": ["rich"]}, None),
    ("pkgs-packages", {"packages": ["rich"], "network": {"egress": "packages"}}, None),
    ("pkgs-open", {"packages": ["rich"], "network": {"egress": "open"}}, None),
    ("pkgs-none-cidr", {"packages": ["rich"], "network": {"egress": "none", "allowCIDRs": ["10.0.0.0/8"]}}, None),
    ("nopkgs-none", {"network": {"egress": "none"}}, None),
    ("empty-pkgs-none", {"packages": [], "network": {"egress": "none"}}, None),
    ("pkgs-none", {"packages": ["rich"], "network": {"egress": "none"}}, PACKAGES_MESSAGE),
    ("pkgs-none-nocidr", {"packages": ["rich"], "network": {"egress": "none", "allowCIDRs": []}}, PACKAGES_MESSAGE),
    ("env-ok", {"env": [{"name": "MODE", "value": "x"}]}, None),
    ("env-reserved", {"env": [{"name": "CODEGEN_AGENT_TOKEN", "value": "x"}]}, "reserved for the agent"),
    ("env-duplicate", {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "Duplicate value"),
    ("x" * 64, {}, "metadata.name must be at most 63 characters"),
    ("egress-bogus", {"network": {"egress": "sometimes"}}, "Unsupported value"),
    ("suspended", {"suspend": True, "suspendAfterSeconds": 300}, None),
    ("suspend-after-0", {"suspendAfterSeconds": 0}, "should be greater than or equal to 1"),
    ("suspend-not-bool", {"suspend": "yes"}, 'spec.suspend: Invalid value: "string"'),
]


@pytest.mark.parametrize(("name", "spec", "refusal"), CASES, ids=[c[0][:20] for c in CASES])
def test_every_rule_on_create(real: RealCluster, name: str, spec: dict[str, Any], refusal: str | None) -> None:
    code, body = create(real, name, spec)
    if refusal is None:
        assert code == 201, body.get("message")
    else:
        assert code == 422, body
        assert refusal in body["message"]


IMMUTABLE_CHANGES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("image", {"image": "a:1"}, {"image": "b:2"}),
    ("image-added", {}, {"image": "b:2"}),
    ("pull-policy", {"imagePullPolicy": "Never"}, {"imagePullPolicy": "Always"}),
    ("runtime-class", {"runtimeClassName": "gvisor"}, {"runtimeClassName": "kata"}),
    ("resources", {}, {"resources": {"limits": {"memory": "2Gi"}}}),
    ("network", {}, {"network": {"egress": "open"}}),
    ("env", {}, {"env": [{"name": "A", "value": "1"}]}),
    ("packages", {}, {"packages": ["rich"]}),
    ("workspace-size", {"workspace": {"size": "1Gi"}}, {"workspace": {"size": "2Gi"}}),
    ("workspace-class", {"workspace": {"storageClassName": "a"}}, {"workspace": {"storageClassName": "b"}}),
]


@pytest.mark.parametrize(("field", "before", "change"), IMMUTABLE_CHANGES, ids=[c[0] for c in IMMUTABLE_CHANGES])
def test_immutable_fields_refuse_changes(
    real: RealCluster, field: str, before: dict[str, Any], change: dict[str, Any]
) -> None:
    name = f"imm-{field}"
    code, body = create(real, name, before)
    assert code == 201, body.get("message")
    path = api_path(api.GROUP, api.VERSION, api.PLURAL, real.namespace, name)
    with pytest.raises(AssertionError, match="immutable"):
        patch(real, path, {"spec": change})


def test_mutable_fields_change(real: RealCluster) -> None:
    code, body = create(real, "mutable", {"ttlSeconds": 60})
    assert code == 201, body.get("message")
    path = api_path(api.GROUP, api.VERSION, api.PLURAL, real.namespace, "mutable")
    changed = patch(real, path, {"spec": {"ttlSeconds": 120, "idleTimeoutSeconds": 30, "owner": "bob"}})
    assert changed["spec"]["ttlSeconds"] == 120 and changed["metadata"]["generation"] == 2
    assert changed["spec"]["suspend"] is False  # defaulted
    suspended = patch(real, path, {"spec": {"suspend": True, "suspendAfterSeconds": 600}})
    assert suspended["spec"]["suspend"] is True and suspended["spec"]["suspendAfterSeconds"] == 600
    assert patch(real, path, {"spec": {"suspend": False}})["metadata"]["generation"] == 4


def patch(cluster: RealCluster, path: str, body: dict[str, Any]) -> dict[str, Any]:
    code, answer = cluster.call("PATCH", path, body, content_type="application/merge-patch+json")
    if code != 200:
        raise AssertionError(f"{code}: {answer['message']}")
    return answer
