"""Pure status logic: what a Pod or a claim says, which conditions and phase follow, when a session expires.

Nothing here talks to a server; the reconcilers feed it what they read and write back what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from codegen_mcp.api.errors import AgentExitCode
from codegen_mcp.api.session import (
    Condition,
    ConditionStatus,
    ConditionType,
    Phase,
    Reason,
    SessionStatus,
)
from codegen_mcp.operator.builders import endpoint_for

# Container waiting reasons that do not cure themselves by waiting: the session is Failed until they change.
STUCK_WAITING_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
    }
)


class PodState(StrEnum):
    MISSING = "Missing"  # no Pod (never created, or deleted)
    TERMINATING = "Terminating"  # being deleted
    PENDING = "Pending"  # accepted, not scheduled or not started yet
    STARTING = "Starting"  # running, not ready yet
    READY = "Ready"
    UNSCHEDULED = "Unscheduled"  # the scheduler found no node yet: often transient, so waited for (bounded)
    STUCK = "Stuck"  # cannot start as it is (image cannot be pulled, bad config...)
    FAILED = "Failed"  # terminated: must be replaced


@dataclass(frozen=True)
class PodObservation:
    state: PodState
    reason: str = ""
    message: str = ""
    name: str | None = None
    uid: str | None = None
    ip: str | None = None
    since: datetime | None = None  # UNSCHEDULED: when the Pod was created; FAILED: when its container ended

    @property
    def replaceable(self) -> bool:
        return self.state in (PodState.FAILED, PodState.MISSING)


def _conditions(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): c for c in pod.get("status", {}).get("conditions", []) or []}


WORKSPACE_NOT_WRITABLE = "WorkspaceNotWritable"


def _exit_code(container_status: dict[str, Any]) -> int | None:
    code = ((container_status.get("state") or {}).get("terminated") or {}).get("exitCode")
    return code if isinstance(code, int) else None


def _termination_message(containers: list[dict[str, Any]]) -> str:
    """The agent's own sentence (its termination message), or a fallback that still names the problem."""
    for cs in containers:
        message = (((cs.get("state") or {}).get("terminated") or {}).get("message") or "").strip()
        if message:
            return message
    return "the sandbox agent cannot write its workspace volume (exit code 73); see the Pod's log"


