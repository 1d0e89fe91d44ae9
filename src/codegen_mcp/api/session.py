"""The `CodegenSession` custom resource: spec and status models, enums, names, labels and annotations.

One model, many views: the operator validates specs with these models and builds children from them,
`codegen-mcp crd` turns them into the CRD's openAPIV3Schema, and the coordinator's Kubernetes backend
creates sessions and reads their status with them. Field names are the resource's camelCase names (aliases);
Python code uses snake_case attributes.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

# --- identity of the resource ---------------------------------------------------------------------

GROUP = "codegen-mcp.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "CodegenSession"
PLURAL = "codegensessions"
SINGULAR = "codegensession"
SHORT_NAMES: tuple[str, ...] = ("cgs",)
CATEGORIES: tuple[str, ...] = ("codegen-mcp",)

# --- labels and annotations on the resource and its children ----------------------------------------

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "codegen-mcp"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
SANDBOX_APP_NAME = "codegen-mcp-sandbox"
LABEL_SESSION = f"{GROUP}/session"
# Set by the coordinator on the resource: which MCP session uses it (any coordinator replica can find it).
ANNOTATION_MCP_SESSION = f"{GROUP}/mcp-session"
# Copied from spec.owner onto the children, for audit.
ANNOTATION_OWNER = f"{GROUP}/owner"

# --- the sandbox agent inside the Pod ----------------------------------------------------------------

TOKEN_SECRET_KEY = "token"  # noqa: S105 - the key name in the Secret, not a secret
AGENT_CONTAINER_NAME = "agent"
AGENT_PORT_NAME = "agent"
AGENT_HEALTH_PATH = "/healthz"
WORKSPACE_MOUNT_PATH = "/workspace"
TMP_MOUNT_PATH = "/tmp"  # noqa: S108 - the Pod's own emptyDir, not a host path
RESERVED_ENV_PREFIX = "CODEGEN_AGENT_"

MAX_SESSION_NAME_LENGTH = 63  # the name is a label value on every child
MAX_TTL_SECONDS = 30 * 24 * 3600
MAX_LIST_ITEMS = 64
MAX_CIDRS = 32


def token_secret_name(session: str) -> str:
    return f"{session}-agent-token"


def workspace_claim_name(session: str) -> str:
    return f"{session}-workspace"


def sandbox_pod_name(session: str) -> str:
    return f"{session}-sandbox"


def network_policy_name(session: str) -> str:
    return session


def session_labels(session: str) -> dict[str, str]:
    """The labels every child of a session carries (and that select its sandbox Pod)."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_SESSION: session}


# --- enums -------------------------------------------------------------------------------------------


class Phase(StrEnum):
    PENDING = "Pending"
    STARTING = "Starting"
    READY = "Ready"
    FAILED = "Failed"
    TERMINATING = "Terminating"
    SUSPENDED = "Suspended"  # spec.suspend: no Pod runs, the workspace stays


class ConditionType(StrEnum):
    WORKSPACE_BOUND = "WorkspaceBound"
    SANDBOX_READY = "SandboxReady"
    READY = "Ready"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Reason(StrEnum):
    """Machine-readable reasons of conditions and Events (CamelCase, as Kubernetes does)."""

    INVALID_SPEC = "InvalidSpec"
    CREATING = "Creating"
    CHILDREN_CREATED = "ChildrenCreated"
    CLAIM_PENDING = "ClaimPending"
    CLAIM_BOUND = "ClaimBound"
    CLAIM_LOST = "ClaimLost"
    CLAIM_MISSING = "ClaimMissing"
    POD_MISSING = "PodMissing"
    POD_PENDING = "PodPending"
    POD_STARTING = "PodStarting"
    POD_READY = "PodReady"
    POD_NOT_READY = "PodNotReady"
    POD_FAILED = "PodFailed"
    POD_RECREATED = "PodRecreated"
    RESTART_LIMIT = "RestartLimitReached"
    SANDBOX_READY = "SandboxReady"
    WAITING = "Waiting"
    EXPIRED = "Expired"
    IDLE = "IdleTimeout"
    IMMUTABLE_FIELD = "ImmutableFieldChanged"
    UPDATED = "SpecUpdated"
    CONFLICT = "NameConflict"
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"
    IDLE_SUSPEND = "IdleSuspend"


class EgressMode(StrEnum):
    NONE = "none"
    PACKAGES = "packages"
    OPEN = "open"


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


# --- quantities (Kubernetes resource.Quantity) ---------------------------------------------------------

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_quantity(value: str | int | float) -> Decimal:
    """`"500m"` → 0.5, `"1Gi"` → 1073741824; raises ValueError for anything Kubernetes would refuse."""
    text = str(value).strip()
    if not _QUANTITY_RE.match(text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 1Gi)")
    match = re.match(r"^([+-]?[0-9.]+)(.*)$", text)
    assert match is not None  # the pattern above guarantees a leading number
    number, suffix = match.groups()
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number + suffix)
        return Decimal(number) * _SUFFIXES[suffix]
    except (InvalidOperation, KeyError) as exc:
        raise ValueError(f"{text!r} is not a Kubernetes quantity") from exc


