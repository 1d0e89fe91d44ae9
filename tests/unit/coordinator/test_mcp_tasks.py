"""The tasks extension's pure parts: our task states as the spec's `Task`, and which results become a task."""

from __future__ import annotations

from datetime import UTC, datetime

import mcp_types as types
import pytest

from codegen_mcp.api.tools import RunResult, TaskKind, TaskState, TaskView
from codegen_mcp.coordinator.mcp_tasks import advertised, running_task, task_fields
from codegen_mcp.coordinator.tools import error_result, format_result

CREATED = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
FINISHED = datetime(2026, 11, 25, 10, 31, 5, tzinfo=UTC)


def view(state: TaskState, **extra: object) -> TaskView:
    finished = {"finished_at": FINISHED} if state.finished else {}
    return TaskView.model_validate(
        {"task_id": "task_0123456789abcdef", "kind": TaskKind.RUN_PYTHON, "state": state, "created_at": CREATED}
        | finished
        | extra
    )


RUN = RunResult(exit_code=0, stdout="hi\n", stderr="", duration_s=0.1)


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (TaskState.QUEUED, "working"),
        (TaskState.RUNNING, "working"),
        (TaskState.SUCCEEDED, "completed"),
        # What the plain call would have answered (a tool result, isError or not): `failed` is for JSON-RPC errors.
        (TaskState.FAILED, "completed"),
        (TaskState.TIMED_OUT, "completed"),
        (TaskState.CANCELLED, "cancelled"),
    ],
)
def test_each_task_state_is_one_spec_status(state: TaskState, status: str) -> None:
    fields = task_fields(view(state), poll_interval_ms=1000)
    assert fields["status"] == status
    assert fields["taskId"] == "task_0123456789abcdef"
    assert fields["createdAt"] == "2026-11-25T10:30:00Z"
    assert fields["lastUpdatedAt"] == ("2026-11-25T10:31:05Z" if state.finished else "2026-11-25T10:30:00Z")
    assert "ttlMs" in fields and fields["ttlMs"] is None  # required on the wire, even when null
    assert fields["pollIntervalMs"] == 1000


def test_a_working_task_says_its_progress_and_a_cancelled_one_why() -> None:
    assert task_fields(view(TaskState.RUNNING), 1000)["statusMessage"].startswith("run.python running: 0.0 s")
    stopped = task_fields(view(TaskState.CANCELLED, error="stopped on request"), 1000)
    assert stopped["statusMessage"] == "stopped on request"
    assert "statusMessage" not in task_fields(view(TaskState.SUCCEEDED, run=RUN), 1000)


def test_only_a_still_running_task_result_becomes_a_task() -> None:
    assert running_task(format_result(view(TaskState.RUNNING))) is not None
    assert running_task(format_result(view(TaskState.QUEUED))) is not None
    assert running_task(format_result(view(TaskState.SUCCEEDED, run=RUN))) is None  # done within wait_s
    assert running_task(error_result("invalid arguments for run.python: give `code`")) is None
    not_a_task = types.CallToolResult(content=[], structured_content={"message": "hi"})
    assert running_task(not_a_task) is None


def test_the_extension_is_advertised_at_2026_only() -> None:
    assert advertised("2026-07-28") == {"io.modelcontextprotocol/tasks": {}}
    assert advertised("2025-11-25") is None
