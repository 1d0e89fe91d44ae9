"""run.python's persistent contexts against a real agent: real interpreters, in the bwrap jail and without it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codegen_mcp.api.tools import ContextListResult, TaskView
from codegen_mcp.sandbox_agent.agent import AGENT
from codegen_mcp.sandbox_agent.app import create_app
from codegen_mcp.sandbox_agent.interpreter import CellStream

from .conftest import AUTH, AgentClient, MakeClient, make_settings
from .test_run import get_task, processes_with, run, wait_until


async def cell(client: AgentClient, code: str, context: str = "main", **body: Any) -> TaskView:
    view = await run(client, code=code, context=context, **body)
    assert view.run is not None and view.run.context is not None, view
    return view


async def contexts(client: AgentClient) -> ContextListResult:
    resp = await client.get("/v1/run/contexts")
    assert resp.status == 200
    return ContextListResult.model_validate(await resp.json())


async def test_a_variable_set_in_one_call_is_read_in_the_next(runner: AgentClient) -> None:
    first = await cell(runner, "x = 41\nimport json\nprint('set')")
    assert first.state == "succeeded" and first.run is not None and first.run.stdout == "set\n"
    second = await cell(runner, "x += 1\nprint(json.dumps({'x': x}))")
    assert second.run is not None and second.run.stdout == '{"x": 42}\n', second
    assert second.run.context is not None and second.run.context.cell == 2 and second.run.context.restarted is None


async def test_the_last_expression_comes_back_as_its_repr(runner: AgentClient) -> None:
    view = await cell(runner, "import math\nprint('side effect')\n{'pi': round(math.pi, 2), 'n': [1, 2]}")
    assert view.run is not None
    assert view.run.value == "{'pi': 3.14, 'n': [1, 2]}" and view.run.stdout == "side effect\n"
    assert (await cell(runner, "_['n']")).run.value == "[1, 2]"  # type: ignore[union-attr]
    assert (await cell(runner, "y = 3")).run.value is None  # type: ignore[union-attr]
    assert (await cell(runner, "None")).run.value is None  # type: ignore[union-attr]
    long = await cell(runner, "'a' * 100_000")
    assert long.run is not None and long.run.value_truncated and len(long.run.value or "") == 8192


async def test_an_error_gives_a_traceback_and_keeps_the_state(runner: AgentClient) -> None:
    await cell(runner, "kept = 'yes'")
    failed = await cell(runner, "def f():\n    raise ValueError('bad input')\nf()")
    assert failed.state == "failed" and failed.run is not None and failed.run.exit_code == 1
    assert "Traceback (most recent call last)" in failed.run.stderr and "ValueError: bad input" in failed.run.stderr
    assert 'File "<cell 2>", line 2, in f' in failed.run.stderr and "raise ValueError" in failed.run.stderr
    assert "context-driver" not in failed.run.stderr  # the driver's own frames are not the user's
    syntax = await cell(runner, "print(kept")
    assert syntax.state == "failed" and syntax.run is not None and "SyntaxError" in syntax.run.stderr
    exited = await cell(runner, "import sys; sys.exit(3)")
    assert exited.run is not None and exited.run.exit_code == 3 and exited.run.context.state_kept  # type: ignore[union-attr]
    assert (await cell(runner, "kept")).run.value == "'yes'"  # type: ignore[union-attr]


async def test_two_contexts_are_isolated_and_a_stateless_run_sees_neither(runner: AgentClient) -> None:
    await cell(runner, "secret = 'a'", context="first")
    await cell(runner, "secret = 'b'", context="second")
    assert (await cell(runner, "secret", context="first")).run.value == "'a'"  # type: ignore[union-attr]
    assert (await cell(runner, "secret", context="second")).run.value == "'b'"  # type: ignore[union-attr]
    plain = await run(runner, code="print('secret' in globals())")
    assert plain.run is not None and plain.run.stdout == "False\n" and plain.run.context is None
    listed = await contexts(runner)
    assert [c.name for c in listed.contexts] == ["first", "second"] and listed.max_contexts == 4
    assert all(c.running and c.cells == 2 and (c.memory_bytes or 0) > 1_000_000 for c in listed.contexts)


async def test_a_timeout_interrupts_the_cell_and_keeps_the_state(runner: AgentClient) -> None:
    await cell(runner, "x = 'still here'")
    slow = await cell(runner, "print('looping', flush=True)\nwhile True:\n    pass", timeout_s=1)
    assert slow.state == "timed_out" and slow.run is not None and slow.run.timed_out
    assert slow.run.stdout == "looping\n" and slow.run.stderr.endswith(
        'File "<cell 2>", line 2, in <module>\n    while True:\nKeyboardInterrupt\n'
    )
    assert "context-driver" not in slow.run.stderr  # nor the driver's SIGINT handler
    assert slow.run.context is not None and slow.run.context.state_kept
    assert "interrupted after 1 s (KeyboardInterrupt); the context 'main' keeps its state" in (slow.error or "")
    after = await cell(runner, "x")
    assert after.run is not None and after.run.value == "'still here'" and after.run.context is not None
    assert after.run.context.restarted is None and after.run.context.cell == 3
    # A blocking call is interrupted too (a real SIGINT, not only a flag checked between bytecodes).
    sleeping = await cell(runner, "import time; time.sleep(30)", timeout_s=1)
    assert sleeping.state == "timed_out" and sleeping.run is not None and sleeping.run.duration_s < 10


async def test_a_cell_that_ignores_the_interrupt_is_killed_and_the_state_is_lost(make_client: MakeClient) -> None:
    client = await make_client()
    assert client.app is not None
    client.app[AGENT].executor.contexts.grace_s = 0.5
    await cell(client, "x = 1")
    stubborn = (
        "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except KeyboardInterrupt:\n        pass\n"
    )
    view = await cell(client, stubborn, timeout_s=1)
    assert view.state == "timed_out" and view.run is not None and view.run.context is not None
    assert not view.run.context.state_kept
    assert "did not stop within 0.5 s of the interrupt" in (view.error or "")
    fresh = await cell(client, "'x' in globals()")
    assert fresh.run is not None and fresh.run.value == "False" and fresh.run.context is not None
    assert fresh.run.context.restarted is not None
    assert fresh.run.context.restarted.startswith("the context 'main' was restarted: its state was lost (")


async def test_a_killed_interpreter_restarts_and_says_the_state_was_lost(runner: AgentClient) -> None:
    await cell(runner, "x = 1")
    killed = await cell(runner, "import os, signal\nprint('bye', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)")
    assert killed.state == "failed" and killed.run is not None and killed.run.context is not None
    assert killed.run.stdout == "bye\n" and not killed.run.context.state_kept and killed.run.context.cell == 2
    assert "the context 'main' lost its state: its interpreter was killed (SIGKILL)" in (killed.error or "")
    listed = (await contexts(runner)).contexts
    assert [(c.name, c.running) for c in listed] == [("main", False)] and "SIGKILL" in (listed[0].lost or "")
    again = await cell(runner, "'x' in globals()")
    assert again.run is not None and again.run.value == "False" and again.run.context is not None
    restarted = again.run.context.restarted or ""
    assert restarted.startswith("the context 'main' was restarted: its state was lost (its interpreter was killed")
    assert again.run.context.cell == 1


def memory_cgroup_parent() -> Path | None:
    """This process's v1 memory cgroup, when a child group can be made in it (root, a v1 hierarchy)."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                folder = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
                return folder if os.access(folder, os.W_OK) else None
    except OSError:
        return None
    return None