def _check_quantity(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be a quantity such as 500m, 2, 512Mi or 1Gi")
    text = str(value)
    if parse_quantity(text) < 0:
        raise ValueError(f"{text!r} must not be negative")
    return text


# int-or-string with the Quantity pattern, exactly as controller-gen writes resource.Quantity.
QUANTITY_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "pattern": QUANTITY_PATTERN,
    "x-kubernetes-int-or-string": True,
}
Quantity = Annotated[str, BeforeValidator(_check_quantity), WithJsonSchema(QUANTITY_SCHEMA)]

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DnsSubdomain = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
PACKAGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-\[\],<>=!~ ;:'\"@/+*]*$"


def _check_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32 ({exc})") from exc
    return value


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
        validate_default=True,
    )

    def to_dict(self) -> dict[str, Any]:
        """The resource's JSON form: camelCase names, no unset optionals."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- spec ----------------------------------------------------------------------------------------------


class ResourceList(_Model):
    cpu: Quantity | None = Field(None, description="CPU, e.g. 500m or 2.")
    memory: Quantity | None = Field(None, description="Memory, e.g. 512Mi or 2Gi.")
    ephemeral_storage: Quantity | None = Field(
        None, alias="ephemeral-storage", description="Node-local scratch space (/tmp and logs), e.g. 1Gi."
    )

    def items(self) -> dict[str, str]:
        return {k: v for k, v in self.to_dict().items() if v is not None}


class ResourceRequirements(_Model):
    requests: ResourceList | None = Field(None, description="What the scheduler reserves for the sandbox.")
    limits: ResourceList | None = Field(None, description="Hard caps; the sandbox is throttled or OOM-killed beyond.")

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceRequirements:
        if self.requests is None or self.limits is None:
            return self
        limits = self.limits.items()
        for key, request in self.requests.items().items():
            if key in limits and parse_quantity(request) > parse_quantity(limits[key]):
                raise ValueError(f"requests.{key} ({request}) must not exceed limits.{key} ({limits[key]})")
        return self


class WorkspaceSpec(_Model):
    size: Quantity = Field("1Gi", description="Size of the workspace volume (a PersistentVolumeClaim).")
    storage_class_name: DnsSubdomain | None = Field(
        None, description="StorageClass of the workspace volume; default: the operator's setting, else the cluster's."
    )
    retain: bool = Field(
        False, description="Keep the workspace volume when the session is deleted or expires (mutable)."
    )

    @field_validator("size")
    @classmethod
    def _positive_size(cls, value: str) -> str:
        if parse_quantity(value) < 1024 * 1024:
            raise ValueError(f"{value!r} is too small for a workspace (at least 1Mi)")
        return value


class NetworkSpec(_Model):
    egress: EgressMode = Field(
        EgressMode.PACKAGES,
        description=(
            "What the sandbox may reach: none (nothing), packages (DNS and the package index), open (anything "
            "but the cloud metadata endpoint)."
        ),
    )
    allow_cidrs: list[Annotated[str, BeforeValidator(_check_cidr), Field(max_length=49)]] = Field(
        default_factory=list,
        alias="allowCIDRs",
        max_length=MAX_CIDRS,
        description="Extra destinations the sandbox may reach, in any egress mode.",
    )
    allow_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=list,
        max_length=MAX_CIDRS,
        description="TCP ports allowed towards allowCIDRs (empty: every port).",
    )


class EnvVar(_Model):
    name: str = Field(min_length=1, max_length=253, pattern=ENV_NAME_PATTERN)
    value: str = Field("", max_length=4096)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.startswith(RESERVED_ENV_PREFIX):
            raise ValueError(f"{value!r} is reserved: names starting with {RESERVED_ENV_PREFIX} configure the agent")
        return value


class SessionSpec(_Model):
    """Desired state of one sandbox session."""

    image: str | None = Field(
        None, min_length=1, max_length=512, description="Sandbox image; default: the operator's default image."
    )
    image_pull_policy: PullPolicy | None = Field(None, description="Always, IfNotPresent or Never.")
    runtime_class_name: DnsSubdomain | None = Field(
        None, description="RuntimeClass of the sandbox Pod, e.g. gvisor or kata, for a stronger boundary."
    )
    resources: ResourceRequirements | None = Field(
        None, description="CPU/memory/ephemeral-storage requests and limits; default: the operator's settings."
    )
    workspace: WorkspaceSpec = Field(
        default_factory=WorkspaceSpec,
        description="The persistent workspace volume.",
        json_schema_extra={"default": {}},
    )
    network: NetworkSpec = Field(
        default_factory=NetworkSpec,
        description="Egress of the sandbox (ingress is only ever from the coordinator).",
        json_schema_extra={"default": {}},
    )
    ttl_seconds: int | None = Field(
        None, ge=1, le=MAX_TTL_SECONDS, description="Delete the session this long after it was created (mutable)."
    )
    idle_timeout_seconds: int | None = Field(
        None,
        ge=1,
        le=MAX_TTL_SECONDS,
        description="Delete the session when no tool call happened for this long (mutable).",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=MAX_LIST_ITEMS,
        description="Plain environment variables for code in the sandbox (no Secrets; CODEGEN_AGENT_* is reserved).",
    )
    packages: list[Annotated[str, Field(min_length=1, max_length=256, pattern=PACKAGE_PATTERN)]] = Field(
        default_factory=list,
        max_length=MAX_LIST_ITEMS,
        description="Requirement specifiers installed into the session's venv when the sandbox starts.",
    )
    owner: str | None = Field(None, max_length=256, description="Free text naming who asked for it, for audit.")
    suspend: bool = Field(
        False,
        description=(
            "Stop the sandbox now and keep its workspace (mutable, like a Job's spec.suspend): its Pod and token "
            "Secret go, its workspace volume and NetworkPolicy stay, phase Suspended; false again starts a new Pod "
            "(with a new token) on the same workspace."
        ),
    )
    suspend_after_seconds: int | None = Field(
        None,
        ge=1,
        le=MAX_TTL_SECONDS,
        description=(
            "Set spec.suspend when no tool call happened for this long, counted from the last activity or the "
            "last time the sandbox became Ready, whichever is later (mutable); default: the operator's setting."
        ),
    )
    pool_ref: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_SESSION_NAME_LENGTH,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description=(
            "A CodegenSandboxPool in this namespace to adopt a ready sandbox from (immutable); when it has none "
            "that matches this spec, a fresh sandbox is made."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> SessionSpec:
        if self.packages and self.network.egress == EgressMode.NONE and not self.network.allow_cidrs:
            raise ValueError("packages need network.egress 'packages' or 'open' to be installed")
        names = [e.name for e in self.env]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"env names must be unique; repeated: {', '.join(duplicates)}")
        return self


# Fields that cannot change once the session exists (the CRD rejects changes with CEL rules, and the
# operator ignores them with a Warning Event if a cluster lets one through). ttlSeconds, idleTimeoutSeconds,
# suspend, suspendAfterSeconds, workspace.retain and owner are mutable.
IMMUTABLE_SPEC_FIELDS: tuple[str, ...] = (
    "image",
    "imagePullPolicy",
    "runtimeClassName",
    "resources",
    "network",
    "env",
    "packages",
    "poolRef",
)
IMMUTABLE_WORKSPACE_FIELDS: tuple[str, ...] = ("size", "storageClassName")


# --- status --------------------------------------------------------------------------------------------


class Condition(_Model):
    model_config = ConfigDict(extra="ignore")

    type: str = Field(description="WorkspaceBound, SandboxReady or Ready.")
    status: ConditionStatus
    reason: str = Field("", max_length=1024)
    message: str = Field("", max_length=32768)
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


class SessionStatus(_Model):
    """Observed state, written by the operator (and `lastActivityAt` by the coordinator)."""

    # Status is read leniently: other writers may add fields this version does not know.
    model_config = ConfigDict(extra="ignore")

    phase: Phase | None = Field(None, description="Pending, Starting, Ready, Suspended, Failed or Terminating.")
    conditions: list[Condition] = Field(default_factory=list)
    message: str | None = Field(None, description="One human sentence about the current state.")
    pod_name: str | None = None
    pod_ip: str | None = Field(None, alias="podIP")
    endpoint: str | None = Field(None, description="http://<podIP>:<port> of the sandbox agent.")
    token_secret_name: str | None = Field(None, description="Secret holding the agent's bearer token (key: token).")
    workspace_claim_name: str | None = None
    sandbox_name: str | None = Field(
        None, description="The pooled sandbox this session adopted: the base name of its children (<name>-sandbox…)."
    )
    image: str | None = Field(None, description="The image the sandbox runs.")
    restart_count: int = Field(0, description="How many times the sandbox Pod was recreated.")
    pod_uid: str | None = Field(None, alias="podUID")
    started_at: datetime | None = None
    ready_at: datetime | None = None
    last_activity_at: datetime | None = Field(None, description="Last tool call (written by the coordinator).")
    expires_at: datetime | None = Field(None, description="When the TTL or idle timeout deletes the session.")
    suspended_at: datetime | None = Field(None, description="When the session was suspended (while it is).")
    observed_generation: int | None = None

    def condition(self, type_: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_.value), None)

    def to_patch(self) -> dict[str, Any]:
        """A merge-patch body for /status that sets every field, and removes the unset ones."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=False)


class CodegenSession(_Model):
    """The whole resource, as read from a file or the API."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = Field(API_VERSION, alias="apiVersion")
    kind: str = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: SessionSpec = Field(default_factory=SessionSpec)
    status: SessionStatus = Field(default_factory=SessionStatus)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace") or "default")


NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def check_session_name(name: str) -> str | None:
    """The reason a session name is unusable, or None: it becomes a label value and part of child names."""
    if not name:
        return "metadata.name is required"
    if len(name) > MAX_SESSION_NAME_LENGTH:
        return f"metadata.name must be at most {MAX_SESSION_NAME_LENGTH} characters (it is a label value)"
    if not re.match(NAME_PATTERN, name):
        return "metadata.name must be lowercase letters, digits and '-', starting and ending with a letter or digit"
    return None
