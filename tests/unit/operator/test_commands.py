"""Settings from the environment, and the `operator`, `render` and `crd` commands' argument handling."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from codegen_mcp.operator import render
from codegen_mcp.operator.__main__ import parse_args
from codegen_mcp.operator.handlers import build_registry, operator_kwargs
from codegen_mcp.operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[3]


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, settings: OperatorSettings) -> None:
    assert settings.namespaces == [] and settings.sandbox_uid == 10001 and settings.agent_port == 8080
    monkeypatch.setenv("CODEGEN_OPERATOR_NAMESPACES", "team-a, team-b")
    monkeypatch.setenv("CODEGEN_OPERATOR_COORDINATOR_POD_LABELS", "app=coord,tier=mcp")
    monkeypatch.setenv("CODEGEN_OPERATOR_PACKAGE_INDEX_PORTS", "443,8443")
    monkeypatch.setenv("CODEGEN_OPERATOR_PACKAGE_INDEX_CIDRS", "10.9.0.0/16")
    monkeypatch.setenv("CODEGEN_OPERATOR_LIVENESS_ENDPOINT", "")
    monkeypatch.setenv("CODEGEN_OPERATOR_DEFAULT_IMAGE", "img:1")
    monkeypatch.setenv("CODEGEN_OPERATOR_MEMORY_LIMIT", "4Gi")
    loaded = OperatorSettings()
    assert loaded.namespaces == ["team-a", "team-b"]
    assert loaded.coordinator_pod_labels == {"app": "coord", "tier": "mcp"}
    assert loaded.package_index_ports == [443, 8443]
    assert loaded.package_index_cidrs == ["10.9.0.0/16"]
    assert loaded.liveness_endpoint is None
    assert (loaded.default_image, loaded.memory_limit) == ("img:1", "4Gi")


def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch, settings: OperatorSettings) -> None:
    monkeypatch.setenv("CODEGEN_OPERATOR_COORDINATOR_POD_LABELS", "justakey")
    with pytest.raises(ValueError, match="'justakey' is not key=value"):
        OperatorSettings()


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch, settings: OperatorSettings) -> None:
    monkeypatch.setenv("CODEGEN_OPERATOR_NAMESPACES", "from-env")
    parsed, _ = parse_args(["-n", "a", "-n", "b", "--standalone", "--liveness", "http://0.0.0.0:9000/healthz"])
    assert parsed.namespaces == ["a", "b"] and parsed.standalone is True
    assert parsed.liveness_endpoint == "http://0.0.0.0:9000/healthz"
    everywhere, _ = parse_args(["-A"])
    assert everywhere.namespaces == [] and everywhere.standalone is None  # decided at startup


def test_operator_kwargs(settings: OperatorSettings) -> None:
    kwargs = operator_kwargs(settings.model_copy(update={"namespaces": ["a"], "priority": 5}))
    assert kwargs["namespaces"] == ["a"] and kwargs["clusterwide"] is False
    # kopf gets no peering name: one would make its peering mandatory before the startup handler can look
    # for the peering CRD (handlers.choose_peering).
    assert kwargs["peering_name"] is None and kwargs["standalone"] is None and kwargs["priority"] == 5
    assert kwargs["memo"]["config"].namespaces == ["a"]
    clusterwide = operator_kwargs(settings.model_copy(update={"standalone": True}))
    assert clusterwide["clusterwide"] is True and clusterwide["standalone"] is True


def test_registry_has_no_finalizer_handlers() -> None:
    """No on.delete handler, timer or daemon: kopf would add a finalizer that can wedge a namespace."""
    registry = build_registry()
    assert not registry._spawning.get_all_handlers()
    assert all(h.reason is None or h.reason.value != "delete" for h in registry._changing.get_all_handlers())


def test_render_prints_valid_children(capsys: pytest.CaptureFixture[str], settings: OperatorSettings) -> None:
    render.main(["-f", str(ROOT / "examples" / "codegensession.yaml")])
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["Secret", "PersistentVolumeClaim", "NetworkPolicy", "Pod"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33", strict=True)
        assert doc["metadata"]["namespace"] == "default"


def test_render_refuses_an_invalid_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], settings: OperatorSettings
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: codegen-mcp.io/v1alpha1\nkind: CodegenSession\nmetadata: {name: x}\nspec: {ttlSeconds: -1}\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        render.main(["-f", str(bad)])
    assert exit_info.value.code == 2
    assert "`spec.ttlSeconds` must be greater than or equal to 1" in capsys.readouterr().err


def test_render_needs_a_session(settings: OperatorSettings) -> None:
    with pytest.raises(render.RenderError, match="no CodegenSession"):
        render.render_documents([{"kind": "ConfigMap"}], settings)
