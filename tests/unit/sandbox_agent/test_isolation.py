"""How confined children start: rlimits by `prlimit`, the uid by `subprocess`, a root agent's staging by a
staging bwrap handed the sources as fds. No `preexec_fn`, no ctypes."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import resource
import sys
import tempfile
from pathlib import Path

import pytest

import codegen_mcp.sandbox_agent
from codegen_mcp.api.agent_settings import MiB
from codegen_mcp.sandbox_agent.isolation import Identity, Limits, Sandbox, find_bwrap
from codegen_mcp.sandbox_agent.jail import STAGE_DIR, Bind, Jail
from codegen_mcp.sandbox_agent.jailprobe import NO_LIMITS

from .conftest import MakeClient
from .test_run import run

needs_bwrap = pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap (bwrap) is not installed on this machine")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="only a root agent switches code to a sandbox uid")


def test_prlimit_options_never_ask_above_the_agents_own_hard_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    huge = 2**40
    options = Limits(memory_bytes=None, cpu_seconds=7, file_bytes=None, open_files=huge, processes=None)
    assert options.prlimit_options() == ["--core=0:0", f"--nofile={hard}:{hard}", "--cpu=7:8"]
    small = Limits(memory_bytes=MiB, cpu_seconds=None, file_bytes=2 * MiB, open_files=3, processes=4)
    assert small.prlimit_options() == [
        "--core=0:0",
        f"--as={MiB}:{MiB}",
        f"--fsize={2 * MiB}:{2 * MiB}",
        "--nofile=3:3",
        "--nproc=4:4",
    ]


def test_without_staging_the_uid_switch_is_subprocess_own_and_limits_a_prlimit_prefix() -> None:
    limits = Limits(MiB, 5, MiB, 10, 10)
    with Sandbox(identity=None, jail=None).spawn(["python", "x.py"], limits) as (argv, kwargs):
        assert Path(argv[0]).name == "prlimit" and argv[-3:] == ["--", "python", "x.py"]
        assert kwargs == {"start_new_session": True, "close_fds": True}
    sandbox = Sandbox(identity=Identity(4242, 4343), jail=None)
    with sandbox.spawn(["python"], limits) as (argv, kwargs):
        assert argv[1:-2] == limits.prlimit_options()
        assert kwargs == {
            "start_new_session": True,
            "close_fds": True,
            "user": 4242,
            "group": 4343,
            "extra_groups": [],
        }


def test_a_staged_command_starts_under_the_staging_bwrap_holding_each_source_open(base_dir: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="stage-", dir=base_dir))
    script = folder / "run.py"
    script.write_text("print(1)")
    sandbox = Sandbox(identity=Identity(4242, 4343), jail=Jail(bwrap="/usr/bin/bwrap"))
    command = sandbox.jail_command(
        ["python"], binds=[Bind(folder, writable=True)], chdir=folder, read_only_after=[script]
    )
    with sandbox.spawn(command, NO_LIMITS) as (argv, kwargs):
        fds = kwargs["pass_fds"]
        assert isinstance(fds, tuple) and len(fds) == 2
        assert [os.fstat(fd).st_ino for fd in fds] == [folder.stat().st_ino, script.stat().st_ino]
        assert argv[:4] == ["/usr/bin/bwrap", "--die-with-parent", "--cap-drop", "ALL"]
        assert f"--bind-fd {fds[0]} {STAGE_DIR}/0 --bind-fd {fds[1]} {STAGE_DIR}/1 --" in " ".join(argv)
        setpriv = argv.index("--") + 1
        assert Path(argv[setpriv]).name == "setpriv"
        assert argv[setpriv + 1 : setpriv + 5] == ["--reuid=4242", "--regid=4343", "--clear-groups", "--"]
        assert Path(argv[setpriv + 5]).name == "prlimit"
        assert argv[-len(command.argv) :] == command.argv
        assert "user" not in kwargs and "preexec_fn" not in kwargs
    for fd in fds:  # the agent's copies are closed once the block ends
        with pytest.raises(OSError):
            os.fstat(fd)


def test_a_source_that_cannot_be_opened_is_refused_and_nothing_stays_open(base_dir: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="stage-", dir=base_dir))
    gone = folder / "gone"
    sandbox = Sandbox(identity=Identity(4242, 4242), jail=Jail(bwrap="bwrap"))
    command = sandbox.jail_command(["x"], binds=[Bind(folder), Bind(gone)], chdir=folder)
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError) as refused, sandbox.spawn(command, NO_LIMITS):
        pytest.fail("a missing source was staged")
    assert refused.value.strerror == f"cannot stage {gone} for the jail: No such file or directory"
    assert sorted(os.listdir("/proc/self/fd")) == before


# The zygote's forked child is the one place: single-threaded (the zygote forks before any thread exists), it
# sets its parent-death signal with prctl(2) and its command line for ps, which Python has no call for.
CTYPES_ALLOWED = {"zygote.py"}


def test_no_module_of_the_agent_uses_ctypes_or_preexec_fn() -> None:
    found = []
    for path in Path(codegen_mcp.sandbox_agent.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if path.name not in CTYPES_ALLOWED:
                found += [f"{path.name}: import {n}" for n in names if n.split(".")[0] == "ctypes"]
            if isinstance(node, ast.keyword) and node.arg == "preexec_fn":
                found.append(f"{path.name}:{node.value.lineno}: preexec_fn")
    assert found == []


LIMITS_PROBE = """
import errno, json, os, resource
names = ("AS", "CPU", "FSIZE", "NOFILE", "NPROC", "CORE")
limits = {n: list(resource.getrlimit(getattr(resource, "RLIMIT_" + n))) for n in names}
try:
    with open("big.bin", "wb") as f:
        f.write(b"x" * (2 * 1024 * 1024))
    wrote = "all"
