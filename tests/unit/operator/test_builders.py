"""The pure builders: every child's spec, table-driven, and every manifest valid for Kubernetes 1.33."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from codegen_mcp.api import pool
from codegen_mcp.api import session as api
from codegen_mcp.api.agent_settings import AgentSettings
from codegen_mcp.operator import builders
from codegen_mcp.operator.settings import OperatorSettings

K8S_VERSION = "1.33"


def ref(spec: dict[str, Any] | None = None, name: str = "demo") -> builders.SessionRef:
    return builders.SessionRef(
        name=name, namespace="team-a", uid="1234-uid", spec=api.SessionSpec.model_validate(spec or {})
    )


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]}


def agent_of(env: dict[str, Any]) -> AgentSettings:
    """The settings the agent reads from a Pod's environment (a value from a Secret stands for itself)."""
    return AgentSettings.from_environ({k: v if isinstance(v, str) else "from-a-secret" for k, v in env.items()})


SPECS: list[dict[str, Any]] = [
    {},
    {"network": {"egress": "none"}},
    {"network": {"egress": "open", "allowCIDRs": ["10.1.0.0/16"], "allowPorts": [5432]}},
    {"workspace": {"retain": True, "size": "5Gi", "storageClassName": "fast"}, "runtimeClassName": "gvisor"},
    {"resources": {"requests": {"cpu": 1, "memory": "3Gi"}, "limits": {"ephemeral-storage": "4Gi"}}},
    {"env": [{"name": "FOO", "value": "bar"}, {"name": "HOME", "value": "/workspace"}], "packages": ["rich"]},
    {"image": "registry.example/sandbox:2", "imagePullPolicy": "Always", "owner": "alice", "ttlSeconds": 60},
]


@pytest.mark.parametrize("spec", SPECS)
def test_every_child_is_valid_for_kubernetes(spec: dict[str, Any], settings: OperatorSettings) -> None:
    children = builders.build_children(ref(spec), settings, token="t0ken")
    assert [c["kind"] for c in children] == ["Secret", "PersistentVolumeClaim", "NetworkPolicy", "Pod"]
    for child in children:
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)
        labels = child["metadata"]["labels"]
        assert labels[api.LABEL_MANAGED_BY] == api.MANAGED_BY
        assert labels[api.LABEL_SESSION] == "demo"
        assert child["metadata"]["namespace"] == "team-a"


def test_settings_variations_stay_valid(settings: OperatorSettings) -> None:
    custom = settings.model_copy(
        update={
            "coordinator_namespace": "codegen-system",
            "service_account_name": "sandbox",
            "node_selector": {"pool": "sandbox"},
            "image_pull_secrets": ["regcred"],
            "runtime_class_name": "kata",
            "storage_class": "standard",
            "pip_index_url": "http://devpi.local/simple",
            "package_index_cidrs": [],
        }
    )
    for child in builders.build_children(ref(), custom, token="x"):
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)


def test_children_are_owned_by_the_session(settings: OperatorSettings) -> None:
    for child in builders.build_children(ref(), settings, token="x"):
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "codegen-mcp.io/v1alpha1",
            "kind": "CodegenSession",
            "name": "demo",
            "uid": "1234-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }


def test_secret_holds_the_token(settings: OperatorSettings) -> None:
    secret = builders.build_token_secret(ref(), "s3cret")
    assert secret["metadata"]["name"] == "demo-agent-token"
    assert base64.b64decode(secret["data"]["token"]).decode() == "s3cret"
    assert secret["immutable"] is True


@pytest.mark.parametrize(
    ("workspace", "storage_setting", "expected_class", "owned"),
    [
        ({}, None, None, True),
        ({}, "standard", "standard", True),
        ({"storageClassName": "fast"}, "standard", "fast", True),
        ({"retain": True}, None, None, False),
    ],
)
def test_workspace_claim(
    workspace: dict[str, Any],
    storage_setting: str | None,
    expected_class: str | None,
    owned: bool,
    settings: OperatorSettings,
) -> None:
    claim = builders.build_workspace_claim(
        ref({"workspace": workspace}), settings.model_copy(update={"storage_class": storage_setting})
    )
    assert claim["metadata"]["name"] == "demo-workspace"
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert claim["spec"].get("storageClassName") == expected_class
    assert bool(claim["metadata"].get("ownerReferences")) is owned


