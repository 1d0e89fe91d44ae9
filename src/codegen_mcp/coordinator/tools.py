"""Tool calls: validate arguments, proxy to the session's agent, turn the answer into an MCP result.

Nothing here knows which backend serves the sandbox. Results carry the same data twice: as structured
content (the agent's JSON, schema'd) and as text an LLM reads well (the Go original's `Exit Code:` /
`Stdout:` / `Stderr:` blocks for runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
from pydantic import BaseModel, ValidationError

from codegen_mcp.api.errors import CodegenError, ErrorCode, SandboxUnavailable
from codegen_mcp.api.tools import (
    TOOLS,
    ArtifactContent,
    EchoResult,
    Encoding,
    FsListResult,
    FsReadResult,
    FsWriteResult,
    TaskKind,
    TaskState,
    TaskView,
    ToolSpec,
)
from codegen_mcp.coordinator.agent_client import AgentClient, AgentUnreachable

ProgressFn = Callable[[float, float | None, str], Awaitable[None]]

_RESULT_MODELS: dict[str, type[BaseModel]] = {
    "echo": EchoResult,
    "fs.read": FsReadResult,
    "fs.write": FsWriteResult,
    "fs.list": FsListResult,
    "run.python": TaskView,
    "pkg.install": TaskView,
    "artifact.get": ArtifactContent,
    "task.get_status": TaskView,
    "task.get_result": TaskView,
}


def list_tools() -> list[types.Tool]:
    return [
        types.Tool(
            name=spec.name,
            title=spec.title,
            description=spec.description,
            input_schema=spec.input_schema(),
            output_schema=_RESULT_MODELS[spec.name].model_json_schema(mode="serialization"),
            annotations=types.ToolAnnotations(
                title=spec.title,
                read_only_hint=spec.read_only,
                destructive_hint=False if spec.read_only else spec.name == "fs.write",
                idempotent_hint=spec.read_only,
                open_world_hint=spec.name == "pkg.install",
            ),
        )
        for spec in TOOLS
    ]


def validation_message(exc: ValidationError) -> str:
    """One sentence from pydantic's first error: which argument, and what is allowed."""
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"])
    if err["type"] == "missing":
        return f"the argument `{loc}` is required"
    if err["type"] == "extra_forbidden":
        return f"`{loc}` is not an argument of this tool"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return f"`{loc}`: {msg[0].lower() + msg[1:]}" if loc else msg[0].lower() + msg[1:]


def error_result(message: str) -> types.CallToolResult:
    text = message[0].upper() + message[1:]
    if not text.endswith("."):
        text += "."
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def parse_arguments(spec: ToolSpec, arguments: dict[str, Any] | None) -> BaseModel:
    try:
        return spec.args.model_validate(arguments or {})
    except ValidationError as exc:
        raise CodegenError(
            f"invalid arguments for {spec.name}: {validation_message(exc)}", code=ErrorCode.INVALID_ARGUMENT
        ) from None


async def call_tool(
    spec: ToolSpec,
    args: BaseModel,
    client: AgentClient,
    *,
    progress: ProgressFn,
    progress_interval_s: float,
) -> types.CallToolResult:
    """Run one validated call against an agent and format its MCP result."""
    body = args.model_dump(mode="json", exclude_none=True)
    if spec.name in ("run.python", "pkg.install"):
        view = await _run_task(spec, body, client, progress=progress, interval_s=progress_interval_s)
        return format_task(view)
    if spec.name == "task.get_result":
        view = await _wait_task(
            client,
            body["task_id"],
            float(body.get("wait_s", 0)),
            progress=progress,
            interval_s=progress_interval_s,
        )
        return format_task(view)
    path = spec.path.format(**body)
    if spec.method == "GET":
        data = await client.request("GET", path)
    else:
        data = await client.request("POST", path, body=body)
    model = _RESULT_MODELS[spec.name].model_validate(data)
    return _structured(model, _TEXT[spec.name](model))


