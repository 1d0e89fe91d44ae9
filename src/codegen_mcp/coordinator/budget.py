"""The result budget: a tool's MCP result, text and structured content together, within what clients accept.

The official clients refuse a bigger message: a longer output is cut, and the result says where the rest is
(a run's whole output is saved in the workspace; a file is read on with `fs.read offset=…`).
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types

from codegen_mcp.api import routes
from codegen_mcp.api.arguments import Encoding
from codegen_mcp.api.errors import CodegenError
from codegen_mcp.api.results import ArtifactContent, EchoResult, FsReadResult, ToolResult, content_bytes
from codegen_mcp.api.task_results import RunResult, TaskView
from codegen_mcp.api.tools import OUTPUT_FOLDER
from codegen_mcp.coordinator.agent_client import AgentClient

# The official Python client refuses one server-sent event over 1 MiB (`max_sse_event_size`). A result's
# text and structured content, as JSON, stay within this together, leaving room for the JSON-RPC envelope.
RESULT_BUDGET_BYTES = 768 * 1024
COPY_BUDGET = RESULT_BUDGET_BYTES // 2  # each of the two copies
_TEXT_SLACK = 2048  # the text's own lines around a copied output


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


def _cut_content(content: str, encoding: Encoding, budget: int) -> str:
    kept = cut_to_fit(content, budget)
    if encoding is Encoding.BASE64:
        kept = kept[: len(kept) // 4 * 4]  # whole base64 quanta, so the bytes kept are exact
    return kept


def fit_content(model: ToolResult) -> tuple[ToolResult, dict[str, str]]:
    """Cut the one big field of echo, fs.read and artifact.get to the budget; notes for the text, if cut."""
    if isinstance(model, EchoResult):
        room = COPY_BUDGET - json_size(model.model_copy(update={"message": ""}).model_dump(mode="json"))
        kept = cut_to_fit(model.message, room - _TEXT_SLACK)
        if kept == model.message:
            return model, {}
        whole = len(model.message.encode("utf-8", "surrogateescape"))
        note = f"[echo cut at {len(kept.encode('utf-8', 'surrogateescape'))} of {whole} bytes to fit the result]"
        return model.model_copy(update={"message": kept}), {"message": note}
    if isinstance(model, FsReadResult | ArtifactContent):
        room = COPY_BUDGET - json_size(model.model_copy(update={"content": ""}).model_dump(mode="json"))
        kept = _cut_content(model.content, model.encoding, room - _TEXT_SLACK)
        if kept == model.content:
            return model, {}
        update: dict[str, Any] = {"content": kept, "truncated": True}
        if isinstance(model, FsReadResult):
            update["bytes_read"] = content_bytes(kept, model.encoding)
        return model.model_copy(update=update), {}
    return model, {}


async def fit_task_output(view: TaskView, client: AgentClient) -> tuple[TaskView, dict[str, str]]:
    """Cut a run's stdout/stderr to the budget; the whole of a cut stream is saved in the workspace.

    Returns the view to send and, for each cut stream, a note saying where the rest is.
    """
    run = view.run
    if run is None:
        return view, {}
    room = COPY_BUDGET - _TEXT_SLACK - json_size(_with_output(view, run, "", "").model_dump(mode="json"))
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
    try:
        await client.request(
            routes.FS_WRITE.method, routes.FS_WRITE.path, body={"path": path, "content": output, "encoding": "utf-8"}
        )
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
    text = cut_to_fit("\n".join(texts), COPY_BUDGET - len(note)) + note
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=shrink_json(structured, COPY_BUDGET) if structured is not None else None,
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
