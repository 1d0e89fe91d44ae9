"""A session adopts a Ready sandbox of the pool its `spec.poolRef` names, in one reconcile.

The sandbox Pod is the lock: the session claims it with a patch that carries the Pod's `resourceVersion`, so
of two sessions that read the same Pod the API server lets exactly one write (the other gets 409 and tries the
next one, or makes a fresh sandbox). Only then do the Secret, claim and NetworkPolicy follow, unguarded (they
are the claimed Pod's), while the session's status takes the sandbox (`status.sandboxName`) and says Ready. A
retry finds its claimed Pod again by the session label, or its sandbox by that status, and moves the children
again: a crash between the steps never leaves a sandbox half-moved.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

from codegen_mcp.api import pool
from codegen_mcp.api import session as api
from codegen_mcp.operator import builders
from codegen_mcp.operator import status as st
from codegen_mcp.operator.kube import CLAIMS, NETWORK_POLICIES, PODS, POOLS, SECRETS, SESSIONS, KubeClient, KubeError

CLAIM_ATTEMPTS = 3


@dataclass(frozen=True)
class Adopted:
    session: builders.SessionRef  # now naming the sandbox's children
    pod: dict[str, Any]  # claimed: its children follow with `move_children`


@dataclass(frozen=True)
class NotAdopted:
    """Why no sandbox was adopted: an Event reason and sentence (a fresh sandbox is made instead)."""

    reason: pool.PoolReason
    message: str


def pool_selector(pool_name: str) -> str:
    return f"{api.LABEL_MANAGED_BY}={api.MANAGED_BY},{pool.LABEL_POOL}={pool_name}"


def child_names(sandbox: str) -> dict[str, str]:
    """Plural → name of each child of the sandbox whose base name is `sandbox`."""
    return {
        PODS.plural: api.sandbox_pod_name(sandbox),
        SECRETS.plural: api.token_secret_name(sandbox),
        CLAIMS.plural: api.workspace_claim_name(sandbox),
        NETWORK_POLICIES.plural: api.network_policy_name(sandbox),
    }


def claim_patch(session: builders.SessionRef, *, owned: bool = True) -> dict[str, Any]:
    """Labels and owner references move from the pool to the session (the pool label stays, as provenance)."""
    return {
        "metadata": {
            "labels": {api.LABEL_SESSION: session.name, pool.LABEL_TEMPLATE_HASH: None},
            "annotations": {api.ANNOTATION_OWNER: session.spec.owner},
            "ownerReferences": [builders.owner_reference(session)] if owned else None,
        }
    }


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("labels") or {})


def candidates(pods: list[dict[str, Any]], wanted_hash: str) -> list[dict[str, Any]]:
    """Unclaimed, Ready Pods made from a template equal to the session's spec, oldest first."""
    found = [
        p
        for p in pods
        if api.LABEL_SESSION not in _labels(p)
        and _labels(p).get(pool.LABEL_TEMPLATE_HASH) == wanted_hash
        and st.observe_pod(p).state == st.PodState.READY
    ]
    return sorted(found, key=lambda p: str(p["metadata"].get("creationTimestamp") or ""))


def claimed_by(pods: list[dict[str, Any]], session: builders.SessionRef) -> dict[str, Any] | None:
    """The Pod this session already claimed (an earlier attempt that stopped half-way), if any."""
    for p in pods:
        owners = [r.get("uid") for r in p["metadata"].get("ownerReferences") or []]
        if _labels(p).get(api.LABEL_SESSION) == session.name and session.uid in owners:
            return p
    return None


async def adopt(
    kube: KubeClient, body: dict[str, Any], session: builders.SessionRef, known: list[dict[str, Any]] | None = None
) -> Adopted | NotAdopted:
    """Claim a Ready sandbox of `spec.poolRef` for the session (its children follow: `move_children`).

    `known`: the pool's Pods as the operator's watch last saw them (its index), which saves a list call; a
    stale one costs a retry at most, since every claim is judged on the Pod's current resourceVersion.
    """
    pool_name = session.spec.pool_ref or ""
    wanted = pool.sandbox_hash(session.spec)
    if known is None or not (claimed_by(known, session) or candidates(known, wanted)):
        # kopf batches a Pod's events for a moment before its index sees them: ask the API server itself.
        known = await kube.list(PODS, session.namespace, label_selector=pool_selector(pool_name))
    pod = claimed_by(known, session)
    for candidate in [] if pod is not None else candidates(known, wanted):
        pod = await _claim(kube, candidate, session)
        if pod is not None:
            break
    if pod is None:
        return await _why_not(kube, session, pool_name)
    return Adopted(session=replace(session, sandbox=_labels(pod)[pool.LABEL_SANDBOX]), pod=pod)


async def move_children(kube: KubeClient, session: builders.SessionRef) -> None:
    """The claimed sandbox's Secret, claim and NetworkPolicy become the session's (idempotent: also on a retry)."""
    names = child_names(session.base)
    retained = session.spec.workspace.retain
    await asyncio.gather(
        kube.patch(SECRETS, session.namespace, names[SECRETS.plural], claim_patch(session)),
        kube.patch(CLAIMS, session.namespace, names[CLAIMS.plural], claim_patch(session, owned=not retained)),
        kube.patch(NETWORK_POLICIES, session.namespace, names[NETWORK_POLICIES.plural], claim_patch(session)),
    )


async def annotate(kube: KubeClient, session: builders.SessionRef) -> None:
    """The session names its sandbox in an annotation too: a restored resource without status still finds it."""
    patch = {"metadata": {"annotations": {pool.ANNOTATION_SANDBOX: session.base}}}
    await kube.patch(SESSIONS, session.namespace, session.name, patch)


async def _claim(kube: KubeClient, pod: dict[str, Any], session: builders.SessionRef) -> dict[str, Any] | None:
    """The Pod as claimed by this session, or None when another session was faster (or it is gone).

    A conflict means the Pod changed since it was read: claimed by another session, or only its status moved
    on (the kubelet's, or a stale copy from the index). Read again, and try again while it is still unclaimed.
    """
    name = pod["metadata"]["name"]
    for _ in range(CLAIM_ATTEMPTS):
        patch = claim_patch(session)
        patch["metadata"]["resourceVersion"] = pod["metadata"]["resourceVersion"]
        try:
            return await kube.patch(PODS, session.namespace, name, patch)
        except KubeError as exc:
            if exc.status != 409:
                raise
        fresh = await kube.get(PODS, session.namespace, name)
        if fresh is None or not candidates([fresh], _labels(pod).get(pool.LABEL_TEMPLATE_HASH) or ""):
            return None
        pod = fresh
    return None


async def _why_not(kube: KubeClient, session: builders.SessionRef, pool_name: str) -> NotAdopted:
    found = await kube.get(POOLS, session.namespace, pool_name)
    if found is None:
        return NotAdopted(
            pool.PoolReason.POOL_MISSING, f"pool {pool_name} does not exist; starting a fresh sandbox instead"
        )
    template = (found.get("status") or {}).get("templateHash")
    if template and template != pool.sandbox_hash(session.spec):
        return NotAdopted(
            pool.PoolReason.POOL_MISMATCH,
            f"pool {pool_name} makes sandboxes from a template that differs from this session's spec (image, "
            "imagePullPolicy, runtimeClassName, resources, network, env, packages and workspace size/class must "
            "be equal); starting a fresh sandbox instead",
        )
    return NotAdopted(
        pool.PoolReason.POOL_EMPTY,
        f"pool {pool_name} has no ready unclaimed sandbox; starting a fresh sandbox instead",
    )