def test_pod_is_locked_down(settings: OperatorSettings) -> None:
    pod = builders.build_sandbox_pod(ref(), settings)
    spec = pod["spec"]
    assert pod["metadata"]["name"] == "demo-sandbox"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = spec["containers"]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["command"] == ["codegen-mcp", "agent"]
    assert container["ports"] == [{"name": "agent", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "agent"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/workspace": "workspace", "/tmp": "tmp"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["workspace"]["persistentVolumeClaim"] == {"claimName": "demo-workspace"}
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": "1Gi"}
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "2Gi", "ephemeral-storage": "2Gi"}


def test_agent_environment(settings: OperatorSettings) -> None:
    pod = builders.build_sandbox_pod(
        ref({"env": [{"name": "HOME", "value": "/workspace"}], "packages": ["rich", "httpx==0.27"]}), settings
    )
    env = env_of(pod)
    assert env["CODEGEN_AGENT_WORKSPACE"] == "/workspace"
    assert env["CODEGEN_AGENT_HOST"] == "0.0.0.0"
    assert env["CODEGEN_AGENT_PORT"] == "8080"
    assert env["CODEGEN_AGENT_SANDBOX"] == "none"
    assert env["CODEGEN_AGENT_NETWORK"] == "true"
    assert env["CODEGEN_AGENT_PACKAGES"] == "rich httpx==0.27"
    assert env["CODEGEN_AGENT_TOKEN"] == {"secretKeyRef": {"name": "demo-agent-token", "key": "token"}}
    # spec.env reaches the code the agent runs, not the agent process (its HOME stays the writable /tmp).
    assert json.loads(env["CODEGEN_AGENT_RUN_ENV"]) == {"HOME": "/workspace"}
    assert env["HOME"] == "/tmp" and env["TMPDIR"] == "/tmp"
    # The code it runs is capped below the container limit (2Gi - 256Mi).
    assert int(env["CODEGEN_AGENT_MEMORY_BYTES"]) == 2 * 1024**3 - 256 * 1024**2


@pytest.mark.parametrize(
    ("network", "pip_network"),
    [
        ({"egress": "none"}, "false"),
        ({"egress": "none", "allowCIDRs": ["10.1.0.0/16"]}, None),  # a private index may be there
        ({"egress": "packages"}, None),
        ({"egress": "open"}, None),
    ],
)
def test_the_agent_knows_when_pip_has_no_egress(
    network: dict[str, Any], pip_network: str | None, settings: OperatorSettings
) -> None:
    env = env_of(builders.build_sandbox_pod(ref({"network": network}), settings))
    assert env.get("CODEGEN_AGENT_PIP_NETWORK") == pip_network
    # ...under the name the agent reads.
    assert agent_of(env).pip_network is (pip_network != "false")


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize(
    "operator",
    [{}, {"artifact_store": "s3", "s3_bucket": "b", "s3_prefix": "", "pip_index_url": "https://mirror/simple"}],
)
def test_the_agent_reads_back_what_the_pod_says(
    spec: dict[str, Any], operator: dict[str, Any], settings: OperatorSettings
) -> None:
    custom = OperatorSettings.model_validate({**settings.model_dump(), **operator})
    session = ref(spec)
    pod = builders.build_sandbox_pod(session, custom)
    agent = agent_of(env_of(pod))  # every CODEGEN_AGENT_* name known, every value accepted
    memory_limit = pod["spec"]["containers"][0]["resources"]["limits"]["memory"]
    expected = builders.agent_settings(session, custom, memory_limit)
    assert agent.model_dump(exclude={"token"}) == expected.model_dump(exclude={"token"})
    assert agent.token is not None  # from the session's Secret


@pytest.mark.parametrize(
    ("limit", "expected"),
    [("2Gi", 2 * 1024**3 - 256 * 1024**2), ("512Mi", 384 * 1024**2), ("100Mi", 75 * 1024**2), ("64Mi", 64 * 1024**2)],
)
def test_run_memory_leaves_headroom(limit: str, expected: int) -> None:
    assert builders.run_memory_bytes(limit) == expected


@pytest.mark.parametrize(
    ("resources", "requests", "limits"),
    [
        (None, {"cpu": "250m", "memory": "512Mi"}, {"cpu": "2", "memory": "2Gi"}),
        ({"limits": {"memory": "4Gi"}}, {"memory": "512Mi"}, {"memory": "4Gi"}),
        ({"requests": {"cpu": 3}}, {"cpu": "3"}, {"cpu": "3"}),  # a request above the default limit lifts it
    ],
)
def test_resources_merge_spec_over_settings(
    resources: dict[str, Any] | None, requests: dict[str, str], limits: dict[str, str], settings: OperatorSettings
) -> None:
    spec = api.SessionSpec.model_validate({"resources": resources} if resources else {})
    merged = builders.effective_resources(spec, settings)
    assert requests.items() <= merged["requests"].items()
    assert limits.items() <= merged["limits"].items()


def _peers(rules: list[dict[str, Any]]) -> list[Any]:
    return [peer for rule in rules for peer in rule.get("to", [])]


@pytest.mark.parametrize(
    ("network", "dns", "cidrs", "anywhere"),
    [
        ({"egress": "none"}, False, [], False),
        ({"egress": "packages"}, True, ["151.101.0.0/16", "146.75.0.0/16", "2a04:4e42::/32"], False),
        ({"egress": "open"}, True, [], True),
        ({"egress": "none", "allowCIDRs": ["10.0.0.0/8"]}, False, ["10.0.0.0/8"], False),
    ],
)
def test_network_policy_egress(
    network: dict[str, Any], dns: bool, cidrs: list[str], anywhere: bool, settings: OperatorSettings
) -> None:
    policy = builders.build_network_policy(ref({"network": network}), settings)
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    # By the sandbox's own label, which stays when a session adopts a pooled sandbox (the policy never lapses).
    assert spec["podSelector"] == {"matchLabels": {api.LABEL_MANAGED_BY: api.MANAGED_BY, pool.LABEL_SANDBOX: "demo"}}
    pod_labels = builders.build_sandbox_pod(ref({"network": network}), settings)["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    peers = _peers(spec["egress"])
    assert any("namespaceSelector" in p for p in peers) is dns
    blocks = [p["ipBlock"] for p in peers if "ipBlock" in p]
    assert [b["cidr"] for b in blocks if b["cidr"] not in ("0.0.0.0/0", "::/0")] == cidrs
    if anywhere:
        assert {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]} in blocks
        assert {"cidr": "::/0", "except": ["fd00:ec2::254/128"]} in blocks
    if network["egress"] == "none" and not cidrs:
        assert spec["egress"] == []  # Egress in policyTypes with no rule: nothing goes out


def test_network_policy_admits_only_coordinators_on_the_agent_port(settings: OperatorSettings) -> None:
    policy = builders.build_network_policy(ref(), settings.model_copy(update={"coordinator_namespace": "cg-system"}))
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert rule["from"] == [
        {
            "podSelector": {
                "matchLabels": {"app.kubernetes.io/name": "codegen-mcp", "app.kubernetes.io/component": "coordinator"}
            },
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cg-system"}},
        }
    ]


def test_allow_ports_restrict_allowed_cidrs(settings: OperatorSettings) -> None:
    rules = builders.egress_rules(
        api.SessionSpec.model_validate(
            {"network": {"egress": "none", "allowCIDRs": ["10.0.0.0/8"], "allowPorts": [5432]}}
        ),
        settings,
    )
    assert rules == [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"protocol": "TCP", "port": 5432}]}]


