"""pip has the network but not the host's loopback: a package's build step cannot reach local services.

A real agent (`create_app`) installs a local sdist whose in-tree build backend (no build requirements, so
nothing is fetched) runs inside pip's jail, as a hostile package would: it connects to a TCP server this test
listens on at the host's 127.0.0.1, and to the same port at the namespace's default gateway (where a
user-mode stack could map the host's loopback), reads the routing table and reports it all by failing the
build with a `PROBE {...}` line that pip's log carries back. The server itself counts the connections it got.
Nothing here leaves the machine, except the test marked `network`, which installs from PyPI.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import subprocess
import tarfile
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from codegen_mcp.api.tools import TaskView
from codegen_mcp.sandbox_agent import netns
from codegen_mcp.sandbox_agent.app import create_app
from codegen_mcp.sandbox_agent.isolation import find_bwrap
from codegen_mcp.sandbox_agent.netns import fallback_reason, find_slirp4netns, own_network_argv
from codegen_mcp.sandbox_agent.venv import default_base_python
from tests.unit.sandbox_agent.conftest import AUTH, AgentClient, make_settings, pypi_reachable

PROBE_NAME = "codegen-net-probe"

# What sandboxed code sees of the network: `probe()` returns it as a dict (`{port}` is the loopback server's).
PROBE = """
import json, os, socket

PORT = {port}


def _gateway():
    with open("/proc/net/route") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":
                return socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little")), fields[0]
    return None, None


def _connect(host):
    try:
        socket.create_connection((host, PORT), timeout=3).close()
        return "connected"
    except OSError as exc:
        return type(exc).__name__


def probe():
    gateway, device = _gateway()
    return {{
        "loopback": _connect("127.0.0.1"),
        "gateway": gateway,
        "device": device,
        "via_gateway": _connect(gateway) if gateway else None,
        "resolv": open("/etc/resolv.conf").read() if os.path.exists("/etc/resolv.conf") else "",
    }}
"""

BACKEND = (
    PROBE
    + """

def get_requires_for_build_wheel(config_settings=None):
    raise RuntimeError("PROBE " + json.dumps(probe()) + " END")


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("not reached")
"""
)


def probe_report(output: str) -> dict[str, Any]:
    """The report a probe printed between `PROBE ` and ` END` in `output`."""
    found = re.search(r"PROBE (\{.*?\}) END", output)
    assert found is not None, f"the probe did not run in the jail: {output}"
    report: dict[str, Any] = json.loads(found.group(1))
    return report


def assert_user_mode_network(report: dict[str, Any], server: LoopbackServer, who: str) -> None:
    """`who` (what ran the probe) had a network of its own: a route out and DNS, but not the host's loopback."""
    assert report["loopback"] != "connected", f"{who} reached the host's 127.0.0.1: {report}"
    assert report["via_gateway"] != "connected", f"the gateway leads to the host's loopback: {report}"
    assert server.connections == 0, f"the host's loopback server saw {server.connections}"
    # Still a network: a default route through the user-mode stack (not the host's interfaces), and DNS.
    assert report["gateway"] is not None and report["device"] == "tap0", report
    assert "nameserver" in report["resolv"], report