@pytest.fixture
def memory_cgroup() -> Iterator[Path]:
    parent = memory_cgroup_parent()
    if parent is None:
        pytest.skip(reason="no writable cgroup v1 memory hierarchy for this process (not root, or no controller)")
    group = parent / f"cg-context-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(96 * 1024 * 1024))
        yield group
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            (parent / "cgroup.procs").write_text(pid)
        group.rmdir()


async def test_a_memory_limit_kill_restarts_the_context_and_says_so(
    make_client: MakeClient, sandbox_mode: str, memory_cgroup: Path, workspace: Path
) -> None:
    client = await make_client(sandbox=sandbox_mode, memory_bytes=1024 * 1024 * 1024)
    await cell(client, "x = 1", context="big")
    # The session's memory cap is the cgroup its agent runs in: put this context's interpreter in a small one.
    for pid in processes_with("context-driver.py"):
        (memory_cgroup / "cgroup.procs").write_text(str(pid))
    oom = await cell(client, "block = b'x' * (300 << 20)\nprint('allocated')", context="big")
    assert oom.state == "failed" and oom.run is not None and oom.run.context is not None
    assert "allocated" not in oom.run.stdout and not oom.run.context.state_kept
    assert "killed for going over the session's memory limit (out of memory)" in (oom.error or ""), oom
    again = await cell(client, "'x' in globals()", context="big")
    assert again.run is not None and again.run.value == "False" and again.run.context is not None
    assert again.run.context.restarted == (
        "the context 'big' was restarted: its state was lost (its interpreter was killed for going over the "
        "session's memory limit (out of memory))"
    )


