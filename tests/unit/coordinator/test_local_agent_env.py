"""The environment the local backend gives each agent process: what the agent reads back, checked at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from codegen_mcp.api.agent_settings import AgentSettings, AgentSettingsError
from codegen_mcp.api.logs import log_format
from codegen_mcp.api.tracing import tracing_wanted
from codegen_mcp.coordinator.backends.local import LocalBackend
from codegen_mcp.coordinator.settings import CoordinatorSettings, LocalBackendSettings


@pytest.fixture(autouse=True)
def no_agent_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.upper().startswith("CODEGEN_"):
            monkeypatch.delenv(name)


def agent_env(state_dir: Path, sandbox_id: str = "s-1", **local: object) -> dict[str, str]:
    settings = CoordinatorSettings(state_dir=state_dir, local=LocalBackendSettings.model_validate(local))
    backend = LocalBackend(settings)
    return backend._agent_env(sandbox_id, state_dir / "sessions" / sandbox_id / "workspace", "the-token")


def test_the_agent_reads_back_what_the_backend_decided(tmp_path: Path) -> None:
    state = tmp_path / 'a "quoted" state, \\ too'  # the hidden folder list is JSON, whatever the path
    env = agent_env(state, python="/usr/bin/python3", memory_bytes=512 * 1024**2)
    agent = AgentSettings.from_environ(env)
    root = state.resolve()
    assert agent.workspace == root / "sessions" / "s-1" / "workspace"
    assert agent.hide_paths == [root / "sessions"]
    assert agent.token_value() == "the-token"
    assert (agent.sandbox, agent.network, agent.python, agent.memory_bytes) == (
        "none",
        False,
        "/usr/bin/python3",
        2**29,
    )
    assert (agent.artifact_store_dir, agent.artifact_store_namespace) == (root / "artifacts", "s-1")
    assert agent.max_processes == AgentSettings.model_fields["max_processes"].default  # unset: the agent's default
    assert "CODEGEN_AGENT_MAX_PROCESSES" not in env


def test_the_coordinators_agent_variables_pass_through_its_own_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEGEN_AGENT_ARTIFACT_STORE", "s3")
    monkeypatch.setenv("CODEGEN_AGENT_S3_BUCKET", "artifacts")
    monkeypatch.setenv("codegen_agent_upload_max_bytes", "4096")  # any case, as the agent reads them
    monkeypatch.setenv("CODEGEN_AGENT_WORKSPACE", "/elsewhere")  # each sandbox has its own
    monkeypatch.setenv("CODEGEN_STATE_DIR", "/coordinator/own")  # never given to agents
    monkeypatch.setenv("CODEGEN_LOG_FORMAT", "json")  # shared: the agents' lines look like the coordinator's
    env = agent_env(tmp_path)
    agent = AgentSettings.from_environ(env)
    assert (agent.artifact_store, agent.s3_bucket, agent.upload_max_bytes) == ("s3", "artifacts", 4096)
    assert agent.workspace == tmp_path.resolve() / "sessions" / "s-1" / "workspace"
    others = [name for name in env if name.upper().startswith("CODEGEN_") and not name.startswith("CODEGEN_AGENT_")]
    assert others == ["CODEGEN_LOG_FORMAT"]
    assert "codegen_agent_upload_max_bytes" not in env


def test_agents_log_in_the_coordinators_format_and_trace_only_when_it_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEGEN_LOG_FORMAT", "json")  # not the agents' default (text)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("CODEGEN_TRACING", "off")  # the coordinator does not trace: its agents must not either
    env = agent_env(tmp_path)
    assert log_format(env) == "json"
    assert tracing_wanted(os.environ) is False and tracing_wanted(env) is False


@pytest.mark.parametrize(
    ("variable", "value", "sentence"),
    [
        (
            "CODEGEN_AGENT_S3_BUKET",
            "artifacts",
            "`CODEGEN_AGENT_S3_BUKET` is not an agent setting; did you mean `CODEGEN_AGENT_S3_BUCKET`?",
        ),
        ("CODEGEN_AGENT_UPLOAD_MAX_BYTES", "lots", "`CODEGEN_AGENT_UPLOAD_MAX_BYTES` must be a valid integer"),
    ],
)
def test_a_variable_agents_would_refuse_stops_the_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, sentence: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(AgentSettingsError) as info:
        LocalBackend(CoordinatorSettings(state_dir=tmp_path))
    assert str(info.value).startswith(sentence)


def test_the_coordinator_refuses_to_start_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CODEGEN_")}
    proc = subprocess.run(
        [sys.executable, "-m", "codegen_mcp.coordinator", "--state-dir", str(tmp_path), "--port", "0"],
        env={**env, "CODEGEN_AGENT_MEMORY_BYTE": "1073741824"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (
        "codegen-mcp serve: `CODEGEN_AGENT_MEMORY_BYTE` is not an agent setting; "
        "did you mean `CODEGEN_AGENT_MEMORY_BYTES`?\n"
    )
