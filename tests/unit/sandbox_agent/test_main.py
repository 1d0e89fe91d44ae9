"""`python -m codegen_mcp.sandbox_agent`: a real agent process, found through its LISTENING line."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from codegen_mcp.api.errors import AgentExitCode
from codegen_mcp.sandbox_agent.__main__ import parse_settings
from codegen_mcp.sandbox_agent.storage import (
    TERMINATION_MESSAGE_LIMIT,
    describe_unwritable_workspace,
    write_termination_message,
)

from .conftest import TOKEN


def agent_process(*args: str, **env: str) -> Coroutine[Any, Any, asyncio.subprocess.Process]:
    """`python -m codegen_mcp.sandbox_agent` with these flags, and no CODEGEN_AGENT_* variable but `env`."""
    return asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "codegen_mcp.sandbox_agent",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CODEGEN_AGENT_")}, **env},
    )


async def start_agent(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await agent_process(*args)
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
    proc = await agent_process("--workspace", str(workspace), "--host", "0.0.0.0", "--port", "0")  # noqa: S104
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
    assert info.value.code == AgentExitCode.USAGE
    assert capsys.readouterr().err == "codegen-mcp agent: `CODEGEN_AGENT_WORKSPACE` is required\n"


def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("CODEGEN_AGENT_MAX_PROCESSES", "many")
    with pytest.raises(SystemExit) as info:
        parse_settings(["--workspace", str(tmp_path)])
    assert info.value.code == AgentExitCode.USAGE
    sentence = "codegen-mcp agent: `CODEGEN_AGENT_MAX_PROCESSES` must be a valid integer"
    assert capsys.readouterr().err.startswith(sentence)


async def test_a_misspelt_variable_stops_the_agent(workspace: Path) -> None:
    """A typo would otherwise leave the setting at its default, silently (here: run code's memory cap)."""
    typo = {"CODEGEN_AGENT_MEMORY_BYTE": str(256 * 1024**2)}
    proc = await agent_process("--workspace", str(workspace), "--port", "0", **typo)
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert (proc.returncode, out) == (AgentExitCode.USAGE, b"")
    assert err.decode() == (
        "codegen-mcp agent: `CODEGEN_AGENT_MEMORY_BYTE` is not an agent setting; "
        "did you mean `CODEGEN_AGENT_MEMORY_BYTES`?\n"
    )


# --- start-up failures: one sentence, the right exit code, also as the Pod's termination message ---------

SANDBOX_UID = 10001  # the sandbox image's user
SYSTEM_PYTHON = Path("/usr/bin/python3")


def unprivileged_agent_command() -> tuple[list[str], dict[str, str]]:
    """argv and env that start this agent as a non-root uid: the system python3 (the default one may sit
    under a 0700 home) on this checkout's source and the venv's packages."""
    if os.geteuid() != 0:
        pytest.skip(reason="starting the agent as another uid needs root")
    if not SYSTEM_PYTHON.exists():
        pytest.skip(reason=f"{SYSTEM_PYTHON} is missing: no interpreter a non-root uid can run")
    import aiohttp as dependency

    import codegen_mcp

    path = os.pathsep.join([str(Path(codegen_mcp.__file__).parents[1]), str(Path(dependency.__file__).parents[1])])
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}
    probe = subprocess.run(  # noqa: S603 - fixed argv
        [
            str(SYSTEM_PYTHON),
            "-c",
            "import sys; import codegen_mcp.sandbox_agent.__main__; print(sys.version_info[:2])",
        ],
        env=env,
        user=SANDBOX_UID,
        group=SANDBOX_UID,
        extra_groups=[],
        capture_output=True,
        timeout=60,
    )
    if probe.returncode != 0 or probe.stdout.decode().strip() != str(sys.version_info[:2]):
        pytest.skip(reason=f"the agent cannot be imported as uid {SANDBOX_UID} here: {probe.stderr.decode()[-500:]}")
    return [str(SYSTEM_PYTHON), "-m", "codegen_mcp.sandbox_agent"], env


def termination_log(folder: Path) -> Path:
    """Like the file Kubernetes mounts at /dev/termination-log: present, empty, writable by the container."""
    path = folder / "termination-log"
    path.write_text("")
    os.chown(path, SANDBOX_UID, SANDBOX_UID)
    return path


