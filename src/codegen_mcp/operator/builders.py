"""Pure builders of a session's children: Secret, PersistentVolumeClaim, NetworkPolicy, Pod.

Each takes the session (name, namespace, uid, validated spec) and the operator settings and returns a
manifest dict; nothing here talks to a server, so `codegen-mcp render` and the unit tests use them as is.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codegen_mcp.api import pool
from codegen_mcp.api import session as api
from codegen_mcp.api.agent_settings import AgentSettings
from codegen_mcp.api.logs import LOG_FORMAT_ENV
from codegen_mcp.api.session import EgressMode, SessionSpec
from codegen_mcp.operator.settings import OperatorSettings

MiB = 1024 * 1024
# What the agent itself may use inside the container's memory limit: code it runs is capped below the
# limit, so a runaway run.python is killed by its own rlimit/cgroup rather than the whole Pod being OOM-killed.
AGENT_MEMORY_HEADROOM = 256 * MiB
MIN_RUN_MEMORY = 64 * MiB
# The local artifact store of a sandbox Pod. Its root filesystem is read-only and /tmp (the agent's default
# through HOME) is an emptyDir lost whenever the operator replaces the Pod (restartPolicy Never), so the
# only place that survives a restart is the workspace PVC. Inside it, the agent's state folder `.codegen`
# is refused to fs tools and skipped by listings and the artifact scan; its `uploads` subfolder is the
# agent's staging area, so the store gets a sibling (the agent's own fallback name). Still gone with the
# PVC, and code the agent runs shares its uid in a Pod (no nested jail) so it could alter the copies:
# clusters that need uploads to outlive a session, untouched, use the s3 store.
LOCAL_ARTIFACT_STORE_DIR = f"{api.WORKSPACE_MOUNT_PATH}/.codegen/artifact-store"
# The AWS variables boto3 reads in the agent, and whether the credentials Secret must hold each key.
S3_CREDENTIAL_KEYS = {"AWS_ACCESS_KEY_ID": True, "AWS_SECRET_ACCESS_KEY": True, "AWS_SESSION_TOKEN": False}


@dataclass(frozen=True)
class SessionRef:
    """What the builders need to know about the owner of a sandbox: a CodegenSession, or a pool.

    `sandbox` is the base name of the children when it is not the owner's own name: a pool's sandbox
    (`<pool>-<suffix>`), which keeps its children's names after a session adopts it.
    """

    name: str
    namespace: str
    uid: str
    spec: SessionSpec
    sandbox: str = ""
    kind: str = api.KIND

    @classmethod
    def from_body(cls, body: dict[str, Any], spec: SessionSpec) -> SessionRef:
        meta = body.get("metadata", {})
        return cls(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace") or "default"),
            uid=str(meta.get("uid") or ""),
            spec=spec,
            sandbox=str(
                (meta.get("annotations") or {}).get(pool.ANNOTATION_SANDBOX)
                or (body.get("status") or {}).get("sandboxName")
                or ""
            ),
            kind=str(body.get("kind") or api.KIND),
        )

    @property
    def base(self) -> str:
        """The base of the children's names: `<base>-sandbox`, `<base>-workspace`, `<base>-agent-token`."""
        return self.sandbox or self.name

    @property
    def pooled(self) -> bool:
        return self.kind == pool.POOL_KIND


def owner_reference(session: SessionRef) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": session.kind,
        "name": session.name,
        "uid": session.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_owner_reference(pod: dict[str, Any]) -> dict[str, Any]:
    """An ownerReference to a sandbox Pod: a child handed to its Pod goes when the Pod goes (garbage collection),
    so the operator never needs the right to delete a Secret or a claim."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": pod["metadata"]["name"],
        "uid": pod["metadata"]["uid"],
        "blockOwnerDeletion": False,
    }


def handed_to_pod(obj: dict[str, Any] | None) -> bool:
    """Whether a child is owned by a Pod (see `pod_owner_reference`): it goes when that Pod goes."""
    refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("kind") == "Pod" for r in refs)


def sandbox_labels(session: SessionRef) -> dict[str, str]:
    """Labels of every child: the session's (or, while unclaimed, the pool's, with the template's hash)."""
    if session.pooled:
        owner = {pool.LABEL_POOL: session.name, pool.LABEL_TEMPLATE_HASH: pool.sandbox_hash(session.spec)}
    else:
        owner = {api.LABEL_SESSION: session.name}
    return {api.LABEL_MANAGED_BY: api.MANAGED_BY, pool.LABEL_SANDBOX: session.base, **owner}


