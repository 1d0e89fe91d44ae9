"""Tool calls: validate arguments, proxy to the session's agent, turn the answer into an MCP result.

Nothing here knows which backend serves the sandbox. Results carry the same data twice: as structured
content (the agent's JSON, schema'd) and as text an LLM reads well (the Go original's `Exit Code:` /
`Stdout:` / `Stderr:` blocks for runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
from pydantic import BaseModel, ValidationError

from codegen_mcp.api.errors import CodegenError, ErrorCode, SandboxUnavailable
from codegen_mcp.api.tools import (
    TOOLS,
    ArtifactContent,
    ArtifactListResult,
    ArtifactUploadResult,
    EchoResult,
    Encoding,
    FsListResult,
    FsReadResult,
    FsWriteResult,
    GitCommitResult,
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
    "test.run": TaskView,
    "lint.check": TaskView,
    "git.clone": TaskView,
    "git.commit": GitCommitResult,
    "artifact.list": ArtifactListResult,
    "artifact.upload": ArtifactUploadResult,
}
# How much of a finished run's output tail the text content repeats (the structured content has it all).
TEXT_TAIL_CHARS = 2000
MAX_TEXT_ITEMS = 50


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
                destructive_hint=False if spec.read_only else spec.destructive,
                idempotent_hint=spec.read_only,
                open_world_hint=spec.open_world,
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
    if spec.starts_task:
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
        # Arguments not in the path travel as query parameters (artifact.list's filters).
        params = {k: str(v) for k, v in body.items() if "{" + k + "}" not in spec.path}
        data = await client.request("GET", path, params=params or None)
    else:
        # A call with its own timeout (git.commit, artifact.upload) may take that long on the agent.
        extra_wait_s = float(body.get("timeout_s", 0))
        data = await client.request("POST", path, body=body, extra_wait_s=extra_wait_s)
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
    if view.kind is TaskKind.TEST_RUN:
        return _format_test(view)
    if view.kind is TaskKind.LINT_CHECK:
        return _format_lint(view)
    if view.kind is TaskKind.GIT_CLONE:
        return _format_clone(view)
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


def _sentence(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _tail_text(text: str, limit: int = TEXT_TAIL_CHARS) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]


def _format_test(view: TaskView) -> types.CallToolResult:
    test = view.test
    if test is None:
        return _structured(view, _sentence(view.error or f"test.run {view.state.value}"), is_error=True)
    counts = (
        f"{test.passed} passed, {test.failed} failed, {test.errors} errors, {test.skipped} skipped "
        f"({test.total} total) in {test.duration_s:.2f} s, pytest exit code {test.exit_code}"
    )
    lines = [f"Tests: {counts}"]
    if view.error:
        lines.insert(0, _sentence(view.error))
    elif test.exit_code == 5:
        lines.append("No tests were collected: check `paths`, `keyword` and `markers`.")
    if test.failures:
        lines.append("Failures:")
        for failure in test.failures:
            lines.append(f"- {failure.node_id} ({failure.outcome}): {failure.message}")
            lines += ["    " + ln for ln in failure.traceback.splitlines()[-12:]]
        if test.failures_truncated:
            lines.append(f"[{test.failed + test.errors - len(test.failures)} more failures not listed]")
    lines.append("Output (end):")
    lines.append(_tail_text(test.output_tail.rstrip()))
    lines.append(f"(task {view.task_id})")
    # Failing tests are a normal answer; only a pytest that could not run (no report) is an error.
    return _structured(view, "\n".join(lines), is_error=view.error is not None and view.state is TaskState.FAILED)


def _format_lint(view: TaskView) -> types.CallToolResult:
    lint = view.lint
    if lint is None or (view.error and view.state is TaskState.FAILED):
        text = _sentence(view.error or f"lint.check {view.state.value}")
        if lint is not None and lint.output_tail:
            text += "\n" + _tail_text(lint.output_tail)
        return _structured(view, text, is_error=True)
    tools = ", ".join(f"{name} {version}" for name, version in lint.tools.items()) or "ruff"
    total = len(lint.diagnostics) + (1 if lint.truncated else 0)
    summary = f"{lint.errors} errors, {lint.warnings} warnings, {lint.notes} notes"
    if lint.fixable:
        summary += f" ({lint.fixable} fixable with fix=true)"
    lines = [f"{tools}: {summary}" if total else f"{tools}: no problems found"]
    if view.error:
        lines.insert(0, _sentence(view.error))
    if lint.fixed or lint.changed_files:
        codes = ", ".join(f"{code} ×{n}" for code, n in Counter(f.code for f in lint.fixed).most_common())
        lines.append(
            f"Fixed {len(lint.fixed)} issue(s){f' ({codes})' if codes else ''}; changed files: "
            + (", ".join(lint.changed_files) or "none")
        )
    for d in lint.diagnostics[:MAX_TEXT_ITEMS]:
        mark = " [fixable]" if d.fixable else ""
        lines.append(f"{d.file}:{d.line}:{d.column}: {d.code}{mark} {d.message} ({d.tool}, {d.severity.value})")
    hidden = len(lint.diagnostics) - MAX_TEXT_ITEMS
    if hidden > 0 or lint.truncated:
        lines.append(
            "[more diagnostics in the structured result]"
            if hidden <= 0
            else f"[{hidden} more in the structured result]"
        )
    if lint.output_tail:
        lines.append(lint.output_tail)
    return _structured(view, "\n".join(lines))


def _format_clone(view: TaskView) -> types.CallToolResult:
    clone = view.clone
    if view.state is not TaskState.SUCCEEDED or clone is None:
        text = _sentence(view.error or f"git.clone {view.state.value}")
        if clone is not None and clone.log_tail:
            text += "\n\ngit output (end):\n" + _tail_text(clone.log_tail)
        return _structured(view, text, is_error=True)
    at = f" at {clone.commit[:12]}" if clone.commit else " (an empty repository)"
    details = [f"branch {clone.branch}" if clone.branch else "detached HEAD" if clone.commit else ""]
    if clone.depth:
        details.append(f"depth {clone.depth}")
    extra = ", ".join(d for d in details if d)
    text = (
        f"Cloned {clone.url} into {clone.dest}/{at}"
        + (f" ({extra})" if extra else "")
        + f" in {clone.duration_s:.1f} s."
    )
    return _structured(view, text)


def _text_commit(m: BaseModel) -> str:
    assert isinstance(m, GitCommitResult)
    where = f" on {m.branch}" if m.branch else " (detached HEAD)"
    head = f"Committed {m.commit[:12]}{where} in {m.repo}" + (" (new repository)" if m.initialized else "")
    lines = [f"{head}: {m.diffstat}"]
    marks = {"added": "A", "modified": "M", "deleted": "D", "renamed": "R", "copied": "C", "type_changed": "T"}
    for f in m.files[:MAX_TEXT_ITEMS]:
        stat = "binary" if f.insertions is None else f"+{f.insertions} -{f.deletions}"
        name = f"{f.old_path} -> {f.path}" if f.old_path else f.path
        lines.append(f"  {marks.get(f.status, '?')} {name} ({stat})")
    if len(m.files) > MAX_TEXT_ITEMS:
        lines.append(f"  [{len(m.files) - MAX_TEXT_ITEMS} more files]")
    return "\n".join(lines)


def _text_artifact_list(m: BaseModel) -> str:
    assert isinstance(m, ArtifactListResult)
    if not m.artifacts:
        return "No artifacts yet: files a run creates or changes become artifacts."
    lines = [f"{m.total} artifact(s), newest first:"]
    for a in m.artifacts:
        made = f", task {a.task_id}" if a.task_id else ""
        uploaded = f", uploaded to {a.uri}" if a.uri else ""
        created = f"{a.created_at:%Y-%m-%d %H:%M:%S}Z"
        lines.append(f"  {a.artifact_id}  {a.path}  ({a.size} bytes, {a.media_type}, {created}{made}{uploaded})")
    if m.truncated:
        lines.append(f"  [{m.total - len(m.artifacts)} older ones not listed; raise `limit`]")
    return "\n".join(lines)


def _text_upload(m: BaseModel) -> str:
    assert isinstance(m, ArtifactUploadResult)
    a = m.artifact
    note = (
        " (the file had changed since it was recorded; this is its current content)" if m.changed_since_recorded else ""
    )
    return f"Uploaded {a.artifact_id} ({a.path}, {m.size} bytes) to {m.uri}\nsha256 {m.sha256}{note}"


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
    "git.commit": _text_commit,
    "artifact.list": _text_artifact_list,
    "artifact.upload": _text_upload,
}
