"""The chart rendered by real Helm (offline) with its defaults and with value sets that switch on each branch:
lint-clean, every manifest valid against the Kubernetes OpenAPI schemas, locked-down Pods, least-privilege RBAC,
and env that the coordinator's and operator's own settings models accept."""

from __future__ import annotations

import base64
import os
from typing import Any

import kubernetes_validate
import pytest
import yaml

from codegen_mcp.api import session as api
from codegen_mcp.api.logs import LOG_FORMAT_ENV
from codegen_mcp.coordinator import settings as coordinator_settings
from codegen_mcp.operator.render import render_documents
from codegen_mcp.operator.settings import OperatorSettings

from .conftest import (
    CHART_DIR,
    KUBE_VERSIONS,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    Renderer,
    ci_value_files,
    container,
    env_entry,
    find,
    find_all,
    merge,
    plain_env,
)
from .validation import repo_path, validate_manifest

ALL_SETS = list(VALUE_SETS) + [f"ci/{p.name}" for p in ci_value_files()]
NAMESPACED_KINDS = {
    "ConfigMap", "Deployment", "Ingress", "KopfPeering", "NetworkPolicy", "PodDisruptionBudget", "Role",
    "RoleBinding", "Secret", "Service", "ServiceAccount", "ServiceMonitor", "PrometheusRule",
}  # fmt: skip
CLUSTER_KINDS = {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}


def values_of(name: str) -> dict[str, Any]:
    if name.startswith("ci/"):
        loaded = yaml.safe_load((CHART_DIR / name).read_text())
        return loaded if isinstance(loaded, dict) else {}
    return VALUE_SETS[name]


