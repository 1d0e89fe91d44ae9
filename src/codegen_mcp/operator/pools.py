"""Keep each CodegenSandboxPool filled with Ready, unclaimed sandboxes.

Level-triggered like the session reconciler: each sync reads the pool and its sandboxes fresh, removes the
dead (failed Pod, Pod gone) and the outdated (made from an older template), makes what is missing, trims what
is too many, and writes the counts to status. A sandbox is the four children a session gets, built by the
same builders, owned by the pool and labelled with it; it stops counting as the pool's once a session claims
it (see adoption.py), which is what makes the pool refill.
Syncs of one pool are serialised in this process (Pod events of several sandboxes arrive at once); the active
operator is the only writer, as kopf's peering makes sure.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from codegen_mcp.api import pool
from codegen_mcp.api import session as api
from codegen_mcp.api.errors import validation_sentence
from codegen_mcp.api.pool import PoolReason, PoolSpec, PoolStatus
from codegen_mcp.api.session import ConditionStatus, ConditionType
from codegen_mcp.operator import builders
from codegen_mcp.operator import status as st
from codegen_mcp.operator.adoption import child_names, pool_selector
from codegen_mcp.operator.kube import CLAIMS, NETWORK_POLICIES, PODS, POOLS, SECRETS, KubeClient, KubeError, now
from codegen_mcp.operator.settings import OperatorSettings

log = logging.getLogger(__name__)

NORMAL, WARNING = "Normal", "Warning"
_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
NAME_ATTEMPTS = 5


def validate_pool(body: dict[str, Any]) -> tuple[PoolSpec | None, str]:
    """The validated spec, or None and one readable message."""
    problem = pool.check_pool_name(str(body.get("metadata", {}).get("name", "")))
    if problem:
        return None, problem
    try:
        return PoolSpec.model_validate(body.get("spec") or {}), ""
    except ValidationError as exc:
        return None, validation_sentence(exc, prefix="spec")


@dataclass
class Sandbox:
    """One sandbox of the pool, as its Pod and workspace claim show it (Secrets are never listed: that reads them)."""

    name: str
    pod: dict[str, Any] | None = None
    claim: dict[str, Any] | None = None

    def _labels(self) -> list[dict[str, str]]:
        return [o["metadata"].get("labels") or {} for o in (self.pod, self.claim) if o is not None]

    @property
    def claimed(self) -> bool:
        return any(api.LABEL_SESSION in labels for labels in self._labels())

    @property
    def handed_to_pod(self) -> bool:
        """Its claim is owned by its Pod (see `_start`): it goes when the Pod goes."""
        return builders.handed_to_pod(self.claim)

    @property
    def template_hash(self) -> str | None:
        return next((labels.get(pool.LABEL_TEMPLATE_HASH) for labels in self._labels()), None)

    @property
    def observed(self) -> st.PodObservation:
        return st.observe_pod(self.pod)

    @property
    def created(self) -> str:
        return str(((self.pod or self.claim or {}).get("metadata") or {}).get("creationTimestamp") or "")


def group_sandboxes(pods: list[dict[str, Any]], claims: list[dict[str, Any]]) -> list[Sandbox]:
    """The pool's Pods and workspace claims, grouped by the sandbox they belong to (its label)."""
    found: dict[str, Sandbox] = {}
    for objects, slot in ((pods, "pod"), (claims, "claim")):
        for obj in objects:
            name = (obj["metadata"].get("labels") or {}).get(pool.LABEL_SANDBOX)
            if name:
                setattr(found.setdefault(name, Sandbox(name)), slot, obj)
    return list(found.values())


@dataclass(frozen=True)
class Plan:
    """What one sync does: sandboxes to remove (with why), to give a Pod again, and how many to make."""

    remove: list[tuple[Sandbox, PoolReason, str]]
    keep: list[Sandbox]
    repair: list[Sandbox]
    make: int
    retry_in: float | None = None  # a failed sandbox waits out its backoff: look again then


