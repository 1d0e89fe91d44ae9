"""The kubernetes backend's pool setting: off by default, else every session it creates names the pool."""

from __future__ import annotations

from codegen_mcp.api.session import SessionSpec
from codegen_mcp.coordinator.backends.kubernetes import build_session_manifest
from codegen_mcp.coordinator.settings import KubernetesBackendSettings


def test_sessions_name_no_pool_by_default() -> None:
    spec = build_session_manifest("mcp-0", "ns", "key", KubernetesBackendSettings())["spec"]
    assert "poolRef" not in spec


def test_sessions_name_the_configured_pool() -> None:
    settings = KubernetesBackendSettings(pool="warm")
    spec = build_session_manifest("mcp-0", "ns", "key", settings)["spec"]
    assert spec["poolRef"] == "warm"
    assert SessionSpec.model_validate(spec).pool_ref == "warm"