def child_metadata(
    session: SessionRef, name: str, *, owned: bool = True, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": session.namespace,
        "labels": {**sandbox_labels(session), **(labels or {})},
    }
    if session.spec.owner:
        meta["annotations"] = {api.ANNOTATION_OWNER: session.spec.owner}
    if owned:
        meta["ownerReferences"] = [owner_reference(session)]
    return meta


# --- Secret ---------------------------------------------------------------------------------------------


def build_token_secret(session: SessionRef, token: str) -> dict[str, Any]:
    """The agent's bearer token. Immutable: a new token means a new session."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": child_metadata(session, api.token_secret_name(session.base)),
        "type": "Opaque",
        "immutable": True,
        "data": {api.TOKEN_SECRET_KEY: base64.b64encode(token.encode()).decode()},
    }


# --- PersistentVolumeClaim ---------------------------------------------------------------------------------


def build_workspace_claim(session: SessionRef, settings: OperatorSettings) -> dict[str, Any]:
    """The workspace volume. A retained one has no ownerReference, so garbage collection never takes it."""
    workspace = session.spec.workspace
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": workspace.size}},
    }
    storage_class = workspace.storage_class_name or settings.storage_class
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": child_metadata(
            session,
            api.workspace_claim_name(session.base),
            owned=not workspace.retain,
            labels={api.LABEL_COMPONENT: "workspace"},
        ),
        "spec": spec,
    }


# --- NetworkPolicy ----------------------------------------------------------------------------------------


def _split_families(cidrs: list[str]) -> tuple[list[str], list[str]]:
    v4 = [c for c in cidrs if ipaddress.ip_network(c, strict=False).version == 4]
    v6 = [c for c in cidrs if ipaddress.ip_network(c, strict=False).version == 6]
    return v4, v6


def _tcp_ports(ports: list[int]) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def _dns_rule(settings: OperatorSettings) -> dict[str, Any]:
    return {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.dns_namespace}},
                "podSelector": {"matchLabels": dict(settings.dns_pod_labels)},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }


def egress_rules(spec: SessionSpec, settings: OperatorSettings) -> list[dict[str, Any]]:
    """Egress per spec.network: nothing, DNS + the package index, or anything but metadata endpoints."""
    rules: list[dict[str, Any]] = []
    mode = spec.network.egress
    if mode == EgressMode.PACKAGES:
        rules.append(_dns_rule(settings))
        if settings.package_index_cidrs:
            rules.append(
                {
                    "to": [{"ipBlock": {"cidr": c}} for c in settings.package_index_cidrs],
                    "ports": _tcp_ports(settings.package_index_ports),
                }
            )
    elif mode == EgressMode.OPEN:
        rules.append(_dns_rule(settings))
        deny4, deny6 = _split_families(settings.egress_deny_cidrs)
        anywhere: list[dict[str, Any]] = []
        for cidr, deny in (("0.0.0.0/0", deny4), ("::/0", deny6)):
            block: dict[str, Any] = {"cidr": cidr}
            if deny:
                block["except"] = deny
            anywhere.append({"ipBlock": block})
        rules.append({"to": anywhere})
    if spec.network.allow_cidrs:
        rule: dict[str, Any] = {"to": [{"ipBlock": {"cidr": c}} for c in spec.network.allow_cidrs]}
        if spec.network.allow_ports:
            rule["ports"] = _tcp_ports(spec.network.allow_ports)
        rules.append(rule)
    return rules


def build_network_policy(session: SessionRef, settings: OperatorSettings) -> dict[str, Any]:
    """Ingress only from coordinator Pods to the agent port; egress per spec.network."""
    peer: dict[str, Any] = {"podSelector": {"matchLabels": dict(settings.coordinator_pod_labels)}}
    if settings.coordinator_namespace:
        peer["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": settings.coordinator_namespace}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(session, api.network_policy_name(session.base)),
        "spec": {
            "podSelector": {"matchLabels": {api.LABEL_MANAGED_BY: api.MANAGED_BY, pool.LABEL_SANDBOX: session.base}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [peer], "ports": _tcp_ports([settings.agent_port])}],
            "egress": egress_rules(session.spec, settings),
        },
    }


# --- Pod ---------------------------------------------------------------------------------------------------


def effective_image(spec: SessionSpec, settings: OperatorSettings) -> str:
    return spec.image or settings.default_image


def effective_resources(spec: SessionSpec, settings: OperatorSettings) -> dict[str, dict[str, str]]:
    """Operator defaults, overridden key by key by spec.resources."""
    requests = {
        "cpu": settings.cpu_request,
        "memory": settings.memory_request,
        "ephemeral-storage": settings.ephemeral_storage_request,
    }
    limits = {
        "cpu": settings.cpu_limit,
        "memory": settings.memory_limit,
        "ephemeral-storage": settings.ephemeral_storage_limit,
    }
    if spec.resources is not None:
        if spec.resources.requests is not None:
            requests.update(spec.resources.requests.items())
        if spec.resources.limits is not None:
            limits.update(spec.resources.limits.items())
    # A request above a (defaulted) limit would be refused by the API server: lift the limit to it.
    for key, request in requests.items():
        if api.parse_quantity(request) > api.parse_quantity(limits[key]):
            limits[key] = request
    return {"requests": requests, "limits": limits}


def run_memory_bytes(memory_limit: str) -> int:
    limit = int(api.parse_quantity(memory_limit))
    headroom = min(AGENT_MEMORY_HEADROOM, limit // 4)
    return max(MIN_RUN_MEMORY, limit - headroom)


def agent_env(session: SessionRef, settings: OperatorSettings, memory_limit: str) -> list[dict[str, Any]]:
    # The root filesystem is read-only: caches and temporary files go to the /tmp emptyDir. The agent's stdout and
    # stderr go to the cluster's log collector: JSON lines, each naming its call and session.
    base = {
        "HOME": api.TMP_MOUNT_PATH,
        "TMPDIR": api.TMP_MOUNT_PATH,
        "PYTHONUNBUFFERED": "1",
        LOG_FORMAT_ENV: "json",
    }
    agent = agent_settings(session, settings, memory_limit).to_env()
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in {**base, **agent}.items()]
    env.append(
        {
            "name": AgentSettings.env_name("token"),
            "valueFrom": {"secretKeyRef": {"name": api.token_secret_name(session.base), "key": api.TOKEN_SECRET_KEY}},
        }
    )
    env += s3_credentials_env(settings)
    return env


def agent_settings(session: SessionRef, settings: OperatorSettings, memory_limit: str) -> AgentSettings:
    """The sandbox agent's settings, but its token (read from the session's Secret, never put in the Pod spec)."""
    spec = session.spec
    no_egress = spec.network.egress == EgressMode.NONE
    optional: dict[str, Any] = {}
    if no_egress and not spec.network.allow_cidrs:
        # Nothing leaves the Pod, so pip cannot reach an index either: pkg.install refuses at once (or uses local
        # wheel folders) rather than retrying. allowCIDRs may hold a private index: then pip still tries.
        optional["pip_network"] = False
    if spec.env:
        # spec.env is for the code the agent runs (which gets a clean environment), not for the agent itself.
        optional["run_env"] = {e.name: e.value for e in spec.env}
    if spec.packages:
        optional["packages"] = " ".join(spec.packages)
    return AgentSettings(
        workspace=Path(api.WORKSPACE_MOUNT_PATH),
        host="0.0.0.0",  # noqa: S104 - the NetworkPolicy admits only the coordinator
        port=settings.agent_port,
        # The Pod is the sandbox (non-root, no capabilities, seccomp, NetworkPolicy): no nested jail.
        sandbox="none",
        network=not no_egress,
        memory_bytes=run_memory_bytes(memory_limit),
        max_processes=settings.max_processes,
        pip_index_url=settings.pip_index_url,  # None: unset, pip's default index
        **optional,
        **artifact_store_settings(session, settings),
    )


def artifact_store_namespace(session: SessionRef) -> str:
    """`<namespace>.<session>`: uploads of different sessions never share keys and say whose they are.

    Both parts are DNS labels (no dots), so the dot separates them unambiguously; the agent allows no `/`
    in a store namespace (one key component), and 63 + 1 + 63 characters fit its limit of 128.
    """
    return f"{session.namespace}.{session.base}"


def artifact_store_settings(session: SessionRef, settings: OperatorSettings) -> dict[str, Any]:
    """The agent's artifact.upload store, as `AgentSettings` fields; unset optional values stay the agent's."""
    store: dict[str, Any] = {
        "artifact_store": settings.artifact_store,
        "artifact_store_namespace": artifact_store_namespace(session),
    }
    if settings.artifact_store == "local":
        return {**store, "artifact_store_dir": Path(LOCAL_ARTIFACT_STORE_DIR)}
    optional = {
        "s3_endpoint_url": settings.s3_endpoint_url,
        "s3_region": settings.s3_region,
        "s3_prefix": settings.s3_prefix,
    }
    return {
        **store,
        "s3_bucket": settings.s3_bucket,
        "s3_addressing_style": settings.s3_addressing_style,
        **{k: v for k, v in optional.items() if v is not None},
    }


def s3_credentials_env(settings: OperatorSettings) -> list[dict[str, Any]]:
    """AWS credentials from the named Secret; none without one (boto3 then uses the Pod's web identity)."""
    if settings.artifact_store != "s3" or not settings.s3_credentials_secret:
        return []
    return [
        {
            "name": key,
            "valueFrom": {
                "secretKeyRef": {"name": settings.s3_credentials_secret, "key": key}
                | ({} if required else {"optional": True})
            },
        }
        for key, required in S3_CREDENTIAL_KEYS.items()
    ]


def container_security_context(settings: OperatorSettings) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": settings.sandbox_uid,
        "runAsGroup": settings.sandbox_gid,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def build_sandbox_pod(session: SessionRef, settings: OperatorSettings) -> dict[str, Any]:
    spec = session.spec
    resources = effective_resources(spec, settings)
    probe_action = {"httpGet": {"path": api.AGENT_HEALTH_PATH, "port": api.AGENT_PORT_NAME}}
    container: dict[str, Any] = {
        "name": api.AGENT_CONTAINER_NAME,
        "image": effective_image(spec, settings),
        "imagePullPolicy": (spec.image_pull_policy or settings.image_pull_policy).value,
        "command": ["codegen-mcp", "agent"],
        "ports": [{"name": api.AGENT_PORT_NAME, "containerPort": settings.agent_port, "protocol": "TCP"}],
        "env": agent_env(session, settings, resources["limits"]["memory"]),
        "resources": resources,
        "securityContext": container_security_context(settings),
        "readinessProbe": {**probe_action, "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 3},
        # Generous: a busy agent answers /healthz from its event loop; only a wedged one is restarted.
        "livenessProbe": {
            **probe_action,
            "initialDelaySeconds": 30,
            "periodSeconds": 15,
            "timeoutSeconds": 5,
            "failureThreshold": 4,
        },
        "volumeMounts": [
            {"name": "workspace", "mountPath": api.WORKSPACE_MOUNT_PATH},
            {"name": "tmp", "mountPath": api.TMP_MOUNT_PATH},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        # The operator, not the kubelet, replaces a failed sandbox: it counts restarts and keeps the PVC.
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "shareProcessNamespace": False,
        "terminationGracePeriodSeconds": 10,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.sandbox_uid,
            "runAsGroup": settings.sandbox_gid,
            "fsGroup": settings.sandbox_gid,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "workspace", "persistentVolumeClaim": {"claimName": api.workspace_claim_name(session.base)}},
            {"name": "tmp", "emptyDir": {"sizeLimit": settings.tmp_size_limit}},
        ],
    }
    runtime_class = spec.runtime_class_name or settings.runtime_class_name
    if runtime_class:
        pod_spec["runtimeClassName"] = runtime_class
    if settings.service_account_name:
        pod_spec["serviceAccountName"] = settings.service_account_name
    if settings.node_selector:
        pod_spec["nodeSelector"] = dict(settings.node_selector)
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": child_metadata(
            session,
            api.sandbox_pod_name(session.base),
            labels={api.LABEL_NAME: api.SANDBOX_APP_NAME, api.LABEL_COMPONENT: "sandbox"},
        ),
        "spec": pod_spec,
    }


def build_children(session: SessionRef, settings: OperatorSettings, token: str) -> list[dict[str, Any]]:
    """Every child, in creation order: the Pod last, once what it mounts and references exists."""
    return [
        build_token_secret(session, token),
        build_workspace_claim(session, settings),
        build_network_policy(session, settings),
        build_sandbox_pod(session, settings),
    ]


def endpoint_for(pod_ip: str, port: int) -> str:
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    return f"http://{host}:{port}"
