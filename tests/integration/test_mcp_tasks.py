"""MCP-native tasks (the `io.modelcontextprotocol/tasks` extension) between the official SDK's client and a real
coordinator process: a task-starting tool answers with a task handle when the request declares the extension,
`tasks/get` follows it to the tool's result, `tasks/cancel` stops it, and only its own workspace sees it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
import httpx2 as httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.client import advertise
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import LATEST_MODERN_VERSION

from tests.support.coordinator import CoordinatorProcess
from tests.support.mcp_client import bearer, text_of

pytestmark = [pytest.mark.timeout(240)]

TASKS = "io.modelcontextprotocol/tasks"

# Runs until the test writes `go` (with fs.write), then prints: no timing is assumed anywhere.
WAIT_FOR_GO = "import os, time\nwhile not os.path.exists('go'): time.sleep(0.05)\nprint('done')"
# Rewrites `beat` 20 times a second for 30 s; atomically, so a read never sees a half-written file.
HEARTBEAT = (
    "import os, time, pathlib\n"
    "for i in range(600):\n"
    "    pathlib.Path('beat.tmp').write_text(str(i)); os.replace('beat.tmp', 'beat'); time.sleep(0.05)\n"
)


# --- the client's side of the extension, as the spec defines it ---------------------------------------


class TaskFields(types.Result):
    task_id: str
    status: Literal["working", "input_required", "completed", "cancelled", "failed"]
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None  # required on the wire, null allowed
    poll_interval_ms: int | None = None


class CreatedTask(TaskFields):
    result_type: Literal["task"]


class DetailedTask(TaskFields):
    result_type: Literal["complete"]
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class TaskParams(types.RequestParams):
    task_id: str


class UpdateParams(TaskParams):
    input_responses: dict[str, Any]


class GetTask(types.Request[TaskParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskParams
    name_param = "taskId"


class CancelTask(types.Request[TaskParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskParams
    name_param = "taskId"


class UpdateTask(types.Request[UpdateParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    params: UpdateParams
    name_param = "taskId"


async def get_task(session: ClientSession, task_id: str) -> DetailedTask:
    return await session.send_request(GetTask(params=TaskParams(task_id=task_id)), DetailedTask)


async def cancel_task(session: ClientSession, task_id: str) -> types.EmptyResult:
    return await session.send_request(CancelTask(params=TaskParams(task_id=task_id)), types.EmptyResult)


async def until_done(session: ClientSession, task_id: str) -> DetailedTask:
    """Poll `tasks/get` at the interval the server asks for until the task is no longer working (bounded)."""
    with anyio.fail_after(60):
        while True:
            task = await get_task(session, task_id)
            if task.status != "working":
                return task
            await anyio.sleep((task.poll_interval_ms or 1000) / 1000)


class Tasks(ClientExtension):
    """Declares the extension and turns a task handle into the tool's result, so `Client.call_tool` just works."""

    identifier = TASKS

    def __init__(self) -> None:
        self.resolved: list[str] = []

    def claims(self) -> tuple[ResultClaim[CreatedTask], ...]:
        return (ResultClaim(result_type="task", model=CreatedTask, resolve=self.resolve),)

    async def resolve(self, created: CreatedTask, ctx: ClaimContext) -> types.CallToolResult:
        task = await until_done(ctx.session, created.task_id)
        assert task.status == "completed" and task.result is not None, task
        self.resolved.append(created.task_id)
        return types.CallToolResult.model_validate(task.result)


@contextlib.asynccontextmanager
async def client(
    coordinator: CoordinatorProcess, workspace: str, *, tasks: Tasks | None = None, token: str | None = None
) -> AsyncIterator[Client]:
    """A 2026-07-28 client of one named workspace (that version has no sessions), declaring tasks or not."""
    headers = {"Codegen-Workspace": workspace, **bearer(token)}
    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(60)) as http,
        Client(
            streamable_http_client(f"{coordinator.url}/mcp", http_client=http),
            mode=LATEST_MODERN_VERSION,
            extensions=None if tasks is None else [tasks],
        ) as connected,
    ):
        yield connected


async def start(c: Client, code: str) -> CreatedTask:
    """A run.python whose answer is its task handle, which must come before the run ends."""
    with anyio.fail_after(45):
        handle = await c.session.call_tool("run.python", {"code": code, "timeout_s": 60}, allow_claimed=True)
    assert isinstance(handle, CreatedTask), handle
    return handle