async def _run_task(
    spec: ToolSpec, body: dict[str, Any], client: AgentClient, *, progress: ProgressFn, interval_s: float
) -> TaskView:
    # Start without waiting, so the task id is known before anything can be cancelled; then wait in GETs.
    data = await client.request("POST", spec.path, body={**body, "wait_s": 0})
    view = TaskView.model_validate(data)
    if view.state.finished:
        return view
    try:
        return await _wait_task(
            client, view.task_id, float(body.get("wait_s", 0)), progress=progress, interval_s=interval_s
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
        await client.request("POST", f"/v1/tasks/{task_id}/cancel")


async def _wait_task(
    client: AgentClient,
    task_id: str,
    wait_s: float,
    *,
    progress: ProgressFn,
    interval_s: float,
) -> TaskView:
    deadline = time.monotonic() + wait_s
    view: TaskView | None = None
    while True:
        if view is not None:
            await progress(view.progress.elapsed_s, None, _progress_message(view))
        remaining = deadline - time.monotonic()
        step = max(0.0, min(interval_s, remaining))
        data = await client.request("GET", f"/v1/tasks/{task_id}", params={"wait_s": f"{step:.3f}"}, extra_wait_s=step)
        view = TaskView.model_validate(data)
        if view.state.finished or time.monotonic() >= deadline:
            return view


def _progress_message(view: TaskView) -> str:
    p = view.progress
    output = p.stdout_bytes + p.stderr_bytes
    return p.message or f"{view.kind.value} {view.state.value}: {p.elapsed_s:.1f} s, {output} bytes of output"


# --- formatting -------------------------------------------------------------------------------------


def _structured(model: BaseModel, text: str, *, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=model.model_dump(mode="json"),
        is_error=is_error,
    )


def format_task(view: TaskView) -> types.CallToolResult:
    if not view.state.finished:
        tool = view.kind.value
        text = (
            f"Task {view.task_id} ({tool}) is still {view.state.value} after {view.progress.elapsed_s:.1f} s. "
            f"Call task.get_result with task_id={view.task_id!r} to wait for its result, "
            "or task.get_status to check on it."
        )
        return _structured(view, text)
    if view.kind is TaskKind.PKG_INSTALL:
        return _format_install(view)
    return _format_run(view)


def _format_run(view: TaskView) -> types.CallToolResult:
    run = view.run
    if run is None:
        return _structured(
            view,
            f"Task {view.task_id} {view.state.value}: {view.error or 'no result'}",
            is_error=view.state is TaskState.FAILED,
        )
    lines = [f"Exit Code: {run.exit_code}"]
    if view.state is TaskState.TIMED_OUT:
        lines.append(f"Timed out: the run was killed after {run.duration_s:.1f} s.")
    elif view.state is TaskState.CANCELLED:
        lines.append("Cancelled: the run was stopped on request.")
    lines.append("Stdout:")
    lines.append(run.stdout + ("\n[stdout truncated]" if run.stdout_truncated else ""))
    lines.append("Stderr:")
    lines.append(run.stderr + ("\n[stderr truncated]" if run.stderr_truncated else ""))
    if run.artifacts:
        lines.append("Artifacts:")
        lines += [f"  {a.artifact_id}  {a.path}  ({a.size} bytes, {a.media_type})" for a in run.artifacts]
    lines.append(f"Duration: {run.duration_s:.3f} s (task {view.task_id})")
    return _structured(view, "\n".join(lines))


def _format_install(view: TaskView) -> types.CallToolResult:
    result = view.install
    if view.state is TaskState.SUCCEEDED and result is not None:
        pkgs = ", ".join(f"{p.name}=={p.version}" for p in result.installed) or "nothing new"
        return _structured(view, f"Installed: {pkgs} ({result.duration_s:.1f} s)")
    reason = view.error or f"pip {view.state.value}"
    tail = f"\n\npip log (end):\n{result.log_tail}" if result and result.log_tail else ""
    return _structured(view, f"{reason[0].upper()}{reason[1:]}{tail}", is_error=True)


def _text_read(m: BaseModel) -> str:
    assert isinstance(m, FsReadResult)
    text = m.content if m.encoding is Encoding.UTF8 else f"[binary, base64-encoded]\n{m.content}"
    if m.truncated:
        text += (
            f"\n[truncated: returned bytes {m.offset}–{m.offset + m.bytes_read} of {m.size}; "
            "read on with a larger offset]"
        )
    return text


def _text_list(m: BaseModel) -> str:
    assert isinstance(m, FsListResult)
    if not m.entries:
        return f"{m.path}: empty"
    marks = {"directory": "/", "symlink": "@"}
    lines = [f"{e.name}{marks.get(e.type.value, '')}\t{e.size}" for e in m.entries]
    if m.truncated:
        lines.append("[listing truncated]")
    return "\n".join(lines)


def _text_write(m: BaseModel) -> str:
    assert isinstance(m, FsWriteResult)
    return f"Wrote {m.bytes_written} bytes to {m.path} (now {m.size} bytes)."


def _text_echo(m: BaseModel) -> str:
    assert isinstance(m, EchoResult)
    return m.message


def _text_artifact(m: BaseModel) -> str:
    assert isinstance(m, ArtifactContent)
    a = m.artifact
    head = f"{a.artifact_id}: {a.path} ({a.size} bytes, {a.media_type}, sha256 {a.sha256})"
    body = m.content if m.encoding is Encoding.UTF8 else f"[binary, base64-encoded]\n{m.content}"
    return f"{head}\n{body}" + ("\n[truncated]" if m.truncated else "")


def _text_status(m: BaseModel) -> str:
    assert isinstance(m, TaskView)
    return f"Task {m.task_id} ({m.kind.value}): {m.state.value}, {_progress_message(m)}"


_TEXT: dict[str, Callable[[BaseModel], str]] = {
    "echo": _text_echo,
    "fs.read": _text_read,
    "fs.write": _text_write,
    "fs.list": _text_list,
    "artifact.get": _text_artifact,
    "task.get_status": _text_status,
}
