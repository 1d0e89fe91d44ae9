"""Tool calls: validate arguments, proxy to the session's agent, turn the answer into an MCP result.

Nothing here knows which backend serves the sandbox. Results carry the same data twice: as structured
content (the agent's JSON, schema'd) and as text an LLM reads well (the Go original's `Exit Code:` /
`Stdout:` / `Stderr:` blocks for runs).

Both copies together stay within `RESULT_BUDGET_BYTES`, because the official clients refuse a bigger message:
a longer output is cut, and the result says where the rest is (a run's whole output is saved in the
workspace; a file is read on with `fs.read offset=…`). Requests are bounded too (`MAX_REQUEST_BYTES`), so
`fs.write` takes at most `MAX_WRITE_CONTENT_BYTES` per call.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
from pydantic import BaseModel, ValidationError

from codegen_mcp.api.errors import CodegenError, ErrorCode, SandboxUnavailable, validation_sentence
from codegen_mcp.api.tools import (
    DEFAULT_READ_LIMIT,
    OUTPUT_FOLDER,
    TOOLS,
    TOOLS_BY_NAME,
    ArtifactContent,
    ArtifactListResult,
    ArtifactUploadResult,
    EchoResult,
    Encoding,
    FsListResult,
    FsReadResult,
    FsWriteResult,
    GitCommitResult,
    RunResult,
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

MiB = 1024 * 1024
# The official Python client refuses one server-sent event over 1 MiB (`max_sse_event_size`). A result's
# text and structured content, as JSON, stay within this together, leaving room for the JSON-RPC envelope.
RESULT_BUDGET_BYTES = 768 * 1024
_COPY_BUDGET = RESULT_BUDGET_BYTES // 2  # each of the two copies
_TEXT_SLACK = 2048  # the text's own lines around a copied output
# The HTTP transports refuse a request body over this (the MCP SDK's default cap, set explicitly).
MAX_REQUEST_BYTES = 4 * MiB
# fs.write content (as sent: UTF-8 text, or base64) per call, leaving a request room for its JSON around it.
MAX_WRITE_CONTENT_BYTES = 3 * MiB
WRITE_LIMIT = (
    f"fs.write takes at most 3 MiB ({MAX_WRITE_CONTENT_BYTES} bytes) of content per call; "
    "write a bigger file in parts with append=true"
)


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
) -> types.CallToolResult:
    """Run one validated call against an agent and format its MCP result (within the result budget)."""
    body = args.model_dump(mode="json", exclude_none=True)
    if spec.starts_task:
        view = await _run_task(spec, body, client, progress=progress, interval_s=progress_interval_s)
        view, notes = await fit_task_output(view, client)
        return fit_result(format_task(view, notes))
    if spec.name == "task.get_result":
        view = await _wait_task(
            client,
            body["task_id"],
            float(body.get("wait_s", 0)),
            progress=progress,
            interval_s=progress_interval_s,
        )
        view, notes = await fit_task_output(view, client)
        return fit_result(format_task(view, notes))
    if spec.name == "fs.write":
        check_write_size(body["content"])
    if spec.name == "fs.read":
        # No more than a result can carry: the result says where to read on.
        body["limit"] = min(int(body.get("limit", DEFAULT_READ_LIMIT)), _COPY_BUDGET)
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
    if isinstance(model, TaskView):  # task.get_status of a finished run carries its output too
        model, notes = await fit_task_output(model, client)
        return fit_result(_structured(model, "\n".join([_text_status(model), *notes.values()])))
    model, note = fit_content(model)
    return fit_result(_structured(model, _TEXT[spec.name](model) + note))


def check_write_size(content: str) -> None:
    size = len(content.encode("utf-8", "surrogatepass"))
    if size > MAX_WRITE_CONTENT_BYTES:
        raise CodegenError(f"the content is {size} bytes, but {WRITE_LIMIT}", code=ErrorCode.TOO_LARGE)


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


def format_task(view: TaskView, notes: dict[str, str] | None = None) -> types.CallToolResult:
    """The result of a task; `notes` (by stream) say where output cut to fit the result is."""
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
    return _format_run(view, notes or {})


def _format_run(view: TaskView, notes: dict[str, str]) -> types.CallToolResult:
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
    for stream in ("stdout", "stderr"):
        output: str = getattr(run, stream)
        note = notes.get(stream) or (f"[{stream} truncated]" if getattr(run, f"{stream}_truncated") else "")
        lines.append(f"{stream.capitalize()}:")
        lines.append(output + ("\n" + note if note else ""))
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
        end = m.offset + m.bytes_read
        text += f"\n[truncated: bytes {m.offset}–{end} of {m.size}; read on with fs.read path={m.path} offset={end}]"
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
    if not m.truncated:
        return f"{head}\n{body}"
    shown = content_bytes(m.content, m.encoding)
    return f"{head}\n{body}\n[truncated at {shown} bytes; read on with fs.read path={a.path} offset={shown}]"


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


# --- the result budget ------------------------------------------------------------------------------


def json_size(value: Any) -> int:
    """Bytes of `value` as JSON, as the SDK sends it (UTF-8, control characters escaped)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def cut_to_fit(text: str, budget: int) -> str:
    """The longest start of `text` that takes at most `budget` bytes inside a JSON string."""
    if json_size(text) - 2 <= budget:
        return text
    low, high = 0, min(len(text), max(0, budget))
    while low < high:  # about 20 rounds for a megabyte
        middle = (low + high + 1) // 2
        if json_size(text[:middle]) - 2 <= budget:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def content_bytes(content: str, encoding: Encoding) -> int:
    """How many bytes of the file `content` stands for."""
    if encoding is Encoding.BASE64:
        with contextlib.suppress(binascii.Error, ValueError):
            return len(base64.b64decode(content))
        return len(content) // 4 * 3
    return len(content.encode("utf-8", "surrogateescape"))


