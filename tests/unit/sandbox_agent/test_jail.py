"""The jail's minimal root, staging for 0700 parents, and pkg.install confined like run code.

The install tests need no package index on the internet: a throw-away sdist with an in-tree PEP 517 backend
(no setuptools to fetch) is found in a local find-links folder. Its build step is the code under
suspicion: it records who and where it ran into the wheel it builds, and the tests read that record back.
"""

from __future__ import annotations

import ast
import io
import json
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from codegen_mcp.api.errors import SandboxUnavailable
from codegen_mcp.api.tools import TaskView
from codegen_mcp.sandbox_agent.agent import AGENT
from codegen_mcp.sandbox_agent.app import create_app
from codegen_mcp.sandbox_agent.isolation import Identity, Sandbox, find_bwrap, unreachable_parent
from codegen_mcp.sandbox_agent.jail import Bind, Jail
from codegen_mcp.sandbox_agent.jailprobe import NO_LIMITS
from codegen_mcp.sandbox_agent.pip import agent_pip_dir, pip_for_child

from .conftest import AUTH, AgentClient, MakeClient, make_settings
from .test_run import run

needs_bwrap = pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap (bwrap) is not installed on this machine")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="only a root agent switches code to a sandbox uid")
SANDBOX_UID = 65534 if os.geteuid() == 0 else os.geteuid()


def visible_chains(roots: list[Path], mounts: list[Path]) -> dict[str, list[str]]:
    """For each of `roots`, the entries the jail may show there: only the path down to a bound folder."""
    seen: dict[str, list[str]] = {}
    for root in roots:
        names = {m.relative_to(root).parts[0] for m in mounts if root in m.parents}
        seen[str(root)] = sorted(names)
    return seen


@pytest.fixture
def outside() -> Iterator[Path]:
    """A world-readable folder with a world-readable file, outside every workspace and not under /tmp
    (the jail has its own /tmp, so a folder there would be out of sight even with the host's root shown)."""
    parent = Path("/var/tmp")  # noqa: S108 - on purpose: a shared, world-traversable place outside /tmp
    if not os.access(parent, os.W_OK):
        pytest.skip(reason="no writable /var/tmp for a folder outside the workspace and outside /tmp")
    folder = Path(tempfile.mkdtemp(prefix="cg-outside-", dir=parent))
    folder.chmod(0o755)
    (folder / "data.txt").write_text("world-readable, but not the session's")
    (folder / "data.txt").chmod(0o644)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@needs_bwrap
async def test_the_jail_shows_a_minimal_root(make_client: MakeClient, outside: Path, workspace: Path) -> None:
    client = await make_client(sandbox="bwrap")
    executor = client.app[AGENT].executor
    await executor.ensure_venv()
    bound = [m.source for m in executor.python_mounts() if isinstance(m, Bind)]
    bound += [workspace.resolve(), executor.venv_dir]
    probes = [Path("/root"), Path("/home"), Path("/work")]
    code = (
        "import json, os, ssl, sqlite3, subprocess, sys\n"
        f"outside = {str(outside)!r}\n"
        "facts = {'outside_exists': os.path.exists(outside)}\n"
        "for path in (outside, outside + '/data.txt'):\n"
        "    try:\n"
        "        facts[path] = os.listdir(path) if path == outside else open(path).read()\n"
        "    except OSError as e:\n"
        "        facts[path] = e.__class__.__name__\n"
        f"probes = {[str(p) for p in probes]!r}\n"
        "def listing(path):\n"
        "    try:\n"
        "        return sorted(os.listdir(path))\n"
        "    except FileNotFoundError:\n"
        "        return None\n"
        "    except OSError as e:\n"
        "        return e.__class__.__name__\n"
        "facts['probes'] = {p: listing(p) for p in probes}\n"
        "facts['root'] = sorted(os.listdir('/'))\n"
        "facts['etc_shadow'] = os.path.exists('/etc/shadow')\n"
        "facts['tls'] = ssl.create_default_context().cert_store_stats()['x509_ca'] > 0\n"
        "facts['sqlite'] = sqlite3.connect(':memory:').execute('select 1').fetchone()[0]\n"
        "facts['sh'] = subprocess.run(['/bin/sh', '-c', 'echo ok'], capture_output=True, text=True).stdout\n"
        "print(json.dumps(facts))\n"
    )
    view = await run(client, code=code)
    assert view.state == "succeeded" and view.run is not None, view
    facts = json.loads(view.run.stdout)
    assert facts["outside_exists"] is False
    assert facts[str(outside)] == "FileNotFoundError" and facts[f"{outside}/data.txt"] == "FileNotFoundError"
    expected = visible_chains(probes, bound)
    for probe, listing in facts["probes"].items():
        # Absent, unless the base interpreter lives there; then only the path down to it.
        assert listing is None or listing == expected[probe], (probe, listing)
        if not expected[probe]:
            assert listing is None, probe
    system = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "proc", "dev", "tmp"}
    assert set(facts["root"]) <= system | {p.parts[1] for p in bound}
    assert facts["etc_shadow"] is False
    assert facts["tls"] is True and facts["sqlite"] == 1 and facts["sh"] == "ok\n"


