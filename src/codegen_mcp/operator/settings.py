"""Operator settings, from `CODEGEN_OPERATOR_*` environment variables (the Helm chart sets them) or flags.

Lists are comma-separated (`a,b`), maps are `key=value` pairs separated by commas (`k=v,k2=v2`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from codegen_mcp import __version__
from codegen_mcp.api.agent_settings import ArtifactStoreKind, S3AddressingStyle
from codegen_mcp.api.session import DNS_SUBDOMAIN_PATTERN, LABEL_COMPONENT, LABEL_NAME, PullPolicy, Quantity

DEFAULT_IMAGE = f"ghcr.io/codegen-mcp/sandbox:{__version__}"
# pypi.org and files.pythonhosted.org are served from Fastly's anycast ranges. Fastly serves other
# sites from them too: for strict control run an index mirror and point these (and pip_index_url) at it.
PYPI_CIDRS = ["151.101.0.0/16", "146.75.0.0/16", "2a04:4e42::/32"]
CLOUD_METADATA_CIDRS = ["169.254.169.254/32", "fd00:ec2::254/128"]


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _split_map(value: Any) -> Any:
    if isinstance(value, str):
        pairs: dict[str, str] = {}
        for item in value.split(","):
            if not item.strip():
                continue
            key, sep, val = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{item.strip()!r} is not key=value")
            pairs[key.strip()] = val.strip()
        return pairs
    return value


StrList = Annotated[list[str], NoDecode]
IntList = Annotated[list[int], NoDecode]
StrMap = Annotated[dict[str, str], NoDecode]


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CODEGEN_OPERATOR_", extra="ignore")

    # --- what to watch, how to reach the API, how replicas cooperate ---
    namespaces: StrList = Field(
        default_factory=list, description="Namespaces whose sessions this operator reconciles; empty: all namespaces."
    )
    kubeconfig: Path | None = Field(
        None, description="kubeconfig file to use outside a cluster; default: in-cluster, then ~/.kube/config."
    )
    peering_name: str = Field(
        "codegen-mcp", description="kopf peering object: replicas sharing it elect one active operator."
    )
    standalone: bool | None = Field(
        None,
        description=(
            "Run without peering (one replica). Unset: peer when kopf's peering CRDs are installed, else run "
            "standalone and say so. false: peering is required, and the operator stops if its CRDs are missing."
        ),
    )
    priority: int = Field(0, description="Peering priority; the highest-priority replica is the active one.")
    liveness_endpoint: str | None = Field(
        "http://0.0.0.0:8081/healthz", description="Where kopf serves its liveness probe; empty: no endpoint."
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Port of the operator's Prometheus /metrics (all interfaces); 0: none."
    )
    post_events: bool = Field(True, description="Post Kubernetes Events on each session for each step.")
    request_timeout_seconds: float = Field(30.0, gt=0, description="Deadline of each API request the operator makes.")

    # --- the sandbox Pod ---
    default_image: str = Field(DEFAULT_IMAGE, description="Sandbox image when spec.image is not set.")
    image_pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT
    image_pull_secrets: StrList = Field(default_factory=list, description="Secrets to pull the sandbox image.")
    runtime_class_name: str | None = Field(None, description="RuntimeClass when spec.runtimeClassName is not set.")
    service_account_name: str | None = Field(
        None, description="ServiceAccount of sandbox Pods (its token is never mounted); default: the namespace's."
    )
    node_selector: StrMap = Field(default_factory=dict, description="nodeSelector of sandbox Pods, e.g. pool=sandbox.")
    cpu_request: Quantity = "250m"
    memory_request: Quantity = "512Mi"
    ephemeral_storage_request: Quantity = "256Mi"
    cpu_limit: Quantity = "2"
    memory_limit: Quantity = "2Gi"
    ephemeral_storage_limit: Quantity = "2Gi"
    tmp_size_limit: Quantity = Field("1Gi", description="Size limit of the Pod's /tmp (an emptyDir).")
    agent_port: int = Field(8080, ge=1, le=65535, description="Port of the sandbox agent in the Pod.")
    sandbox_uid: int = Field(10001, ge=1, description="Non-root uid the sandbox runs as.")
    sandbox_gid: int = Field(10001, ge=1, description="gid of the sandbox, also its fsGroup (owns the workspace).")
    max_processes: int = Field(256, ge=1, description="Processes a run.python call may start (agent setting).")
    pip_index_url: str | None = Field(None, description="Package index the agent's pip uses (e.g. a mirror).")
    max_pod_restarts: int = Field(
        5, ge=0, description="Times a failed sandbox Pod is recreated before the session is marked Failed."
    )
    restart_backoff_seconds: float = Field(
        2.0, ge=0, description="Wait before recreating a failed sandbox Pod; doubles with each restart."
    )
    restart_backoff_max_seconds: float = Field(60.0, ge=0, description="The longest wait between two restarts.")
    schedule_timeout_seconds: float = Field(
        300.0,
        gt=0,
        description=(
            "How long a sandbox Pod may stay Unschedulable (a claim still binding, resources that may free up, "
            "a node being added) before the session is Failed."
        ),
    )

    # --- the workspace ---
    storage_class: str | None = Field(None, description="StorageClass when spec.workspace.storageClassName is unset.")

    # --- the NetworkPolicy ---
    coordinator_pod_labels: StrMap = Field(
        default_factory=lambda: {LABEL_NAME: "codegen-mcp", LABEL_COMPONENT: "coordinator"},
        description="Labels of the coordinator Pods: the only ones allowed to reach a sandbox.",
    )
    coordinator_namespace: str | None = Field(
        None, description="Namespace of the coordinator; empty: the session's own namespace."
    )
    dns_namespace: str = Field("kube-system", description="Namespace of the cluster DNS Pods.")
    dns_pod_labels: StrMap = Field(default_factory=lambda: {"k8s-app": "kube-dns"})
    package_index_cidrs: StrList = Field(
        default_factory=lambda: list(PYPI_CIDRS), description="Where `egress: packages` may connect."
    )
    package_index_ports: IntList = Field(default_factory=lambda: [443])
    egress_deny_cidrs: StrList = Field(
        default_factory=lambda: list(CLOUD_METADATA_CIDRS),
        description="Never reachable, even with `egress: open` (cloud metadata endpoints).",
    )

    # --- artifact.upload's durable store (passed to each agent as its `AgentSettings`, see builders) ---
    artifact_store: ArtifactStoreKind = Field(
        "local",
        description="local: a folder on the session's workspace volume (gone with the volume); "
        "s3: an S3-compatible bucket (what clusters need for uploads to outlive the session).",
    )
    s3_bucket: str | None = Field(None, description="Bucket of the s3 store; required with artifact_store=s3.")
    s3_endpoint_url: str | None = Field(None, description="For S3-compatible stores (MinIO, Ceph…); default AWS.")
    s3_region: str | None = Field(None, description="Region of the bucket; default: the agent's (us-east-1).")
    s3_prefix: str | None = Field(None, description="Key prefix of every upload; default: the agent's (codegen-mcp/).")
    s3_addressing_style: S3AddressingStyle = "auto"
    s3_credentials_secret: str | None = Field(
        None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Secret in each session's namespace with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and "
        "optionally AWS_SESSION_TOKEN; empty: the sandbox ServiceAccount's workload identity (IRSA…).",
    )

    # --- lifetime ---
    default_ttl_seconds: int | None = Field(None, ge=1, description="TTL when spec.ttlSeconds is unset.")
    default_idle_timeout_seconds: int | None = Field(
        None, ge=1, description="Idle timeout when spec.idleTimeoutSeconds is unset."
    )
    default_suspend_after_seconds: int | None = Field(
        None,
        ge=1,
        description="Idle time after which a session is suspended when spec.suspendAfterSeconds is unset; "
        "empty: sessions without it are never suspended for being idle.",
    )
    expiry_check_seconds: float = Field(
        10.0, gt=0, description="How often expiry and idle suspension are checked; both happen at most this late."
    )

    _split_lists = field_validator(
        "namespaces",
        "image_pull_secrets",
        "package_index_cidrs",
        "package_index_ports",
        "egress_deny_cidrs",
        mode="before",
    )(_split_list)
    _split_maps = field_validator("coordinator_pod_labels", "dns_pod_labels", "node_selector", mode="before")(
        _split_map
    )

    @field_validator(
        "liveness_endpoint",
        "runtime_class_name",
        "storage_class",
        "coordinator_namespace",
        "s3_bucket",
        "s3_endpoint_url",
        "s3_region",
        "s3_credentials_secret",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _artifact_store_is_complete(self) -> OperatorSettings:
        # Checked here, once at start, rather than by every sandbox agent (each Pod would fail to start).
        if self.artifact_store == "s3" and not self.s3_bucket:
            raise ValueError("artifact_store=s3 needs s3_bucket (CODEGEN_OPERATOR_S3_BUCKET)")
        return self
