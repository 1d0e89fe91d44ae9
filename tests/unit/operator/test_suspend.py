"""Suspension's pure logic: the status a suspended and a resuming session shows, when idleness suspends, and
the rules that keep spec.suspend mutable on a session and out of a pool's template."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from codegen_mcp.api import pool
from codegen_mcp.api import session as api
from codegen_mcp.operator import status as st
from tests.unit.operator.test_crd import BASE, defaulted, failing
from tests.unit.operator.test_pool import cel_refusals
from tests.unit.operator.test_status import BOUND, NOW, READY

MISSING = st.PodObservation(st.PodState.MISSING, "PodMissing", "gone")
STOPPING = st.PodObservation(st.PodState.TERMINATING, "PodTerminating", "being deleted", name="s-sandbox", uid="u1")


def ready_status() -> api.SessionStatus:
    status = st.apply_observations(api.SessionStatus(), pod=READY, claim=BOUND, agent_port=8080, now=NOW, generation=1)
    status.token_secret_name, status.workspace_claim_name = "s-agent-token", "s-workspace"
    return status


def test_a_suspended_session_shows_no_pod_no_endpoint_no_token_and_keeps_its_workspace() -> None:
    stopping = st.mark_suspended(ready_status(), pod=STOPPING, claim_name="s-workspace", now=NOW, generation=2)
    assert stopping.phase == api.Phase.SUSPENDED
    assert stopping.message == (
        "suspended: the sandbox Pod is stopping; the workspace s-workspace stays until spec.suspend is false again"
    )
    assert (stopping.endpoint, stopping.pod_ip, stopping.pod_name, stopping.pod_uid) == (None, None, None, None)
    assert stopping.token_secret_name is None and stopping.workspace_claim_name == "s-workspace"
    assert stopping.suspended_at == NOW and stopping.observed_generation == 2
    for type_ in (api.ConditionType.READY, api.ConditionType.SANDBOX_READY):
        condition = stopping.condition(type_)
        assert condition is not None
        assert (condition.status, condition.reason) == (api.ConditionStatus.FALSE, api.Reason.SUSPENDED)
    bound = stopping.condition(api.ConditionType.WORKSPACE_BOUND)
    assert bound is not None and bound.status == api.ConditionStatus.TRUE  # the workspace is still there

    later = NOW + timedelta(seconds=9)
    stopped = st.mark_suspended(stopping, pod=MISSING, claim_name="s-workspace", now=later, generation=2)
    assert stopped.message is not None and stopped.message.startswith("suspended: no sandbox Pod runs;")
    assert stopped.suspended_at == NOW  # suspended since the first time it said so


def test_a_deleting_session_stays_terminating() -> None:
    terminating = api.SessionStatus(phase=api.Phase.TERMINATING)
    assert st.mark_suspended(terminating, pod=MISSING, claim_name="w", now=NOW, generation=1) == terminating


def test_resuming_is_pending_and_its_new_pod_is_not_a_restart() -> None:
    suspended = st.mark_suspended(ready_status(), pod=MISSING, claim_name="s-workspace", now=NOW, generation=2)
    resuming = st.mark_resuming(suspended, now=NOW, generation=3)
    assert resuming.phase == api.Phase.PENDING and resuming.suspended_at is None
    assert resuming.message == "resuming: creating a new token and sandbox Pod on the same workspace"
    new_pod = st.PodObservation(st.PodState.READY, "PodReady", "ready", name="s-sandbox", uid="u2", ip="10.0.0.7")
    later = NOW + timedelta(seconds=3)
    ready = st.apply_observations(resuming, pod=new_pod, claim=None, agent_port=8080, now=later, generation=3)
    assert ready.phase == api.Phase.READY and ready.endpoint == "http://10.0.0.7:8080"
    assert ready.restart_count == 0 and ready.ready_at == later
    # Only a suspended session resumes: any other is left as it is.
    assert st.mark_resuming(ready, now=NOW, generation=4) == ready


AFTER = 300


@pytest.mark.parametrize(
    ("status", "due"),
    [
        ({"phase": "Ready", "readyAt": NOW - timedelta(seconds=AFTER)}, True),
        ({"phase": "Ready", "readyAt": NOW - timedelta(seconds=AFTER - 1)}, False),
        ({"phase": "Ready", "readyAt": NOW - timedelta(hours=2), "lastActivityAt": NOW - timedelta(seconds=10)}, False),
        # Resumed (Ready again) without a tool call since: idle from the new readiness, not the old activity.
        ({"phase": "Ready", "readyAt": NOW - timedelta(seconds=10), "lastActivityAt": NOW - timedelta(hours=2)}, False),
        ({"phase": "Ready"}, True),  # never Ready nor used: idle since creation (an hour ago)
        ({"phase": "Starting", "readyAt": NOW - timedelta(hours=2)}, False),
        ({"phase": "Suspended", "readyAt": NOW - timedelta(hours=2)}, False),
    ],
)
def test_idle_suspension_is_due_after_the_last_activity_or_readiness(status: dict[str, Any], due: bool) -> None:
    parsed = api.SessionStatus.model_validate(status)
    assert st.suspend_due(AFTER, parsed, NOW - timedelta(hours=1), NOW) is due
    assert st.suspend_due(None, parsed, NOW - timedelta(hours=1), NOW) is False


def test_suspend_and_suspend_after_are_mutable_and_validated() -> None:
    old = defaulted(BASE)
    assert failing("spec", defaulted({**BASE, "suspend": True, "suspendAfterSeconds": 60}), old) == []
    spec = api.SessionSpec.model_validate({"suspend": True, "suspendAfterSeconds": 60})
    assert spec.suspend and spec.suspend_after_seconds == 60
    assert api.SessionSpec().suspend is False
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        api.SessionSpec.model_validate({"suspendAfterSeconds": 0})


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ({"suspend": True}, "template.suspend belongs on the session, not on a pool (a pooled sandbox never suspends)"),
        ({"suspendAfterSeconds": 60}, "template.suspendAfterSeconds belongs on the session, not on a pool"),
    ],
)
def test_a_pooled_sandbox_never_suspends(template: dict[str, Any], message: str) -> None:
    assert cel_refusals(template) == [message]
    with pytest.raises(ValidationError, match=message.split(" ")[0].replace(".", r"\.")):
        pool.PoolSpec.model_validate({"template": template})
    # What the API server stores for a template that says nothing: suspend defaulted to false, accepted.
    assert cel_refusals({"suspend": False}) == []
    assert pool.PoolSpec.model_validate({"template": {"suspend": False}}).template.suspend is False
