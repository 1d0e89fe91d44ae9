"""Tool calls: validate arguments, proxy to the session's agent, turn the answer into an MCP result.

Nothing here knows which backend serves the sandbox. Results carry the same data twice: as structured
content (the agent's JSON, schema'd) and as text an LLM reads well (the Go original's `Exit Code:` /
`Stdout:` / `Stderr:` blocks for runs).

Both copies together stay within the result budget (coordinator/budget.py). Requests are bounded too
(`MAX_REQUEST_BYTES`), so `fs.write` takes at most `MAX_WRITE_CONTENT_BYTES` per call.

While a call waits for its task, it reports MCP progress (a heartbeat every `progress_interval_s`) and hands
the task's live output to `output` as it is printed (`live_output`), with progress whose message is the
latest lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
from pydantic import BaseModel, ValidationError

from codegen_mcp.api import routes
from codegen_mcp.api.errors import CodegenError, ErrorCode, SandboxUnavailable, validation_sentence
from codegen_mcp.api.results import ToolResult, sentence
from codegen_mcp.api.task_results import OutputStream
from codegen_mcp.api.tools import DEFAULT_READ_LIMIT, MAX_WRITE_BYTES, TOOLS, TaskView, ToolSpec
from codegen_mcp.coordinator.agent_client import AgentClient, AgentUnreachable
from codegen_mcp.coordinator.budget import COPY_BUDGET, fit_content, fit_result, fit_task_output
from codegen_mcp.coordinator.live_output import Follower, OutputSink

ProgressFn = Callable[[float, float | None, str], Awaitable[None]]

# A progress message carries the last lines of a batch of output, no more.
PROGRESS_LINES = 5
PROGRESS_CHARS = 1000

MiB = 1024 * 1024
# The HTTP transports refuse a request body over this (the MCP SDK's default cap, set explicitly).
MAX_REQUEST_BYTES = 4 * MiB
MAX_WRITE_CONTENT_BYTES = MAX_WRITE_BYTES
WRITE_LIMIT = (
    f"fs.write takes at most 3 MiB ({MAX_WRITE_CONTENT_BYTES} bytes) of content per call; "
    "write a bigger file in parts with append=true"
)


def list_tools() -> list[types.Tool]:
    return list(_tool_list())


@functools.cache
def list_tools_result() -> dict[str, Any]:
    """The `tools/list` result in its wire form, dumped once: callers must not change it.

    Its ~120 KB of schemas never change. Handed to the SDK as a dict, it is copied, not dumped again from the
    models for every listing (about 2 ms of the 4 ms a listing costs the server).
    """
    return types.ListToolsResult(tools=list_tools()).model_dump(by_alias=True, mode="json", exclude_none=True)


@functools.cache
def _tool_list() -> tuple[types.Tool, ...]:
    """Built once: the schemas never change, and a client lists them before its first call of every session."""
    return tuple(
        types.Tool(
            name=spec.name,
            title=spec.title,
            description=spec.description,
            input_schema=spec.input_schema(),
            output_schema=spec.result.model_json_schema(mode="serialization"),
            annotations=types.ToolAnnotations(
                title=spec.title,
                read_only_hint=spec.read_only,
                destructive_hint=False if spec.read_only else spec.destructive,
                idempotent_hint=spec.read_only,
                open_world_hint=spec.open_world,
            ),
        )
        for spec in TOOLS
    )


def error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=sentence(message))], is_error=True)


def parse_arguments(spec: ToolSpec, arguments: dict[str, Any] | None) -> BaseModel:
    try:
        return spec.args.model_validate(arguments or {})
    except ValidationError as exc:
        raise CodegenError(
            f"invalid arguments for {spec.name}: {validation_sentence(exc, model=spec.args)}",
            code=ErrorCode.INVALID_ARGUMENT,
        ) from None


async def call_tool(
    spec: ToolSpec,
    args: BaseModel,
    client: AgentClient,
    *,
    progress: ProgressFn,
    progress_interval_s: float,
    output: OutputSink | None = None,
) -> types.CallToolResult:
    """Run one validated call against an agent and format its MCP result (within the result budget)."""
    body = args.model_dump(mode="json", exclude_none=True)
    progress = increasing(progress)
    live = None if output is None else _with_progress(output, progress)
    if spec.starts_task:
        view = await _run_task(spec, body, client, progress=progress, interval_s=progress_interval_s, output=live)
        view, notes = await fit_task_output(view, client)
        return fit_result(format_result(view, notes))
    if spec.name == "task.get_result":
        view = await _wait_task(
            client,
            body["task_id"],
            float(body.get("wait_s", 0)),
            progress=progress,
            interval_s=progress_interval_s,
            output=live,
        )
        view, notes = await fit_task_output(view, client)
        return fit_result(format_result(view, notes))
    if spec.name == "fs.write":
        check_write_size(body["content"])
    if spec.name == "fs.read":
        # No more than a result can carry: the result says where to read on.
        body["limit"] = min(int(body.get("limit", DEFAULT_READ_LIMIT)), COPY_BUDGET)
    path = spec.route.path.format(**body)
    if spec.route.method == "GET":
        # Arguments not in the path travel as query parameters (artifact.list's filters).
        params = {k: str(v) for k, v in body.items() if "{" + k + "}" not in spec.route.path}
        data = await client.request("GET", path, params=params or None)
    else:
        # A call with its own timeout (git.commit, artifact.upload) may take that long on the agent.
        extra_wait_s = float(body.get("timeout_s", 0))
        data = await client.request("POST", path, body=body, extra_wait_s=extra_wait_s)
    model = spec.result.model_validate(data)
    if isinstance(model, TaskView):  # task.get_status of a finished run carries its output too
        model, notes = await fit_task_output(model, client)
    else:
        model, notes = fit_content(model)
    return fit_result(format_result(model, notes))


def check_write_size(content: str) -> None:
    size = len(content.encode("utf-8", "surrogatepass"))
    if size > MAX_WRITE_CONTENT_BYTES:
        raise CodegenError(f"the content is {size} bytes, but {WRITE_LIMIT}", code=ErrorCode.TOO_LARGE)


def increasing(progress: ProgressFn) -> ProgressFn:
    """`progress` made strictly increasing, as MCP asks, across heartbeats and output (two clocks)."""
    last = -math.inf

    async def report(done: float, total: float | None, message: str) -> None:
        nonlocal last
        last = max(done, math.nextafter(last, math.inf))
        await progress(last, total, message)

    return report


def latest_lines(text: str) -> str:
    """The end of a batch of output, short enough for a progress message."""
    return "\n".join(text.rstrip("\n").splitlines()[-PROGRESS_LINES:])[-PROGRESS_CHARS:]


def _with_progress(output: OutputSink, progress: ProgressFn) -> OutputSink:
    """Each batch of output also as progress (for clients that show progress but not log messages)."""
    started = time.monotonic()

    async def forward(stream: OutputStream, text: str) -> None:
        await progress(time.monotonic() - started, None, latest_lines(text))
        await output(stream, text)

    return forward


async def _run_task(
    spec: ToolSpec,
    body: dict[str, Any],
    client: AgentClient,
    *,
    progress: ProgressFn,
    interval_s: float,
    output: OutputSink | None,
) -> TaskView:
    # Start without waiting, so the task id is known before anything can be cancelled; then wait in GETs.
    data = await client.request(spec.route.method, spec.route.path, body={**body, "wait_s": 0})
    view = TaskView.model_validate(data)
    if view.state.finished:
        return view
    try:
        return await _wait_task(
            client,
            view.task_id,
            float(body.get("wait_s", 0)),
            progress=progress,
            interval_s=interval_s,
            output=output,
            running=True,
        )
    except AgentUnreachable as exc:
        # The task started, so this call must not be retried elsewhere: it is lost with its sandbox.
        raise SandboxUnavailable(f"the sandbox went away while {view.task_id} was running") from exc
    except asyncio.CancelledError:
        # The MCP request was cancelled: cancel the sandbox task too, even though we are being cancelled.
        await asyncio.shield(_cancel_quietly(client, view.task_id))
        raise


async def _cancel_quietly(client: AgentClient, task_id: str) -> None:
    with contextlib.suppress(CodegenError):
        await client.request(routes.TASK_CANCEL.method, routes.TASK_CANCEL.path.format(task_id=task_id))


async def _wait_task(
    client: AgentClient,
    task_id: str,
    wait_s: float,
    *,
    progress: ProgressFn,
    interval_s: float,
    output: OutputSink | None,
    running: bool = False,
) -> TaskView:
    """Wait up to `wait_s` for the task, with a progress heartbeat; its live output goes to `output` meanwhile:
    all of it when the caller just started it (`running`), else what it prints after a first wait found it
    still running (so a client that polls `task.get_result` is not sent the same output again each time)."""
    deadline = time.monotonic() + wait_s
    view: TaskView | None = None
    follower = Follower(client, task_id, output) if output is not None and running else None
    try:
        while True:
            if view is not None:
                if follower is None and output is not None:
                    follower = Follower(client, task_id, output, offset=view.progress.output_chars)
                await progress(view.progress.elapsed_s, None, view.progress_message())
            remaining = deadline - time.monotonic()
            step = max(0.0, min(interval_s, remaining))
            data = await client.request(
                routes.TASK.method,
                routes.TASK.path.format(task_id=task_id),
                params={"wait_s": f"{step:.3f}"},
                extra_wait_s=step,
            )
            view = TaskView.model_validate(data)
            if view.state.finished or time.monotonic() >= deadline:
                return view
    finally:
        if follower is not None:
            # The output a finished task printed last reaches the client before its result does.
            await follower.close(finished=view is not None and view.state.finished)


# --- formatting -------------------------------------------------------------------------------------


def format_result(model: ToolResult, notes: dict[str, str] | None = None) -> types.CallToolResult:
    """A tool's answer as an MCP result: its text, and the same data as structured content."""
    reply = model.reply(notes or {})
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=reply.text)],
        structured_content=model.model_dump(mode="json"),
        is_error=reply.is_error,
    )
