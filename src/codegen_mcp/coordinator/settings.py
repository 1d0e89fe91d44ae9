"""Coordinator settings, from `CODEGEN_*` environment variables and `codegen-mcp serve` flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class LocalBackendSettings(BaseSettings):
    """How the local backend starts sandbox agents as processes on this machine."""

    model_config = SettingsConfigDict(env_prefix="CODEGEN_LOCAL_", extra="ignore")

    sandbox: Literal["auto", "bwrap", "none"] = Field(
        "auto", description="How agents confine the code they run: bubblewrap namespaces, or rlimits only."
    )
    network: bool = Field(False, description="Let code run in sandboxes reach the network (pkg.install always can).")
    sandbox_uid_base: int = Field(
        61000,
        ge=1000,
        description="When running as root, session N runs code as uid base+N (limits need a non-root uid).",
    )
    sandbox_uid_slots: int = Field(2000, ge=1)
    agent_start_timeout_s: float = Field(30.0, gt=0)
    retain_workspaces: bool = Field(False, description="Keep a session's workspace folder after the session ends.")
    python: str | None = Field(None, description="Base interpreter for session venvs (default: a system python3).")
    memory_bytes: int | None = None
    max_processes: int | None = None
    output_cap_bytes: int | None = None


class CoordinatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CODEGEN_", extra="ignore")

    backend: Literal["local", "kubernetes"] = "local"
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    transport: Literal["http", "stdio"] = "http"
    state_dir: Path = Field(Path(".codegen-mcp"), description="Where the local backend keeps workspaces and logs.")
    audit_log: Path | None = Field(None, description="JSON-lines audit log; default <state_dir>/audit.jsonl.")

    session_idle_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="A session with no tool call for this long is closed and its sandbox stopped.",
    )
    max_sessions: int = Field(100, ge=1)
    request_timeout_s: float = Field(30.0, gt=0, description="Deadline of one request to an agent (beyond wait_s).")
    progress_interval_s: float = Field(1.0, gt=0, description="How often long calls report MCP progress.")

    # HTTP transport security: Host/Origin validation against DNS rebinding (both transports).
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Extra Host header values accepted (e.g. 'mcp.example.svc:8765'); loopback is always allowed.",
    )
    allowed_origins: list[str] = Field(default_factory=list)
    auth_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="If set, HTTP clients must send `Authorization: Bearer <one of these>`.",
    )

    local: LocalBackendSettings = Field(default_factory=LocalBackendSettings)

    @property
    def audit_path(self) -> Path:
        return self.audit_log or self.state_dir / "audit.jsonl"