def observe_pod(pod: dict[str, Any] | None) -> PodObservation:
    """Classify a sandbox Pod (or its absence) into the few states the session cares about."""
    if pod is None:
        return PodObservation(PodState.MISSING, "PodMissing", "the sandbox Pod does not exist")
    meta = pod.get("metadata", {})
    status = pod.get("status", {}) or {}
    common = {"name": meta.get("name"), "uid": meta.get("uid"), "ip": status.get("podIP") or None}
    if meta.get("deletionTimestamp"):
        return PodObservation(PodState.TERMINATING, "PodTerminating", "the sandbox Pod is being deleted", **common)
    phase = status.get("phase") or "Pending"
    containers = status.get("containerStatuses", []) or []
    if phase in ("Failed", "Succeeded"):
        reason, message = status.get("reason") or "", status.get("message") or ""
        for cs in containers:
            term = (cs.get("state", {}) or {}).get("terminated") or {}
            if term:
                reason = reason or term.get("reason") or "Error"
                detail = f"exit code {term.get('exitCode')}"
                message = message or (f"{term.get('message')} ({detail})" if term.get("message") else detail)
        reason = reason or ("Completed" if phase == "Succeeded" else "Failed")
        if any(_exit_code(cs) == AgentExitCode.WORKSPACE_NOT_WRITABLE for cs in containers):
            # The agent found its workspace volume unwritable: a new Pod on the same volume fares no better.
            return PodObservation(PodState.STUCK, WORKSPACE_NOT_WRITABLE, _termination_message(containers), **common)
        ended = [parse_time(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt")) for cs in containers]
        return PodObservation(
            PodState.FAILED,
            reason,
            message or f"the sandbox Pod {phase.lower()}",
            since=max((t for t in ended if t), default=None),
            **common,
        )
    conditions = _conditions(pod)
    scheduled = conditions.get("PodScheduled", {})
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return PodObservation(
            PodState.UNSCHEDULED,
            "Unschedulable",
            scheduled.get("message", ""),
            since=parse_time(meta.get("creationTimestamp")),
            **common,
        )
    for cs in containers:
        waiting = (cs.get("state", {}) or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING_REASONS:
            return PodObservation(PodState.STUCK, waiting["reason"], waiting.get("message", ""), **common)
    if phase == "Running" and conditions.get("Ready", {}).get("status") == "True":
        return PodObservation(PodState.READY, "PodReady", "the sandbox agent is ready", **common)
    if phase == "Running":
        return PodObservation(PodState.STARTING, "PodStarting", "the sandbox agent is starting", **common)
    waiting_reasons = [
        ((cs.get("state", {}) or {}).get("waiting") or {}).get("reason") for cs in containers if cs.get("state")
    ]
    detail = next((r for r in waiting_reasons if r), "")
    return PodObservation(
        PodState.PENDING,
        detail or "PodPending",
        f"the sandbox Pod is pending{f' ({detail})' if detail else ''}",
        **common,
    )


@dataclass(frozen=True)
class ClaimObservation:
    status: ConditionStatus
    reason: Reason
    message: str


def observe_claim(claim: dict[str, Any] | None) -> ClaimObservation:
    if claim is None:
        return ClaimObservation(ConditionStatus.FALSE, Reason.CLAIM_MISSING, "the workspace claim does not exist")
    phase = (claim.get("status") or {}).get("phase") or "Pending"
    name = claim.get("metadata", {}).get("name", "")
    if phase == "Bound":
        return ClaimObservation(ConditionStatus.TRUE, Reason.CLAIM_BOUND, f"workspace claim {name} is bound")
    if phase == "Lost":
        return ClaimObservation(ConditionStatus.FALSE, Reason.CLAIM_LOST, f"workspace claim {name} lost its volume")
    return ClaimObservation(
        ConditionStatus.FALSE,
        Reason.CLAIM_PENDING,
        f"workspace claim {name} is waiting for a volume (often until the sandbox Pod is scheduled)",
    )


def set_condition(
    conditions: list[Condition],
    type_: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Replace one condition; its lastTransitionTime moves only when its status changes."""
    old = next((c for c in conditions if c.type == type_.value), None)
    changed = old is None or old.status != status
    new = Condition(
        type=type_.value,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=now if changed or old is None else old.last_transition_time,
        observed_generation=generation,
    )
    out = [c for c in conditions if c.type != type_.value] + [new]
    order = [t.value for t in ConditionType]
    return sorted(out, key=lambda c: order.index(c.type) if c.type in order else len(order))


def apply_observations(
    status: SessionStatus,
    *,
    pod: PodObservation,
    claim: ClaimObservation | None,
    agent_port: int,
    now: datetime,
    generation: int | None,
    gave_up: bool = False,
    schedule_timeout: float | None = None,
) -> SessionStatus:
    """The status that follows from what the Pod (and the claim) look like now.

    An Unschedulable Pod is waited for up to `schedule_timeout` seconds from its creation (None: for ever):
    the scheduler retries by itself, and most causes pass (a claim still binding, a node being added).
    """
    new = status.model_copy(deep=True)
    conditions = new.conditions
    if claim is not None:
        bound = claim.status
        # A Ready Pod has its volume mounted, whatever the claim event stream has told us so far.
        if pod.state == PodState.READY and bound != ConditionStatus.TRUE:
            claim = ClaimObservation(ConditionStatus.TRUE, Reason.CLAIM_BOUND, "the workspace is mounted")
        conditions = set_condition(
            conditions,
            ConditionType.WORKSPACE_BOUND,
            claim.status,
            claim.reason,
            claim.message,
            now=now,
            generation=generation,
        )
    ready = pod.state == PodState.READY
    conditions = set_condition(
        conditions,
        ConditionType.SANDBOX_READY,
        ConditionStatus.TRUE if ready else ConditionStatus.FALSE,
        pod.reason,
        pod.message,
        now=now,
        generation=generation,
    )
    conditions = set_condition(
        conditions,
        ConditionType.READY,
        ConditionStatus.TRUE if ready else ConditionStatus.FALSE,
        Reason.SANDBOX_READY if ready else pod.reason,
        "the session is ready for tool calls" if ready else pod.message,
        now=now,
        generation=generation,
    )
    new.conditions = conditions
    new.observed_generation = generation
    if pod.name:
        new.pod_name = pod.name
    if pod.uid:
        if status.pod_uid and pod.uid != status.pod_uid:
            new.restart_count = status.restart_count + 1  # a different Pod: the old one was replaced
        new.pod_uid = pod.uid
    if ready and pod.ip:
        if new.phase != Phase.READY or new.pod_ip != pod.ip:
            new.ready_at = now
        new.pod_ip = pod.ip
        new.endpoint = endpoint_for(pod.ip, agent_port)
    else:
        new.pod_ip = None
        new.endpoint = None
    if new.phase == Phase.TERMINATING:
        return new
    if ready:
        new.phase, new.message = Phase.READY, "the sandbox agent is ready"
    elif pod.state == PodState.STUCK or (pod.state == PodState.FAILED and gave_up):
        new.phase, new.message = Phase.FAILED, f"{pod.reason}: {pod.message}" if pod.message else pod.reason
    elif pod.state == PodState.UNSCHEDULED:
        waited = (now - pod.since).total_seconds() if pod.since else 0.0
        if schedule_timeout is not None and waited >= schedule_timeout:
            new.phase = Phase.FAILED
            new.message = (
                f"Unschedulable: no node could run the sandbox Pod within {schedule_timeout:g} s: {pod.message}"
            )
        else:
            limit = f" (waiting up to {schedule_timeout:g} s)" if schedule_timeout is not None else ""
            new.phase, new.message = Phase.STARTING, f"Unschedulable: {pod.message}{limit}"
    else:
        new.phase, new.message = Phase.STARTING, pod.message
    return new


def mark_failed(
    status: SessionStatus, reason: Reason, message: str, *, now: datetime, generation: int | None
) -> SessionStatus:
    """Failed for a reason the operator cannot fix by itself (an invalid spec, a name taken by a stranger)."""
    new = status.model_copy(deep=True)
    new.phase = Phase.FAILED
    new.message = message
    new.observed_generation = generation
    new.conditions = set_condition(
        new.conditions, ConditionType.READY, ConditionStatus.FALSE, reason, message, now=now, generation=generation
    )
    return new


# --- suspension ----------------------------------------------------------------------------------------------


def mark_suspended(
    status: SessionStatus, *, pod: PodObservation, claim_name: str, now: datetime, generation: int | None
) -> SessionStatus:
    """Suspended (spec.suspend): what the session says while its Pod stops, and once it has.

    Nothing of the old Pod is kept (no endpoint, no token Secret, no Pod name or uid: a resumed session's new Pod
    is its first, not a restart); the workspace claim stays, and the status names it.
    """
    new = status.model_copy(deep=True)
    if new.phase == Phase.TERMINATING:
        return new
    stopping = pod.state != PodState.MISSING
    sandbox = "the sandbox Pod is stopping" if stopping else "no sandbox Pod runs"
    new.phase = Phase.SUSPENDED
    new.message = f"suspended: {sandbox}; the workspace {claim_name} stays until spec.suspend is false again"
    new.suspended_at = status.suspended_at if status.phase == Phase.SUSPENDED and status.suspended_at else now
    new.endpoint = new.pod_ip = new.pod_name = new.pod_uid = new.token_secret_name = None
    new.workspace_claim_name = claim_name
    new.observed_generation = generation
    for type_ in (ConditionType.SANDBOX_READY, ConditionType.READY):
        new.conditions = set_condition(
            new.conditions,
            type_,
            ConditionStatus.FALSE,
            Reason.SUSPENDED,
            f"the session is suspended: {sandbox}",
            now=now,
            generation=generation,
        )
    return new


def mark_resuming(status: SessionStatus, *, now: datetime, generation: int | None) -> SessionStatus:
    """spec.suspend is false again: Pending until the new token Secret and Pod exist on the same workspace."""
    new = status.model_copy(deep=True)
    if new.phase != Phase.SUSPENDED:
        return new
    new.phase = Phase.PENDING
    new.message = "resuming: creating a new token and sandbox Pod on the same workspace"
    new.suspended_at = None
    new.observed_generation = generation
    new.conditions = set_condition(
        new.conditions,
        ConditionType.READY,
        ConditionStatus.FALSE,
        Reason.RESUMED,
        new.message,
        now=now,
        generation=generation,
    )
    return new


def suspend_due(suspend_after_seconds: int | None, status: SessionStatus, created_at: datetime, now: datetime) -> bool:
    """Whether a Ready session has been idle long enough to be suspended.

    Idle since its last activity or since its sandbox last became Ready, whichever is later (then creation):
    a session resumed without a tool call (`kubectl patch`) is not suspended again at once.
    """
    if not suspend_after_seconds or status.phase != Phase.READY:
        return False
    since = max((t for t in (status.last_activity_at, status.ready_at) if t is not None), default=created_at)
    return now >= since + timedelta(seconds=suspend_after_seconds)


# --- expiry --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expiry:
    at: datetime | None
    reason: Reason | None = None
    message: str = ""

    def due(self, now: datetime) -> bool:
        return self.at is not None and now >= self.at


def compute_expiry(
    ttl_seconds: int | None,
    idle_timeout_seconds: int | None,
    status: SessionStatus,
    created_at: datetime,
) -> Expiry:
    """The earlier of created+TTL and last-activity+idle-timeout (activity defaults to readiness, then creation)."""
    candidates: list[Expiry] = []
    if ttl_seconds:
        at = created_at + timedelta(seconds=ttl_seconds)
        candidates.append(Expiry(at, Reason.EXPIRED, f"its TTL of {ttl_seconds}s ran out"))
    if idle_timeout_seconds:
        last = status.last_activity_at or status.ready_at or created_at
        at = last + timedelta(seconds=idle_timeout_seconds)
        candidates.append(Expiry(at, Reason.IDLE, f"no tool call for {idle_timeout_seconds}s"))
    if not candidates:
        return Expiry(None)
    return min(candidates, key=lambda e: e.at or created_at)


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
