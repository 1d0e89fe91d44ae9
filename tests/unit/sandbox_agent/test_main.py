"""`python -m codegen_mcp.sandbox_agent`: a real agent process, found through its LISTENING line."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from codegen_mcp.sandbox_agent.__main__ import parse_settings

from .conftest import TOKEN


async def start_agent(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEGEN_AGENT_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "codegen_mcp.sandbox_agent",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        line = (await proc.stdout.readline()).decode().strip()
    if not line.startswith("LISTENING "):
        proc.kill()
        _, err = await proc.communicate()
        pytest.fail(f"agent did not start: {line!r} {err.decode()[-2000:]}")
    return proc, line.removeprefix("LISTENING ")


async def stop_agent(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode


@pytest.fixture
async def token_file(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    yield path


async def test_port_zero_prints_the_port_and_serves(workspace: Path, shared_venv: Path, token_file: Path) -> None:
    proc, address = await start_agent(
        "--workspace", str(workspace), "--venv-dir", str(shared_venv), "--port", "0", "--token-file", str(token_file)
    )
    try:
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        async with aiohttp.ClientSession(f"http://{address}") as http:
            health = await (await http.get("/healthz")).json()
            assert health["workspace"] == os.path.realpath(workspace)
            assert (await http.post("/v1/echo", json={"message": "x"})).status == 401
            resp = await http.post(
                "/v1/run/python", json={"code": "print(6 * 7)"}, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert (await resp.json())["run"]["stdout"] == "42\n"
    finally:
        assert await stop_agent(proc) == 0


async def test_unix_socket(workspace: Path, shared_venv: Path, token_file: Path, tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"
    proc, address = await start_agent(
        "--workspace", str(workspace), "--venv-dir", str(shared_venv), "--unix-socket", str(sock), "--sandbox", "none"
    )
    try:
        assert address == f"unix:{sock}"
        assert (sock.stat().st_mode & 0o777) == 0o600
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as http:
            health = await (await http.get("http://agent/healthz")).json()
            assert "bwrap" not in health["isolation"]
    finally:
        assert await stop_agent(proc) == 0


async def test_refuses_a_public_address_without_a_token(workspace: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "codegen_mcp.sandbox_agent",
        "--workspace",
        str(workspace),
        "--host",
        "0.0.0.0",  # noqa: S104
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("CODEGEN_AGENT_")},
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 1 and out == b""
    assert b"without a token" in err


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CODEGEN_AGENT_WORKSPACE", str(tmp_path / "from-env"))
    monkeypatch.setenv("CODEGEN_AGENT_PORT", "1234")
    monkeypatch.setenv("CODEGEN_AGENT_SANDBOX", "none")
    settings, level = parse_settings(["--port", "0", "--network", "--hide-path", "/a", "--hide-path", "/b"])
    assert settings.workspace == tmp_path / "from-env"
    assert (settings.port, settings.sandbox, settings.network) == (0, "none", True)
    assert settings.hide_paths == [Path("/a"), Path("/b")]
    assert level == "INFO"


def test_missing_workspace_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CODEGEN_AGENT_WORKSPACE", raising=False)
    with pytest.raises(SystemExit) as info:
        parse_settings([])
    assert info.value.code == 2
    assert "workspace" in capsys.readouterr().err