async def test_a_workspace_volume_that_ignores_fsgroup_is_named_as_a_storage_problem(base_dir: Path) -> None:
    argv, env = unprivileged_agent_command()
    folder = Path(tempfile.mkdtemp(prefix="volume-", dir=base_dir))
    folder.chmod(0o755)
    volume = folder / "workspace"  # what hostPath or an NFS provisioner hands over: root:root 0750
    volume.mkdir()
    os.chown(volume, 0, 0)
    volume.chmod(0o750)
    log = termination_log(folder)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        "--workspace",
        str(volume),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**env, "CODEGEN_AGENT_TERMINATION_LOG": str(log)},
        user=SANDBOX_UID,
        group=SANDBOX_UID,
        extra_groups=[],
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    sentence = (
        f"the agent (uid {SANDBOX_UID}, gids {SANDBOX_UID}) cannot write its workspace {volume}: it belongs to 0:0 "
        "with mode 0750 (Permission denied); its volume does not honour the Pod's fsGroup (hostPath and many NFS "
        "provisioners do not): use a StorageClass whose provisioner honours fsGroup, or pre-own the volume to the "
        f"sandbox uid (chown -R {SANDBOX_UID} on the volume)"
    )
    assert (proc.returncode, out) == (AgentExitCode.WORKSPACE_NOT_WRITABLE, b""), err.decode()
    assert err.decode() == f"codegen-mcp agent: {sentence}\n"
    assert log.read_text() == sentence
    assert list(volume.iterdir()) == []


async def test_the_same_agent_starts_on_a_volume_it_owns(base_dir: Path) -> None:
    argv, env = unprivileged_agent_command()
    folder = Path(tempfile.mkdtemp(prefix="volume-", dir=base_dir))
    folder.chmod(0o755)
    volume = folder / "workspace"  # what a provisioner honouring fsGroup (or a pre-owned volume) gives
    volume.mkdir(mode=0o750)
    os.chown(volume, SANDBOX_UID, SANDBOX_UID)
    log = termination_log(folder)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        "--workspace",
        str(volume),
        "--port",
        "0",
        "--sandbox",
        "none",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**env, "CODEGEN_AGENT_TERMINATION_LOG": str(log)},
        user=SANDBOX_UID,
        group=SANDBOX_UID,
        extra_groups=[],
    )
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        line = (await proc.stdout.readline()).decode()
    try:
        assert line.startswith("LISTENING 127.0.0.1:"), line
        assert (volume / ".codegen").is_dir()
    finally:
        assert await stop_agent(proc) == 0
    assert log.read_text() == ""


async def test_only_a_failed_listen_says_cannot_listen(workspace: Path, tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    log.write_text("")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ("--workspace", str(workspace), "--port", str(port))
        proc = await agent_process(*args, CODEGEN_AGENT_TERMINATION_LOG=str(log))
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    sentence = f"cannot listen on 127.0.0.1:{port}: Address already in use"
    assert (proc.returncode, out) == (AgentExitCode.FAILED, b"")
    assert err.decode().endswith(f"codegen-mcp agent: {sentence}\n"), err.decode()
    assert log.read_text() == sentence


@pytest.mark.parametrize(
    ("folder", "err", "expected"),
    [
        (
            "/data/ws",
            OSError(errno.EACCES, "Permission denied"),
            "the agent (uid 10001, gids 10001,2000) cannot write its workspace /data/ws: it belongs to 0:0 with "
            "mode 0750 (Permission denied); its volume does not honour the Pod's fsGroup",
        ),
        (
            "/data",
            OSError(errno.EACCES, "Permission denied"),
            "cannot write its workspace /data/ws: /data belongs to 0:0 with mode 0750 (Permission denied);",
        ),
        (
            "/data/ws",
            OSError(errno.EROFS, "Read-only file system"),
            "with mode 0750 (Read-only file system); mount the workspace volume read-write",
        ),
    ],
)
def test_the_storage_sentence_names_the_folder_owner_mode_ids_and_fix(folder: str, err: OSError, expected: str) -> None:
    st = os.stat_result((stat.S_IFDIR | 0o750, 0, 0, 2, 0, 0, 4096, 0, 0, 0))
    sentence = describe_unwritable_workspace(Path("/data/ws"), Path(folder), st, 10001, [10001, 2000], err)
    assert expected in sentence
    assert "\n" not in sentence and "cannot listen" not in sentence


def test_the_termination_message_is_written_only_where_the_file_exists(tmp_path: Path) -> None:
    write_termination_message(tmp_path / "absent", "x")
    assert not (tmp_path / "absent").exists()
    log = tmp_path / "termination-log"
    log.write_text("old words that are longer")
    write_termination_message(log, "é" * 5000)
    assert log.read_bytes() == ("é" * 5000).encode()[:TERMINATION_MESSAGE_LIMIT]
    write_termination_message(None, "x")
