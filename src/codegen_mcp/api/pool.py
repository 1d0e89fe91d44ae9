"""The `CodegenSandboxPool` custom resource: sandboxes started ahead of time, for sessions to adopt.

A pool keeps `spec.replicas` sandboxes (each the four children a session gets: token Secret, workspace claim,
NetworkPolicy, Pod) Ready and unclaimed, built from `spec.template` — a session spec, the same model family as
`CodegenSession`'s. A session whose `spec.poolRef` names the pool adopts one: the children's labels and owner
references move from the pool to the session, and the pool makes a new one.

Which sandbox fits which session is decided by `sandbox_hash`: the digest of the spec fields that shape the
sandbox (image, resources, network, env, packages, workspace size and class). Each pooled child carries it
as a label, so a session adopts only a sandbox made from a spec equal to its own in every one of those fields.
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from codegen_mcp.api import session as api
from codegen_mcp.api.session import Condition, SessionSpec, _Model

POOL_KIND = "CodegenSandboxPool"
POOL_PLURAL = "codegensandboxpools"
POOL_SINGULAR = "codegensandboxpool"
POOL_SHORT_NAMES: tuple[str, ...] = ("cgsp",)

# On every child of a pooled sandbox, from birth: the pool it came from (kept after adoption, for `Claimed`).
LABEL_POOL = f"{api.GROUP}/pool"
# On every sandbox child: the base name of the children (`<sandbox>-sandbox`, `<sandbox>-workspace`, …); the
# NetworkPolicy selects its Pod by it, so the policy keeps holding while the session label is added.
LABEL_SANDBOX = f"{api.GROUP}/sandbox"
# On a pooled sandbox's children while unclaimed: `sandbox_hash` of the template it was made from.
LABEL_TEMPLATE_HASH = f"{api.GROUP}/template-hash"
# On a session that adopted a pooled sandbox: the base name of its children (they keep the names they had).
ANNOTATION_SANDBOX = f"{api.GROUP}/sandbox"

MAX_POOL_REPLICAS = 64
MEMBER_SUFFIX_LENGTH = 6  # "-" and five characters
MAX_POOL_NAME_LENGTH = api.MAX_SESSION_NAME_LENGTH - MEMBER_SUFFIX_LENGTH  # a member's name is a label value

# The spec fields that shape a sandbox: what a session and a pooled sandbox must agree on.
SANDBOX_SPEC_FIELDS: tuple[str, ...] = tuple(f for f in api.IMMUTABLE_SPEC_FIELDS if f != "poolRef")
# Session-level fields a template cannot hold: the session that adopts the sandbox decides them. A pooled
# sandbox never suspends: it may be suspended only as a session's, once one adopted it.
SESSION_ONLY_FIELDS: tuple[str, ...] = ("poolRef", "ttlSeconds", "idleTimeoutSeconds", "suspendAfterSeconds")


def sandbox_hash(spec: SessionSpec) -> str:
    """A short digest of the sandbox-shaping fields of `spec` (defaults applied), usable as a label value."""
    data = spec.model_dump(mode="json", by_alias=True)
    shaping = {key: data.get(key) for key in SANDBOX_SPEC_FIELDS}
    shaping["workspace"] = {key: data["workspace"].get(key) for key in api.IMMUTABLE_WORKSPACE_FIELDS}
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()
    return digest[:16]


def check_pool_name(name: str) -> str | None:
    """The reason a pool name is unusable, or None: its members' names are label values."""
    if not name:
        return "metadata.name is required"
    if len(name) > MAX_POOL_NAME_LENGTH:
        return f"metadata.name must be at most {MAX_POOL_NAME_LENGTH} characters (its sandboxes' names are labels)"
    if not re.match(api.NAME_PATTERN, name):
        return "metadata.name must be lowercase letters, digits and '-', starting and ending with a letter or digit"
    return None


class PoolReason(StrEnum):
    """Reasons of the pool's conditions and Events, and of the Events a session gets about its pool."""

    INVALID_TEMPLATE = "InvalidTemplate"
    FILLED = "Filled"
    FILLING = "Filling"
    SANDBOX_CREATED = "SandboxCreated"
    SANDBOX_REPLACED = "SandboxReplaced"
    SANDBOX_REMOVED = "SandboxRemoved"
    ADOPTED = "AdoptedFromPool"
    POOL_EMPTY = "PoolEmpty"
    POOL_MISSING = "PoolMissing"
    POOL_MISMATCH = "PoolTemplateMismatch"


class PoolSpec(_Model):
    """Desired state of a pool: how many ready sandboxes to keep, made from which session spec."""

    replicas: int = Field(1, ge=0, le=MAX_POOL_REPLICAS, description="Ready, unclaimed sandboxes to keep.")
    template: SessionSpec = Field(
        default_factory=SessionSpec,
        description=(
            "The session spec each sandbox is made from; a session adopts one only when its own spec agrees on "
            "image, imagePullPolicy, runtimeClassName, resources, network, env, packages and workspace size/class."
        ),
        json_schema_extra={"default": {}},
    )

    @model_validator(mode="after")
    def _template_is_a_sandbox(self) -> PoolSpec:
        given = self.template.model_dump(by_alias=True, exclude_none=True)
        misplaced = [f"template.{f}" for f in SESSION_ONLY_FIELDS if f in given]
        if self.template.suspend:
            misplaced.append("template.suspend")
        if self.template.workspace.retain:
            misplaced.append("template.workspace.retain")
        if misplaced:
            raise ValueError(f"{', '.join(misplaced)} belong on the session that adopts a sandbox, not on a pool")
        return self


class PoolStatus(_Model):
    """Observed state, written by the operator."""

    model_config = ConfigDict(extra="ignore")

    replicas: int = Field(0, description="Unclaimed sandboxes that exist (ready or not).")
    ready: int = Field(0, description="Unclaimed sandboxes whose agent is ready: what sessions can adopt now.")
    claimed: int = Field(0, description="Sandboxes of this pool that sessions adopted and still use.")
    conditions: list[Condition] = Field(default_factory=list)
    message: str | None = Field(None, description="One human sentence about the pool.")
    template_hash: str | None = Field(None, description="The label value sessions must match to adopt.")
    observed_generation: int | None = None

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def to_patch(self) -> dict[str, Any]:
        """A merge-patch body for /status that sets every field, and removes the unset ones."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=False)


class CodegenSandboxPool(_Model):
    """The whole resource, as read from a file or the API."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = Field(api.API_VERSION, alias="apiVersion")
    kind: str = POOL_KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: PoolSpec = Field(default_factory=PoolSpec)
    status: PoolStatus = Field(default_factory=PoolStatus)