@pytest.mark.parametrize(("ip", "url"), [("10.0.0.7", "http://10.0.0.7:8080"), ("fd00::7", "http://[fd00::7]:8080")])
def test_endpoint(ip: str, url: str) -> None:
    assert builders.endpoint_for(ip, 8080) == url


def test_spec_and_settings_precedence(settings: OperatorSettings) -> None:
    custom = settings.model_copy(update={"runtime_class_name": "kata", "default_image": "img:default"})
    pod = builders.build_sandbox_pod(ref({"runtimeClassName": "gvisor"}), custom)
    assert pod["spec"]["runtimeClassName"] == "gvisor"
    assert pod["spec"]["containers"][0]["image"] == "img:default"
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"


# --- artifact.upload's store -----------------------------------------------------------------------------------

S3_VARS = ("CODEGEN_AGENT_S3_", "AWS_")


@pytest.mark.parametrize(
    ("update", "expected", "secret_keys"),
    [
        (
            {},
            {
                "CODEGEN_AGENT_ARTIFACT_STORE": "local",
                "CODEGEN_AGENT_ARTIFACT_STORE_DIR": "/workspace/.codegen/artifact-store",
                "CODEGEN_AGENT_ARTIFACT_STORE_NAMESPACE": "team-a.demo",
            },
            {},
        ),
        (
            # Only a bucket: region, endpoint and prefix stay the agent's defaults, credentials the Pod's identity.
            {"artifact_store": "s3", "s3_bucket": "artifacts"},
            {
                "CODEGEN_AGENT_ARTIFACT_STORE": "s3",
                "CODEGEN_AGENT_S3_BUCKET": "artifacts",
                "CODEGEN_AGENT_S3_ADDRESSING_STYLE": "auto",
                "CODEGEN_AGENT_ARTIFACT_STORE_NAMESPACE": "team-a.demo",
            },
            {},
        ),
        (
            {
                "artifact_store": "s3",
                "s3_bucket": "artifacts",
                "s3_endpoint_url": "http://minio.storage:9000",
                "s3_region": "eu-west-1",
                "s3_prefix": "",
                "s3_addressing_style": "path",
                "s3_credentials_secret": "s3-creds",
            },
            {
                "CODEGEN_AGENT_ARTIFACT_STORE": "s3",
                "CODEGEN_AGENT_S3_BUCKET": "artifacts",
                "CODEGEN_AGENT_S3_ENDPOINT_URL": "http://minio.storage:9000",
                "CODEGEN_AGENT_S3_REGION": "eu-west-1",
                "CODEGEN_AGENT_S3_PREFIX": "",  # set, even empty: keys at the bucket's root
                "CODEGEN_AGENT_S3_ADDRESSING_STYLE": "path",
                "CODEGEN_AGENT_ARTIFACT_STORE_NAMESPACE": "team-a.demo",
            },
            {"AWS_ACCESS_KEY_ID": False, "AWS_SECRET_ACCESS_KEY": False, "AWS_SESSION_TOKEN": True},
        ),
    ],
    ids=["local", "s3-workload-identity", "s3-secret"],
)
def test_artifact_store_env(
    update: dict[str, Any], expected: dict[str, str], secret_keys: dict[str, bool], settings: OperatorSettings
) -> None:
    custom = OperatorSettings.model_validate({**settings.model_dump(), **update})
    pod = builders.build_sandbox_pod(ref(), custom)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    env = env_of(pod)
    store = {k: v for k, v in env.items() if k.startswith(("CODEGEN_AGENT_ARTIFACT_", *S3_VARS))}
    literal = {k: v for k, v in store.items() if isinstance(v, str)}
    assert literal == expected
    refs = {k: v["secretKeyRef"] for k, v in store.items() if not isinstance(v, str)}
    assert refs == {
        key: {"name": "s3-creds", "key": key, **({"optional": True} if optional else {})}
        for key, optional in secret_keys.items()
    }
    # The agent accepts what it is given (its namespace allows no '/').
    agent = agent_of(env)
    assert agent.artifact_store == expected["CODEGEN_AGENT_ARTIFACT_STORE"]
    assert agent.artifact_store_namespace == "team-a.demo"


def test_artifact_store_namespace_fits_the_agent_for_the_longest_names(settings: OperatorSettings) -> None:
    longest = builders.SessionRef(name="s" * 63, namespace="n" * 63, uid="u", spec=api.SessionSpec())
    namespace = builders.artifact_store_namespace(longest)
    assert namespace == f"{'n' * 63}.{'s' * 63}"
    assert AgentSettings(workspace=Path("/workspace"), artifact_store_namespace=namespace).artifact_store_namespace


def test_credentials_secret_is_ignored_by_the_local_store(settings: OperatorSettings) -> None:
    custom = settings.model_copy(update={"s3_credentials_secret": "s3-creds", "s3_bucket": "unused"})
    env = env_of(builders.build_sandbox_pod(ref(), custom))
    assert not [k for k in env if k.startswith(S3_VARS)]