async def test_an_rlimit_memory_error_keeps_the_state(runner: AgentClient) -> None:
    await cell(runner, "x = 1")
    view = await cell(runner, "block = bytearray(512 * 1024 * 1024)")  # the agent's limit is 256 MiB (conftest)
    assert view.state == "failed" and view.run is not None and "MemoryError" in view.run.stderr
    assert (await cell(runner, "x")).run.value == "1"  # type: ignore[union-attr]


async def test_reset_discards_the_state_and_reset_alone_ends_the_context(client: AgentClient) -> None:
    await cell(client, "x = 1")
    fresh = await cell(client, "'x' in globals()", reset=True)
    assert fresh.run is not None and fresh.run.value == "False" and fresh.run.context is not None
    assert fresh.run.context.cell == 1 and fresh.run.context.restarted is None  # asked for: not "lost"
    ended = await run(client, context="main", reset=True)
    assert ended.state == "succeeded" and ended.run is not None and ended.run.context is not None
    assert (
        ended.reply().text == "The context 'main' was reset: its interpreter and state are gone, and its place is free."
    )
    assert (await contexts(client)).contexts == []
    marker = "context-driver.py"
    await wait_until(lambda: not processes_with(marker))


async def test_the_cap_on_contexts_and_a_bad_name_are_one_sentence(make_client: MakeClient) -> None:
    client = await make_client()
    for name in ("a", "b", "c", "d"):
        await cell(client, "1", context=name)
    resp = await client.post("/v1/run/python", json={"code": "1", "context": "e"})
    assert resp.status == 409
    message = (await resp.json())["error"]["message"]
    assert message.startswith("this session already has 4 Python contexts ('a', 'b', 'c', 'd'), the most it may hold")
    assert (await cell(client, "2", context="d")).run.value == "2"  # type: ignore[union-attr]
    await run(client, context="a", reset=True)
    assert (await cell(client, "3", context="e")).state == "succeeded"
    resp = await client.post("/v1/run/python", json={"code": "1", "context": "Main Context"})
    assert resp.status == 400
    assert (await resp.json())["error"]["message"] == (
        "`context` must be a short name: a lowercase letter, then up to 31 lowercase letters, digits, '_' or '-' "
        "(e.g. 'main'), not 'Main Context'"
    )
    resp = await client.post("/v1/run/python", json={"reset": True})
    assert resp.status == 400 and "`reset` needs the `context`" in (await resp.json())["error"]["message"]


