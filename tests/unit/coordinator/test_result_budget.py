"""The result budget: every result, text and structured content together, fits what MCP clients accept."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import mcp_types as types
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codegen_mcp.api.errors import CodegenError, ErrorCode
from codegen_mcp.api.results import content_bytes
from codegen_mcp.api.tools import Encoding, FsListResult, FsReadResult, RunResult, TaskKind, TaskState, TaskView
from codegen_mcp.coordinator.budget import RESULT_BUDGET_BYTES, cut_to_fit, fit_content, fit_result, json_size
from codegen_mcp.coordinator.tools import MAX_WRITE_CONTENT_BYTES, WRITE_LIMIT, check_write_size, format_result

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def result_size(result: types.CallToolResult) -> int:
    texts = [c.text for c in result.content if isinstance(c, types.TextContent)]
    return json_size(result.structured_content) + sum(json_size(t) for t in texts)


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=300), budget=st.integers(min_value=0, max_value=400))
def test_cut_to_fit_keeps_the_longest_start_that_fits(text: str, budget: int) -> None:
    kept = cut_to_fit(text, budget)
    assert text.startswith(kept)
    assert json_size(kept) - 2 <= budget
    if kept != text:
        assert json_size(text[: len(kept) + 1]) - 2 > budget


def test_a_read_page_of_binary_is_cut_on_whole_base64_quanta_and_says_how_many_bytes() -> None:
    blob = bytes(range(256)) * 4000  # 1 MB, 1.37 MB of base64
    page = FsReadResult(
        path="big.bin",
        content=base64.b64encode(blob).decode(),
        encoding=Encoding.BASE64,
        size=len(blob),
        offset=0,
        bytes_read=len(blob),
        truncated=False,
    )
    fitted, _ = fit_content(page)
    assert isinstance(fitted, FsReadResult) and fitted.truncated
    assert base64.b64decode(fitted.content) == blob[: fitted.bytes_read]
    assert content_bytes(fitted.content, Encoding.BASE64) == fitted.bytes_read
    result = format_result(fitted)
    assert result_size(result) <= RESULT_BUDGET_BYTES
    assert f"read on with fs.read path=big.bin offset={fitted.bytes_read}" in fitted.reply().text


def test_any_other_result_is_cut_by_its_biggest_parts_and_stays_schema_shaped() -> None:
    entries: list[dict[str, Any]] = [
        {"name": f"deep/folder/{'n' * 60}{i}.py", "type": "file", "size": i, "mtime": NOW.isoformat()}
        for i in range(20_000)
    ]
    listing = FsListResult.model_validate({"path": ".", "entries": entries})
    big = format_result(listing)
    assert result_size(big) > 2 * RESULT_BUDGET_BYTES

    fitted = fit_result(big)
    assert result_size(fitted) <= RESULT_BUDGET_BYTES
    assert fitted.structured_content is not None
    again = FsListResult.model_validate(fitted.structured_content)  # still valid against the output schema
    assert again.truncated and 0 < len(again.entries) < len(entries)
    assert [e.name for e in again.entries] == [e["name"] for e in entries[: len(again.entries)]]
    assert (
        isinstance(fitted.content[0], types.TextContent) and "[cut to fit the 768 KiB result" in fitted.content[0].text
    )


def test_a_run_formats_the_notes_where_its_output_was_cut() -> None:
    run = RunResult(exit_code=0, stdout="y" * 10, stderr="", duration_s=0.1, stdout_truncated=True, artifacts=[])
    view = TaskView(
        task_id="task_0123456789abcdef",
        kind=TaskKind.RUN_PYTHON,
        state=TaskState.SUCCEEDED,
        created_at=NOW,
        run=run,
    )
    note = "[stdout cut at 10 of 600001 bytes to fit the result; …]"
    text = format_result(view, {"stdout": note}).content[0]
    assert isinstance(text, types.TextContent)
    assert f"Stdout:\n{'y' * 10}\n{note}\nStderr:\n" in text.text
    plain = format_result(view).content[0]
    assert isinstance(plain, types.TextContent) and "[stdout truncated]" in plain.text


def test_a_write_over_the_limit_is_refused_in_one_sentence_naming_it() -> None:
    check_write_size("w" * MAX_WRITE_CONTENT_BYTES)
    with pytest.raises(CodegenError) as refused:
        check_write_size("é" * (MAX_WRITE_CONTENT_BYTES // 2 + 1))  # bytes as sent, not characters
    assert refused.value.code is ErrorCode.TOO_LARGE
    assert refused.value.message == f"the content is {MAX_WRITE_CONTENT_BYTES + 2} bytes, but {WRITE_LIMIT}"