def build_probe_sdist(folder: Path, port: int) -> None:
    """An sdist whose in-tree PEP 517 backend probes the network from inside pip's jail."""
    root = f"{PROBE_NAME.replace('-', '_')}-1.0"
    files = {
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {PROBE_NAME}\nVersion: 1.0\n",
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "probe_backend"\nbackend-path = ["."]\n',
        "probe_backend.py": BACKEND.format(port=port),
    }
    with tarfile.open(folder / f"{root}.tar.gz", "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def venv(base_dir: Path) -> Path:
    path = base_dir / "venv"
    subprocess.run([default_base_python(None), "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    return path


@pytest.fixture
def jailed_user_mode_network() -> None:
    """Skip, with the agent's own reason, where pip cannot have a network namespace of its own."""
    if find_bwrap() is None:
        pytest.skip(reason="bubblewrap (bwrap) is not installed on this machine")
    reason = fallback_reason(jailed=True, slirp=find_slirp4netns())
    if reason is not None:
        pytest.skip(reason=reason)


class LoopbackServer:
    """A TCP server on the host's 127.0.0.1 that counts who connected."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()


@pytest.fixture
async def loopback_server() -> AsyncIterator[LoopbackServer]:
    state = LoopbackServer()
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state


async def start_agent(
    aiohttp_client: Callable[..., Awaitable[AgentClient]], workspace: Path, venv: Path, environ: dict[str, str]
) -> AgentClient:
    settings = make_settings(workspace, venv, sandbox="bwrap", pip_network=True)
    return await aiohttp_client(create_app(settings, environ={"PATH": os.environ["PATH"], **environ}), headers=AUTH)


async def install_probe(
    aiohttp_client: Callable[..., Awaitable[AgentClient]], workspace: Path, venv: Path, base_dir: Path, port: int
) -> dict[str, Any]:
    """Install the probe sdist from a local folder (no index) and return what its build step saw."""
    sdists = Path(tempfile.mkdtemp(prefix="sdists-", dir=base_dir))
    sdists.chmod(0o755)
    build_probe_sdist(sdists, port)
    client = await start_agent(aiohttp_client, workspace, venv, {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(sdists)})
    resp = await client.post("/v1/pkg/install", json={"packages": PROBE_NAME, "wait_s": 120})
    view = TaskView.model_validate(await resp.json())
    assert view.install is not None, view
    return probe_report(view.install.log_tail)


def test_the_pip_jail_keeps_its_own_network_namespace() -> None:
    # Behind the prefixes a root agent puts before the jail: staging bwrap, setpriv, prlimit.
    prefix = ["bwrap", "--bind-fd", "3", "/tmp/0", "--", "setpriv", "--reuid=9", "--", "prlimit", "--core=0:0", "--"]
    argv = [*prefix, "bwrap", "--unshare-all", "--share-net", "--die-with-parent", "--", "python", "--share-net"]
    expected = [*prefix, "bwrap", "--unshare-all", "--info-fd", "7", "--block-fd", "8", "--die-with-parent"]
    assert own_network_argv(argv, 7, 8) == [*expected, "--", "python", "--share-net"]


async def test_without_slirp4netns_pip_keeps_the_host_network_and_says_so(
    aiohttp_client: Callable[..., Awaitable[AgentClient]],
    workspace: Path,
    venv: Path,
    base_dir: Path,
    loopback_server: LoopbackServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if find_bwrap() is None:
        pytest.skip(reason="bubblewrap (bwrap) is not installed on this machine")
    monkeypatch.setattr(netns, "find_slirp4netns", lambda: None)
    monkeypatch.setattr(netns, "_warned", set())
    with caplog.at_level(logging.WARNING, logger=netns.__name__):
        report = await install_probe(aiohttp_client, workspace, venv, base_dir, loopback_server.port)
    logged = "slirp4netns is not installed (Debian package slirp4netns): sandboxed code with the network"
    assert logged in caplog.text and "keeps the host's network namespace" in caplog.text
    assert report["loopback"] == "connected", report  # today's behaviour, stated in the log line above


async def test_a_build_step_cannot_reach_the_hosts_loopback_but_has_a_route_out(
    aiohttp_client: Callable[..., Awaitable[AgentClient]],
    workspace: Path,
    venv: Path,
    base_dir: Path,
    loopback_server: LoopbackServer,
    jailed_user_mode_network: None,
) -> None:
    report = await install_probe(aiohttp_client, workspace, venv, base_dir, loopback_server.port)
    assert_user_mode_network(report, loopback_server, "pip's build step")


@pytest.mark.network
async def test_pkg_install_from_the_index_still_works(
    aiohttp_client: Callable[..., Awaitable[AgentClient]],
    workspace: Path,
    base_dir: Path,
    jailed_user_mode_network: None,
) -> None:
    if not pypi_reachable():
        pytest.skip(reason="no route to the package index (PyPI)")
    client = await start_agent(aiohttp_client, workspace, base_dir / "index-venv", {})
    resp = await client.post("/v1/pkg/install", json={"packages": "iniconfig", "wait_s": 300})
    view = TaskView.model_validate(await resp.json())
    assert view.state == "succeeded", view
    assert view.install is not None and [p.name.lower() for p in view.install.installed] == ["iniconfig"]
