"""The agent handles each request under the coordinator's call id and session (its headers), and a task a
request starts keeps them in its log lines after the request has been answered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from codegen_mcp.api.call_id import CALL_ID_HEADER, call_scope
from codegen_mcp.api.logs import SESSION_HEADER, session_scope
from codegen_mcp.api.tools import TaskKind, TaskState
from codegen_mcp.sandbox_agent.tasks import Outcome, Task, TaskManager
from tests.support.telemetry import JsonLines, json_lines, recorded_spans
from tests.unit.sandbox_agent.conftest import AgentClient


@pytest.fixture
def lines() -> Iterator[JsonLines]:
    with json_lines("codegen_mcp.sandbox_agent") as out:
        yield out


async def test_a_request_is_handled_under_the_call_it_names(client: AgentClient, lines: JsonLines) -> None:
    resp = await client.get("/healthz", headers={CALL_ID_HEADER: "call-7", SESSION_HEADER: "ws-1234abcd-demo"})
    assert resp.status == 200
    (line,) = [r for r in lines.records() if r["message"].startswith("GET /healthz answered 200")]
    assert (line["call_id"], line["session"]) == ("call-7", "ws-1234abcd-demo")


async def test_a_request_naming_no_valid_call_gets_a_fresh_id(client: AgentClient, lines: JsonLines) -> None:
    await client.get("/healthz", headers={CALL_ID_HEADER: "not valid;", SESSION_HEADER: "not valid;"})
    await client.get("/healthz")
    first, second = [r for r in lines.records() if r["message"].startswith("GET /healthz")]
    assert first["call_id"] and first["call_id"] != "not valid;" and first["session"] is None
    assert second["call_id"] and second["call_id"] != first["call_id"]


async def test_a_task_keeps_the_call_of_the_request_that_started_it(lines: JsonLines) -> None:
    manager = TaskManager(retention=4)
    go = asyncio.Event()

    async def work(task: Task) -> Outcome:
        await go.wait()  # runs on after the request that started it has been answered
        logging.getLogger("codegen_mcp.sandbox_agent.tasks").info("task %s working", task.task_id)
        return Outcome(TaskState.SUCCEEDED)

    with call_scope("call-8"), session_scope("s-8"):
        task = manager.submit(TaskKind.RUN_PYTHON, work)
    go.set()
    await manager.wait(task, 5)
    assert task.state is TaskState.SUCCEEDED
    (line,) = lines.records()
    assert (line["call_id"], line["session"]) == ("call-8", "s-8")


async def test_a_request_about_a_task_naming_no_call_joins_the_call_that_started_it(
    client: AgentClient, lines: JsonLines
) -> None:
    """MCP's tasks/get and tasks/cancel name no call of their own: the agent's lines about them carry the call
    that started the task. A task.get_status call has its own id, and keeps it."""
    started = await client.post(
        "/v1/run/python",
        json={"code": "print(1)", "wait_s": 30},
        headers={CALL_ID_HEADER: "call-start", SESSION_HEADER: "s-start"},
    )
    task_id = (await started.json())["task_id"]
    path = f"/v1/tasks/{task_id}"
    with recorded_spans() as spans:
        assert (await client.get(path)).status == 200
    (span,) = [s for s in spans.get_finished_spans() if s.name == "GET /v1/tasks/{task_id}"]
    assert span.attributes is not None and span.attributes["codegen.call_id"] == "call-start"
    assert (await client.get(path, headers={CALL_ID_HEADER: "call-status"})).status == 200
    assert (await client.post(f"{path}/cancel")).status == 200
    answered = [r for r in lines.records() if f" {path}" in r["message"] and " answered " in r["message"]]
    assert [(r["message"].split(" answered")[0], r["call_id"], r["session"]) for r in answered] == [
        (f"GET {path}", "call-start", "s-start"),
        (f"GET {path}", "call-status", None),
        (f"POST {path}/cancel", "call-start", "s-start"),
    ]