@needs_bwrap
@needs_root
async def test_a_workspace_under_a_0700_folder_works_in_the_jail(aiohttp_client: Any, base_dir: Path) -> None:
    private = Path(tempfile.mkdtemp(prefix="private-", dir=base_dir))
    private.chmod(0o700)
    ws = private / "ws"
    ws.mkdir()
    # The sandbox uid cannot walk down to the workspace on the host (bwrap alone failed with "Can't find
    # source path ...: Permission denied"); the agent stages it as root instead.
    assert unreachable_parent(ws, Identity(65534, 65534)) == private
    settings = make_settings(ws, None, sandbox="bwrap")  # the venv inside the workspace
    client: AgentClient = await aiohttp_client(create_app(settings), headers=AUTH)
    view = await run(client, code="import os, sys; open('made.txt', 'w').write('hi'); print(os.getuid(), os.getcwd())")
    assert view.state == "succeeded" and view.run is not None, view
    assert view.run.stdout == f"65534 {ws}\n"
    assert (ws / "made.txt").stat().st_uid == 65534
    read = await (await client.post("/v1/fs/read", json={"path": "made.txt"})).json()
    assert read["content"] == "hi"


def test_a_source_swapped_for_a_symlink_is_not_staged(base_dir: Path, tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="swap-", dir=base_dir))
    sandbox = Sandbox(identity=Identity(65534, 65534), jail=Jail(bwrap="bwrap"))
    command = sandbox.jail_command(["true"], binds=[Bind(folder, writable=True)], chdir=folder)
    folder.rmdir()
    folder.symlink_to(tmp_path)  # e.g. sandboxed code replacing a folder between check and use
    with pytest.raises(OSError) as refused, sandbox.spawn(command, NO_LIMITS):
        pytest.fail("a symlink was staged")
    assert refused.value.strerror == f"cannot stage {folder} for the jail: is a symlink"


@needs_bwrap
async def test_a_base_interpreter_outside_usr_is_bound_read_only(aiohttp_client: Any, workspace: Path) -> None:
    base = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    prefix = Path(sys.base_prefix)
    jail = Jail(bwrap="bwrap")
    if jail.shows(Path(os.path.realpath(prefix))):
        pytest.skip(reason=f"this machine's only known interpreter lives in the system trees ({prefix})")
    if os.geteuid() != 0 and unreachable_parent(prefix, Identity(os.geteuid(), os.getegid())) is not None:
        pytest.skip(reason=f"{prefix} is not reachable by this user")
    settings = make_settings(workspace, None, sandbox="bwrap", python=str(base))
    client: AgentClient = await aiohttp_client(create_app(settings), headers=AUTH)
    code = (
        "import os, sys\n"
        "mounts = [line.split() for line in open('/proc/self/mountinfo')]\n"
        "options = {m[4]: m[5] for m in mounts}\n"
        "print(sys.base_prefix)\n"
        "print(options.get(sys.base_prefix))\n"
        "print(os.listdir('/' + sys.base_prefix.split('/')[1]))\n"
    )
    view = await run(client, code=code)
    assert view.state == "succeeded" and view.run is not None, view
    shown_prefix, options, top_listing = view.run.stdout.splitlines()
    assert shown_prefix == str(prefix)
    assert options.split(",")[0] == "ro"  # its own read-only bind at the same path
    assert top_listing == repr([prefix.parts[2]])  # e.g. /root shows only .pyenv, nothing else of /root


# --- pkg.install in the jail ------------------------------------------------------------------------------