async def structured(c: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await c.call_tool(tool, arguments)
    assert not result.is_error and isinstance(result.structured_content, dict), text_of(result)
    return result.structured_content


async def beat(c: Client) -> str | None:
    result = await c.call_tool("fs.read", {"path": "beat"})
    return None if result.is_error else text_of(result)


# --- the tests ----------------------------------------------------------------------------------------


async def test_a_task_handle_at_once_then_working_then_completed_with_the_result(
    coordinator: CoordinatorProcess,
) -> None:
    async with client(coordinator, "tasks-flow", tasks=Tasks()) as c:
        handle = await start(c, WAIT_FOR_GO)
        assert handle.status == "working" and handle.task_id.startswith("task_")
        assert handle.ttl_ms is None and handle.poll_interval_ms == 1000

        working = await get_task(c.session, handle.task_id)
        assert (working.status, working.result) == ("working", None)
        assert working.created_at == handle.created_at
        # Our own task tools see the same task.
        status = await structured(c, "task.get_status", task_id=handle.task_id)
        assert status["task_id"] == handle.task_id and status["state"] in ("queued", "running")
        # No input is ever outstanding: an update is acknowledged and changes nothing.
        ack = await c.session.send_request(
            UpdateTask(params=UpdateParams(task_id=handle.task_id, input_responses={"x": {"action": "accept"}})),
            types.EmptyResult,
        )
        assert ack.result_type == "complete"

        await c.call_tool("fs.write", {"path": "go", "content": ""})
        done = await until_done(c.session, handle.task_id)
        assert done.status == "completed" and done.result is not None and done.error is None
        result = types.CallToolResult.model_validate(done.result)
        assert not result.is_error and isinstance(result.structured_content, dict)
        assert result.structured_content["run"]["stdout"] == "done\n"
        assert "Exit Code: 0" in text_of(result)
        after = await structured(c, "task.get_result", task_id=handle.task_id)
        assert after["state"] == "succeeded" and after["run"]["stdout"] == "done\n"


async def test_the_sdk_client_with_the_extension_gets_the_result_through_the_task(
    coordinator: CoordinatorProcess,
) -> None:
    tasks = Tasks()
    async with client(coordinator, "tasks-flow", tasks=tasks) as c:
        result = await c.call_tool("run.python", {"code": "print(6 * 7)"})
        assert not result.is_error and isinstance(result.structured_content, dict)
        assert result.structured_content["run"]["stdout"] == "42\n"
        assert tasks.resolved == [result.structured_content["task_id"]]
        # A `wait_s` of its own is how long the call waits first: a run done by then answers plainly.
        waited = await c.session.call_tool("run.python", {"code": "print(7)", "wait_s": 30}, allow_claimed=True)
        assert isinstance(waited, types.CallToolResult) and "Stdout:\n7\n" in text_of(waited)
        # A quick tool is not made a task, capability or not.
        assert text_of(await c.call_tool("echo", {"message": "hi"})) == "hi"


async def test_tasks_cancel_stops_the_run(coordinator: CoordinatorProcess) -> None:
    async with client(coordinator, "tasks-cancel", tasks=Tasks()) as c:
        handle = await start(c, HEARTBEAT)
        with anyio.fail_after(60):
            while await beat(c) is None:  # cancel only once the run is really going
                await anyio.sleep(0.1)
        ack = await cancel_task(c.session, handle.task_id)
        assert ack.result_type == "complete"
        # The heartbeat must stop: read it until two reads 0.5 s apart agree (bounded).
        deadline = time.monotonic() + 20
        last = None
        while time.monotonic() < deadline:
            now = await beat(c)
            if now == last:
                break
            last = now
            await anyio.sleep(0.5)
        else:
            pytest.fail("the run kept going after tasks/cancel")
        assert last is not None and int(last) < 500
        cancelled = await until_done(c.session, handle.task_id)
        assert cancelled.status == "cancelled" and cancelled.result is None
        assert (await structured(c, "task.get_status", task_id=handle.task_id))["state"] == "cancelled"


async def test_another_workspace_or_token_cannot_see_or_cancel_the_task(coordinator: CoordinatorProcess) -> None:
    async with client(coordinator, "tasks-owner", tasks=Tasks()) as owner:
        handle = await start(owner, WAIT_FOR_GO)
        async with (
            client(coordinator, "tasks-stranger", tasks=Tasks()) as other_workspace,
            client(coordinator, "tasks-owner", tasks=Tasks(), token="someone-else") as other_token,
        ):
            for stranger in (other_workspace, other_token):
                for attempt in (get_task, cancel_task):
                    with pytest.raises(MCPError) as refused:
                        await attempt(stranger.session, handle.task_id)
                    assert refused.value.code == types.INVALID_PARAMS
                    assert "Task not found" in refused.value.message
                peek = await stranger.call_tool("task.get_status", {"task_id": handle.task_id})
                assert peek.is_error
        assert (await get_task(owner.session, handle.task_id)).status == "working"
        await owner.call_tool("fs.write", {"path": "go", "content": ""})
        assert (await until_done(owner.session, handle.task_id)).status == "completed"


async def test_without_the_capability_or_at_2025_a_call_answers_as_before(
    coordinator: CoordinatorProcess,
) -> None:
    async with client(coordinator, "tasks-plain") as c:
        result = await c.session.call_tool("run.python", {"code": "print('plain')"}, allow_claimed=True)
        assert isinstance(result, types.CallToolResult) and not result.is_error
        assert isinstance(result.structured_content, dict)
        task_id = result.structured_content["task_id"]
        assert result.structured_content["run"]["stdout"] == "plain\n"
        with pytest.raises(MCPError) as refused:
            await get_task(c.session, task_id)
        assert refused.value.code == types.MISSING_REQUIRED_CLIENT_CAPABILITY
        assert refused.value.data == {"requiredCapabilities": {"extensions": {TASKS: {}}}}
        discovered = await c.session.send_discover(LATEST_MODERN_VERSION)
        assert discovered["capabilities"]["extensions"] == {TASKS: {}}

    # A handshake-era result is always a CallToolResult (the SDK sieves it so): no tasks there, none advertised.
    async with Client(
        streamable_http_client(f"{coordinator.url}/mcp"), mode="legacy", extensions=[advertise(TASKS)]
    ) as legacy:
        assert legacy.server_capabilities.extensions is None
        result = await legacy.call_tool("run.python", {"code": "print('legacy')"})
        assert isinstance(result.structured_content, dict)
        assert result.structured_content["run"]["stdout"] == "legacy\n"
        with pytest.raises(MCPError) as refused:
            await get_task(legacy.session, result.structured_content["task_id"])
        assert refused.value.code == types.METHOD_NOT_FOUND
