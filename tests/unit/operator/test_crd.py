"""The CRD: generated from the models, checked in without drift, valid for Kubernetes, and its rules hold."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml

from codegen_mcp.api import session as api
from codegen_mcp.operator import crd

ROOT = Path(__file__).resolve().parents[3]
CHECKED_IN = ROOT / "crds" / "codegensession.yaml"
EXAMPLE = ROOT / "examples" / "codegensession.yaml"


def openapi_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def validator() -> jsonschema.protocols.Validator:
    schema = openapi_schema()
    cls = jsonschema.validators.validator_for({"$schema": "http://json-schema.org/draft-04/schema#"})
    return cls(schema)


def test_checked_in_crd_matches_the_models() -> None:
    assert CHECKED_IN.read_text() == crd.render_crd(), (
        "crds/codegensession.yaml is out of date: run `codegen-mcp crd -o crds/codegensession.yaml`"
    )


def test_crd_is_valid_for_kubernetes() -> None:
    kubernetes_validate.validate(yaml.safe_load(CHECKED_IN.read_text()), "1.33", strict=True)


def test_crd_identity_and_columns() -> None:
    doc = crd.build_crd()
    spec = doc["spec"]
    assert doc["metadata"]["name"] == "codegensessions.codegen-mcp.io"
    assert spec["names"]["shortNames"] == ["cgs"] and spec["scope"] == "Namespaced"
    (version,) = spec["versions"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]][:4] == ["Phase", "Pod", "Age", "Expires"]


def test_expires_column_shows_the_timestamp_not_an_age() -> None:
    # kubectl renders a `date` column as the time since it: a future expiry would read `<invalid>`.
    (version,) = crd.build_crd()["spec"]["versions"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Expires"] == {
        "name": "Expires",
        "type": "string",
        "format": "date-time",
        "jsonPath": ".status.expiresAt",
    }
    past_only = {".metadata.creationTimestamp", ".status.startedAt", ".status.readyAt", ".status.lastActivityAt"}
    assert {c["jsonPath"] for c in columns.values() if c["type"] == "date"} <= past_only


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found += _walk(value, f"{path}.{key}")
        if "items" in node:
            found += _walk(node["items"], f"{path}[]")
    return found


def test_schema_is_structural() -> None:
    for path, node in _walk(openapi_schema()):
        assert "$ref" not in node and "title" not in node, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: anyOf only for int-or-string"
    spec = openapi_schema()["properties"]["spec"]["properties"]
    assert spec["workspace"]["properties"]["size"]["default"] == "1Gi"
    assert spec["network"]["properties"]["egress"]["enum"] == ["none", "packages", "open"]
    assert spec["ttlSeconds"]["description"]


def test_example_is_valid() -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    validator().validate(doc)
    api.SessionSpec.model_validate(doc["spec"])
    assert doc["apiVersion"] == api.API_VERSION and doc["kind"] == api.KIND


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"workspace": {"size": "lots"}}, "'lots' does not match"),
        ({"network": {"egress": "everywhere"}}, "'everywhere' is not one of ['none', 'packages', 'open']"),
        ({"ttlSeconds": 0}, "0 is less than the minimum of 1"),
        ({"env": [{"value": "x"}]}, "'name' is a required property"),
        ({"resources": {"limits": {"memory": "2 GB"}}}, "'2 GB' does not match"),
        ({"imagePullPolicy": "Sometimes"}, "'Sometimes' is not one of"),
    ],
)
def test_invalid_specs_are_rejected_by_the_schema(spec: dict[str, Any], message: str) -> None:
    doc = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "x"}, "spec": spec}
    errors = [e.message for e in validator().iter_errors(doc)]
    assert any(message in e for e in errors), errors


# --- CEL rules (x-kubernetes-validations), evaluated with cel-python ---------------------------------------


def rules_at(path: str) -> list[dict[str, str]]:
    node = openapi_schema()
    for part in [p for p in path.split(".") if p]:
        node = node["properties"][part]
    return list(node.get("x-kubernetes-validations", []))


def failing(path: str, new: Any, old: Any | None = None) -> list[str]:
    """Messages of the rules at `path` that reject `new` (as an update from `old` when given)."""
    env = celpy.Environment()
    messages = []
    for rule in rules_at(path):
        if "oldSelf" in rule["rule"] and old is None:
            continue  # transition rules run on updates only
        activation = {"self": celpy.json_to_cel(new)}
        if old is not None:
            activation["oldSelf"] = celpy.json_to_cel(old)
        if not env.program(env.compile(rule["rule"])).evaluate(activation):
            messages.append(rule["message"])
    return messages


def defaulted(spec: dict[str, Any]) -> dict[str, Any]:
    """What the API server stores after applying the schema's defaults (for the fields the rules read)."""
    out = copy.deepcopy(spec)
    out.setdefault("packages", [])
    network = out.setdefault("network", {})
    network.setdefault("egress", "packages")
    network.setdefault("allowCIDRs", [])
    out.setdefault("workspace", {}).setdefault("size", "1Gi")
    return out


