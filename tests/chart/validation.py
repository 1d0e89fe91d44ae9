"""Validators for rendered manifests: the official Kubernetes schemas for built-in kinds, the CRDs' own
openAPIV3Schema for custom resources the chart ships, and structural checks for ServiceMonitor and PrometheusRule
(whose rules `promtool` checks too: tests/chart/test_chart_monitoring.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from .conftest import CHART_DIR, KUBE_VERSIONS

DURATION = re.compile(r"^([0-9]+(ms|s|m|h))+$")


def chart_crds() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((CHART_DIR / "crds").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def crd_schema(crds: list[dict[str, Any]], api_version: str, kind: str) -> dict[str, Any] | None:
    group, _, version = api_version.rpartition("/")
    for crd in crds:
        spec = crd["spec"]
        if spec["group"] != group or spec["names"]["kind"] != kind:
            continue
        for v in spec["versions"]:
            if v["name"] == version:
                schema: dict[str, Any] = v["schema"]["openAPIV3Schema"]
                return schema
    return None


def validate_service_monitor(doc: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    """monitoring.coreos.com/v1 ServiceMonitor: its CRD is not ours, so check what Prometheus relies on."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    spec = doc["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels"}, set(spec)
    selector = spec["selector"]["matchLabels"]
    services = [
        s for s in docs if s["kind"] == "Service" and selector.items() <= (s["metadata"].get("labels") or {}).items()
    ]
    assert len(services) == 1, f"the ServiceMonitor selects {len(services)} Services"
    port_names = {p["name"] for p in services[0]["spec"]["ports"]}
    assert spec["namespaceSelector"]["matchNames"] == [services[0]["metadata"]["namespace"]]
    assert spec["endpoints"], "a ServiceMonitor needs endpoints"
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "authorization"}, endpoint
        assert endpoint["port"] in port_names
        assert endpoint["path"].startswith("/")
        assert endpoint["scheme"] in ("http", "https")
        assert DURATION.match(endpoint["interval"]) and DURATION.match(endpoint["scrapeTimeout"])


def validate_prometheus_rule(doc: dict[str, Any]) -> None:
    """monitoring.coreos.com/v1 PrometheusRule: groups of alerting rules, as the Prometheus Operator reads them."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(doc["spec"]) == {"groups"}, set(doc["spec"])
    for group in doc["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"] and group["rules"], group
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert isinstance(rule["alert"], str) and isinstance(rule["expr"], str) and rule["expr"].strip()
            assert "for" not in rule or DURATION.match(rule["for"]), rule["for"]
            for key in ("labels", "annotations"):
                assert all(isinstance(v, str) for v in (rule.get(key) or {}).values()), rule.get(key)


def validate_manifest(doc: dict[str, Any], docs: list[dict[str, Any]]) -> str:
    """Validate one manifest; returns how ('kubernetes', 'crd' or 'structural')."""
    try:
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
        return "kubernetes"
    except kubernetes_validate.SchemaNotFoundError:
        pass
    if doc["kind"] == "ServiceMonitor":
        validate_service_monitor(doc, docs)
        return "structural"
    if doc["kind"] == "PrometheusRule":
        validate_prometheus_rule(doc)
        return "structural"
    schema = crd_schema(chart_crds(), doc["apiVersion"], doc["kind"])
    assert schema is not None, f"{doc['apiVersion']} {doc['kind']} is neither built in nor a CRD of the chart"
    jsonschema.Draft7Validator(schema).validate(doc)
    return "crd"


def repo_path(*parts: str) -> Path:
    return CHART_DIR.parents[1].joinpath(*parts)