async def test_stdin_args_files_and_artifacts(runner: AgentClient) -> None:
    await runner.post("/v1/fs/write", json={"path": "helper.py", "content": "import sys\nloaded = sys.argv[1:]\n"})
    by_file = await run(runner, file="helper.py", args=["one"], context="main")
    assert by_file.state == "succeeded", by_file
    view = await cell(runner, "import helper, sys\nprint(loaded, sys.stdin.read())\nhelper.__name__", stdin="in")
    assert view.run is not None and view.run.stdout == "['one'] in\n" and view.run.value == "'helper'"
    png = await cell(runner, "open('plot.png', 'wb').write(bytes([137, 80, 78, 71]))")
    assert png.run is not None and [(a.path, a.media_type) for a in png.run.artifacts] == [("plot.png", "image/png")]


async def test_shutdown_stops_the_interpreters(runner: AgentClient) -> None:
    await cell(runner, "x = 1")
    assert processes_with("context-driver.py")
    await runner.close()
    await wait_until(lambda: not processes_with("context-driver.py"))


async def test_a_cells_output_is_live_while_it_runs(client: AgentClient) -> None:
    code = "import os, time\nprint('first', flush=True)\nwhile not os.path.exists('go'):\n    time.sleep(0.01)\n"
    resp = await client.post("/v1/run/python", json={"code": code, "context": "main", "wait_s": 0})
    view = TaskView.model_validate(await resp.json())
    await wait_until(
        lambda: client.app is not None and "first" in client.app[AGENT].tasks.get(view.task_id).output.tail()
    )
    running = await get_task(client, view.task_id)
    assert running.state == "running" and running.progress.output_tail == "first"
    assert (await client.post("/v1/fs/write", json={"path": "go", "content": ""})).status == 200
    done = await get_task(client, view.task_id, wait_s=30)
    assert done.state == "succeeded" and done.run is not None and done.run.stdout == "first\n"


@pytest.mark.parametrize("size", [1, 2, 5, 64])
async def test_output_is_cut_into_cells_at_marks_split_anywhere(size: int) -> None:
    stream, seen = CellStream(cap=1024), bytearray()
    first = stream.begin(b"\0end:1\0", seen.extend)
    data = b"a\0b\0en" + b"\0end:1\0" + b"between "
    for at in range(0, len(data), size):
        stream.feed(data[at : at + size])
        if not stream.ended.is_set():
            assert bytes(seen) == data[: len(seen)]  # held back only what may start the mark
    assert first.kept() == b"a\0b\0en" and stream.ended.is_set() and bytes(seen) == b"a\0b\0en"
    second = stream.begin(b"\0end:2\0", seen.extend)  # output between two cells goes to the next one
    assert not stream.ended.is_set()
    stream.feed(b"more\0end:2\0")
    assert second.kept() == b"between more" and stream.ended.is_set()


async def test_after_the_agent_stopped_the_next_cell_says_the_state_is_gone(
    make_client: MakeClient, aiohttp_client: Any, workspace: Path, shared_venv: Path
) -> None:
    first = await make_client()
    await cell(first, "x = 1", context="main")
    await cell(first, "y = 1", context="other")
    await run(first, context="other", reset=True)  # ended on purpose: nothing to say about it later
    await first.close()  # as a suspend or the idle close stops the agent
    second = await aiohttp_client(create_app(make_settings(workspace, shared_venv)), headers=AUTH)
    listed = (await contexts(second)).contexts
    assert [(c.name, c.running) for c in listed] == [("main", False)]
    again = await cell(second, "'x' in globals()", context="main")
    assert again.run is not None and again.run.value == "False" and again.run.context is not None
    assert again.run.context.restarted == (
        "the context 'main' was restarted: its state was lost (the sandbox stopped since its last cell: suspended "
        "when idle, or restarted)"
    )
    fresh = await cell(second, "'y' in globals()", context="other")
    assert fresh.run is not None and fresh.run.context is not None and fresh.run.context.restarted is None


