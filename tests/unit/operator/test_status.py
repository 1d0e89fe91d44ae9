"""Pure status logic: Pod and claim observations, conditions, phases, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from codegen_mcp.api import session as api
from codegen_mcp.operator import status as st

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def pod(
    phase: str | None = "Pending", *, conditions: dict[str, Any] | None = None, container: Any = None, **extra: Any
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if conditions:
        status["conditions"] = [{"type": t, **c} for t, c in conditions.items()]
    if container is not None:
        status["containerStatuses"] = [{"name": "agent", "state": container}]
    status.update(extra)
    return {"metadata": {"name": "s-sandbox", "uid": "u1"}, "status": status}


@pytest.mark.parametrize(
    ("body", "state", "reason"),
    [
        (None, st.PodState.MISSING, "PodMissing"),
        (pod(None), st.PodState.PENDING, "PodPending"),
        (pod(container={"waiting": {"reason": "ContainerCreating"}}), st.PodState.PENDING, "ContainerCreating"),
        (
            pod(conditions={"PodScheduled": {"status": "False", "reason": "Unschedulable", "message": "no node"}}),
            st.PodState.UNSCHEDULED,
            "Unschedulable",
        ),
        (
            pod(container={"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}),
            st.PodState.STUCK,
            "ImagePullBackOff",
        ),
        (
            pod(container={"waiting": {"reason": "CreateContainerConfigError"}}),
            st.PodState.STUCK,
            "CreateContainerConfigError",
        ),
        (pod("Running", conditions={"Ready": {"status": "False"}}), st.PodState.STARTING, "PodStarting"),
        (pod("Running", conditions={"Ready": {"status": "True"}}, podIP="10.0.0.9"), st.PodState.READY, "PodReady"),
        (
            pod("Failed", container={"terminated": {"reason": "OOMKilled", "exitCode": 137}}),
            st.PodState.FAILED,
            "OOMKilled",
        ),
        (pod("Failed", reason="Evicted", message="low on memory"), st.PodState.FAILED, "Evicted"),
        (pod("Failed", container={"terminated": {"exitCode": 1}}), st.PodState.FAILED, "Error"),
        (pod("Succeeded"), st.PodState.FAILED, "Completed"),
    ],
)
def test_observe_pod(body: dict[str, Any] | None, state: st.PodState, reason: str) -> None:
    obs = st.observe_pod(body)
    assert (obs.state, obs.reason) == (state, reason)


def test_terminating_pod() -> None:
    body = pod("Running")
    body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert st.observe_pod(body).state == st.PodState.TERMINATING


@pytest.mark.parametrize(
    ("claim", "status", "reason"),
    [
        (None, api.ConditionStatus.FALSE, api.Reason.CLAIM_MISSING),
        ({"metadata": {"name": "w"}}, api.ConditionStatus.FALSE, api.Reason.CLAIM_PENDING),
        ({"metadata": {"name": "w"}, "status": {"phase": "Bound"}}, api.ConditionStatus.TRUE, api.Reason.CLAIM_BOUND),
        ({"metadata": {"name": "w"}, "status": {"phase": "Lost"}}, api.ConditionStatus.FALSE, api.Reason.CLAIM_LOST),
    ],
)
def test_observe_claim(claim: dict[str, Any] | None, status: api.ConditionStatus, reason: api.Reason) -> None:
    obs = st.observe_claim(claim)
    assert (obs.status, obs.reason) == (status, reason)


def test_condition_transition_time_moves_only_on_change() -> None:
    later = NOW + timedelta(minutes=5)
    conditions = st.set_condition(
        [], api.ConditionType.READY, api.ConditionStatus.FALSE, "A", "a", now=NOW, generation=1
    )
    same = st.set_condition(
        conditions, api.ConditionType.READY, api.ConditionStatus.FALSE, "B", "b", now=later, generation=2
    )
    assert same[0].last_transition_time == NOW and same[0].reason == "B" and same[0].observed_generation == 2
    flipped = st.set_condition(
        same, api.ConditionType.READY, api.ConditionStatus.TRUE, "C", "c", now=later, generation=2
    )
    assert flipped[0].last_transition_time == later
    ordered = st.set_condition(
        flipped, api.ConditionType.WORKSPACE_BOUND, api.ConditionStatus.TRUE, "", "", now=NOW, generation=2
    )
    assert [c.type for c in ordered] == ["WorkspaceBound", "Ready"]


READY = st.PodObservation(st.PodState.READY, "PodReady", "ready", name="s-sandbox", uid="u1", ip="10.0.0.9")
BOUND = st.ClaimObservation(api.ConditionStatus.TRUE, api.Reason.CLAIM_BOUND, "bound")


@pytest.mark.parametrize(
    ("pod_obs", "gave_up", "phase"),
    [
        (READY, False, api.Phase.READY),
        (st.PodObservation(st.PodState.PENDING, "PodPending", "pending"), False, api.Phase.STARTING),
        (st.PodObservation(st.PodState.STUCK, "ImagePullBackOff", "no image"), False, api.Phase.FAILED),
        (st.PodObservation(st.PodState.FAILED, "OOMKilled", "exit 137"), False, api.Phase.STARTING),
        (st.PodObservation(st.PodState.FAILED, "OOMKilled", "exit 137"), True, api.Phase.FAILED),
    ],
)
def test_phase_follows_the_pod(pod_obs: st.PodObservation, gave_up: bool, phase: api.Phase) -> None:
    new = st.apply_observations(
        api.SessionStatus(), pod=pod_obs, claim=BOUND, agent_port=8080, now=NOW, generation=3, gave_up=gave_up
    )
    assert new.phase == phase
    ready = new.condition(api.ConditionType.READY)
    assert ready is not None and (ready.status == api.ConditionStatus.TRUE) == (phase == api.Phase.READY)
    assert new.observed_generation == 3


def test_ready_sets_endpoint_and_ready_at_once() -> None:
    first = st.apply_observations(api.SessionStatus(), pod=READY, claim=BOUND, agent_port=8080, now=NOW, generation=1)
    assert first.endpoint == "http://10.0.0.9:8080" and first.ready_at == NOW and first.pod_uid == "u1"
    later = st.apply_observations(
        first, pod=READY, claim=None, agent_port=8080, now=NOW + timedelta(hours=1), generation=1
    )
    assert later.ready_at == NOW  # still the same readiness
    down = st.apply_observations(
        later,
        pod=st.PodObservation(st.PodState.MISSING, "PodMissing", "gone"),
        claim=None,
        agent_port=8080,
        now=NOW,
        generation=1,
    )
    assert down.endpoint is None and down.pod_ip is None and down.phase == api.Phase.STARTING


def test_a_new_pod_counts_as_a_restart() -> None:
    first = st.apply_observations(api.SessionStatus(), pod=READY, claim=None, agent_port=8080, now=NOW, generation=1)
    assert first.restart_count == 0
    same = st.apply_observations(first, pod=READY, claim=None, agent_port=8080, now=NOW, generation=1)
    assert same.restart_count == 0
    other = st.PodObservation(st.PodState.PENDING, "PodPending", "", name="s-sandbox", uid="u2")
    replaced = st.apply_observations(same, pod=other, claim=None, agent_port=8080, now=NOW, generation=1)
    assert replaced.restart_count == 1 and replaced.pod_uid == "u2"


def test_a_ready_pod_implies_a_bound_workspace() -> None:
    pending = st.ClaimObservation(api.ConditionStatus.FALSE, api.Reason.CLAIM_PENDING, "pending")
    new = st.apply_observations(api.SessionStatus(), pod=READY, claim=pending, agent_port=8080, now=NOW, generation=1)
    bound = new.condition(api.ConditionType.WORKSPACE_BOUND)
    assert bound is not None and bound.status == api.ConditionStatus.TRUE


def test_terminating_is_kept() -> None:
    new = st.apply_observations(
        api.SessionStatus(phase=api.Phase.TERMINATING), pod=READY, claim=None, agent_port=8080, now=NOW, generation=1
    )
    assert new.phase == api.Phase.TERMINATING


def test_mark_failed() -> None:
    new = st.mark_failed(api.SessionStatus(), api.Reason.INVALID_SPEC, "spec.x: bad", now=NOW, generation=4)
    assert new.phase == api.Phase.FAILED and new.message == "spec.x: bad"
    ready = new.condition(api.ConditionType.READY)
    assert ready is not None and ready.reason == "InvalidSpec"


CREATED = NOW - timedelta(hours=1)


@pytest.mark.parametrize(
    ("ttl", "idle", "status", "at", "reason"),
    [
        (None, None, {}, None, None),
        (7200, None, {}, CREATED + timedelta(seconds=7200), api.Reason.EXPIRED),
        (None, 600, {}, CREATED + timedelta(seconds=600), api.Reason.IDLE),
        (None, 600, {"readyAt": NOW}, NOW + timedelta(seconds=600), api.Reason.IDLE),
        (None, 600, {"readyAt": CREATED, "lastActivityAt": NOW}, NOW + timedelta(seconds=600), api.Reason.IDLE),
        (3700, 600, {"lastActivityAt": NOW}, CREATED + timedelta(seconds=3700), api.Reason.EXPIRED),
    ],
)
def test_compute_expiry(
    ttl: int | None, idle: int | None, status: dict[str, Any], at: datetime | None, reason: api.Reason | None
) -> None:
    expiry = st.compute_expiry(ttl, idle, api.SessionStatus.model_validate(status), CREATED)
    assert (expiry.at, expiry.reason) == (at, reason)
    assert expiry.due(NOW) is (at is not None and at <= NOW)


def test_parse_time() -> None:
    assert st.parse_time("2026-01-01T12:00:00Z") == NOW
    assert st.parse_time(None) is None and st.parse_time(NOW) is NOW


UNSCHEDULABLE_MESSAGE = "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims"


def unschedulable(created: datetime) -> st.PodObservation:
    body = pod(
        conditions={"PodScheduled": {"status": "False", "reason": "Unschedulable", "message": UNSCHEDULABLE_MESSAGE}}
    )
    body["metadata"]["creationTimestamp"] = created.isoformat().replace("+00:00", "Z")
    return st.observe_pod(body)


def test_unschedulable_is_a_bounded_wait_with_its_reason() -> None:
    waiting = st.apply_observations(
        api.SessionStatus(),
        pod=unschedulable(NOW - timedelta(seconds=5)),
        claim=None,
        agent_port=8080,
        now=NOW,
        generation=1,
        schedule_timeout=60,
    )
    assert waiting.phase == api.Phase.STARTING
    assert waiting.message == f"Unschedulable: {UNSCHEDULABLE_MESSAGE} (waiting up to 60 s)"
    sandbox = waiting.condition(api.ConditionType.SANDBOX_READY)
    assert sandbox is not None and sandbox.reason == "Unschedulable"

    gave_up = st.apply_observations(
        waiting,
        pod=unschedulable(NOW - timedelta(seconds=61)),
        claim=None,
        agent_port=8080,
        now=NOW,
        generation=1,
        schedule_timeout=60,
    )
    assert gave_up.phase == api.Phase.FAILED
    assert gave_up.message == (f"Unschedulable: no node could run the sandbox Pod within 60 s: {UNSCHEDULABLE_MESSAGE}")


def test_failed_pod_records_when_its_container_ended() -> None:
    body = pod("Failed", container={"terminated": {"exitCode": 3, "finishedAt": "2026-01-01T11:59:58Z"}})
    assert st.observe_pod(body).since == NOW - timedelta(seconds=2)


def test_an_unwritable_workspace_is_not_retried_and_says_why() -> None:
    sentence = (
        "the agent (uid 10001, gids 10001) cannot write its workspace /workspace: it belongs to 0:0 with mode 0750"
    )
    body = pod("Failed", container={"terminated": {"exitCode": 73, "reason": "Error", "message": sentence}})
    obs = st.observe_pod(body)
    assert (obs.state, obs.reason, obs.message) == (st.PodState.STUCK, "WorkspaceNotWritable", sentence)
    failed = st.apply_observations(api.SessionStatus(), pod=obs, claim=None, agent_port=8080, now=NOW, generation=1)
    assert failed.phase == api.Phase.FAILED and failed.message == f"WorkspaceNotWritable: {sentence}"
    # Without a termination message (another terminationMessagePath), the reason is still named.
    bare = st.observe_pod(pod("Failed", container={"terminated": {"exitCode": 73}}))
    assert bare.state == st.PodState.STUCK and "cannot write its workspace volume" in bare.message