def plan(
    members: list[Sandbox], replicas: int, wanted_hash: str, *, at: datetime | None = None, backoff: float = 0.0
) -> Plan:
    """Pure: dead and outdated sandboxes go; then trim to `replicas` (not-ready, newest first) or fill up.

    A sandbox without a Pod is either going (its claim is owned by its deleted Pod: garbage collection takes it)
    or was left half-made (its claim is still the pool's): that one gets its Pod, when its template is current.
    A failed sandbox is replaced `backoff` seconds after it ended, and counts until then: a template whose agent
    cannot start must not make the pool hammer the node and the API server.
    """
    retry: list[float] = []
    remove: list[tuple[Sandbox, PoolReason, str]] = []
    keep: list[Sandbox] = []
    repair: list[Sandbox] = []
    for sandbox in members:
        obs = sandbox.observed
        if obs.state == st.PodState.TERMINATING or (sandbox.pod is None and sandbox.handed_to_pod):
            continue  # on its way out already: neither kept nor removed again
        if sandbox.template_hash != wanted_hash:
            if sandbox.pod is not None:
                remove.append((sandbox, PoolReason.SANDBOX_REMOVED, f"sandbox {sandbox.name} has an older template"))
        elif sandbox.pod is None:
            repair.append(sandbox)
        elif obs.replaceable:
            wait = (obs.since - at).total_seconds() + backoff if obs.since is not None and at is not None else 0.0
            if wait > 0:
                retry.append(wait)
                keep.append(sandbox)
            else:
                why = f"sandbox {sandbox.name} is gone ({obs.reason}: {obs.message})"
                remove.append((sandbox, PoolReason.SANDBOX_REPLACED, why))
        else:
            keep.append(sandbox)
    if len(keep) > replicas:
        ordered = sorted(keep, key=lambda s: (s.observed.state != st.PodState.READY, s.created))
        keep, surplus = ordered[:replicas], ordered[replicas:]
        remove += [(s, PoolReason.SANDBOX_REMOVED, f"sandbox {s.name} is more than replicas") for s in surplus]
    repair = repair[: max(0, replicas - len(keep))]
    make = max(0, replicas - len(keep) - len(repair))
    return Plan(remove=remove, keep=keep, repair=repair, make=make, retry_in=min(retry, default=None))


def pool_status(
    old: PoolStatus, *, spec: PoolSpec, kept: list[Sandbox], made: int, claimed: int, wanted_hash: str, generation: Any
) -> PoolStatus:
    """Counts, the Ready condition (every replica ready) and a message; stuck sandboxes are named."""
    ready = sum(1 for s in kept if s.observed.state == st.PodState.READY)
    stuck = [
        f"{s.name}: {s.observed.reason}: {s.observed.message}" for s in kept if s.observed.state == st.PodState.STUCK
    ]
    full = ready >= spec.replicas
    message = f"{ready} of {spec.replicas} sandboxes ready"
    if stuck:
        message += "; cannot start: " + "; ".join(stuck)
    new = old.model_copy(deep=True)
    new.replicas, new.ready, new.claimed = len(kept) + made, ready, claimed
    new.template_hash, new.message, new.observed_generation = wanted_hash, message, generation
    new.conditions = st.set_condition(
        new.conditions,
        ConditionType.READY,
        ConditionStatus.TRUE if full else ConditionStatus.FALSE,
        PoolReason.FILLED if full else PoolReason.FILLING,
        message,
        now=now(),
        generation=generation,
    )
    return new


def invalid_status(old: PoolStatus, problem: str, generation: Any) -> PoolStatus:
    new = old.model_copy(deep=True)
    new.message, new.observed_generation = problem, generation
    new.conditions = st.set_condition(
        new.conditions,
        ConditionType.READY,
        ConditionStatus.FALSE,
        PoolReason.INVALID_TEMPLATE,
        problem,
        now=now(),
        generation=generation,
    )
    return new


