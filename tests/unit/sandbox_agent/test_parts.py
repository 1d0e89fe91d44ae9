"""Pure parts of the agent: requirement parsing, error sentences, output capture, tasks, the jail command."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from codegen_mcp.api.errors import CodegenError, ErrorCode, InvalidArgument
from codegen_mcp.api.tools import TaskKind, TaskState
from codegen_mcp.sandbox_agent.isolation import Identity, Sandbox, child_env, choose_identity
from codegen_mcp.sandbox_agent.jail import Bind, Jail, Link, host_system_mounts
from codegen_mcp.sandbox_agent.pip import pip_path_mounts
from codegen_mcp.sandbox_agent.process import Captured
from codegen_mcp.sandbox_agent.requirements import parse_requirements, pip_error_sentence, split_requirements
from codegen_mcp.sandbox_agent.tasks import Outcome, Task, TaskManager
from codegen_mcp.sandbox_agent.venv import BasePython, parse_base_python, venv_distributions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("requests", ["requests"]),
        ("requests==2.32.3 rich", ["requests==2.32.3", "rich"]),
        ("a,b, c", ["a", "b", "c"]),
        ("six>=1,<2", ["six>=1,<2"]),
        ("six>=1, <2 rich", ["six>=1,<2", "rich"]),
        ("six >= 1.0", ["six>=1.0"]),
        ("requests[socks,security]>=2", ["requests[socks,security]>=2"]),
        ("  numpy\n\tpandas  ", ["numpy", "pandas"]),
    ],
)
def test_split_requirements(text: str, expected: list[str]) -> None:
    assert split_requirements(text) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("--index-url https://evil", "`--index-url` is not allowed"),
        ("six --extra-index-url=x", "`--extra-index-url=x` is not allowed"),
        ("-e .", "`-e` is not allowed"),
        ("-r requirements.txt", "`-r` is not allowed"),
        ("/etc/passwd", "not from local paths"),
        ("..\\evil", "not from local paths"),
        ("./pkg", "not from local paths"),
        ("https://x", "not from URLs"),
        ("git+ssh://git@host/x", "not from URLs"),
        ("name@file:x", "not from URLs"),
        ("evil.whl", "not from archive files"),
        ("pkg.tar.gz", "not from archive files"),
        ("six=>1", "not a valid requirement specifier"),
        (",,,", "must name at least one package"),
    ],
)
def test_parse_requirements_refuses_anything_but_named_requirements(text: str, needle: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_requirements(text)
    assert needle in info.value.message


def test_parse_requirements_keeps_extras_and_markers() -> None:
    reqs = parse_requirements("requests[socks]>=2,<3 six;python_version>'3'")
    assert [r.name for r in reqs] == ["requests", "six"]
    assert reqs[0].extras == {"socks"} and str(reqs[0].specifier) == "<3,>=2"
    assert reqs[1].marker is not None


def test_pip_error_sentence() -> None:
    log = "ERROR: Could not find a version\nERROR: No matching distribution found for nonexistent-pkg-xyz\n"
    assert (
        pip_error_sentence(log, ["nonexistent-pkg-xyz"])
        == "pip could not install 'nonexistent-pkg-xyz': No matching distribution found"
    )
    assert pip_error_sentence("ERROR: disk full\n", ["a", "b"]) == "pip could not install 'a' 'b': disk full"


def test_captured_keeps_the_head_or_the_tail() -> None:
    head = Captured(cap=4)
    for chunk in (b"ab", b"cdef", b"gh"):
        head.add(chunk)
    assert (head.kept(), head.total, head.truncated) == (b"abcd", 8, True)
    tail = Captured(cap=4, keep_tail=True)
    for chunk in (b"ab", b"cdef", b"gh", b"ij"):
        tail.add(chunk)
    assert (tail.kept(), tail.total, tail.truncated) == (b"ghij", 10, True)
    assert Captured(cap=10).text() == ""
    bad = Captured(cap=10)
    bad.add(b"\xff ok")
    assert bad.text() == "\ufffd ok"


def test_identity_only_when_root() -> None:
    assert choose_identity(1000, None, None) is None
    assert choose_identity(0, None, None) == Identity(65534, 65534)
    assert choose_identity(0, 1234, None) == Identity(1234, 1234)
    assert choose_identity(0, 1234, 99) == Identity(1234, 99)


SYSTEM = (
    Bind(Path("/usr")),
    Link("usr/bin", Path("/bin")),
    Bind(Path("/run/resolve/resolv.conf"), Path("/etc/resolv.conf")),
)


def test_jail_command_shows_a_minimal_root_and_only_what_is_bound(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "private").mkdir(parents=True)
    (ws / "token").write_text("t")
    hide = (Path("/var"), ws / "private", tmp_path / "no-such-dir")
    jail = Jail(bwrap="/usr/bin/bwrap", network=False, hide_paths=hide, hide_files=(ws / "token",), system=SYSTEM)
    cmd = jail.wrap(
        ["/ws/.venv/bin/python", "x.py"],
        workspace=ws,
        read_only=[ws / ".venv"],
        hidden_inside=[ws / ".codegen"],
        read_only_after=[ws / ".codegen/runs/t.py"],
    )
    joined = " ".join(cmd)
    assert cmd[:2] == ["/usr/bin/bwrap", "--unshare-all"] and "--share-net" not in cmd
    assert "--ro-bind / /" not in joined  # no view of the host's root any more
    assert "--tmpfs /tmp" in joined and "--cap-drop ALL" in joined and "--die-with-parent" in joined
    # Hiding only matters inside what is bound: /var is not in the jail at all.
    assert "/var" not in joined and "no-such-dir" not in joined
    order = [
        joined.index("--ro-bind /usr /usr"),
        joined.index("--symlink usr/bin /bin"),
        joined.index("--proc /proc"),
        joined.index(f"--bind {ws} {ws}"),
        joined.index(f"--ro-bind {ws}/.venv {ws}/.venv"),
        joined.index(f"--tmpfs {ws}/private"),
        joined.index(f"--ro-bind /dev/null {ws}/token"),
        joined.index(f"--tmpfs {ws}/.codegen"),
        joined.index(f"--ro-bind {ws}/.codegen/runs/t.py"),
        joined.index("--remount-ro /"),
    ]
    assert order == sorted(order)
    assert cmd[-3:] == ["--", "/ws/.venv/bin/python", "x.py"]
    net = Jail(bwrap="bwrap", network=True, system=SYSTEM)
    assert "--share-net" in net.wrap(["x"], workspace=Path("/ws"))
    with_net = jail.command(["x"], binds=[], chdir=Path("/"), network=True).argv
    assert "--share-net" in with_net
    # Name resolution files only where the network is.
    assert "/etc/resolv.conf" in with_net and "/etc/resolv.conf" not in cmd


def test_a_staged_jail_names_its_sources_by_their_staging_place() -> None:
    jail = Jail(bwrap="bwrap", system=SYSTEM)
    binds = [Bind(Path("/srv/ws"), writable=True), Bind(Path("/srv/pip"), Path("/opt/codegen-pip/pip"))]
    command = jail.command(
        ["python"], binds=binds, chdir=Path("/srv/ws"), read_only_after=[Path("/srv/state/t.py")], stage=True
    )
    joined = " ".join(command.argv)
    assert command.staged == (Path("/srv/ws"), Path("/srv/pip"), Path("/srv/state/t.py"))
    assert "--bind /tmp/0 /srv/ws" in joined
    assert "--ro-bind /tmp/1 /opt/codegen-pip/pip" in joined
    assert "--ro-bind /tmp/2 /srv/state/t.py" in joined
    assert "--ro-bind /usr /usr" in joined  # the system trees are reachable by anyone: never staged
    sandbox = Sandbox(identity=Identity(65534, 65534), jail=jail)
    assert sandbox.describe() == "bwrap+rlimits+uid65534"
    assert Sandbox(identity=None, jail=None).describe() == "rlimits"
    # Only a child that switches uid needs staging (how it is started: test_isolation.py).
    assert sandbox.jail_command(["x"], binds=binds, chdir=Path("/")).staged
    assert not Sandbox(identity=None, jail=jail).jail_command(["x"], binds=binds, chdir=Path("/")).staged


def test_host_system_mounts_follow_the_hosts_layout(tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/share/zoneinfo").mkdir(parents=True)
    (tmp_path / "usr/share/zoneinfo/UTC").write_text("tz")
    (tmp_path / "bin").symlink_to("usr/bin")
    (tmp_path / "run").mkdir()
    (tmp_path / "run/resolv.conf").write_text("nameserver 10.0.0.1\n")
    etc = tmp_path / "etc"
    (etc / "python3.11").mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (etc / "shadow").write_text("root:secret\n")
    (etc / "resolv.conf").symlink_to(tmp_path / "run/resolv.conf")
    (etc / "localtime").symlink_to(tmp_path / "usr/share/zoneinfo/UTC")
    trees = [str(tmp_path / "usr"), str(tmp_path / "bin"), str(tmp_path / "lib64")]
    mounts = host_system_mounts(trees, etc=etc)
    assert mounts == (
        Bind(tmp_path / "usr"),
        Link("usr/bin", tmp_path / "bin"),
        Bind(tmp_path / "run/resolv.conf", etc / "resolv.conf"),  # outside the system trees: its content
        Bind(etc / "passwd"),
        Link(str(tmp_path / "usr/share/zoneinfo/UTC"), etc / "localtime"),  # the zone keeps its name
        Bind(etc / "python3.11"),
    )
    jail = Jail(bwrap="bwrap", system=mounts)
    assert jail.shows(tmp_path / "usr/lib/python3.11")
    assert jail.shows(tmp_path / "bin/python3")  # through the /usr-merge link
    assert not jail.shows(tmp_path / "opt/python")


def test_the_base_interpreter_is_shown_only_when_it_lives_outside_the_system_trees(tmp_path: Path) -> None:
    jail = Jail(bwrap="bwrap", system=(Bind(Path("/usr")), Link("usr/bin", Path("/bin"))))
    system = BasePython(prefixes=(Path("/usr"), Path("/usr")), executable=Path("/usr/bin/python3"))
    assert system.mounts(jail) == []
    assert BasePython(prefixes=(Path("/usr"),), executable=Path("/bin/python3")).mounts(jail) == []
    prefix = tmp_path / "pyenv/versions/3.12.1"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin/python3.12").write_text("")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/python").symlink_to(prefix / "bin/python3.12")
    elsewhere = BasePython(prefixes=(prefix, prefix), executable=prefix / "bin/python3.12")
    assert elsewhere.mounts(jail) == [Bind(prefix)]
    linked = BasePython(prefixes=(prefix,), executable=tmp_path / "bin/python")
    assert linked.mounts(jail) == [Bind(prefix), Link(str(prefix / "bin/python3.12"), tmp_path / "bin/python")]
    assert parse_base_python("/opt/py\n/opt/py\n/opt/py/bin/python3\n", "/x") == BasePython(
        prefixes=(Path("/opt/py"), Path("/opt/py")), executable=Path("/opt/py/bin/python3")
    )


def test_the_operators_pip_paths_are_shown_in_the_install_jail(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    (tmp_path / "ca.pem").write_text("x")
    (tmp_path / "link.pem").symlink_to(tmp_path / "ca.pem")
    jail = Jail(bwrap="bwrap", system=(Bind(tmp_path / "sys"),))
    (tmp_path / "sys").mkdir()
    (tmp_path / "sys/ca.crt").write_text("x")
    env = {
        "PIP_FIND_LINKS": f"{tmp_path / 'wheels'} https://example.org/wheels file://{tmp_path / 'wheels'}",
        "REQUESTS_CA_BUNDLE": str(tmp_path / "link.pem"),
        "SSL_CERT_FILE": str(tmp_path / "sys/ca.crt"),  # shown by the system trees already
        "PIP_CERT": "relative.pem",
        "PIP_CONFIG_FILE": str(tmp_path / "missing.conf"),
        "PIP_INDEX_URL": "https://example.org/simple",
    }
    # In PIP_PATH_VARS order; URLs, relative and missing paths are left to pip, each path bound once.
    assert pip_path_mounts(env, jail) == [Bind(tmp_path / "ca.pem", tmp_path / "link.pem"), Bind(tmp_path / "wheels")]


def test_venv_distributions_never_follow_links_or_block_on_fifos(tmp_path: Path) -> None:
    site = tmp_path / "venv/lib/python3.11/site-packages"
    (site / "Foo_Bar-1.2.dist-info").mkdir(parents=True)
    (site / "Foo_Bar-1.2.dist-info/METADATA").write_text("Metadata-Version: 2.1\nName: Foo-Bar\nVersion: 1.2\n\nx")
    decoy = tmp_path / "decoy"
    decoy.write_text("Name: evil\nVersion: 6.6.6\n")
    (site / "six-1.0.dist-info").mkdir()
    (site / "six-1.0.dist-info/METADATA").symlink_to(decoy)
    (site / "fifo_pkg-2.0.dist-info").mkdir()
    os.mkfifo(site / "fifo_pkg-2.0.dist-info/METADATA")
    (site / "linked-3.0.dist-info").symlink_to(tmp_path)
    assert sorted(venv_distributions(tmp_path / "venv")) == [("Foo-Bar", "1.2"), ("fifo_pkg", "2.0"), ("six", "1.0")]


def test_child_env_is_minimal() -> None:
    env = child_env(venv=Path("/v"), home=Path("/h"))
    assert set(env) == {
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "PYTHONUNBUFFERED",
        "PYTHONNOUSERSITE",
        "VIRTUAL_ENV",
        "GIT_CONFIG_COUNT",
        "GIT_CONFIG_KEY_0",
        "GIT_CONFIG_VALUE_0",
    }
    assert env["PATH"].startswith("/v/bin:")


# --- the task manager -----------------------------------------------------------------------------------


async def test_tasks_finish_wait_and_are_forgotten_beyond_retention() -> None:
    manager = TaskManager(retention=2)
    release = asyncio.Event()
    started = asyncio.Event()

    async def work(task: Task) -> Outcome:
        started.set()
        await release.wait()
        return Outcome(TaskState.SUCCEEDED)

    tasks = [manager.submit(TaskKind.RUN_PYTHON, work) for _ in range(3)]
    await asyncio.wait_for(started.wait(), 5)
    assert not tasks[0].done.is_set()
    assert tasks[0].view().state is TaskState.RUNNING
    release.set()
    for task in tasks:
        await manager.wait(task, 5)
        assert task.view().state is TaskState.SUCCEEDED
    with pytest.raises(CodegenError) as info:
        manager.get(tasks[0].task_id)
    assert info.value.code is ErrorCode.TASK_NOT_FOUND
    assert manager.get(tasks[2].task_id) is tasks[2]


async def test_task_errors_become_failed_with_a_sentence() -> None:
    manager = TaskManager(retention=10)

    async def bad_argument(task: Task) -> Outcome:
        raise InvalidArgument("that was wrong")

    async def crash(task: Task) -> Outcome:
        raise RuntimeError("internal detail")

    first = manager.submit(TaskKind.RUN_PYTHON, bad_argument)
    second = manager.submit(TaskKind.RUN_PYTHON, crash)
    await manager.wait(first, 5)
    await manager.wait(second, 5)
    assert (first.state, first.error) == (TaskState.FAILED, "that was wrong")
    assert second.state is TaskState.FAILED and "internal detail" not in (second.error or "")


async def test_installs_queue_behind_each_other_and_a_queued_one_can_be_cancelled() -> None:
    manager = TaskManager(retention=10)
    release = asyncio.Event()
    started = asyncio.Event()

    async def work(task: Task) -> Outcome:
        started.set()
        await release.wait()
        return Outcome(TaskState.SUCCEEDED)

    first = manager.submit(TaskKind.PKG_INSTALL, work)
    second = manager.submit(TaskKind.PKG_INSTALL, work)
    await asyncio.wait_for(started.wait(), 5)
    assert first.state is TaskState.RUNNING and second.state is TaskState.QUEUED
    cancelled = await manager.cancel(second.task_id)
    assert cancelled.view().state is TaskState.CANCELLED
    release.set()
    await manager.wait(first, 5)
    assert first.view().state is TaskState.SUCCEEDED


async def test_shutdown_cancels_what_runs() -> None:
    manager = TaskManager(retention=10)

    started = asyncio.Event()

    async def forever(task: Task) -> Outcome:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    task = manager.submit(TaskKind.RUN_PYTHON, forever)
    await asyncio.wait_for(started.wait(), 5)
    await manager.shutdown()
    assert task.state is TaskState.CANCELLED and task.done.is_set()
    with pytest.raises(CodegenError):
        manager.submit(TaskKind.RUN_PYTHON, forever)