LOOP_UNTIL_GO = "import os, time\nprint('waiting', flush=True)\nwhile not os.path.exists('go'):\n    time.sleep(0.01)\n"


async def test_cancel_interrupts_the_cell_and_a_queued_cell_is_cancelled_without_running(client: AgentClient) -> None:
    await cell(client, "x = 1")
    busy = await run(client, code=LOOP_UNTIL_GO, context="main", wait_s=0)
    queued = await run(client, code="x = 'queued ran'", context="main", wait_s=0)
    cancelled = TaskView.model_validate(await (await client.post(f"/v1/tasks/{queued.task_id}/cancel")).json())
    assert cancelled.state == "cancelled" and cancelled.run is None
    assert "cancelled while waiting for the context 'main'" in (cancelled.error or "")
    async with asyncio.timeout(10):  # the cell is in its loop
        while (await get_task(client, busy.task_id)).progress.stdout_bytes < len("waiting\n"):
            await asyncio.sleep(0.02)
    stopped = TaskView.model_validate(await (await client.post(f"/v1/tasks/{busy.task_id}/cancel")).json())
    assert stopped.state == "cancelled" and stopped.run is not None and stopped.run.context is not None
    assert stopped.run.stdout == "waiting\n" and stopped.run.context.state_kept
    assert "interrupted on request (KeyboardInterrupt)" in (stopped.error or "")
    assert (await cell(client, "x")).run.value == "1"  # type: ignore[union-attr]


async def test_a_forged_reply_stops_the_interpreter_and_the_agent_goes_on(client: AgentClient) -> None:
    forge = (
        "import os\n"
        "for fd in map(int, os.listdir('/proc/self/fd')):\n"
        "    try:\n"
        "        if os.readlink(f'/proc/self/fd/{fd}').startswith('socket:'):\n"
        "            os.write(fd, b'\\x00\\x00\\x00\\x05hello')\n"
        "    except OSError:\n"
        "        pass\n"
        "import time; time.sleep(5)\n"
    )
    view = await cell(client, forge)
    assert view.state == "failed" and view.run is not None and view.run.context is not None
    assert not view.run.context.state_kept
    assert "its interpreter sent a reply that is not JSON and was stopped" in (view.error or ""), view
    again = await cell(client, "1 + 1")
    assert again.run is not None and again.run.value == "2" and again.run.context is not None
    assert "sent a reply that is not JSON" in (again.run.context.restarted or "")


@pytest.fixture
def small_disk(base_dir: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs standing in for the session's quota disk (the local backend's is a loop-mounted image)."""
    if os.geteuid() != 0:
        pytest.skip(reason="mounting a small disk for the quota needs root")
    folder = base_dir / f"quota-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=1777", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)
        folder.rmdir()


async def test_a_cell_that_fills_the_disk_quota_is_interrupted_and_keeps_the_state(
    make_client: MakeClient, small_disk: Path
) -> None:
    client = await make_client(tmp_dir=small_disk)
    await cell(client, "x = 1")
    fill = (
        f"import time\nf = open({str(small_disk / 'fill')!r}, 'wb')\n"
        "try:\n    f.write(b'x' * (15 << 20)); f.flush()\nexcept OSError:\n    pass\n"
        "while True:\n    time.sleep(0.05)\n"
    )
    view = await cell(client, fill, timeout_s=60)
    assert view.state == "failed" and view.run is not None and view.run.context is not None, view
    assert view.run.duration_s < 30 and view.run.context.state_kept
    assert "interrupted because the session's disk quota is full" in (view.error or "")
    assert "the session's disk quota (16 MiB, workspace and /tmp together) is full" in view.run.stderr
    (small_disk / "fill").unlink()
    assert (await cell(client, "x")).run.value == "1"  # type: ignore[union-attr]