PROBE = "codegen-jail-probe"
PROBE_MODULE = "codegen_jail_probe"
BACKEND = '''
"""An in-tree PEP 517 backend: its build step records where it ran, into the wheel it builds."""
import base64, hashlib, json, os, zipfile

CHECK = json.loads(%(check)r)


def _facts():
    def listable(path):
        try:
            os.listdir(path)
            return True
        except OSError:
            return False

    try:
        pid1 = open("/proc/1/comm").read().strip()
    except OSError:
        pid1 = None
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "root_listable": listable("/root"),
        "pid1": pid1,
        "visible": {path: os.path.exists(path) for path in CHECK},
        "cwd": os.getcwd(),
    }


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name, version = "codegen_jail_probe", "1.0"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": ("FACTS = " + repr(_facts()) + "\\n").encode(),
        f"{info}/METADATA": b"Metadata-Version: 2.1\\nName: codegen-jail-probe\\nVersion: 1.0\\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: probe\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\\n".join(record) + "\\n").encode()
    wheel = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel
'''


def build_probe_sdist(folder: Path, check: list[str]) -> Path:
    """A minimal sdist: PKG-INFO, pyproject.toml naming the in-tree backend, and the backend itself."""
    root = "codegen_jail_probe-1.0"
    members = {
        "PKG-INFO": "Metadata-Version: 2.1\nName: codegen-jail-probe\nVersion: 1.0\n",
        "pyproject.toml": (
            '[build-system]\nrequires = []\nbuild-backend = "probe_backend"\nbackend-path = ["."]\n'
            '[project]\nname = "codegen-jail-probe"\nversion = "1.0"\n'
        ),
        "probe_backend.py": BACKEND % {"check": json.dumps(check)},
    }
    sdist = folder / f"{root}.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            member = tarfile.TarInfo(f"{root}/{name}")
            member.size, member.mode = len(data), 0o644
            tar.addfile(member, io.BytesIO(data))
    return sdist