def _cut_content(content: str, encoding: Encoding, budget: int) -> str:
    kept = cut_to_fit(content, budget)
    if encoding is Encoding.BASE64:
        kept = kept[: len(kept) // 4 * 4]  # whole base64 quanta, so the bytes kept are exact
    return kept


def fit_content(model: BaseModel) -> tuple[BaseModel, str]:
    """Cut the one big field of echo, fs.read and artifact.get to the budget; a note for the text, if cut."""
    if isinstance(model, EchoResult):
        room = _COPY_BUDGET - json_size(model.model_copy(update={"message": ""}).model_dump(mode="json"))
        kept = cut_to_fit(model.message, room - _TEXT_SLACK)
        if kept == model.message:
            return model, ""
        whole = len(model.message.encode("utf-8", "surrogateescape"))
        note = f"\n[echo cut at {len(kept.encode('utf-8', 'surrogateescape'))} of {whole} bytes to fit the result]"
        return model.model_copy(update={"message": kept}), note
    if isinstance(model, FsReadResult | ArtifactContent):
        room = _COPY_BUDGET - json_size(model.model_copy(update={"content": ""}).model_dump(mode="json"))
        kept = _cut_content(model.content, model.encoding, room - _TEXT_SLACK)
        if kept == model.content:
            return model, ""
        update: dict[str, Any] = {"content": kept, "truncated": True}
        if isinstance(model, FsReadResult):
            update["bytes_read"] = content_bytes(kept, model.encoding)
        return model.model_copy(update=update), ""
    return model, ""


async def fit_task_output(view: TaskView, client: AgentClient) -> tuple[TaskView, dict[str, str]]:
    """Cut a run's stdout/stderr to the budget; the whole of a cut stream is saved in the workspace.

    Returns the view to send and, for each cut stream, a note saying where the rest is.
    """
    run = view.run
    if run is None:
        return view, {}
    room = _COPY_BUDGET - _TEXT_SLACK - json_size(_with_output(view, run, "", "").model_dump(mode="json"))
    sizes = {"stdout": json_size(run.stdout) - 2, "stderr": json_size(run.stderr) - 2}
    if sum(sizes.values()) <= room:
        return view, {}
    # The smaller stream keeps all it can of its half; the bigger one gets the rest.
    small, big = sorted(sizes, key=lambda name: sizes[name])
    allowed = {small: min(sizes[small], room // 2)}
    allowed[big] = room - allowed[small]
    kept: dict[str, str] = {}
    notes: dict[str, str] = {}
    for stream in ("stdout", "stderr"):
        output: str = getattr(run, stream)
        kept[stream] = cut_to_fit(output, allowed[stream])
        if kept[stream] != output:
            notes[stream] = await _save_output(client, view.task_id, stream, output, kept[stream], run)
    return _with_output(view, run, kept["stdout"], kept["stderr"]), notes


def _with_output(view: TaskView, run: RunResult, stdout: str, stderr: str) -> TaskView:
    update = {
        "stdout": stdout,
        "stderr": stderr,
        "stdout_truncated": run.stdout_truncated or stdout != run.stdout,
        "stderr_truncated": run.stderr_truncated or stderr != run.stderr,
    }
    return view.model_copy(update={"run": run.model_copy(update=update)})


async def _save_output(client: AgentClient, task_id: str, stream: str, output: str, kept: str, run: RunResult) -> str:
    shown = len(kept.encode("utf-8", "surrogateescape"))
    whole = len(output.encode("utf-8", "surrogateescape"))
    head = f"[{stream} cut at {shown} of {whole} bytes to fit the result"
    saved = "all of it is saved"
    if getattr(run, f"{stream}_truncated"):
        head += f" (the sandbox itself captured only that much of the run's {stream})"
        saved = "that much is saved"
    path = f"{OUTPUT_FOLDER}/{task_id}.{stream}"
    spec = TOOLS_BY_NAME["fs.write"]
    try:
        await client.request("POST", spec.path, body={"path": path, "content": output, "encoding": "utf-8"})
    except CodegenError as exc:
        return f"{head}; it could not be saved in {path}: {exc.message}]"
    return f"{head}; {saved}: read the rest with fs.read path={path} offset={shown}]"


def fit_result(result: types.CallToolResult) -> types.CallToolResult:
    """Any result, cut to the budget (the last guard: the tools above cut their big fields with care)."""
    structured = result.structured_content
    texts = [c.text for c in result.content if isinstance(c, types.TextContent)]
    if json_size(structured) + sum(json_size(t) for t in texts) <= RESULT_BUDGET_BYTES:
        return result
    note = f"\n[cut to fit the {RESULT_BUDGET_BYTES // 1024} KiB result; narrow the request to see the rest]"
    text = cut_to_fit("\n".join(texts), _COPY_BUDGET - len(note)) + note
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=shrink_json(structured, _COPY_BUDGET) if structured is not None else None,
        is_error=result.is_error,
    )


def shrink_json(value: dict[str, Any], budget: int) -> dict[str, Any]:
    """Cut the biggest strings and lists of a JSON object until it fits `budget` (its shape stays valid)."""
    value = json.loads(json.dumps(value))  # a copy to cut
    while (excess := json_size(value) - budget) > 0:
        parent, key, size = _biggest(value)
        if parent is None:
            break
        target = parent[key]
        if isinstance(target, str):
            parent[key] = cut_to_fit(target, max(0, size - excess - 64))
        else:
            drop = max(1, -(-excess * len(target) // size))
            parent[key] = target[: max(0, len(target) - drop)]
            if isinstance(parent, dict) and parent.get("truncated") is False:
                parent["truncated"] = True
    return value


def _biggest(value: Any) -> tuple[Any, Any, int]:
    """The container, key and JSON size of the biggest string or list of many items below `value`."""
    best: tuple[Any, Any, int] = (None, None, 0)
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        if isinstance(child, str) and child:
            candidate = (value, key, json_size(child))
        elif isinstance(child, dict | list) and child:
            inner = _biggest(child)
            size = json_size(child)
            # A list is cut by dropping its last items, unless one item inside is most of it.
            candidate = (value, key, size) if isinstance(child, list) and inner[2] * 2 < size else inner
        else:
            continue
        if candidate[0] is not None and candidate[2] > best[2]:
            best = candidate
    return best
