"""The sandbox agent's settings: one typed model, read by the agent and written by those that start it.

The agent reads them from its `CODEGEN_AGENT_*` environment (and flags); the operator (a sandbox Pod's env)
and the coordinator's local backend (an agent process's env) build an `AgentSettings` and render it with
`to_env`, so every variable is named, typed and encoded in this one place. Every `CODEGEN_AGENT_*` name is a
field: `from_environ` refuses any other, so a misspelt variable stops the agent instead of being ignored.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, to_jsonable_python
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from codegen_mcp.api.errors import validation_sentence

GiB = 1024**3
MiB = 1024**2
ENV_PREFIX = "CODEGEN_AGENT_"

# Option types that the operator and the coordinator's own settings pass on to agents.
SandboxMode = Literal["auto", "bwrap", "none"]
ArtifactStoreKind = Literal["local", "s3"]
S3AddressingStyle = Literal["auto", "path", "virtual"]


class AgentSettingsError(Exception):
    """`CODEGEN_AGENT_*` variables the agent refuses (an unknown name, a bad value), in one sentence naming them.

    Not a ValueError: pydantic-settings would wrap one raised while decoding a variable into its own message.
    """


class AgentSettings(BaseSettings):
    # Built from its arguments alone: only `from_environ` reads variables, and always a mapping it is given.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

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
    sandbox: SandboxMode = Field(
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

    # test.run / lint.check: pytest, ruff and mypy are installed into the session venv on first use by the jailed
    # pip of pkg.install, from wheel folders: read-only ones first, then a shared writable cache filled, if
    # allowed, from the package index.
    devtools_wheelhouse: Path | None = Field(
        None,
        description="Writable wheel cache shared by this machine's agents; default "
        "$XDG_CACHE_HOME/codegen-mcp/wheelhouse (or ~/.cache/…, else <state_dir>/wheelhouse).",
    )
    devtools_find_links: list[Path] = Field(
        default_factory=list, description="Read-only folders of wheels searched first (e.g. baked into an image)."
    )
    devtools_download: bool = Field(True, description="Fetch missing tool wheels from the package index.")
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
    artifact_store: ArtifactStoreKind = Field("local", description="local: a folder; s3: an S3-compatible bucket.")
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
    s3_addressing_style: S3AddressingStyle = "auto"
    upload_max_bytes: int = Field(5 * GiB, ge=1, description="Largest file artifact.upload copies.")

    @model_validator(mode="after")
    def _store_is_complete(self) -> AgentSettings:
        if self.artifact_store == "s3" and not self.s3_bucket:
            raise ValueError("artifact_store=s3 needs s3_bucket (CODEGEN_AGENT_S3_BUCKET)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The operator and the coordinator build agents' settings in their own processes, whose variables must
        # not slip in: the arguments only. The agent reads its environment through `from_environ`.
        return (init_settings,)

    @classmethod
    def env_name(cls, field: str) -> str:
        """The variable that carries `field`."""
        if field not in cls.model_fields:
            raise KeyError(f"{field!r} is not an agent setting")
        return ENV_PREFIX + field.upper()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], **values: Any) -> AgentSettings:
        """The settings in `environ`'s `CODEGEN_AGENT_*` variables (any case, as pydantic-settings reads them),
        `values` taking precedence; other variables are ignored.

        Raises `AgentSettingsError` naming a `CODEGEN_AGENT_*` variable that is no setting, or a bad value.
        """
        variables = agent_variables(environ)
        _refuse_unknown_names(variables)
        try:
            return cls(**{**_EnvironSource(cls, variables)(), **values})
        except ValidationError as err:
            raise AgentSettingsError(_sentence(err)) from None

    def to_env(self) -> dict[str, str]:
        """The variables `from_environ` reads back as these settings: every field that was set (a None that is
        the default stays unset), encoded as pydantic-settings parses it (JSON for lists and maps, true/false,
        a secret's value)."""
        env: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if name not in self.model_fields_set or (value is None and field.default is None):
                continue
            if value is None:
                raise ValueError(f"{name}=None has no environment variable form (unset, it is {field.default})")
            env[self.env_name(name)] = _encode(value)
        return env

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


def agent_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The `CODEGEN_AGENT_*` variables of `environ`, in any case (the agent reads names case-insensitively)."""
    return {name: value for name, value in environ.items() if name.upper().startswith(ENV_PREFIX)}


def _refuse_unknown_names(variables: Mapping[str, str]) -> None:
    fields = list(AgentSettings.model_fields)
    for name in sorted(variables):
        field = name[len(ENV_PREFIX) :].lower()
        if field not in fields:
            close = difflib.get_close_matches(field, fields, n=1)  # without the prefix, which every name shares
            hint = f"did you mean `{AgentSettings.env_name(close[0])}`?" if close else "no setting is named like it"
            raise AgentSettingsError(f"`{name}` is not an agent setting; {hint}")


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' own reading of environment variables, from a given mapping rather than os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ  # before super().__init__, which loads the variables
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Case-insensitive names, like the default source for a model that is not `case_sensitive`.
        return {name.lower(): value for name, value in self._environ.items()}

    def prepare_field_value(self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool) -> Any:
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except ValueError as err:  # a list or map that is not JSON
            raise AgentSettingsError(f"`{AgentSettings.env_name(field_name)}` must be JSON ({err})") from None


def _sentence(err: ValidationError) -> str:
    """The shared one-line formatter, with each setting named by its variable."""
    renamed: list[InitErrorDetails] = []
    for error in err.errors(include_url=False):
        loc = error["loc"]
        detail: InitErrorDetails = {
            "type": error["type"],
            "loc": (ENV_PREFIX + str(loc[0]).upper(), *loc[1:]) if loc else (),
            "input": error["input"],
        }
        if "ctx" in error:
            detail["ctx"] = error["ctx"]
        renamed.append(detail)
    return validation_sentence(ValidationError.from_exception_data(err.title, renamed))


def _encode(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(to_jsonable_python(value), sort_keys=True)
    return str(value)
