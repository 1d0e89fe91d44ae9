"""Live output over MCP: what a run prints reaches the client as log and progress notifications while the
call still runs, and `task.get_status` shows its last lines (official SDK client, in-process and over HTTP,
real agents)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import mcp_types as types
import pytest
import pytest_asyncio
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from codegen_mcp.coordinator.server import Coordinator
from tests.support.coordinator import CoordinatorProcess, state_root
from tests.support.mcp_client import call, in_process_coordinator, in_process_session, text_of

pytestmark = [pytest.mark.timeout(180), pytest.mark.asyncio(loop_scope="module")]

# Prints "first", then waits (at most 20 s) for the client to create `go`, then prints "second".
FIRST_GO_SECOND = (
    "import os, time\n"
    "print('first', flush=True)\n"
    "deadline = time.time() + 20\n"
    "while not os.path.exists('go') and time.time() < deadline:\n    time.sleep(0.02)\n"
    "print('second' if os.path.exists('go') else 'no go')\n"
)


# In this process; `coordinator` (tests/integration/conftest.py) is a real coordinator process, for the network.
@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def in_process() -> AsyncIterator[Coordinator]:
    for root in state_root():
        async with in_process_coordinator(root / "state") as running:
            yield running


class Output:
    """The live output notifications a client got, in order, and a signal when a text first shows up."""

    def __init__(self, wanted: str) -> None:
        self.logs: list[tuple[str | None, str, str]] = []
        self.progress: list[str] = []
        self.wanted = wanted
        self.seen = anyio.Event()

    async def on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append((params.logger, params.level, str(params.data)))
        if params.logger == "stdout" and self.wanted in str(params.data):
            self.seen.set()

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append(message or "")


@contextlib.asynccontextmanager
async def session_over(cp: CoordinatorProcess, transport: str, output: Output) -> AsyncIterator[ClientSession]:
    streams = streamable_http_client(f"{cp.url}/mcp") if transport == "http" else sse_client(f"{cp.url}/sse")
    async with streams as (read, write, *_), ClientSession(read, write, logging_callback=output.on_log) as session:
        await session.initialize()
        yield session


async def test_a_print_reaches_the_client_before_the_call_ends(in_process: Coordinator) -> None:
    output = Output("first")
    async with in_process_session(in_process, logging_callback=output.on_log) as s:
        await first_before_the_result(s, output)


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_over_the_network_transports_too(coordinator: CoordinatorProcess, transport: str) -> None:
    output = Output("first")
    async with session_over(coordinator, transport, output) as s:
        await first_before_the_result(s, output)


async def first_before_the_result(s: ClientSession, output: Output) -> None:
    """The run prints "first" and goes on only once a notification brought it: then the result comes."""
    result: types.CallToolResult | None = None
    await call(s, "echo", message="the sandbox is up")

    async def run() -> None:
        nonlocal result
        arguments = {"code": FIRST_GO_SECOND, "wait_s": 60}
        result = await s.call_tool("run.python", arguments, progress_callback=output.on_progress)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            # The run goes on only once the client saw "first": only a notification sent while it ran can
            # have told it.
            await output.seen.wait()
            assert result is None
            await call(s, "fs.write", path="go", content="")
    assert result is not None and not result.is_error, result
    assert result.structured_content is not None
    assert result.structured_content["run"]["stdout"] == "first\nsecond\n"
    stdout = [data for logger, level, data in output.logs if logger == "stdout" and level == "info"]
    assert stdout == ["first\n", "second\n"]  # each line once, in order, and the last before the result
    assert "first" in output.progress and "second" in output.progress  # the latest lines, as progress too


async def test_stderr_has_its_own_logger_and_the_log_level_is_honoured(in_process: Coordinator) -> None:
    output = Output("-")
    code = "import sys; print('out', flush=True); print('err', file=sys.stderr, flush=True)"
    async with in_process_session(in_process, logging_callback=output.on_log) as s:
        await call(s, "run.python", code=code)
        # Two pipes: which of them the agent reads first is the kernel's business.
        streams = sorted((lg, d) for lg, _, d in output.logs if lg in ("stdout", "stderr"))
        assert streams == [("stderr", "err\n"), ("stdout", "out\n")]
        await s.set_logging_level("warning")
        output.logs.clear()
        await call(s, "run.python", code=code)
        assert [lg for lg, _, _ in output.logs if lg in ("stdout", "stderr")] == []


async def status_with_a_tail(s: ClientSession, task_id: str) -> types.CallToolResult:
    """task.get_status, once it shows some output."""
    with anyio.fail_after(30):
        while True:
            status = await call(s, "task.get_status", task_id=task_id)
            assert status.structured_content is not None
            if status.structured_content["progress"]["output_tail"]:
                return status
            await anyio.sleep(0.05)


async def test_task_get_status_shows_the_last_lines_of_a_running_task(in_process: Coordinator) -> None:
    async with in_process_session(in_process) as s:
        started = (await call(s, "run.python", code=FIRST_GO_SECOND, wait_s=0)).structured_content
        assert started is not None and started["state"] in ("queued", "running")
        task_id = started["task_id"]
        status = await status_with_a_tail(s, task_id)
        assert status.structured_content["state"] == "running"
        assert status.structured_content["progress"]["output_tail"] == "first"
        assert "Output so far (last lines):\nfirst" in text_of(status)
        waited = text_of(await call(s, "task.get_result", task_id=task_id, wait_s=0.2))
        assert "is still running" in waited and "Output so far (last lines):\nfirst" in waited
        await call(s, "fs.write", path="go", content="")
        done = (await call(s, "task.get_result", task_id=task_id, wait_s=30)).structured_content
        assert done is not None and done["run"]["stdout"] == "first\nsecond\n"
        assert done["progress"]["output_tail"] == ""


async def test_task_get_result_forwards_only_what_comes_after_it_began(in_process: Coordinator) -> None:
    output = Output("new")
    code = "import time\nprint('old', flush=True)\ntime.sleep(4)\nprint('new', flush=True)\n"
    async with in_process_session(in_process, logging_callback=output.on_log) as s:
        started = (await call(s, "run.python", code=code, wait_s=0)).structured_content
        assert started is not None
        task_id = started["task_id"]
        await status_with_a_tail(s, task_id)
        output.logs.clear()
        done = (await call(s, "task.get_result", task_id=task_id, wait_s=30)).structured_content
        assert done is not None and done["run"]["stdout"] == "old\nnew\n"
    # It waited from after "old": a client polling task.get_result does not get old output again each time.
    assert [data for logger, _, data in output.logs if logger == "stdout"] == ["new\n"]
