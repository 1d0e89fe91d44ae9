"""The chart's CRDs: the same as the generated crds/, structural, valid CustomResourceDefinitions, and the
example session conforms to the CRD's schema."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from codegen_mcp.api import session as api

from .conftest import CHART_DIR, KUBE_VERSIONS
from .validation import chart_crds, crd_schema, repo_path

UNTYPED_OK = {"x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields"}


def structural_problems(node: dict[str, Any], path: str = "") -> list[str]:
    """Where a schema breaks the structural-schema rules the API server enforces for apiextensions/v1."""
    problems: list[str] = []
    if "type" not in node and not UNTYPED_OK & set(node):
        problems.append(f"{path or '<root>'}: no type")
    if "$ref" in node:
        problems.append(f"{path}: $ref is not allowed")
    int_or_string = [{"type": "integer"}, {"type": "string"}]
    for combinator in ("anyOf", "oneOf", "allOf", "not"):
        if combinator == "anyOf" and node.get("x-kubernetes-int-or-string") and node["anyOf"] == int_or_string:
            continue  # the one typed union the API server accepts
        if combinator in node:
            branches = node[combinator] if isinstance(node[combinator], list) else [node[combinator]]
            for branch in branches:
                if {"type", "default", "nullable", "description"} & set(branch):
                    problems.append(f"{path}.{combinator}: branches may not set type/default/nullable/description")
    if "properties" in node and "additionalProperties" in node and node["additionalProperties"] is not False:
        problems.append(f"{path}: properties and additionalProperties are exclusive")
    for name, sub in (node.get("properties") or {}).items():
        problems += structural_problems(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}{{}}")
    return problems


@pytest.mark.parametrize("file", ["codegensession.yaml", "codegensandboxpool.yaml"])
def test_chart_crd_is_the_generated_crd(file: str) -> None:
    """Helm ships crds/ from the chart; drift from the generated CRD is an error (`make chart-crds` copies it)."""
    generated = list(yaml.safe_load_all(repo_path("crds", file).read_text()))
    shipped = list(yaml.safe_load_all((CHART_DIR / "crds" / file).read_text()))
    assert shipped == generated, f"helm/codegen-mcp/crds/{file} differs from crds/: run `make chart-crds`"


def test_chart_loads_its_crds(chart: Any) -> None:
    names = sorted(c["name"] for c in chart.crds)
    assert names == ["crds/codegensandboxpool.yaml", "crds/codegensession.yaml", "crds/kopf-peering.yaml"]


@pytest.mark.parametrize("crd", chart_crds(), ids=lambda c: c["metadata"]["name"])
def test_crds_are_valid_and_structural(crd: dict[str, Any]) -> None:
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(crd, version, strict=True)
    for served in crd["spec"]["versions"]:
        schema = served["schema"]["openAPIV3Schema"]
        assert schema["type"] == "object"
        assert structural_problems(schema) == [], crd["metadata"]["name"]


def test_structural_check_catches_an_untyped_field() -> None:
    assert structural_problems({"type": "object", "properties": {"x": {"description": "no type"}}}) == [".x: no type"]


def test_codegensession_crd_identity() -> None:
    (crd,) = [c for c in chart_crds() if c["spec"]["names"]["kind"] == api.KIND]
    assert crd["metadata"]["name"] == f"{api.PLURAL}.{api.GROUP}"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["shortNames"] == list(api.SHORT_NAMES)
    (version,) = crd["spec"]["versions"]
    assert version["name"] == api.VERSION and version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Phase", "Age", "Expires", "Pod"} <= columns


def test_example_session_conforms_to_the_crd_schema() -> None:
    example = yaml.safe_load(repo_path("examples", "codegensession.yaml").read_text())
    schema = crd_schema(chart_crds(), example["apiVersion"], example["kind"])
    assert schema is not None
    jsonschema.Draft7Validator(schema).validate(example)
    bad = {**example, "spec": {**example["spec"], "network": {"egress": "everywhere"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(bad)