except OSError as e:
    wrote = errno.errorcode[e.errno]
fds = []
try:
    while len(fds) < 1000:
        fds.append(os.open("/dev/null", os.O_RDONLY))
    opened = "all"
except OSError as e:
    opened = errno.errorcode[e.errno]
print(json.dumps({"limits": limits, "wrote": wrote, "opened": opened, "uid": os.getuid()}))
"""


async def test_each_rlimit_applies_to_run_code(make_client: MakeClient, sandbox_mode: str, workspace: Path) -> None:
    client = await make_client(sandbox=sandbox_mode, max_file_bytes=MiB, max_open_files=48, max_processes=3000)
    view = await run(client, code=LIMITS_PROBE, timeout_s=20)
    assert view.state == "succeeded" and view.run is not None, view
    facts = json.loads(view.run.stdout)
    assert facts["limits"] == {
        "AS": [256 * MiB, 256 * MiB],  # conftest's memory_bytes
        "CPU": [25, 26],  # the timeout and CPU_SLACK_S; the hard limit a second later
        "FSIZE": [MiB, MiB],
        "NOFILE": [48, 48],
        "NPROC": [3000, 3000],
        "CORE": [0, 0],
    }
    assert facts["wrote"] == "EFBIG" and (workspace / "big.bin").stat().st_size == MiB
    assert facts["opened"] == "EMFILE"
    assert facts["uid"] == (65534 if os.geteuid() == 0 else os.geteuid())


@needs_bwrap
@needs_root
async def test_the_staging_fds_never_reach_run_code(make_client: MakeClient) -> None:
    client = await make_client(sandbox="bwrap")
    code = (
        "import json, os\n"
        "fds = [f'/proc/self/fd/{n}' for n in os.listdir('/proc/self/fd')]\n"
        "print(json.dumps(sorted(os.readlink(fd) for fd in fds if os.path.exists(fd))))  # listdir's is closed\n"
    )
    view = await run(client, code=code)
    assert view.state == "succeeded" and view.run is not None, view.run
    # stdin (/dev/null), stdout and stderr (pipes): no O_PATH fd of a host folder.
    links = json.loads(view.run.stdout)
    assert len(links) == 3 and links[0] == "/dev/null" and all(link.startswith("pipe:") for link in links[1:]), links


@needs_bwrap
async def test_the_local_backend_asks_the_agents_own_probe_as_a_module(tmp_path: Path) -> None:
    module = [sys.executable, "-m", "codegen_mcp.sandbox_agent.jailprobe"]
    as_root = ["--uid", "65534"] if os.geteuid() == 0 else []  # staged as real runs of a root agent are
    works = await asyncio.create_subprocess_exec(*module, *as_root, stdout=asyncio.subprocess.PIPE)
    assert (await works.communicate())[0] == b"" and works.returncode == 0
    env = {"PATH": str(tmp_path)}  # no bwrap there
    broken = await asyncio.create_subprocess_exec(*module, stdout=asyncio.subprocess.PIPE, env=env)
    assert (await broken.communicate())[0] == b"bwrap is not installed\n" and broken.returncode == 1
