"""Pure parts of the coordinator: argument validation messages, result formatting, audit summaries."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import mcp_types as types
import pytest

from codegen_mcp.api.errors import CodegenError, ErrorCode
from codegen_mcp.api.tools import TOOLS_BY_NAME, RunResult, TaskKind, TaskState, TaskView
from codegen_mcp.coordinator.audit import summarize_arguments
from codegen_mcp.coordinator.server import Coordinator, create_server
from codegen_mcp.coordinator.settings import CoordinatorSettings
from codegen_mcp.coordinator.tools import error_result, format_result, list_tools, list_tools_result, parse_arguments

NOW = datetime(2026, 11, 25, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("echo", {}, "`message` is required"),
        ("echo", {"message": "x", "bogus": 1}, "`bogus` is unknown (accepted: `message`)"),
        ("run.python", {}, "give exactly one of `code` or `file`"),
        ("run.python", {"code": "1", "file": "a.py"}, "give exactly one of `code` or `file`"),
        ("run.python", {"code": "1", "timeout_s": 0}, "`timeout_s` must be greater than 0"),
        ("fs.read", {"path": ""}, "`path` must have at least 1 character"),
        ("fs.read", {"path": "a", "limit": 0}, "`limit` must be greater than or equal to 1"),
        (
            "fs.write",
            {"path": "a", "content": "x", "encoding": "rot13"},
            "`encoding` must be 'utf-8' or 'base64'",
        ),
        (
            "task.get_result",
            {"task_id": "task_0123456789abcdef", "wait_s": 1e9},
            "`wait_s` must be less than or equal to 300",
        ),
    ],
)
def test_bad_arguments_become_one_sentence(tool: str, arguments: dict[str, object], expected: str) -> None:
    with pytest.raises(CodegenError) as info:
        parse_arguments(TOOLS_BY_NAME[tool], arguments)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert info.value.message == f"invalid arguments for {tool}: {expected}"
    assert "\n" not in info.value.message


def test_fs_write_accepts_contents_like_the_go_original() -> None:
    args = parse_arguments(TOOLS_BY_NAME["fs.write"], {"path": "a.txt", "contents": "hi"})
    assert args.model_dump()["content"] == "hi"


def test_every_tool_is_listed_with_input_and_output_schemas() -> None:
    listed = {t.name: t for t in list_tools()}
    assert set(listed) == set(TOOLS_BY_NAME)
    for tool in listed.values():
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None and tool.output_schema["type"] == "object"
    assert listed["fs.read"].annotations.read_only_hint is True
    assert listed["fs.write"].annotations.read_only_hint is False


async def test_tools_list_hands_the_sdk_one_wire_form_dumped_once(tmp_path: Path) -> None:
    """~120 KB of schemas: the SDK gets the same dict at every listing, not models to dump again."""
    entry = create_server(Coordinator(CoordinatorSettings(state_dir=tmp_path))).get_request_handler("tools/list")
    assert entry is not None
    listed = await entry.handler(None, types.PaginatedRequestParams())
    assert listed is await entry.handler(None, types.PaginatedRequestParams()) is list_tools_result()
    assert listed == types.ListToolsResult(tools=list_tools()).model_dump(by_alias=True, mode="json", exclude_none=True)


def test_error_result_is_a_capitalised_sentence() -> None:
    result = error_result("the path escapes the workspace")
    assert result.is_error
    assert result.content[0].text == "The path escapes the workspace."


def _view(state: TaskState, run: RunResult | None = None) -> TaskView:
    return TaskView(task_id="task_1", kind=TaskKind.RUN_PYTHON, state=state, created_at=NOW, run=run)


def test_a_finished_run_keeps_the_go_originals_text_blocks() -> None:
    run = RunResult(exit_code=1, stdout="out\n", stderr="err\n", duration_s=0.25, stdout_truncated=True)
    result = format_result(_view(TaskState.FAILED, run))
    text = result.content[0].text
    assert text.startswith("Exit Code: 1\nStdout:\nout\n\n[stdout truncated]\nStderr:\nerr\n")
    assert not result.is_error  # the program failed, the tool did not
    assert result.structured_content["run"]["exit_code"] == 1


def test_a_running_task_tells_how_to_fetch_its_result() -> None:
    result = format_result(_view(TaskState.RUNNING))
    assert "task.get_result" in result.content[0].text and "task_1" in result.content[0].text
    assert result.structured_content["state"] == "running"


def test_a_timed_out_run_says_so() -> None:
    run = RunResult(exit_code=-9, stdout="", stderr="", duration_s=1.5, timed_out=True)
    assert "Timed out" in format_result(_view(TaskState.TIMED_OUT, run)).content[0].text


def test_audit_summary_keeps_sizes_not_contents() -> None:
    summary, digest = summarize_arguments({"path": "a.py", "content": "sécret", "code": "x=1", "append": True})
    assert summary == {"path": "a.py", "content": "<7 bytes>", "code": "<3 bytes>", "append": True}
    assert len(digest) == 64
    assert summarize_arguments({"content": "other"})[1] != summarize_arguments({"content": "sécret"})[1]