@pytest.fixture(params=ALL_SETS)
def value_set(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def coordinator(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-coordinator"))


def operator(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator"))


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


# --- Helm's own checks -----------------------------------------------------------------------------------------


def test_chart_lints_without_warnings(helm: Any, value_set: str) -> None:
    report = helm.lint(str(CHART_DIR), values_of(value_set), strict=True, kube_version=f"v{KUBE_VERSIONS[-1]}.0")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


def test_render_with_defaults_produces_the_whole_release(render: Renderer) -> None:
    docs = render()
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    assert kinds == sorted(
        [
            "Deployment/codegen-mcp-coordinator",
            "Deployment/codegen-mcp-operator",
            "Deployment/codegen-mcp-redis",
            "NetworkPolicy/codegen-mcp-coordinator",
            "NetworkPolicy/codegen-mcp-redis",
            "PodDisruptionBudget/codegen-mcp-coordinator",
            "Role/codegen-mcp-coordinator",
            "Role/codegen-mcp-operator",
            "RoleBinding/codegen-mcp-coordinator",
            "RoleBinding/codegen-mcp-operator",
            "Secret/codegen-mcp-auth",
            "Service/codegen-mcp",
            "Service/codegen-mcp-redis",
            "ServiceAccount/codegen-mcp-coordinator",
            "ServiceAccount/codegen-mcp-operator",
            "ServiceAccount/codegen-mcp-sandbox",
        ]
    )


def test_notes_tell_how_to_connect(chart: Any) -> None:
    rendered = chart.render(values={}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    notes = rendered["codegen-mcp/templates/NOTES.txt"]
    assert "kubectl -n codegen-mcp port-forward svc/codegen-mcp 8765:mcp" in notes
    assert "http://127.0.0.1:8765/mcp" in notes and "http://127.0.0.1:8765/sse" in notes
    assert "get secret codegen-mcp-auth" in notes
    assert "kubectl get cgs" in notes


# --- schemas -----------------------------------------------------------------------------------------------------


def test_every_rendered_manifest_is_valid(render: Renderer, value_set: str) -> None:
    docs = render(values_of(value_set))
    assert docs
    how = {f"{d['kind']}/{d['metadata']['name']}": validate_manifest(d, docs) for d in docs}
    # Only the chart's own CRD kinds and the Prometheus Operator's are checked outside the Kubernetes schemas.
    assert {k for k, v in how.items() if v != "kubernetes"} <= {
        k for k in how if k.split("/")[0] in ("ServiceMonitor", "PrometheusRule", "KopfPeering", "ClusterKopfPeering")
    }


def test_invalid_manifest_is_caught_by_the_validator() -> None:
    """The validator really validates: a misspelt field in a Deployment is an error."""
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replica": 1, "selector": {}, "template": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(bad, [bad])


def test_every_object_is_labelled_and_placed(render: Renderer, value_set: str) -> None:
    for doc in render(values_of(value_set)):
        meta = doc["metadata"]
        labels = meta.get("labels") or {}
        assert labels.get("app.kubernetes.io/instance") == RELEASE, meta["name"]
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", meta["name"]
        assert labels.get("app.kubernetes.io/name"), meta["name"]
        if doc["kind"] in CLUSTER_KINDS:
            assert "namespace" not in meta
        else:
            assert doc["kind"] in NAMESPACED_KINDS, doc["kind"]
            assert meta.get("namespace"), f"{doc['kind']} {meta['name']} has no namespace"


# --- Pods --------------------------------------------------------------------------------------------------------


def test_control_plane_pods_are_locked_down(render: Renderer, value_set: str) -> None:
    for deployment in find_all(render(values_of(value_set)), "Deployment"):
        name = deployment["metadata"]["name"]
        spec = deployment["spec"]["template"]["spec"]
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0, name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
        assert all("hostPath" not in v for v in spec.get("volumes", [])), name
        c = container(deployment)
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["privileged"] is False, name
        assert sc["capabilities"] == {"drop": ["ALL"]}, name
        # A read-only root needs its writable paths as volumes.
        assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}, name
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, kind)
        if pod_labels(deployment)[api.LABEL_COMPONENT] == "redis":
            continue  # the chart's Redis has no /healthz (tests/chart/test_chart_replicas.py)
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz", name


def test_coordinator_serves_mcp_behind_its_service(render: Renderer, value_set: str) -> None:
    docs = render(values_of(value_set))
    deployment = coordinator(docs)
    c = container(deployment)
    assert c["ports"] == [{"name": "mcp", "containerPort": 8765, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "mcp"}
    assert c["args"][:3] == ["serve", "--backend", "kubernetes"]
    labels = pod_labels(deployment)
    # What every sandbox's NetworkPolicy admits (operator setting CODEGEN_OPERATOR_COORDINATOR_POD_LABELS).
    assert labels[api.LABEL_NAME] == "codegen-mcp" or value_set == "renamed"
    assert labels[api.LABEL_COMPONENT] == "coordinator"
    (service,) = [s for s in find_all(docs, "Service") if s["metadata"]["labels"][api.LABEL_COMPONENT] == "coordinator"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [("mcp", "mcp")]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for doc in find_all(docs, kind):
            if doc["metadata"]["labels"][api.LABEL_COMPONENT] == "redis":
                continue  # the chart's Redis has its own (tests/chart/test_chart_replicas.py)
            selector = doc["spec"]["podSelector" if kind == "NetworkPolicy" else "selector"]["matchLabels"]
            assert selector.items() <= labels.items(), kind
    for ingress in find_all(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"] == {"name": service["metadata"]["name"], "port": {"name": "mcp"}}


def test_coordinator_network_policy_admits_clients_and_reaches_only_what_it_needs(render: Renderer) -> None:
    policy = find(render(), "NetworkPolicy", "codegen-mcp-coordinator")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"ports": [{"port": "mcp", "protocol": "TCP"}]}]
    egress_ports = [sorted(p["port"] for p in rule["ports"]) for rule in spec["egress"]]
    assert egress_ports == [[53, 53], [443, 6443], [8080], [6379]]  # the last: the chart's Redis
    sandboxes = spec["egress"][2]["to"][0]["podSelector"]["matchLabels"]
    assert sandboxes == {api.LABEL_NAME: api.SANDBOX_APP_NAME, api.LABEL_MANAGED_BY: api.MANAGED_BY}


# --- RBAC --------------------------------------------------------------------------------------------------------

OPERATOR_RULES = [
    {"apiGroups": [api.GROUP], "resources": ["codegensessions"], "verbs": ["get", "list", "watch", "patch", "delete"]},
    {"apiGroups": [api.GROUP], "resources": ["codegensessions/status"], "verbs": ["patch"]},
    {"apiGroups": [api.GROUP], "resources": ["codegensessions/finalizers"], "verbs": ["update"]},
    {"apiGroups": [api.GROUP], "resources": ["codegensandboxpools"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [api.GROUP], "resources": ["codegensandboxpools/status"], "verbs": ["patch"]},
    {"apiGroups": [api.GROUP], "resources": ["codegensandboxpools/finalizers"], "verbs": ["update"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list", "watch", "create", "patch"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
COORDINATOR_RULES = [
    {
        "apiGroups": [api.GROUP],
        "resources": ["codegensessions"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],  # patch: spec.suspend
    },
    {"apiGroups": [api.GROUP], "resources": ["codegensessions/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
]
PEERING_RULE = {"apiGroups": ["kopf.dev"], "verbs": ["get", "list", "watch", "patch"]}


def test_rbac_has_no_wildcards_or_escalation(render: Renderer, value_set: str) -> None:
    for role in [d for d in render(values_of(value_set)) if d["kind"] in ("Role", "ClusterRole")]:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], (role["metadata"]["name"], rule)
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            assert "nonResourceURLs" not in rule and "resourceNames" not in rule
            if "secrets" in rule["resources"]:
                assert not {"list", "watch"} & set(rule["verbs"]), "reading every Secret is not needed"


def test_rbac_grants_exactly_what_each_component_uses(render: Renderer) -> None:
    docs = render()
    assert not find_all(docs, "ClusterRole") and not find_all(docs, "ClusterRoleBinding")
    assert find(docs, "Role", "codegen-mcp-operator")["rules"] == OPERATOR_RULES
    assert find(docs, "Role", "codegen-mcp-coordinator")["rules"] == COORDINATOR_RULES
    for binding in find_all(docs, "RoleBinding"):
        (subject,) = binding["subjects"]
        assert subject["kind"] == "ServiceAccount" and subject["namespace"] == NAMESPACE
        find(docs, "ServiceAccount", subject["name"], NAMESPACE)
        assert binding["roleRef"]["name"] == binding["metadata"]["name"]


def test_rbac_follows_the_watched_namespaces(render: Renderer) -> None:
    docs = render(VALUE_SETS["multi-namespace-ha"])
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in find_all(docs, "Role")}
    assert roles == {
        ("sandboxes", "codegen-mcp-coordinator"),
        ("sandboxes", "codegen-mcp-operator"),
        ("team-a", "codegen-mcp-operator"),
        ("team-b", "codegen-mcp-operator"),
    }
    for role in find_all(docs, "Role"):
        if role["metadata"]["name"].endswith("-operator"):
            assert role["rules"] == [*OPERATOR_RULES, {**PEERING_RULE, "resources": ["kopfpeerings"]}]
    peerings = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in find_all(docs, "KopfPeering")}
    assert peerings == {("sandboxes", RELEASE), ("team-a", RELEASE), ("team-b", RELEASE)}
    sandbox_accounts = [a for a in find_all(docs, "ServiceAccount") if a["metadata"]["name"] == "codegen-mcp-sandbox"]
    assert {a["metadata"]["namespace"] for a in sandbox_accounts} == {"sandboxes", "team-a", "team-b"}
    assert all(a["automountServiceAccountToken"] is False for a in sandbox_accounts)


def test_cluster_wide_mode_uses_one_cluster_role_for_the_operator_only(render: Renderer) -> None:
    docs = render(VALUE_SETS["cluster-wide"])
    (cluster_role,) = find_all(docs, "ClusterRole")
    assert cluster_role["rules"] == [*OPERATOR_RULES, {**PEERING_RULE, "resources": ["clusterkopfpeerings"]}]
    assert [r["metadata"]["name"] for r in find_all(docs, "Role")] == ["codegen-mcp-coordinator"]
    assert len(find_all(docs, "ClusterKopfPeering")) == 1
    env = plain_env(operator(docs))
    assert env["CODEGEN_OPERATOR_NAMESPACES"] == ""
    assert "CODEGEN_OPERATOR_SERVICE_ACCOUNT_NAME" not in env  # no per-namespace sandbox ServiceAccount to name


# --- settings the components read ---------------------------------------------------------------------------


def _env_with_secrets(deployment: dict[str, Any]) -> dict[str, str]:
    env = plain_env(deployment)
    for entry in container(deployment).get("env", []):
        if "secretKeyRef" in entry.get("valueFrom", {}):
            env[entry["name"]] = "token-from-the-secret-0123456789"
    return env


# Read by every component outside its settings: the log format (api.logs) and OpenTelemetry's own variables.
SHARED_ENV = {LOG_FORMAT_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT"}


def _field(name: str, prefix: str, model: type[Any]) -> bool:
    return name.startswith(prefix) and name[len(prefix) :].lower() in model.model_fields


def test_coordinator_env_is_understood_by_its_settings(
    render: Renderer, value_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    k8s_model = coordinator_settings.KubernetesBackendSettings
    env = _env_with_secrets(coordinator(render(values_of(value_set))))
    for name in env:
        known = (
            name in SHARED_ENV
            or _field(name, "CODEGEN_K8S_", k8s_model)
            or (
                not name.startswith("CODEGEN_K8S_")
                and _field(name, "CODEGEN_", coordinator_settings.CoordinatorSettings)
            )
        )
        assert known, f"{name} is set by the chart but read by no coordinator setting"
    for key in [k for k in os.environ if k.startswith("CODEGEN_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = coordinator_settings.CoordinatorSettings()
    assert settings.backend == "kubernetes" and settings.port == 8765
    assert not env["CODEGEN_ALLOWED_HOSTS"].startswith("["), "a leading '[' makes the settings parse it as JSON"
    k8s = settings.kubernetes
    values = merge(yaml.safe_load((CHART_DIR / "values.yaml").read_text()), values_of(value_set))
    sessions = values["sessions"]
    assert k8s.namespace == (sessions["namespace"] or NAMESPACE)
    assert k8s.network_egress == sessions["network"]["egress"]
    assert k8s.ttl_seconds == sessions["ttlSeconds"] and k8s.idle_timeout_seconds == sessions["idleTimeoutSeconds"]
    assert k8s.workspace_size == sessions["workspace"]["size"]
    assert k8s.retain_workspace is sessions["workspace"]["retain"]
    assert k8s.runtime_class_name == (sessions["runtimeClassName"] or None)
    assert k8s.storage_class == (sessions["workspace"]["storageClassName"] or None)
    assert k8s.packages == sessions["packages"]
    assert k8s.image == f"{sessions['image']['repository']}:{sessions['image']['tag'] or '0.1.0'}"
    assert [t.get_secret_value() for t in settings.auth_tokens] == (
        ["token-from-the-secret-0123456789"] if values["auth"]["enabled"] else []
    )


def test_operator_env_is_understood_by_its_settings_and_yields_valid_children(
    render: Renderer, value_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(values_of(value_set))
    deployment = operator(docs)
    env = plain_env(deployment)
    shared = {"POD_ID", *SHARED_ENV}
    unknown = [n for n in env if n not in shared and not _field(n, "CODEGEN_OPERATOR_", OperatorSettings)]
    assert unknown == [], f"set by the chart but read by no operator setting: {unknown}"
    for key in [k for k in os.environ if k.startswith("CODEGEN_OPERATOR_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = OperatorSettings()

    values = merge(yaml.safe_load((CHART_DIR / "values.yaml").read_text()), values_of(value_set))
    assert settings.standalone is not values["operator"]["peering"]["enabled"]
    assert settings.sandbox_uid == values["sessions"]["uid"] and settings.sandbox_gid == values["sessions"]["gid"]
    assert settings.default_ttl_seconds == values["sessions"]["ttlSeconds"]
    assert settings.liveness_endpoint == "http://0.0.0.0:8081/healthz"
    assert container(deployment)["ports"][0]["containerPort"] == 8081
    # Each sandbox admits exactly this release's coordinator Pods, from the release namespace.
    assert settings.coordinator_pod_labels.items() <= pod_labels(coordinator(docs)).items()
    assert settings.coordinator_pod_labels[api.LABEL_COMPONENT] == "coordinator"
    assert settings.coordinator_namespace == NAMESPACE
    if not values["operator"]["clusterWide"]:
        sessions_ns = values["sessions"]["namespace"] or NAMESPACE
        assert settings.namespaces == list(dict.fromkeys([sessions_ns, *values["operator"]["watchNamespaces"]]))
    if settings.service_account_name:
        for ns in settings.namespaces:
            sa = find(docs, "ServiceAccount", settings.service_account_name, ns)
            assert sa["automountServiceAccountToken"] is False

    # The children the operator builds under these settings are valid manifests too.
    example = yaml.safe_load(repo_path("examples", "codegensession.yaml").read_text())
    children = render_documents([example], settings)
    assert [c["kind"] for c in children] == ["Secret", "PersistentVolumeClaim", "NetworkPolicy", "Pod"]
    for child in children:
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(child, version, strict=True)
    pod = children[-1]["spec"]
    assert pod["securityContext"]["runAsUser"] == values["sessions"]["uid"]
    assert pod.get("runtimeClassName") == (values["sessions"]["runtimeClassName"] or None)
    peer = children[2]["spec"]["ingress"][0]["from"][0]
    assert peer["podSelector"]["matchLabels"].items() <= pod_labels(coordinator(docs)).items()
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NAMESPACE}


def test_sandbox_defaults_reach_both_components(render: Renderer) -> None:
    docs = render(VALUE_SETS["egress-none"])
    op, co = plain_env(operator(docs)), plain_env(coordinator(docs))
    assert co["CODEGEN_K8S_NETWORK_EGRESS"] == "none"
    assert co["CODEGEN_K8S_TTL_SECONDS"] == op["CODEGEN_OPERATOR_DEFAULT_TTL_SECONDS"] == "2592000"
    assert co["CODEGEN_K8S_PACKAGES"] == "numpy==2.1.3,requests>=2.32"
    assert co["CODEGEN_K8S_STORAGE_CLASS"] == op["CODEGEN_OPERATOR_STORAGE_CLASS"] == "fast-ssd"
    assert co["CODEGEN_K8S_RETAIN_WORKSPACE"] == "true"
    assert op["CODEGEN_OPERATOR_PACKAGE_INDEX_CIDRS"] == "10.20.0.0/16"
    assert op["CODEGEN_OPERATOR_EGRESS_DENY_CIDRS"] == "169.254.0.0/16"
    assert op["CODEGEN_OPERATOR_PIP_INDEX_URL"] == "https://pypi.mirror.internal/simple"
    assert op["CODEGEN_OPERATOR_IMAGE_PULL_SECRETS"] == "regcred"
    runtime = render(VALUE_SETS["runtime-class"])
    assert plain_env(operator(runtime))["CODEGEN_OPERATOR_RUNTIME_CLASS_NAME"] == "gvisor"
    assert plain_env(coordinator(runtime))["CODEGEN_K8S_RUNTIME_CLASS_NAME"] == "gvisor"
    assert plain_env(operator(runtime))["CODEGEN_OPERATOR_NODE_SELECTOR"] == "pool=sandbox"
    # Unset optional values are left out (an empty string is not "unset" to the settings models).
    defaults = render()
    assert "CODEGEN_K8S_RUNTIME_CLASS_NAME" not in plain_env(coordinator(defaults))
    assert "CODEGEN_OPERATOR_PACKAGE_INDEX_CIDRS" not in plain_env(operator(defaults))


def test_artifact_store_reaches_the_operator_and_each_sandbox(
    render: Renderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = operator(render(VALUE_SETS["artifacts-s3"]))
    env = plain_env(deployment)
    assert {k: v for k, v in env.items() if "ARTIFACT" in k or "_S3_" in k} == {
        "CODEGEN_OPERATOR_ARTIFACT_STORE": "s3",
        "CODEGEN_OPERATOR_S3_BUCKET": "codegen-artifacts",
        "CODEGEN_OPERATOR_S3_ENDPOINT_URL": "http://minio.storage.svc:9000",
        "CODEGEN_OPERATOR_S3_REGION": "eu-west-1",
        "CODEGEN_OPERATOR_S3_PREFIX": "uploads/",
        "CODEGEN_OPERATOR_S3_ADDRESSING_STYLE": "path",
        "CODEGEN_OPERATOR_S3_CREDENTIALS_SECRET": "codegen-s3",
    }
    for key in [k for k in os.environ if k.startswith("CODEGEN_OPERATOR_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    example = yaml.safe_load(repo_path("examples", "codegensession.yaml").read_text())
    pod = render_documents([example], OperatorSettings())[-1]
    sandbox_env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert sandbox_env["CODEGEN_AGENT_ARTIFACT_STORE"]["value"] == "s3"
    assert sandbox_env["CODEGEN_AGENT_S3_BUCKET"]["value"] == "codegen-artifacts"
    assert sandbox_env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "codegen-s3"
    # The default: the local store, and no S3 setting at all (empty strings are not "unset" to the settings).
    default_env = plain_env(operator(render()))
    assert default_env["CODEGEN_OPERATOR_ARTIFACT_STORE"] == "local"
    assert not [k for k in default_env if k.startswith("CODEGEN_OPERATOR_S3_")]


# --- transport security and auth ---------------------------------------------------------------------------


def allowed_hosts(docs: list[dict[str, Any]]) -> list[str]:
    return plain_env(coordinator(docs))["CODEGEN_ALLOWED_HOSTS"].split(",")


def test_allowed_hosts_cover_every_service_name_and_the_ingress(render: Renderer) -> None:
    hosts = allowed_hosts(render())
    for name in ("codegen-mcp", "codegen-mcp.codegen-mcp", "codegen-mcp.codegen-mcp.svc"):
        assert name in hosts and f"{name}:*" in hosts
    assert "codegen-mcp.codegen-mcp.svc.cluster.local:*" in hosts
    with_ingress = allowed_hosts(render(VALUE_SETS["ingress"]))
    assert "mcp.example.org" in with_ingress and "mcp.example.org:*" in with_ingress
    assert plain_env(coordinator(render(VALUE_SETS["ingress"])))["CODEGEN_ALLOWED_ORIGINS"] == "https://app.example.org"
    renamed = allowed_hosts(render(VALUE_SETS["renamed"]))
    assert "mcp.codegen-mcp.svc:*" in renamed


def test_auth_token_is_generated_by_default(render: Renderer) -> None:
    docs = render()
    secret = find(docs, "Secret", "codegen-mcp-auth")
    token = base64.b64decode(secret["data"]["tokens"]).decode()
    assert len(token) >= 32 and token.isalnum()
    ref = env_entry(coordinator(docs), "CODEGEN_AUTH_TOKENS")
    assert ref == {
        "name": "CODEGEN_AUTH_TOKENS",
        "valueFrom": {"secretKeyRef": {"name": "codegen-mcp-auth", "key": "tokens"}},
    }
    assert "CODEGEN_AUTH_TOKENS" not in plain_env(coordinator(docs)), "tokens never sit in the Deployment"


def test_auth_tokens_from_values_or_an_existing_secret(render: Renderer) -> None:
    docs = render(VALUE_SETS["auth-tokens"])
    data = find(docs, "Secret", "codegen-mcp-auth")["data"]["tokens"]
    assert base64.b64decode(data).decode() == "0123456789abcdef-token-one,0123456789abcdef-token-two"
    existing = render(VALUE_SETS["auth-existing-secret"])
    assert not find_all(existing, "Secret")
    ref = env_entry(coordinator(existing), "CODEGEN_AUTH_TOKENS")
    assert ref is not None and ref["valueFrom"]["secretKeyRef"] == {"name": "my-mcp-tokens", "key": "list"}
    off = render(VALUE_SETS["auth-off"])
    assert not find_all(off, "Secret") and env_entry(coordinator(off), "CODEGEN_AUTH_TOKENS") is None


# --- operator replicas and peering --------------------------------------------------------------------------


def test_single_operator_runs_standalone_and_never_overlaps(render: Renderer) -> None:
    docs = render()
    deployment = operator(docs)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert plain_env(deployment)["CODEGEN_OPERATOR_STANDALONE"] == "true"
    assert not find_all(docs, "KopfPeering") and not find_all(docs, "ClusterKopfPeering")
    pod_id = env_entry(deployment, "POD_ID")
    assert pod_id is not None and pod_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_servicemonitor_targets_the_coordinator_service(render: Renderer) -> None:
    docs = render(VALUE_SETS["servicemonitor"])
    monitor = find(docs, "ServiceMonitor", "codegen-mcp-coordinator")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "mcp"
    assert validate_manifest(monitor, docs) == "structural"
    assert not find_all(render(), "ServiceMonitor")
