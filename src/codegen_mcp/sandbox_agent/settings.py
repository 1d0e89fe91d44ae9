"""Settings of one sandbox agent, from `CODEGEN_AGENT_*` environment variables or flags.

The same variables configure the agent in a Kubernetes Pod (set by the operator) and as a local process
(set by the coordinator's local backend).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

GiB = 1024**3
MiB = 1024**2


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CODEGEN_AGENT_", extra="ignore")

    workspace: Path = Field(description="The one folder this agent owns; every path resolves inside it.")
    venv_dir: Path | None = Field(None, description="The session's virtualenv; default <workspace>/.venv.")
    state_dir: Path | None = Field(
        None, description="Agent bookkeeping (artifact index); default <workspace>/.codegen."
    )

    token: SecretStr | None = Field(None, description="Bearer token every /v1 request must carry.")
    token_file: Path | None = Field(None, description="Read the token from this file instead (e.g. a mounted Secret).")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535, description="TCP port; 0 picks a free one (printed at start).")
    unix_socket: Path | None = Field(None, description="Listen on this Unix socket instead of TCP.")

    # How code the agent runs (run.python, and later test.run/lint.check) is confined.
    sandbox: Literal["auto", "bwrap", "none"] = Field(
        "auto", description="bwrap: namespaces via bubblewrap; none: rlimits only; auto: bwrap when it works here."
    )
    sandbox_uid: int | None = Field(
        None, description="When the agent runs as root, run code as this uid (default 65534) so limits apply."
    )
    sandbox_gid: int | None = None
    network: bool = Field(
        False, description="Let run code reach the network (bwrap mode only; pods use NetworkPolicy)."
    )
    hide_paths: list[Path] = Field(
        default_factory=list, description="Host folders hidden from run code (e.g. other sessions' state)."
    )

    python: str | None = Field(None, description="Base interpreter for the session venv; default: a system python3.")

    # Defaults of DESIGN.md §2; the per-call timeout can only be lower than max_timeout_s.
    memory_bytes: int = Field(1 * GiB, ge=16 * MiB)
    max_processes: int = Field(256, ge=1)
    max_file_bytes: int = Field(1 * GiB, ge=1)
    max_open_files: int = Field(1024, ge=16)
    output_cap_bytes: int = Field(1 * MiB, ge=1024)
    max_timeout_s: float = Field(3600.0, gt=0)
    task_retention: int = Field(256, ge=1, description="How many finished tasks are remembered.")
    pip_index_url: str | None = None
    packages: str | None = Field(
        None, description="Requirements installed into the session venv when the agent starts (spec.packages)."
    )
    run_env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment variables for run code, as JSON (spec.env); the agent's own never leak.",
    )

    def token_value(self) -> str | None:
        if self.token is not None:
            return self.token.get_secret_value()
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return None

    @property
    def venv_path(self) -> Path:
        return self.venv_dir or self.workspace / ".venv"

    @property
    def state_path(self) -> Path:
        return self.state_dir or self.workspace / ".codegen"