@dataclass
class PoolReconciler:
    kube: KubeClient
    settings: OperatorSettings
    _locks: defaultdict[tuple[str, str], asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    _later: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)

    async def _event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        if self.settings.post_events:
            await self.kube.post_event(body, type_=type_, reason=reason, message=message)

    async def sync(self, namespace: str, name: str) -> str:
        """Bring the pool to its spec; the reason it cannot be ("" when it can, or when it is gone)."""
        async with self._locks[(namespace, name)]:
            return await self._sync(namespace, name)

    async def _sync(self, namespace: str, name: str) -> str:
        body = await self.kube.get(POOLS, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return ""  # the pool is going: its sandboxes go with it
        generation = body["metadata"].get("generation")
        spec, problem = validate_pool(body)
        if spec is None:
            written = await self.kube.update_pool_status(
                namespace, name, lambda _b, s: invalid_status(s, problem, generation)
            )
            if (body.get("status") or {}).get("message") != problem and written is not None:
                await self._event(body, WARNING, PoolReason.INVALID_TEMPLATE, f"no sandboxes made: {problem}")
            return problem
        owner = builders.SessionRef.from_body(body, spec.template)
        wanted_hash = pool.sandbox_hash(spec.template)
        selector = pool_selector(name)
        pods, claims = await asyncio.gather(
            self.kube.list(PODS, namespace, label_selector=selector),
            self.kube.list(CLAIMS, namespace, label_selector=selector),
        )
        sandboxes = group_sandboxes(pods, claims)
        claimed = sum(1 for s in sandboxes if s.claimed)
        members = [s for s in sandboxes if not s.claimed]
        at = datetime.now(UTC)  # not now(): its whole seconds would make a short backoff look unfinished
        todo = plan(members, spec.replicas, wanted_hash, at=at, backoff=self.settings.restart_backoff_seconds)
        if todo.retry_in is not None:
            self._look_again(namespace, name, todo.retry_in)
        for sandbox, reason, why in todo.remove:
            await self.kube.delete(PODS, namespace, api.sandbox_pod_name(sandbox.name))
            await self._event(
                body, NORMAL, reason, why + ("; replacing it" if reason == PoolReason.SANDBOX_REPLACED else "")
            )
        for sandbox in todo.repair:
            await self._start(replace(owner, sandbox=sandbox.name, kind=pool.POOL_KIND))
        made = await asyncio.gather(*(self._make(owner) for _ in range(todo.make)))
        for sandbox_name in made:
            await self._event(body, NORMAL, PoolReason.SANDBOX_CREATED, f"created sandbox {sandbox_name}")
        await self.kube.update_pool_status(
            namespace,
            name,
            lambda _b, s: pool_status(
                s,
                spec=spec,
                kept=todo.keep,
                made=len(made),
                claimed=claimed,
                wanted_hash=wanted_hash,
                generation=generation,
            ),
        )
        return ""

    def _look_again(self, namespace: str, name: str, delay: float) -> None:
        """Sync the pool once more after `delay` seconds (no event will come when a backoff ends)."""
        key = (namespace, name)
        if key in self._later and not self._later[key].done():
            return

        async def later() -> None:
            await asyncio.sleep(delay + 0.1)
            del self._later[key]  # this look may need another
            try:
                await self.sync(namespace, name)
            except KubeError as exc:
                log.warning("syncing pool %s/%s after a backoff failed: %s", namespace, name, exc)

        self._later[key] = asyncio.create_task(later())

    async def close(self) -> None:
        """Cancel the pending looks (the operator is stopping)."""
        for task in self._later.values():
            task.cancel()
        await asyncio.gather(*self._later.values(), return_exceptions=True)

    async def _make(self, owner: builders.SessionRef) -> str:
        """One new sandbox of the pool: its Secret, claim and NetworkPolicy, then its Pod; returns its name."""
        for _ in range(NAME_ATTEMPTS):
            suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(pool.MEMBER_SUFFIX_LENGTH - 1))
            ref = replace(owner, sandbox=f"{owner.name}-{suffix}", kind=pool.POOL_KIND)
            secret, claim, policy, _pod = builders.build_children(ref, self.settings, secrets.token_urlsafe(32))
            _, fresh = await self.kube.create(secret)
            if not fresh:
                continue  # a namesake exists (the suffix is random): draw another name
            await asyncio.gather(self.kube.create(claim), self.kube.create(policy))
            await self._start(ref)
            return ref.base
        raise KubeError(409, f"no free sandbox name for pool {owner.name} after {NAME_ATTEMPTS} random draws")

    async def _start(self, ref: builders.SessionRef) -> None:
        """The sandbox's Pod, then its other children handed to it.

        Owned by their Pod (itself the pool's), the Secret, claim and NetworkPolicy go with it when a dead,
        outdated or surplus sandbox is removed: the operator deletes only Pods and never needs the right to
        delete a Secret or a claim. A session that adopts the sandbox takes them over from the Pod.
        """
        pod, _ = await self.kube.create(builders.build_sandbox_pod(ref, self.settings))
        names = child_names(ref.base)
        patch = {"metadata": {"ownerReferences": [builders.pod_owner_reference(pod)]}}
        await asyncio.gather(
            *(
                self.kube.patch(kind, ref.namespace, names[kind.plural], patch)
                for kind in (SECRETS, CLAIMS, NETWORK_POLICIES)
            )
        )
