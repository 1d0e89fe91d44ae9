"""The CodegenSession models: defaults, validation and the messages people read."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from codegen_mcp.api import session as api
from codegen_mcp.api.errors import validation_sentence


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        (2, Decimal(2)),
        ("1Gi", Decimal(1024**3)),
        ("512Mi", Decimal(512 * 1024**2)),
        ("1k", Decimal(1000)),
        ("1e3", Decimal(1000)),
        ("1.5G", Decimal("1.5e9")),
    ],
)
def test_parse_quantity(text: str | int, value: Decimal) -> None:
    assert api.parse_quantity(text) == value


@pytest.mark.parametrize("text", ["lots", "1GB", "", "1 Gi", "--1"])
def test_parse_quantity_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        api.parse_quantity(text)


def test_defaults() -> None:
    spec = api.SessionSpec()
    assert spec.workspace.size == "1Gi" and spec.workspace.retain is False
    assert spec.network.egress == api.EgressMode.PACKAGES
    assert spec.env == [] and spec.packages == []
    assert spec.ttl_seconds is None and spec.idle_timeout_seconds is None


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"workspace": {"size": "lots"}}, "`spec.workspace.size`: 'lots' is not a Kubernetes quantity"),
    ({"workspace": {"size": "1Ki"}}, "`spec.workspace.size`: '1Ki' is too small for a workspace"),
    ({"network": {"egress": "everywhere"}}, "`spec.network.egress` must be 'none', 'packages' or 'open'"),
    ({"network": {"allowCIDRs": ["10.0.0.1/8"]}}, "`spec.network.allowCIDRs[0]`: '10.0.0.1/8' is not a CIDR"),
    ({"network": {"allowPorts": [70000]}}, "`spec.network.allowPorts[0]` must be less than or equal to 65535"),
    ({"ttlSeconds": 0}, "`spec.ttlSeconds` must be greater than or equal to 1"),
    ({"idleTimeoutSeconds": "soon"}, "`spec.idleTimeoutSeconds` must be a valid integer"),
    ({"env": [{"name": "CODEGEN_AGENT_TOKEN", "value": "x"}]}, "'CODEGEN_AGENT_TOKEN' is reserved"),
    ({"env": [{"name": "A"}, {"name": "A"}]}, "env names must be unique; repeated: A"),
    ({"packages": ["rich"], "network": {"egress": "none"}}, "packages need network.egress 'packages' or 'open'"),
    (
        {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
        "requests.cpu (2) must not exceed limits.cpu (1)",
    ),
    ({"imagePullPolicy": "Sometimes"}, "`spec.imagePullPolicy` must be 'Always', 'IfNotPresent' or 'Never'"),
    ({"runtimeClassName": "Not_Valid"}, "`spec.runtimeClassName` must match pattern"),
    ({"colour": "blue"}, "`spec.colour` is unknown"),
]


@pytest.mark.parametrize(("spec", "message"), INVALID)
def test_invalid_specs_say_what_is_wrong(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        api.SessionSpec.model_validate(spec)
    assert message in validation_sentence(info.value, prefix="spec")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("demo", None),
        ("a" * 63, None),
        ("a" * 64, "at most 63 characters"),
        ("Demo", "lowercase letters"),
        ("-demo", "lowercase letters"),
        ("", "required"),
    ],
)
def test_session_names(name: str, problem: str | None) -> None:
    found = api.check_session_name(name)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_status_round_trip_and_patch_clears_unset_fields() -> None:
    status = api.SessionStatus.model_validate(
        {
            "phase": "Ready",
            "podIP": "10.0.0.1",
            "restartCount": 2,
            "unknownField": 1,
            "lastActivityAt": "2026-01-01T00:00:00Z",
        }
    )
    assert status.pod_ip == "10.0.0.1" and status.restart_count == 2
    patch = status.to_patch()
    assert patch["phase"] == "Ready" and patch["endpoint"] is None  # null removes it in a merge patch
    assert patch["lastActivityAt"] == "2026-01-01T00:00:00Z"


def test_child_names() -> None:
    assert api.token_secret_name("s") == "s-agent-token"
    assert api.workspace_claim_name("s") == "s-workspace"
    assert api.sandbox_pod_name("s") == "s-sandbox"
    assert api.network_policy_name("s") == "s"