@pytest.fixture
def local_index(base_dir: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """The probe's sdist in a local find-links folder the sandbox uid can read (pip gets no index: the jail's
    network cannot reach the host's 127.0.0.1); returns a closed index URL and a folder the probe's build step
    reports on (outside every workspace)."""
    project = Path(tempfile.mkdtemp(prefix="links-", dir=base_dir))
    project.chmod(0o755)
    build_probe_sdist(project, [str(outside), "/work", "/root"])
    monkeypatch.setenv("PIP_FIND_LINKS", str(project))  # read by create_app from os.environ
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return "http://127.0.0.1:9/simple", outside


async def install(client: AgentClient, packages: str) -> TaskView:
    resp = await client.post("/v1/pkg/install", json={"packages": packages, "wait_s": 120})
    view = TaskView.model_validate(await resp.json())
    assert view.state == "succeeded", view
    return view


async def test_pkg_install_builds_as_the_sandbox_uid_in_the_jail(
    make_client: MakeClient, sandbox_mode: str, base_dir: Path, workspace: Path, local_index: tuple[str, Path]
) -> None:
    url, outside = local_index
    venv = base_dir / f"probe-venv-{uuid.uuid4().hex}"
    client = await make_client(sandbox=sandbox_mode, venv_dir=venv, pip_index_url=url)
    view = await install(client, PROBE)
    assert view.install is not None
    assert [(p.name, p.version) for p in view.install.installed] == [(PROBE, "1.0")]

    (site,) = client.app[AGENT].executor.site_packages()
    record = site / PROBE_MODULE / "__init__.py"
    facts = ast.literal_eval(record.read_text().removeprefix("FACTS = "))
    # The build step (arbitrary code from the sdist) ran as the sandbox uid...
    assert facts["uid"] == SANDBOX_UID
    # ...and what pip wrote into the venv belongs to it too (the venv's contents are the sandbox uid's).
    assert record.stat().st_uid == SANDBOX_UID
    root_mode = Path("/root").stat().st_mode if Path("/root").exists() else 0
    if not root_mode & stat.S_IROTH:
        assert facts["root_listable"] is False
    if sandbox_mode == "bwrap":
        # Inside the jail: its own pid namespace (bwrap is pid 1), nothing of the host outside the binds,
        # not even the workspace (an install sees the venv, pip and its own home).
        assert facts["pid1"] == "bwrap"
        executor = client.app[AGENT].executor
        bound = [m.source for m in executor.python_mounts() if isinstance(m, Bind)]
        hidden = [p for p in ("/work", "/root") if not any(Path(p) in (b, *b.parents) for b in bound)]
        assert facts["visible"] == {str(outside): False, **dict.fromkeys(hidden, False)} | {
            p: True for p in ("/work", "/root") if p not in hidden
        }
        assert not Path(facts["cwd"]).is_relative_to(workspace)
    used = await run(client, code=f"import {PROBE_MODULE}; print({PROBE_MODULE}.FACTS['uid'])")
    assert used.run is not None and used.run.stdout == f"{SANDBOX_UID}\n", used


@needs_bwrap
@needs_root
async def test_pkg_install_works_for_a_workspace_under_a_0700_folder(
    aiohttp_client: Any, base_dir: Path, local_index: tuple[str, Path]
) -> None:
    url, _ = local_index
    private = Path(tempfile.mkdtemp(prefix="private-", dir=base_dir))
    private.chmod(0o700)
    ws = private / "ws"
    ws.mkdir()
    settings = make_settings(ws, None, sandbox="bwrap", pip_index_url=url)
    client: AgentClient = await aiohttp_client(create_app(settings), headers=AUTH)
    await install(client, PROBE)
    used = await run(client, code=f"import {PROBE_MODULE}; print({PROBE_MODULE}.FACTS['uid'])")
    assert used.run is not None and used.run.stdout == "65534\n", used


@needs_root
async def test_the_venv_folder_stays_the_agents_and_its_contents_are_the_sandbox_uids(
    make_client: MakeClient, workspace: Path, base_dir: Path
) -> None:
    client = await make_client(venv_dir=None)
    assert (await run(client, code="pass")).state == "succeeded"
    venv = workspace / ".venv"
    top = venv.lstat()
    assert (top.st_uid, stat.S_IMODE(top.st_mode)) == (0, 0o1775)
    assert (venv / "pyvenv.cfg").lstat().st_uid == 0
    assert (venv / "lib").lstat().st_uid == 65534 and (venv / "bin").lstat().st_uid == 65534

    # Sandboxed code (as uid 65534, without the jail) breaks the venv and leaves a trap for a root rebuild.
    target = base_dir / f"trap-{uuid.uuid4().hex}"
    target.write_text("untouched")
    code = (
        "import os\n"
        "os.unlink('.venv/bin/python')\n"
        "os.unlink('.venv/bin/activate')\n"
        f"os.symlink({str(target)!r}, '.venv/bin/activate')\n"
        "print('broken')\n"
    )
    assert (await run(client, code=code)).state == "succeeded"
    fresh = await run(client, code="import sys; print(sys.prefix)")  # a new agent would rebuild it alike
    assert fresh.state == "succeeded" and fresh.run is not None, fresh
    assert target.read_text() == "untouched"
    assert not (venv / "bin/activate").is_symlink()


@needs_root
async def test_without_the_jail_a_root_agent_runs_a_readable_copy_of_its_pip(
    make_client: MakeClient, base_dir: Path
) -> None:
    """The agent's pip may sit where the sandbox uid cannot go (pyenv under a 0700 /root): it gets a copy."""
    pip_dir = agent_pip_dir()
    assert pip_dir is not None
    private = Path(tempfile.mkdtemp(prefix="private-pip-", dir=base_dir))
    private.chmod(0o700)
    hidden_pip = private / "pip"
    shutil.copytree(pip_dir, hidden_pip)
    client = await make_client()
    executor = client.app[AGENT].executor
    copy = pip_for_child(executor, hidden_pip)
    assert copy.parent.parent == executor.state_dir and (copy / "__pip-runner__.py").is_file()
    assert unreachable_parent(copy / "__pip-runner__.py", Identity(65534, 65534)) is None
    assert pip_for_child(executor, hidden_pip) == copy  # made once


@needs_root
@pytest.mark.parametrize("name", [".venv", ".codegen"])
async def test_an_agent_folder_planted_as_a_symlink_is_refused(
    aiohttp_client: Any, workspace: Path, base_dir: Path, name: str
) -> None:
    """Code in the workspace can create `.venv`/`.codegen` before the agent does: root must not follow them."""
    target = Path(tempfile.mkdtemp(prefix="planted-target-", dir=base_dir))
    target.chmod(0o755)
    (workspace / name).symlink_to(target)
    app = create_app(make_settings(workspace, None))
    if name == ".codegen":
        app_runner = web.AppRunner(app)
        try:
            with pytest.raises(SandboxUnavailable, match="is a symlink made inside the workspace"):
                await app_runner.setup()
        finally:
            await app_runner.cleanup()
    else:
        client: AgentClient = await aiohttp_client(app, headers=AUTH)
        view = await run(client, code="print('never')")
        assert view.state == "failed" and "is a symlink made inside the workspace" in (view.error or ""), view
    assert list(target.iterdir()) == []
    assert stat.S_IMODE(target.stat().st_mode) == 0o755 and target.stat().st_uid == 0
