"""Coordinator settings, from `CODEGEN_*` environment variables and `codegen-mcp serve` flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from codegen_mcp.api.agent_settings import SandboxMode

# An agent is on this host or in this cluster: a connect normally takes well under a millisecond. A peer that
# has gone (a replaced Pod's IP) may drop the SYN instead of refusing it, and then only this deadline ends the
# wait before the reconnect. 2 s still allows one SYN resend (Linux resends after 1 s), so one lost packet on
# a busy node is not taken for a dead endpoint (which would cost a needless reconnect, not an error).
DEFAULT_AGENT_CONNECT_TIMEOUT_S = 2.0


class LocalBackendSettings(BaseSettings):
    """How the local backend starts sandbox agents as processes on this machine."""

    model_config = SettingsConfigDict(env_prefix="CODEGEN_LOCAL_", extra="ignore")

    sandbox: SandboxMode = Field(
        "auto", description="How agents confine the code they run: bubblewrap namespaces, or rlimits only."
    )
    network: bool = Field(False, description="Let code run in sandboxes reach the network (pkg.install always can).")
    sandbox_uid_base: int = Field(
        61000,
        ge=1000,
        description="When running as root, each sandbox runs code as a uid of its own from base to base+slots-1 "
        "(limits need a non-root uid).",
    )
    sandbox_uid_slots: int = Field(2000, ge=1)
    uid_registry_dir: Path = Field(
        Path("/var/lib/codegen-mcp/uids"),
        description="When running as root: which uid belongs to which workspace, shared by every coordinator on "
        "this host so none hands out another's uid; named workspaces keep theirs across restarts.",
    )
    agent_start_timeout_s: float = Field(30.0, gt=0)
    warm_pool: int = Field(
        2,
        ge=0,
        description="Sandboxes kept started ahead (agent up, empty workspace, own uid) for new sessions to claim "
        "without waiting; they count against max_sessions and give way to real sessions at the cap. 0: none.",
    )
    zygote: bool = Field(
        True,
        description="Fork agents from one process that imported the agent once (milliseconds and shared code "
        "pages per agent) instead of starting an interpreter each; false: start each agent directly.",
    )
    retain_workspaces: bool = Field(False, description="Keep a session's workspace folder after the session ends.")
    python: str | None = Field(None, description="Base interpreter for session venvs (default: a system python3).")
    memory_bytes: int | None = None
    max_processes: int | None = None
    output_cap_bytes: int | None = None
    session_memory_bytes: int | None = Field(
        3 * 1024**3,
        ge=64 * 1024**2,
        description="Memory cap of a whole session (its agent and every process it runs, tmpfs pages included), "
        "enforced by a cgroup v1 memory controller where there is one; None: no per-session cap.",
    )
    session_max_processes: int | None = Field(
        512,
        ge=16,
        description="Tasks (processes and threads) of a whole session, agent included: the cgroup's pids.max.",
    )
    disk_quota_bytes: int | None = Field(
        2 * 1024**3,
        ge=64 * 1024**2,
        description="Disk of a whole session, its workspace (venv included) and the jail's /tmp together: a "
        "size-limited ext4 image loop-mounted per session (root only); writes past it fail with ENOSPC. None: none.",
    )
    cgroup_root: Path = Field(Path("/sys/fs/cgroup"), description="Where the cgroup v1 hierarchies are mounted.")
    cgroup_parent: str = Field(
        "codegen-mcp",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Per-session groups live in <cgroup_root>/<controller>/<cgroup_parent>/<state-hash>/<session>.",
    )


def _split_list(value: Any) -> Any:
    if isinstance(value, str) and not value.lstrip().startswith("["):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class KubernetesBackendSettings(BaseSettings):
    """The kubernetes backend: the session template and how the coordinator talks to the cluster."""

    model_config = SettingsConfigDict(env_prefix="CODEGEN_K8S_", extra="ignore")

    namespace: str | None = Field(
        None, description="Namespace for sessions; default: the coordinator's own, or default."
    )
    kubeconfig: Path | None = Field(
        None, description="kubeconfig outside a cluster; default: in-cluster, then ~/.kube."
    )
    context: str | None = None
    ready_timeout_s: float = Field(180.0, gt=0, description="How long a new session may take to become Ready.")
    activity_interval_s: float = Field(30.0, gt=0, description="status.lastActivityAt is written at most this often.")
    retain_sessions: bool = Field(False, description="Keep the CodegenSession when its MCP session ends.")

    # The session template: every CodegenSession the coordinator creates gets these spec fields.
    image: str | None = Field(None, description="Sandbox image; default: the operator's.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    runtime_class_name: str | None = Field(None, description="e.g. gvisor or kata for stronger isolation.")
    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    workspace_size: str = "1Gi"
    storage_class: str | None = None
    retain_workspace: bool = Field(False, description="Keep the workspace PVC after the session is deleted.")
    network_egress: Literal["none", "packages", "open"] = Field(
        "packages", description="none: no egress; packages: DNS + the package index (pkg.install works); open: all."
    )
    ttl_seconds: int | None = Field(86400, ge=1, description="Absolute lifetime of a session.")
    idle_timeout_seconds: int | None = Field(3600, ge=1, description="A session idle this long is deleted.")
    packages: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Installed at session start.")
    pool: str | None = Field(
        None, description="CodegenSandboxPool whose ready sandboxes new sessions adopt (spec.poolRef); default: none."
    )

    _split = field_validator("packages", mode="before")(_split_list)


class CoordinatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CODEGEN_", extra="ignore")

    backend: Literal["local", "kubernetes"] = "local"
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    transport: Literal["http", "stdio"] = "http"
    state_dir: Path = Field(Path(".codegen-mcp"), description="Where the local backend keeps workspaces and logs.")
    # The audit trail (README: Audit trail): one event per tool call, to one sink.
    audit_sink: Literal["file", "stdout", "postgres"] = Field(
        "file",
        description="file: JSON lines in audit_log; stdout: JSON lines on standard output (a cluster's log "
        "collector); postgres: rows in the PostgreSQL of audit_postgres_dsn (durable, shared by replicas).",
    )
    audit_log: Path | None = Field(None, description="The file sink's JSON lines; default <state_dir>/audit.jsonl.")
    audit_postgres_dsn: SecretStr | None = Field(
        None, description="The PostgreSQL of audit_sink=postgres, e.g. postgresql://audit@db:5432/codegen."
    )
    audit_buffer_events: int = Field(
        10_000, ge=1, description="Audit events buffered while the sink is slow or down; more are dropped (counted)."
    )

    session_idle_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="A session with no tool call for this long is closed and its sandbox stopped.",
    )
    suspend_after_s: float = Field(
        300.0,
        ge=0,
        description="A session with no tool call for this long is suspended (local: its processes stop; kubernetes: "
        "spec.suspend, its Pod stops), "
        "its workspace stays, and its next call resumes it. 0, or not below the idle timeout: never.",
    )
    max_sessions: int = Field(
        100, ge=1, description="Sandboxes served at once; only a session with a running (not suspended) sandbox counts."
    )
    handshake_idle_timeout_s: float = Field(
        300.0,
        gt=0,
        description="An MCP session that has no sandbox yet (no tool call got one) is ended after this long idle.",
    )
    max_handshakes_per_client: int = Field(
        16,
        ge=1,
        description="MCP sessions without a sandbox one client (address + bearer token) may hold; more end the oldest.",
    )
    max_handshakes: int = Field(
        1000, ge=1, description="MCP sessions without a sandbox the whole server holds; more end the oldest."
    )
    request_timeout_s: float = Field(30.0, gt=0, description="Deadline of one request to an agent (beyond wait_s).")
    agent_connect_timeout_s: float = Field(
        DEFAULT_AGENT_CONNECT_TIMEOUT_S,
        gt=0,
        description="Deadline to connect to an agent: a gone sandbox (replaced Pod) is reconnected after this.",
    )
    progress_interval_s: float = Field(1.0, gt=0, description="How often long calls report MCP progress.")

    # Resumable streams (streamable HTTP): what a POST SSE stream sent is kept, so a client that lost the
    # connection resumes it with `Last-Event-ID` (see coordinator/event_store.py).
    event_store: Literal["memory", "redis"] = Field(
        "memory", description="Where sent events are kept: this process's memory, or Redis (shared by replicas)."
    )
    redis_url: SecretStr | None = Field(None, description="The Redis of event_store=redis, e.g. redis://host:6379/0.")
    stream_retry_ms: int = Field(
        1000, ge=1, description="The SSE `retry` sent to clients: how long to wait before reconnecting a stream."
    )
    event_store_max_events_per_stream: int = Field(
        1000, ge=2, description="Events kept per stream (a call's progress notices and result); the oldest go first."
    )
    event_store_max_bytes: int = Field(
        64 * 1024**2, ge=1024**2, description="Memory store: bytes of messages kept in all; the oldest go first."
    )
    event_store_ttl_s: float = Field(3600.0, gt=0, description="An event older than this is no longer replayed.")
    conformance_tools: bool = Field(
        False, description="Also serve `test_reconnection`, which the MCP conformance suite calls (for its tests)."
    )
    shared_sessions: bool = Field(
        False,
        description="Replicas: keep each MCP session where every coordinator on this backend reads it (local: the "
        "state folder; kubernetes: Redis at redis_url and the CodegenSession), so any of them serves any session, "
        "and a coordinator that stops leaves its sessions' sandboxes running for the others.",
    )

    # HTTP transport security: Host/Origin validation against DNS rebinding (both transports).
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra Host header values accepted (e.g. 'mcp.example.svc:8765'); loopback is always allowed.",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    _split = field_validator("allowed_hosts", "allowed_origins", "auth_tokens", mode="before")(_split_list)
    auth_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="If set, HTTP clients must send `Authorization: Bearer <one of these>`.",
    )

    local: LocalBackendSettings = Field(default_factory=LocalBackendSettings)
    kubernetes: KubernetesBackendSettings = Field(default_factory=KubernetesBackendSettings)

    @model_validator(mode="after")
    def _redis_needs_url(self) -> CoordinatorSettings:
        if self.event_store == "redis" and self.redis_url is None:
            raise ValueError("event_store redis needs redis_url (CODEGEN_REDIS_URL or --redis-url)")
        if self.shared_sessions and self.backend == "kubernetes" and self.redis_url is None:
            raise ValueError(
                "shared_sessions on the kubernetes backend keeps MCP sessions in Redis: set redis_url "
                "(CODEGEN_REDIS_URL or --redis-url)"
            )
        return self

    @model_validator(mode="after")
    def _audit_sink_fits(self) -> CoordinatorSettings:
        if self.audit_sink == "postgres" and not (
            self.audit_postgres_dsn and self.audit_postgres_dsn.get_secret_value()
        ):
            raise ValueError(
                "audit_sink postgres needs audit_postgres_dsn (CODEGEN_AUDIT_POSTGRES_DSN or --audit-postgres-dsn)"
            )
        if self.audit_sink == "stdout" and self.transport == "stdio":
            raise ValueError("audit_sink stdout cannot share standard output with the stdio transport; use file")
        return self

    @property
    def audit_path(self) -> Path:
        return self.audit_log or self.state_dir / "audit.jsonl"
