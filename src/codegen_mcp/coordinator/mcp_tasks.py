"""MCP-native tasks: the `io.modelcontextprotocol/tasks` extension (SEP-2663), over the agents' own task store.

A client that declares the extension in a request's capabilities gets, from a tool that starts a sandbox task
(run.python, pkg.install, test.run, lint.check, git.clone), a task handle (`resultType: "task"`) at once instead
of waiting for the result. It then polls `tasks/get`, which carries the tool's final `CallToolResult` once the
task completed, or stops the work with `tasks/cancel`. Quick tools answer as they always did.

The handle's `taskId` is the agent's own task id: `task.get_status` / `task.get_result` see the same task, and
the task lives where it always did, in the sandbox of the workspace that started it. A task request goes to the
sandbox of its own workspace (the `Codegen-Workspace` header, scoped by bearer token), so no other caller can see
the task, and the coordinator keeps nothing of its own: any replica answers.

Only at 2026-07-28. On a handshake-era connection the SDK sieves every `tools/call` result through 2025-11-25's
`CallToolResult` (`ServerRunner._serialize`), so neither this extension's `CreateTaskResult` nor 2025-11-25's
experimental one can be sent there; its method tables leave out `tasks/*` for that version too.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import mcp_types as types
from mcp.server import Server
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding, RequestHandler, compose_tool_call_handler
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field, ValidationError

from codegen_mcp.api import routes
from codegen_mcp.api.errors import CodegenError, ErrorCode
from codegen_mcp.api.tools import TASK_ID_PATTERN, TOOLS_BY_NAME, TaskState, TaskView
from codegen_mcp.coordinator import tools
from codegen_mcp.coordinator.agent_client import AgentClient
from codegen_mcp.coordinator.budget import fit_result, fit_task_output

if TYPE_CHECKING:
    from codegen_mcp.coordinator.server import Coordinator

IDENTIFIER = "io.modelcontextprotocol/tasks"
MODERN = frozenset(MODERN_PROTOCOL_VERSIONS)

# The spec's statuses for the agent's task states. A failed or timed-out run is `completed`: its tool result
# (isError) is what the plain call would have answered, and the spec keeps `failed` for JSON-RPC errors.
STATUS: dict[TaskState, str] = {
    TaskState.QUEUED: "working",
    TaskState.RUNNING: "working",
    TaskState.SUCCEEDED: "completed",
    TaskState.FAILED: "completed",
    TaskState.TIMED_OUT: "completed",
    TaskState.CANCELLED: "cancelled",
}

T = TypeVar("T")


class TaskParams(types.RequestParams):
    task_id: str = Field(description="The task's id, as its `CreateTaskResult` gave it.")


class UpdateTaskParams(TaskParams):
    input_responses: dict[str, Any] = Field(default_factory=dict)


def advertised(protocol_version: str) -> dict[str, dict[str, Any]] | None:
    """The server's `capabilities.extensions` at this version: the extension where tasks can be sent."""
    return {IDENTIFIER: {}} if protocol_version in MODERN else None


