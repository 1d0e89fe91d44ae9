"""Settings of one sandbox agent, from `CODEGEN_AGENT_*` environment variables or flags.

The same variables configure the agent in a Kubernetes Pod (set by the operator) and as a local process
(set by the coordinator's local backend).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
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
    tmp_dir: Path | None = Field(
        None,
        description="A folder bound as /tmp in the jail (the local backend's per-session disk, so /tmp counts "
        "against the session's disk quota); default: a fresh tmpfs per run.",
    )
    hide_paths: list[Path] = Field(
        default_factory=list, description="Host folders hidden from run code (e.g. other sessions' state)."
    )

    python: str | None = Field(None, description="Base interpreter for the session venv; default: a system python3.")
    termination_log: Path | None = Field(
        Path("/dev/termination-log"),
        description="A fatal start-up error is also written here when the file exists (Kubernetes' default "
        "terminationMessagePath, which the Pod's status shows).",
    )

    # Defaults of DESIGN.md §2; the per-call timeout can only be lower than max_timeout_s.
    memory_bytes: int = Field(1 * GiB, ge=16 * MiB)
    install_memory_bytes: int = Field(
        2 * GiB,
        ge=64 * MiB,
        description="Address-space limit of pkg.install (pip and sdist builds, jailed like run code); "
        "never below memory_bytes.",
    )
    max_processes: int = Field(256, ge=1)
    max_file_bytes: int = Field(1 * GiB, ge=1)
    max_open_files: int = Field(1024, ge=16)
    output_cap_bytes: int = Field(1 * MiB, ge=1024)
    max_timeout_s: float = Field(3600.0, gt=0)
    task_retention: int = Field(256, ge=1, description="How many finished tasks are remembered.")
    pip_index_url: str | None = None
    pip_network: bool = Field(
        True,
        description="pkg.install's pip can reach the package index (false where the sandbox has no egress at all); "
        "without it pkg.install uses only local wheel folders (PIP_FIND_LINKS), or refuses at once.",
    )
    packages: str | None = Field(
        None, description="Requirements installed into the session venv when the agent starts (spec.packages)."
    )
    run_env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment variables for run code, as JSON (spec.env); the agent's own never leak.",
    )

    # test.run / lint.check: pytest, ruff and mypy are installed into the session venv on first use, from
    # wheels (never by running pip inside the venv): read-only folders first, then a shared writable cache
    # filled from the agent's own installed copies or, if allowed, the package index.
    devtools_wheelhouse: Path | None = Field(
        None,
        description="Writable wheel cache shared by this machine's agents; default "
        "$XDG_CACHE_HOME/codegen-mcp/wheelhouse (or ~/.cache/…, else <state_dir>/wheelhouse).",
    )
    devtools_find_links: list[Path] = Field(
        default_factory=list, description="Read-only folders of wheels searched first (e.g. baked into an image)."
    )
    devtools_download: bool = Field(True, description="Fetch missing tool wheels from the package index.")
    devtools_seed_from_agent: bool = Field(
        True, description="Reuse the agent's own installed pytest/ruff/mypy (repacked as wheels) when compatible."
    )
    pytest_requirement: str = "pytest>=7"
    ruff_requirement: str = "ruff>=0.5"
    mypy_requirement: str = "mypy>=1.11"

    # git.clone / git.commit
    git_author_name: str = Field("CodeGen-MCP", min_length=1, description="git.commit author when none is given.")
    git_author_email: str = Field("codegen-mcp@localhost", min_length=3)
    git_extra_ca_bundle: Path | None = Field(
        None,
        description="PEM CA certificates git.clone trusts in addition to the system's (a private git host, tests); "
        "TLS is always verified.",
    )

    # artifact.upload: where artifacts are copied to outlive the session.
    artifact_store: Literal["local", "s3"] = Field("local", description="local: a folder; s3: an S3-compatible bucket.")
    artifact_store_dir: Path | None = Field(
        None,
        description="The local store's folder (outside the workspace); default "
        "$XDG_DATA_HOME/codegen-mcp/artifacts (or ~/.local/share/…).",
    )
    artifact_store_namespace: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="Folder for this sandbox's uploads in the store (e.g. the session name).",
    )
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = Field(None, description="For S3-compatible stores (MinIO, Ceph…); default AWS.")
    s3_region: str | None = Field(None, description="Default: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1.")
    s3_prefix: str = Field("codegen-mcp/", description="Key prefix of every upload.")
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    upload_max_bytes: int = Field(5 * GiB, ge=1, description="Largest file artifact.upload copies.")

    @model_validator(mode="after")
    def _store_is_complete(self) -> AgentSettings:
        if self.artifact_store == "s3" and not self.s3_bucket:
            raise ValueError("artifact_store=s3 needs s3_bucket (CODEGEN_AGENT_S3_BUCKET)")
        return self

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
