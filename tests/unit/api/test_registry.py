"""The tool registry: one entry per tool names its arguments, its result (which renders its own text) and route."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime

import pytest

from codegen_mcp.api.results import ToolResult
from codegen_mcp.api.routes import AGENT_ROUTES
from codegen_mcp.api.task_results import TaskKind, TaskState, TaskStatus, TaskView
from codegen_mcp.api.tools import TOOLS, TOOLS_BY_NAME, ToolSpec

NOW = datetime(2026, 11, 25, tzinfo=UTC)


@pytest.mark.parametrize("spec", TOOLS, ids=lambda spec: spec.name)
def test_each_entry_is_whole(spec: ToolSpec) -> None:
    assert issubclass(spec.result, ToolResult) and not inspect.isabstract(spec.result)
    assert spec.route in AGENT_ROUTES
    assert spec.input_schema()["type"] == "object"
    assert spec.result.model_json_schema(mode="serialization")["type"] == "object"
    placeholders = {part[1:-1] for part in spec.route.path.split("/") if part.startswith("{")}
    assert placeholders <= set(spec.args.model_fields)  # every `{…}` of the path is filled from an argument
    assert (spec.result is TaskView) == spec.starts_task or spec.name == "task.get_result"


def test_names_are_unique() -> None:
    assert len(TOOLS_BY_NAME) == len(TOOLS)


def test_a_result_without_its_text_cannot_be_made() -> None:
    class Mute(ToolResult):
        value: int

    with pytest.raises(TypeError, match="abstract"):
        Mute(value=1)  # type: ignore[abstract]


def test_task_status_and_task_result_read_the_same_view_differently() -> None:
    data = {"task_id": "task_0123456789abcdef", "kind": "run.python", "state": "running", "created_at": NOW}
    status = TOOLS_BY_NAME["task.get_status"].result.model_validate(data)
    result = TOOLS_BY_NAME["task.get_result"].result.model_validate(data)
    assert isinstance(status, TaskStatus) and status.kind is TaskKind.RUN_PYTHON and status.state is TaskState.RUNNING
    assert status.reply().text.startswith("Task task_0123456789abcdef (run.python): running, ")
    assert "Call task.get_result" in result.reply().text
    assert status.model_dump() == result.model_dump()  # the same structured content