def declares_tasks(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this request (2026-07-28) carries the client's tasks capability; without it no task is made."""
    if ctx.protocol_version not in MODERN:
        return False
    capabilities = ctx.session.client_capabilities
    return capabilities is not None and IDENTIFIER in (capabilities.extensions or {})


def task_fields(view: TaskView, poll_interval_ms: int) -> dict[str, Any]:
    """The spec's `Task` for one of our tasks (a dict: `ttlMs` must stay on the wire when it is null)."""
    status = STATUS[view.state]
    fields: dict[str, Any] = {
        "taskId": view.task_id,
        "status": status,
        "createdAt": _iso(view.created_at),
        "lastUpdatedAt": _iso(view.finished_at or view.started_at or view.created_at),
        # No deadline of our own: a task lasts as long as its sandbox, and the agent keeps the latest finished ones.
        "ttlMs": None,
        "pollIntervalMs": poll_interval_ms,
    }
    if status == "working":
        fields["statusMessage"] = view.progress_message()
    elif status == "cancelled":
        fields["statusMessage"] = view.error or "the task was cancelled"
    return fields


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def running_task(result: types.CallToolResult) -> TaskView | None:
    """The task a task-starting tool's result reports, when it is still running; else None (a final answer)."""
    if result.is_error or not isinstance(result.structured_content, dict):
        return None
    try:
        view = TaskView.model_validate(result.structured_content)
    except ValidationError:
        return None
    return None if view.state.finished else view


def missing_capability() -> MCPError:
    return MCPError(
        code=types.MISSING_REQUIRED_CLIENT_CAPABILITY,
        message=f"Missing required client capability: declare the `{IDENTIFIER}` extension in this request",
        data={"requiredCapabilities": {"extensions": {IDENTIFIER: {}}}},
    )


def protocol_error(exc: CodegenError) -> MCPError:
    """A task request's failure as the JSON-RPC error the spec asks for: an unknown task is invalid params."""
    if exc.code is ErrorCode.TASK_NOT_FOUND:
        return MCPError(code=types.INVALID_PARAMS, message=f"Task not found: {exc.message}")
    if exc.code is ErrorCode.SESSION_REQUIRED:
        return MCPError(code=types.INVALID_PARAMS, message=exc.message)
    return MCPError(code=types.INTERNAL_ERROR, message=exc.message)


class McpTasks(Extension):
    """The tasks extension, served by the coordinator's sessions and the agents' tasks."""

    identifier = IDENTIFIER

    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator

    @property
    def poll_interval_ms(self) -> int:
        return round(self._coordinator.settings.progress_interval_s * 1000)

    def methods(self) -> Sequence[MethodBinding]:
        return (
            MethodBinding("tasks/get", TaskParams, self.get_task, protocol_versions=MODERN),
            MethodBinding("tasks/update", UpdateTaskParams, self.update_task, protocol_versions=MODERN),
            MethodBinding("tasks/cancel", TaskParams, self.cancel_task, protocol_versions=MODERN),
        )

    async def intercept_tool_call(
        self, params: types.CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        """A task-starting tool called with the capability answers with its task once it started.

        Its `wait_s`, when the client gives one, is how long the call waits for the result first. The call goes
        to the coordinator's handler directly, not through `call_next`, which passes on the arguments as received.
        """
        spec = TOOLS_BY_NAME.get(params.name)
        if spec is None or not spec.starts_task or not declares_tasks(ctx):
            return await call_next(ctx)
        started = params.model_copy(update={"arguments": {"wait_s": 0, **(params.arguments or {})}})
        result = await self._coordinator.call_tool(ctx, started)
        view = running_task(result)
        if view is None:
            return result  # finished already, or refused: the plain answer
        return {"resultType": "task", **task_fields(view, self.poll_interval_ms)}

    async def get_task(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> HandlerResult:
        """`tasks/get`: the task's state; once completed, the tool result the plain call would have given."""

        async def read(client: AgentClient) -> dict[str, Any]:
            view = await _view(client, params.task_id)
            fields = task_fields(view, self.poll_interval_ms)
            if fields["status"] == "completed":
                view, notes = await fit_task_output(view, client)
                result = fit_result(tools.format_result(view, notes))
                fields["result"] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
            return {"resultType": "complete", **fields}

        return await self._with_agent(ctx, params.task_id, read)

    async def update_task(self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams) -> HandlerResult:
        """`tasks/update`: our tasks never ask for input, so every response is for no outstanding request and is
        ignored, as the spec asks; a known task gets the empty acknowledgement."""

        async def acknowledge(client: AgentClient) -> types.EmptyResult:
            await _view(client, params.task_id)
            return types.EmptyResult(result_type="complete")

        return await self._with_agent(ctx, params.task_id, acknowledge)

    async def cancel_task(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> HandlerResult:
        """`tasks/cancel`: the agent stops the task's processes (it answers once they ended, or after its grace)."""

        async def cancel(client: AgentClient) -> types.EmptyResult:
            route = routes.TASK_CANCEL
            await client.request(route.method, route.path.format(task_id=params.task_id))
            return types.EmptyResult(result_type="complete")

        return await self._with_agent(ctx, params.task_id, cancel)

    async def _with_agent(
        self, ctx: ServerRequestContext[Any, Any], task_id: str, use: Callable[[AgentClient], Awaitable[T]]
    ) -> T:
        """Run `use` on the agent of this request's workspace, the only place its tasks are found."""
        if not declares_tasks(ctx):
            raise missing_capability()
        if not re.fullmatch(TASK_ID_PATTERN, task_id):
            raise MCPError(code=types.INVALID_PARAMS, message=f"Task not found: {task_id[:40]!r} is no task id of ours")
        coordinator = self._coordinator
        try:
            async with coordinator.sessions.use(coordinator.session_key(ctx)) as sandbox:
                return await use(sandbox.client)
        except CodegenError as exc:
            raise protocol_error(exc) from None


async def _view(client: AgentClient, task_id: str) -> TaskView:
    route = routes.TASK
    data = await client.request(route.method, route.path.format(task_id=task_id), params={"wait_s": "0"})
    return TaskView.model_validate(data)


def install(server: Server[Any], extension: Extension) -> None:
    """Serve `extension` on a low-level `Server`, as `MCPServer(extensions=[...])` would on its own.

    Its methods answer only at the versions they name (METHOD_NOT_FOUND elsewhere), and its interceptor wraps
    the `tools/call` handler registered so far. Its capability is advertised by the server's discover handler
    (`advertised`), not in `initialize`, where it could not be used.
    """
    for binding in extension.methods():
        server.add_request_handler(binding.method, binding.params_type, _gated(binding))
    entry = server.get_request_handler("tools/call")
    if entry is None:
        raise ValueError("install the tasks extension after the server's tools/call handler")
    server.add_request_handler(
        "tools/call", types.CallToolRequestParams, compose_tool_call_handler([extension], entry.handler)
    )


def _gated(binding: MethodBinding) -> RequestHandler:
    async def handle(ctx: ServerRequestContext[Any, Any], params: Any) -> HandlerResult:
        if binding.protocol_versions is not None and ctx.protocol_version not in binding.protocol_versions:
            raise MCPError(code=types.METHOD_NOT_FOUND, message="Method not found", data=binding.method)
        return await binding.handler(ctx, params)

    return handle
