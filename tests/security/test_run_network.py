"""Code run with the network (run.python, and so pytest, ruff, mypy and git) cannot reach the host's loopback.

A real agent (`create_app`) in the bubblewrap jail with `network` on runs the same probe as pip's build step
(see test_pip_network): it connects to a TCP server this test listens on at the host's 127.0.0.1, and to the
same port at the namespace's default gateway, and reports its route and resolv.conf. The server counts the
connections it got. Only the test marked `network` leaves the machine (a TCP connection to PyPI).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from codegen_mcp.sandbox_agent import netns
from codegen_mcp.sandbox_agent.app import create_app
from codegen_mcp.sandbox_agent.netns import jail_resolv_conf, user_network
from tests.security.test_pip_network import (  # noqa: F401 - fixtures
    PROBE,
    LoopbackServer,
    assert_user_mode_network,
    jailed_user_mode_network,
    loopback_server,
    probe_report,
    venv,
)
from tests.unit.sandbox_agent.conftest import AUTH, AgentClient, make_settings, pypi_reachable

# Jailed starts in a row: at a failure rate of 1 in 100, 300 starts miss it 5 times in 100 (~10 s here).
STARTS = 300


async def run_in_networked_jail(
    aiohttp_client: Callable[..., Awaitable[AgentClient]], workspace: Path, python_venv: Path, code: str
) -> dict[str, Any]:
    """run.python's result for `code`, run by an agent whose bubblewrap jail has the network."""
    settings = make_settings(workspace, python_venv, sandbox="bwrap", network=True)
    client = await aiohttp_client(create_app(settings, environ={"PATH": os.environ["PATH"]}), headers=AUTH)
    resp = await client.post("/v1/run/python", json={"code": code, "timeout_s": 60})
    data: dict[str, Any] = await resp.json()
    assert resp.status == 200, data
    return data


async def test_run_code_cannot_reach_the_hosts_loopback_but_has_a_route_out(
    aiohttp_client: Callable[..., Awaitable[AgentClient]],
    workspace: Path,
    venv: Path,  # noqa: F811
    loopback_server: LoopbackServer,  # noqa: F811
    jailed_user_mode_network: None,  # noqa: F811
) -> None:
    code = PROBE.format(port=loopback_server.port) + '\nprint("PROBE " + json.dumps(probe()) + " END")\n'
    data = await run_in_networked_jail(aiohttp_client, workspace, venv, code)
    report = probe_report(data["run"]["stdout"] + data["run"]["stderr"])
    assert_user_mode_network(report, loopback_server, "run.python's code")


@pytest.mark.network
async def test_run_code_still_reaches_the_internet(
    aiohttp_client: Callable[..., Awaitable[AgentClient]],
    workspace: Path,
    venv: Path,  # noqa: F811
    jailed_user_mode_network: None,  # noqa: F811
) -> None:
    if not pypi_reachable():
        pytest.skip(reason="no route to the package index (PyPI)")
    code = (
        "import socket\n"
        "with socket.create_connection(('pypi.org', 443), timeout=10) as s:\n"
        "    print('connected from', s.getsockname()[0])\n"
    )
    data = await run_in_networked_jail(aiohttp_client, workspace, venv, code)
    run = data["run"]
    assert run["exit_code"] == 0, json.dumps(run)
    # Through the user-mode stack: the jail's own address on tap0 (10.0.2.0/24), not the host's.
    assert run["stdout"].startswith("connected from 10.0.2."), run


async def test_networked_jails_start_every_time(jailed_user_mode_network: None) -> None:  # noqa: F811
    # bwrap sets up its loopback while slirp4netns attaches: about 1 start in 100 failed before the agent
    # waited for bwrap's loopback ("bwrap: loopback: Failed RTM_NEWADDR"). As the agent's children do: as
    # an unprivileged uid (the sandbox's when the test runs as root), in a user namespace of bwrap's own.
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"] if os.geteuid() == 0 else []
    root = [
        "--ro-bind",
        "/usr",
        "/usr",
        *(a for d in ("bin", "lib", "lib64") for a in ("--symlink", f"usr/{d}", f"/{d}")),
    ]
    argv = [*drop, "bwrap", "--unshare-all", "--share-net", "--die-with-parent", *root, "--", "true"]
    failures: list[str] = []
    for _ in range(STARTS):
        async with user_network(argv, {}, jailed=True, network=True) as (command, kwargs):
            proc = await asyncio.create_subprocess_exec(*command, stderr=asyncio.subprocess.PIPE, **kwargs)  # type: ignore[arg-type]
            _, err = await proc.communicate()
        if proc.returncode != 0:
            failures.append(err.decode(errors="replace").strip())
    assert not failures, f"{len(failures)} of {STARTS} networked jails did not start: {failures[:3]}"


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("nameserver 10.255.255.53\n", None),
        ("nameserver 127.0.0.53\nnameserver 192.0.2.1\n", None),  # one reachable server is enough
        (
            "# systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n",
            "# systemd-resolved\noptions edns0 trust-ad\nsearch lan\nnameserver 10.0.2.3\n",
        ),
        ("nameserver ::1\nnameserver 127.0.0.1\n", "nameserver 10.0.2.3\n"),
        ("", "nameserver 10.0.2.3\n"),  # no server: the C library asks 127.0.0.1
        ("nameserver not-an-address\n", "nameserver 10.0.2.3\n"),
    ],
)
def test_the_jail_is_shown_slirps_dns_forwarder_where_the_host_has_only_loopback_servers(
    host: str, shown: str | None
) -> None:
    assert jail_resolv_conf(host) == shown


async def test_a_jail_with_a_loopback_only_host_resolver_is_shown_slirps_forwarder(
    aiohttp_client: Callable[..., Awaitable[AgentClient]],
    workspace: Path,
    venv: Path,  # noqa: F811
    base_dir: Path,
    jailed_user_mode_network: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = base_dir / f"resolv-{os.getpid()}.conf"
    host.write_text("nameserver 127.0.0.53\nsearch lan\n")
    monkeypatch.setattr(netns, "HOST_RESOLV_CONF", host)
    code = "print(open('/etc/resolv.conf').read(), end='')"
    data = await run_in_networked_jail(aiohttp_client, workspace, venv, code)
    assert data["run"]["stdout"] == "search lan\nnameserver 10.0.2.3\n", data["run"]
    if pypi_reachable():  # and the forwarder answers (it asks the host's real resolver)
        code = "import socket; print(socket.getaddrinfo('pypi.org', 443)[0][4][0])"
        data = await run_in_networked_jail(aiohttp_client, workspace, venv, code)
        assert data["run"]["exit_code"] == 0, data["run"]
