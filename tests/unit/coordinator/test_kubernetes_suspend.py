"""The kubernetes backend's part of suspension that needs no cluster: which sessions the operator may suspend by
itself (spec.suspendAfterSeconds), and what counts as suspended on a resource."""

from __future__ import annotations

import pytest

from codegen_mcp.api import session as api
from codegen_mcp.coordinator.backends.kubernetes import (
    KubernetesBackend,
    build_session_manifest,
    is_suspended,
    operator_suspend_after,
)
from codegen_mcp.coordinator.settings import CoordinatorSettings, KubernetesBackendSettings


def settings(**values: object) -> CoordinatorSettings:
    k8s = KubernetesBackendSettings(activity_interval_s=30)
    return CoordinatorSettings.model_validate({"backend": "kubernetes", "kubernetes": k8s, **values})


@pytest.mark.parametrize(
    ("suspend_after_s", "idle_timeout_s", "expected"),
    [
        (300, 1800, 331),  # the coordinator's own setting, plus the lag of status.lastActivityAt
        (0.5, 1800, 32),
        (0, 1800, None),  # suspension off
        (1800, 1800, None),  # not below the idle timeout: never, as for the coordinator itself
        (10**9, 10**10, api.MAX_TTL_SECONDS),  # what the CRD accepts at most
    ],
)
def test_sessions_carry_the_coordinators_suspend_after(
    suspend_after_s: float, idle_timeout_s: float, expected: int | None
) -> None:
    config = settings(suspend_after_s=suspend_after_s, session_idle_timeout_s=idle_timeout_s)
    after = operator_suspend_after(config)
    assert after == expected
    spec = build_session_manifest("mcp-0", "ns", "ws-named", config.kubernetes, after)["spec"]
    assert spec.get("suspendAfterSeconds") == expected
    assert api.SessionSpec.model_validate(spec).suspend_after_seconds == expected


def test_the_backend_suspends() -> None:
    assert KubernetesBackend.suspends is True


@pytest.mark.parametrize(
    ("obj", "suspended"),
    [
        ({"spec": {"suspend": True}, "status": {"phase": "Ready"}}, True),  # asked; the operator has not acted yet
        ({"spec": {"suspend": False}, "status": {"phase": "Suspended"}}, True),  # being resumed
        ({"spec": {}, "status": {"phase": "Ready"}}, False),
        ({}, False),
    ],
)
def test_what_counts_as_suspended(obj: dict[str, object], suspended: bool) -> None:
    assert is_suspended(obj) is suspended
