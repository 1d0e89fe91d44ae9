"""pkg.install in a sandbox whose pip has no egress: refused at once, or served from local wheel folders only.

The agents here are real (`create_app`), pip really runs; the package index they are given is a closed port
on 127.0.0.1, so nothing in these tests can reach the network, and an install that tried the index would fail.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
import time
import uuid
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from codegen_mcp.api.tools import TaskView
from codegen_mcp.sandbox_agent.app import create_app
from codegen_mcp.sandbox_agent.pip import local_find_links

from .conftest import AUTH, AgentClient, make_settings
from .test_run import run

CLOSED_INDEX = "http://127.0.0.1:9/simple"  # the discard port: nothing listens, connects are refused
NO_EGRESS = "needs network access but this sandbox has no network egress"
DEMO = "codegen-offline-demo"


def build_wheel(folder: Path, name: str, version: str, module_text: str) -> Path:
    """A minimal pure-Python wheel (a module, METADATA, WHEEL, RECORD)."""
    module = name.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files = {
        f"{module}.py": module_text.encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


@pytest.fixture
def wheel_folder(base_dir: Path) -> Path:
    """A local wheel folder the sandbox uid can read (under the tests' 0755 base folder)."""
    folder = Path(tempfile.mkdtemp(prefix="wheels-", dir=base_dir))
    folder.chmod(0o755)
    build_wheel(folder, DEMO, "1.0", "ANSWER = 42\n")
    return folder


async def start_agent(
    aiohttp_client: Callable[..., Awaitable[AgentClient]], workspace: Path, venv: Path, **overrides: Any
) -> AgentClient:
    environ = {"PATH": os.environ["PATH"], "PIP_INDEX_URL": CLOSED_INDEX, **overrides.pop("environ", {})}
    settings = make_settings(workspace, venv, **overrides)
    return await aiohttp_client(create_app(settings, environ=environ), headers=AUTH)


async def install(client: AgentClient, packages: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/pkg/install", json={"packages": packages, "wait_s": 120})
    return resp.status, await resp.json()


def test_local_find_links_keeps_only_existing_local_folders(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "file.html").write_text("x")
    env = {
        "PIP_FIND_LINKS": f"{tmp_path / 'a'} https://example.org/wheels file://{tmp_path / 'b'} "
        f"{tmp_path / 'missing'} relative {tmp_path / 'file.html'}{os.pathsep}{tmp_path / 'a'}"
    }
    assert local_find_links(env) == [tmp_path / "a", tmp_path / "b"]
    assert local_find_links({}) == []


async def test_without_egress_pkg_install_refuses_at_once_like_git_clone(
    aiohttp_client: Callable[..., Awaitable[AgentClient]], workspace: Path, shared_venv: Path
) -> None:
    client = await start_agent(aiohttp_client, workspace, shared_venv, network=False, pip_network=False)
    started = time.monotonic()
    status, data = await install(client, "six")
    # At once, and as a refusal (not a task that fails later), with the same sentence as git.clone.
    assert time.monotonic() - started < 2.0
    assert status == 403 and data["error"]["code"] == "network_disabled", data
    message = data["error"]["message"]
    assert message.startswith(f"pkg.install {NO_EGRESS}; ")
    assert "PIP_FIND_LINKS" in message and "spec.network.egress" in message

    resp = await client.post("/v1/git/clone", json={"url": "https://github.com/pallets/click.git"})
    clone_message = (await resp.json())["error"]["message"]
    assert clone_message.startswith(f"git.clone {NO_EGRESS}; ")


async def test_without_egress_pkg_install_uses_only_the_local_wheel_folders(
    aiohttp_client: Callable[..., Awaitable[AgentClient]],
    workspace: Path,
    base_dir: Path,
    wheel_folder: Path,
    sandbox_mode: str,
) -> None:
    venv = base_dir / f"offline-venv-{uuid.uuid4().hex}"
    client = await start_agent(
        aiohttp_client,
        workspace,
        venv,
        sandbox=sandbox_mode,
        pip_network=False,
        environ={"PIP_FIND_LINKS": f"{wheel_folder} https://wheels.invalid/simple"},
    )
    status, data = await install(client, DEMO)
    view = TaskView.model_validate(data)
    assert status == 200 and view.state == "succeeded", view
    assert view.install is not None
    assert [(p.name, p.version) for p in view.install.installed] == [(DEMO, "1.0")]
    assert "Looking in indexes" not in view.install.log_tail, view.install.log_tail  # the index was never asked
    assert f"Looking in links: {wheel_folder}\n" in view.install.log_tail
    used = await run(client, code="import codegen_offline_demo; print(codegen_offline_demo.ANSWER)")
    assert used.run is not None and used.run.stdout == "42\n", used

    status, data = await install(client, "codegen-offline-missing")
    failed = TaskView.model_validate(data)
    assert failed.state == "failed", failed
    assert failed.error == (
        f"pkg.install {NO_EGRESS}, and 'codegen-offline-missing' is not in its local wheel folders "
        f"({wheel_folder}); start the session with egress 'packages' or 'open' (Kubernetes: spec.network.egress), "
        "or have the agent's PIP_FIND_LINKS name a local wheel folder that holds the packages"
    )
