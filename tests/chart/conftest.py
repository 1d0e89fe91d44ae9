"""Offline checks of the Helm chart: render it with real Helm (helm-python-sdk binds Helm's Go SDK), no cluster."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate.utils
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "codegen-mcp"
RELEASE = "codegen-mcp"
NAMESPACE = "codegen-mcp"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one.
KUBE_VERSIONS = ("1.27", "1.33")

# Value sets worth rendering: each one switches on a branch of the templates.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "auth-tokens": {"auth": {"tokens": ["0123456789abcdef-token-one", "0123456789abcdef-token-two"]}},
    "auth-existing-secret": {"auth": {"existingSecret": "my-mcp-tokens", "existingSecretKey": "list"}},
    "auth-off": {"auth": {"enabled": False}, "coordinator": {"networkPolicy": {"enabled": False}}},
    "ingress": {
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "annotations": {"nginx.ingress.kubernetes.io/proxy-buffering": "off"},
            "hosts": [{"host": "mcp.example.org", "paths": [{"path": "/", "pathType": "Prefix"}]}],
            "tls": [{"secretName": "mcp-tls", "hosts": ["mcp.example.org"]}],
        },
        "coordinator": {"allowedOrigins": ["https://app.example.org"]},
    },
    "servicemonitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "monitoring": {
            "dashboards": {"enabled": True, "annotations": {"grafana_folder": "CodeGen-MCP"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}, "alertLabels": {"team": "ml"}},
        },
    },
    "runtime-class": {"sessions": {"runtimeClassName": "gvisor", "nodeSelector": {"pool": "sandbox"}}},
    "egress-none": {
        "sessions": {
            "network": {"egress": "none", "packageIndexCIDRs": ["10.20.0.0/16"], "egressDenyCIDRs": ["169.254.0.0/16"]},
            "workspace": {"size": "5Gi", "storageClassName": "fast-ssd", "retain": True},
            "packages": ["numpy==2.1.3", "requests>=2.32"],
            "pipIndexUrl": "https://pypi.mirror.internal/simple",
            "ttlSeconds": 2592000,
            "idleTimeoutSeconds": 600,
            "imagePullSecrets": ["regcred"],
        }
    },
    "multi-namespace-ha": {
        "operator": {
            "replicas": 2,
            "peering": {"enabled": True, "priority": 10},
            "watchNamespaces": ["team-a", "team-b"],
        },
        "coordinator": {"replicas": 2, "pdb": {"minAvailable": 1}},
        "sessions": {"namespace": "sandboxes"},
    },
    "artifacts-s3": {
        "sessions": {
            "artifacts": {
                "store": "s3",
                "s3": {
                    "bucket": "codegen-artifacts",
                    "endpointUrl": "http://minio.storage.svc:9000",
                    "region": "eu-west-1",
                    "prefix": "uploads/",
                    "addressingStyle": "path",
                    "credentialsSecret": "codegen-s3",
                },
            }
        }
    },
    "cluster-wide": {"operator": {"clusterWide": True, "peering": {"enabled": True}}},
    "renamed": {"fullnameOverride": "mcp", "commonLabels": {"team": "ml-platform"}},
}


def ci_value_files() -> list[Path]:
    return sorted((CHART_DIR / "ci").glob("*.yaml"))


YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml_documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(text, Loader=YamlLoader) if d]


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm-style deep merge of values (maps merge, everything else is replaced)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture(scope="session", autouse=True)
def _reuse_kubernetes_schemas() -> Iterator[None]:
    """kubernetes_validate re-reads the same JSON schema files (~1 MB) on every call: read each once per run."""
    original = kubernetes_validate.utils.schema_contents
    kubernetes_validate.utils.schema_contents = functools.cache(original)
    yield
    kubernetes_validate.utils.schema_contents = original


@pytest.fixture(scope="session")
def helm() -> Any:
    return pytest.importorskip(
        "helm_python",
        reason="helm-python-sdk (Helm's Go SDK for Python) is not installed: pip install -e '.[test]'",
    )


@pytest.fixture(scope="session")
def chart(helm: Any) -> Iterator[Any]:
    with helm.Chart.load(str(CHART_DIR)) as loaded:
        yield loaded


Renderer = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render(chart: Any) -> Renderer:
    """Render the chart like `helm install --dry-run` would (no cluster: `lookup` finds nothing)."""

    @functools.cache
    def _cached(values_json: str, namespace: str) -> list[dict[str, Any]]:
        rendered = chart.render(values=json.loads(values_json), name=RELEASE, namespace=namespace, is_install=True)
        docs: list[dict[str, Any]] = []
        for path, text in sorted(rendered.items()):
            if not path.endswith("NOTES.txt"):
                docs += load_yaml_documents(text)
        return docs

    def _render(values: dict[str, Any] | None = None, *, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        return copy.deepcopy(_cached(json.dumps(values or {}, sort_keys=True), namespace))

    return _render


@pytest.fixture(scope="session")
def default_values() -> dict[str, Any]:
    loaded = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def find(
    docs: list[dict[str, Any]], kind: str, name: str | None = None, namespace: str | None = None
) -> dict[str, Any]:
    matches = [
        d
        for d in docs
        if d["kind"] == kind
        and (name is None or d["metadata"]["name"] == name)
        and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {[m['metadata']['name'] for m in matches]}"
    return matches[0]


def find_all(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def plain_env(deployment: dict[str, Any]) -> dict[str, str]:
    """The container's literal env values (valueFrom entries left out)."""
    return {e["name"]: e["value"] for e in container(deployment).get("env", []) if "value" in e}


def env_entry(deployment: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((e for e in container(deployment).get("env", []) if e["name"] == name), None)
