"""Pure parts of the agent: requirement parsing, error sentences, output capture, tasks, the jail command."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from codegen_mcp.api.errors import CodegenError, ErrorCode, InvalidArgument
from codegen_mcp.api.tools import FsReadArgs, RunPythonArgs, TaskKind, TaskState
from codegen_mcp.sandbox_agent.app import validation_sentence
from codegen_mcp.sandbox_agent.executor import Captured, parse_requirements, pip_error_sentence, split_requirements
from codegen_mcp.sandbox_agent.isolation import Identity, Jail, Limits, Sandbox, child_env, choose_identity
from codegen_mcp.sandbox_agent.tasks import Outcome, Task, TaskManager


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


def _error(model: type[BaseModel], **body: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return info.value


def test_validation_sentences() -> None:
    assert validation_sentence(_error(RunPythonArgs, code="1", timeout_s=0)) == "`timeout_s` must be greater than 0"
    assert validation_sentence(_error(RunPythonArgs)) == "give exactly one of `code` or `file`"
    assert validation_sentence(_error(FsReadArgs)) == "`path` is required"
    assert (
        validation_sentence(_error(FsReadArgs, path="a", x=1), FsReadArgs)
        == "`x` is not an accepted argument; accepted: `path`, `offset`, `limit`"
    )


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


def test_jail_command() -> None:
    jail = Jail(bwrap="/usr/bin/bwrap", network=False, hide_paths=(Path("/var"), Path("/no/such/dir")))
    cmd = jail.wrap(
        ["/ws/.venv/bin/python", "x.py"],
        workspace=Path("/ws"),
        read_only=[Path("/ws/.venv")],
        hidden_inside=[Path("/ws/.codegen")],
        read_only_after=[Path("/ws/.codegen/runs/t.py")],
    )
    joined = " ".join(cmd)
    assert cmd[:2] == ["/usr/bin/bwrap", "--unshare-all"] and "--share-net" not in cmd
    assert "--tmpfs /tmp" in joined and "--cap-drop ALL" in joined and "--die-with-parent" in joined
    # Order matters: the workspace, then the venv read-only over it, then the state hidden, then the script.
    assert "/no/such/dir" not in joined
    order = [
        joined.index("--tmpfs /var"),
        joined.index("--bind /ws /ws"),
        joined.index("--ro-bind /ws/.venv /ws/.venv"),
        joined.index("--tmpfs /ws/.codegen"),
        joined.index("--ro-bind /ws/.codegen/runs/t.py"),
    ]
    assert order == sorted(order)
    assert cmd[-3:] == ["--", "/ws/.venv/bin/python", "x.py"]
    assert "--share-net" in Jail(bwrap="bwrap", network=True).wrap(["x"], workspace=Path("/ws"))
    sandbox = Sandbox(identity=Identity(65534, 65534), jail=jail)
    assert sandbox.describe() == "bwrap+rlimits+uid65534"
    assert Sandbox(identity=None, jail=None).describe() == "rlimits"
    kwargs = sandbox.popen_kwargs(Limits(1, 2, 3, 4, 5))
    assert kwargs["user"] == 65534 and kwargs["start_new_session"] is True


def test_child_env_is_minimal() -> None:
    env = child_env(venv=Path("/v"), home=Path("/h"))
    assert set(env) == {"PATH", "HOME", "LANG", "LC_ALL", "PYTHONUNBUFFERED", "PYTHONNOUSERSITE", "VIRTUAL_ENV"}
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
