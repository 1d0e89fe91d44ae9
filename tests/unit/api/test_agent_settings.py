"""The agent's settings as environment variables: what `to_env` writes, `from_environ` reads back, unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from codegen_mcp.api.agent_settings import ENV_PREFIX, AgentSettings, AgentSettingsError, MiB

# What may sit in an environment variable: no NUL, nothing that cannot be encoded.
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0"), max_size=20)
PATHS = st.builds(Path, TEXT)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def at_least(low: int) -> st.SearchStrategy[int]:
    return st.integers(min_value=low, max_value=2**63)


# One strategy per field, each within the field's constraints; a new field fails the coverage test below.
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "workspace": PATHS,
    "venv_dir": maybe(PATHS),
    "state_dir": maybe(PATHS),
    "token": maybe(st.builds(SecretStr, TEXT)),
    "token_file": maybe(PATHS),
    "host": TEXT,
    "port": st.integers(0, 65535),
    "unix_socket": maybe(PATHS),
    "sandbox": st.sampled_from(["auto", "bwrap", "none"]),
    "sandbox_uid": maybe(st.integers()),
    "sandbox_gid": maybe(st.integers()),
    "network": st.booleans(),
    "tmp_dir": maybe(PATHS),
    "hide_paths": st.lists(PATHS, max_size=3),
    "python": maybe(TEXT),
    "termination_log": PATHS,  # None is no variable: see test_a_none_that_is_not_the_default_is_refused
    "memory_bytes": at_least(16 * MiB),
    "install_memory_bytes": at_least(64 * MiB),
    "max_processes": at_least(1),
    "max_file_bytes": at_least(1),
    "max_open_files": at_least(16),
    "output_cap_bytes": at_least(1024),
    "max_timeout_s": st.floats(min_value=0, exclude_min=True, allow_nan=False),
    "task_retention": at_least(1),
    "pip_index_url": maybe(TEXT),
    "pip_network": st.booleans(),
    "packages": maybe(TEXT),
    "run_env": st.dictionaries(TEXT, TEXT, max_size=3),
    "devtools_wheelhouse": maybe(PATHS),
    "devtools_find_links": st.lists(PATHS, max_size=3),
    "devtools_download": st.booleans(),
    "pytest_requirement": TEXT,
    "ruff_requirement": TEXT,
    "mypy_requirement": TEXT,
    "git_author_name": TEXT.filter(bool),
    "git_author_email": st.text(min_size=3, max_size=20).filter(lambda t: "\0" not in t),
    "git_extra_ca_bundle": maybe(PATHS),
    "artifact_store": st.sampled_from(["local", "s3"]),
    "artifact_store_dir": maybe(PATHS),
    "artifact_store_namespace": maybe(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", fullmatch=True)),
    "s3_bucket": maybe(TEXT),
    "s3_endpoint_url": maybe(TEXT),
    "s3_region": maybe(TEXT),
    "s3_prefix": TEXT,
    "s3_addressing_style": st.sampled_from(["auto", "path", "virtual"]),
    "upload_max_bytes": at_least(1),
}
REQUIRED = {name for name, field in AgentSettings.model_fields.items() if field.is_required()}


def complete_store(values: dict[str, Any]) -> dict[str, Any]:
    """The s3 store needs a bucket (a rule of the model, not of one field)."""
    if values.get("artifact_store") == "s3" and not values.get("s3_bucket"):
        values["s3_bucket"] = "bucket"
    return values


SETTINGS = st.fixed_dictionaries(
    {name: FIELDS[name] for name in REQUIRED},
    optional={name: strategy for name, strategy in FIELDS.items() if name not in REQUIRED},
).map(complete_store)


def test_every_field_has_a_strategy() -> None:
    assert set(FIELDS) == set(AgentSettings.model_fields)


@settings(max_examples=300, deadline=None)
@given(SETTINGS)
def test_to_env_is_read_back_as_the_same_settings(values: dict[str, Any]) -> None:
    agent = AgentSettings(**values)
    env = agent.to_env()
    assert all(name.startswith(ENV_PREFIX) and isinstance(value, str) for name, value in env.items())
    back = AgentSettings.from_environ(env)
    assert back == agent
    # Only what was set is written: a value left unset keeps following the agent's default.
    unset_none = {name for name, value in values.items() if value is None}
    assert back.model_fields_set == set(values) - unset_none


def test_only_set_fields_and_their_encoding() -> None:
    agent = AgentSettings(
        workspace=Path("/w"),
        network=False,
        hide_paths=[Path("/srv/state dir"), Path('/q"x')],
        run_env={"B": "2", "A": "1"},
        token=SecretStr("s3cret"),
        pip_index_url=None,  # None is the default: unset
        max_timeout_s=1.5,
    )
    assert agent.to_env() == {
        "CODEGEN_AGENT_WORKSPACE": "/w",
        "CODEGEN_AGENT_TOKEN": "s3cret",
        "CODEGEN_AGENT_NETWORK": "false",
        "CODEGEN_AGENT_HIDE_PATHS": '["/srv/state dir", "/q\\"x"]',
        "CODEGEN_AGENT_MAX_TIMEOUT_S": "1.5",
        "CODEGEN_AGENT_RUN_ENV": '{"A": "1", "B": "2"}',
    }


def test_a_none_that_is_not_the_default_is_refused() -> None:
    with pytest.raises(ValueError, match="termination_log=None has no environment variable form"):
        AgentSettings(workspace=Path("/w"), termination_log=None).to_env()


@pytest.mark.parametrize(
    ("environ", "sentence"),
    [
        (
            {"CODEGEN_AGENT_MEMORY_BYTE": "1"},
            "`CODEGEN_AGENT_MEMORY_BYTE` is not an agent setting; did you mean `CODEGEN_AGENT_MEMORY_BYTES`?",
        ),
        (
            {"codegen_agent_s3_bukcet": "b"},
            "`codegen_agent_s3_bukcet` is not an agent setting; did you mean `CODEGEN_AGENT_S3_BUCKET`?",
        ),
        ({"CODEGEN_AGENT_XYZZY": "1"}, "`CODEGEN_AGENT_XYZZY` is not an agent setting; no setting is named like it"),
        ({"CODEGEN_AGENT_PORT": "eighty"}, "`CODEGEN_AGENT_PORT` must be a valid integer"),
        ({"CODEGEN_AGENT_PORT": "70000"}, "`CODEGEN_AGENT_PORT` must be less than or equal to 65535"),
        ({"CODEGEN_AGENT_HIDE_PATHS": '["/a"'}, "`CODEGEN_AGENT_HIDE_PATHS` must be JSON (Expecting"),
        ({"CODEGEN_AGENT_RUN_ENV": "[1]"}, "`CODEGEN_AGENT_RUN_ENV` must be a valid dictionary"),
        ({"CODEGEN_AGENT_ARTIFACT_STORE": "s3"}, "artifact_store=s3 needs s3_bucket (CODEGEN_AGENT_S3_BUCKET)"),
    ],
)
def test_refused_variables_are_named_in_one_sentence(environ: dict[str, str], sentence: str) -> None:
    with pytest.raises(AgentSettingsError) as info:
        AgentSettings.from_environ({"CODEGEN_AGENT_WORKSPACE": "/w", **environ})
    assert str(info.value).startswith(sentence)
    assert "\n" not in str(info.value)


def test_a_missing_workspace_is_named() -> None:
    with pytest.raises(AgentSettingsError, match="^`CODEGEN_AGENT_WORKSPACE` is required$"):
        AgentSettings.from_environ({"PATH": "/bin"})


def test_names_in_any_case_other_variables_ignored_and_values_win() -> None:
    environ = {"codegen_agent_workspace": "/w", "Codegen_Agent_Port": "1", "CODEGEN_OTHER": "x", "HOME": "/h"}
    agent = AgentSettings.from_environ(environ, port=2)
    assert (agent.workspace, agent.port) == (Path("/w"), 2)


def test_the_process_environment_never_slips_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator and the coordinator build agents' settings in their own processes."""
    monkeypatch.setenv("CODEGEN_AGENT_PORT", "1")
    monkeypatch.setenv("CODEGEN_AGENT_TOKEN", "the operator's")
    agent = AgentSettings(workspace=Path("/w"))
    assert agent.to_env() == {"CODEGEN_AGENT_WORKSPACE": "/w"}
    assert agent.port == 8080
