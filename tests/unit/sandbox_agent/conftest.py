"""Fixtures for the sandbox agent: real agents (via `create_app`) over throw-away workspaces.

Workspaces live under a fresh 0755 folder in the system temp dir, not under pytest's `tmp_path`: when the
tests run as root, sandboxed code runs as uid 65534, which cannot traverse pytest's 0700 base folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from codegen_mcp.api.agent_settings import AgentSettings, MiB
from codegen_mcp.sandbox_agent.app import create_app
from codegen_mcp.sandbox_agent.devtools import default_wheelhouse
from codegen_mcp.sandbox_agent.isolation import find_bwrap
from codegen_mcp.sandbox_agent.venv import default_base_python

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

AgentClient = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[AgentClient]]


@pytest.fixture(scope="session")
def base_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cg-agent-tests-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_venv(base_dir: Path) -> Path:
    """One session venv for most tests (creating one per test would cost ~0.2 s each)."""
    venv = base_dir / "shared-venv"
    subprocess.run([default_base_python(None), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return venv


@pytest.fixture
def workspace(base_dir: Path) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ws-", dir=base_dir))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def bwrap_works() -> bool:
    return find_bwrap() is not None


@pytest.fixture(params=["bwrap", "none"])
def sandbox_mode(request: pytest.FixtureRequest) -> str:
    mode = str(request.param)
    if mode == "bwrap" and not bwrap_works():
        pytest.skip(reason="bubblewrap (bwrap) is not installed on this machine")
    return mode


def make_settings(workspace: Path, venv: Path | None, **overrides: Any) -> AgentSettings:
    values: dict[str, Any] = {
        "workspace": workspace,
        "venv_dir": venv,
        "token": TOKEN,
        "sandbox": "none",
        "memory_bytes": 256 * MiB,
        "max_processes": 64,
        "output_cap_bytes": 64 * 1024,
    }
    values.update(overrides)
    return AgentSettings(**values)


@pytest.fixture
async def make_client(
    aiohttp_client: Callable[..., Awaitable[AgentClient]], workspace: Path, shared_venv: Path
) -> MakeClient:
    """Start an agent app over `workspace` with settings overrides; the client sends the token."""

    async def make(**overrides: Any) -> AgentClient:
        settings = make_settings(workspace, overrides.pop("venv_dir", shared_venv), **overrides)
        return await aiohttp_client(create_app(settings), headers=AUTH)

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> AgentClient:
    """An agent with rlimits only (file-system tests do not need the jail)."""
    return await make_client()


@pytest.fixture
async def runner(make_client: MakeClient, sandbox_mode: str) -> AsyncIterator[AgentClient]:
    """An agent in each sandbox mode, for tests that run code."""
    yield await make_client(sandbox=sandbox_mode)


def pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=3):
            return True
    except OSError:
        return False


def tool_requirements() -> list[str]:
    """What the agent installs for test.run and lint.check (its settings' defaults)."""
    fields = AgentSettings.model_fields
    return [str(fields[f"{tool}_requirement"].default) for tool in ("pytest", "ruff", "mypy")]


@pytest.fixture(scope="session")
def tool_wheels(base_dir: Path) -> Path:
    """Real wheels of pytest, ruff and mypy (with their dependencies) for the session venvs' Python.

    Kept in the agents' default wheelhouse (~/.cache/codegen-mcp/wheelhouse), so the package index is asked
    once per machine (or CI cache): a run that finds them all there does not touch the network. The folder
    must be readable by the sandbox uid; under a 0700 home the agent copies what it needs (see `pip`).
    """
    house = default_wheelhouse(os.environ, base_dir)
    house.mkdir(parents=True, exist_ok=True)
    version = subprocess.run(
        [default_base_python(None), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    pip = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet", "--only-binary=:all:"]
    pip += ["--implementation=cp", f"--python-version={version}", "--dest", str(house), *tool_requirements()]
    offline = subprocess.run([*pip, "--no-index", "--find-links", str(house)], capture_output=True, timeout=120)
    if offline.returncode != 0:
        if not pypi_reachable():
            pytest.skip(reason=f"no wheels of the dev tools in {house} and no route to the package index")
        subprocess.run(pip, check=True, capture_output=True, timeout=300)
    return house