BASE = {"image": "a:1", "ttlSeconds": 60, "workspace": {"size": "1Gi"}}


@pytest.mark.parametrize(
    ("change", "rejected"),
    [
        ({"ttlSeconds": 120}, []),
        ({"idleTimeoutSeconds": 30}, []),
        ({"owner": "bob"}, []),
        ({"workspace": {"size": "1Gi", "retain": True}}, []),
        ({"image": "a:2"}, ["spec.image is immutable: create a new session instead"]),
        ({"network": {"egress": "open"}}, ["spec.network is immutable: create a new session instead"]),
        ({"env": [{"name": "X", "value": "1"}]}, ["spec.env is immutable: create a new session instead"]),
        ({"runtimeClassName": "gvisor"}, ["spec.runtimeClassName is immutable: create a new session instead"]),
    ],
)
def test_immutable_fields(change: dict[str, Any], rejected: list[str]) -> None:
    old = defaulted(BASE)
    new = defaulted({**BASE, **change})
    assert failing("spec", new, old) == rejected


def test_workspace_size_and_class_are_immutable() -> None:
    old = {"size": "1Gi"}
    assert failing("spec.workspace", {"size": "1Gi", "retain": True}, old) == []
    assert failing("spec.workspace", {"size": "2Gi"}, old) == [
        "spec.workspace.size is immutable: create a new session instead"
    ]
    assert failing("spec.workspace", {"size": "1Gi", "storageClassName": "fast"}, old) == [
        "spec.workspace.storageClassName is immutable: create a new session instead"
    ]


def test_create_rules() -> None:
    assert failing("spec", defaulted({"packages": ["rich"], "network": {"egress": "none"}})) == [
        "spec.packages need network.egress 'packages' or 'open' to be installed"
    ]
    assert failing("spec", defaulted({"packages": ["rich"]})) == []
    assert failing("spec.env", [{"name": "CODEGEN_AGENT_PORT", "value": "1"}]) == [
        "env names starting with CODEGEN_AGENT_ are reserved for the agent"
    ]
    root = [r for r in openapi_schema()["x-kubernetes-validations"]]
    env = celpy.Environment()
    (rule,) = root
    too_long = {"metadata": {"name": "a" * 64}}
    assert not env.program(env.compile(rule["rule"])).evaluate({"self": celpy.json_to_cel(too_long)})


def test_crd_command_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    crd.main([])
    assert capsys.readouterr().out == crd.render_crd()
    target = tmp_path / "crd.yaml"
    crd.main(["-o", str(target)])
    assert target.read_text() == crd.render_crd()


def test_peering_crds(capsys: pytest.CaptureFixture[str]) -> None:
    crd.main(["--peering"])
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["spec"]["names"]["kind"] for d in docs] == ["CodegenSession", "KopfPeering", "ClusterKopfPeering"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33", strict=True)
