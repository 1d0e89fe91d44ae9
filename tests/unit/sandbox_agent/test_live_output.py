"""Live output: a task's output streamed as it is printed (`TASK_OUTPUT`), bounded, resumable by offset."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import ClientResponse

from codegen_mcp.api import routes
from codegen_mcp.api.task_results import OutputChunk
from codegen_mcp.api.tools import TaskView
from codegen_mcp.sandbox_agent import output_stream
from codegen_mcp.sandbox_agent.agent import AGENT
from codegen_mcp.sandbox_agent.output_stream import FINISHED_OUTPUT_CHARS, LIVE_OUTPUT_CHARS, LiveOutput

from .conftest import AgentClient

WAIT_FOR_GO = (
    "import os, sys, time\n"
    "print('first', flush=True)\n"
    "while not os.path.exists('go'):\n    time.sleep(0.01)\n"
    "print('second', file=sys.stderr)\n"
)
FLOOD_LINES = 40_000  # 40 000 lines of 1000 characters: far more than the socket buffers and the live buffer hold
FLOOD = f"import sys\nfor i in range({FLOOD_LINES}):\n    sys.stdout.write(f'{{i:09d}}' + 'x' * 990 + '\\n')\n"


async def start(client: AgentClient, code: str) -> TaskView:
    resp = await client.post("/v1/run/python", json={"code": code, "wait_s": 0, "timeout_s": 120})
    assert resp.status == 200, await resp.text()
    return TaskView.model_validate(await resp.json())


async def state_of(client: AgentClient, task_id: str, wait_s: float = 0) -> TaskView:
    resp = await client.get(f"/v1/tasks/{task_id}", params={"wait_s": str(wait_s)})
    return TaskView.model_validate(await resp.json())


async def follow(client: AgentClient, task_id: str, offset: int = 0) -> ClientResponse:
    resp = await client.get(routes.TASK_OUTPUT.path.format(task_id=task_id), params={"offset": str(offset)})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/x-ndjson")
    return resp


async def next_chunk(resp: ClientResponse) -> OutputChunk:
    async with asyncio.timeout(30):
        while True:
            line = await resp.content.readline()
            assert line, "the stream ended without an end line"
            if line.strip():  # an empty line is a heartbeat
                return OutputChunk.model_validate_json(line)


async def read_until(resp: ClientResponse, text: str) -> list[OutputChunk]:
    """Chunks up to the one that completes `text` (a print may come in parts: its text, then its newline)."""
    chunks = [await next_chunk(resp)]
    while "".join(c.text for c in chunks) != text:
        assert text.startswith("".join(c.text for c in chunks)), chunks
        chunks.append(await next_chunk(resp))
    return chunks


async def read_to_end(resp: ClientResponse) -> list[OutputChunk]:
    chunks = [await next_chunk(resp)]
    while not chunks[-1].end:
        chunks.append(await next_chunk(resp))
    return chunks


async def go(client: AgentClient) -> None:
    assert (await client.post("/v1/fs/write", json={"path": "go", "content": ""})).status == 200


async def test_output_arrives_while_the_run_goes_on(client: AgentClient) -> None:
    view = await start(client, WAIT_FOR_GO)
    resp = await follow(client, view.task_id)
    first = await read_until(resp, "first\n")
    assert (first[0].offset, first[0].skipped, first[0].stream) == (0, 0, "stdout")
    running = await state_of(client, view.task_id)
    assert running.state == "running"
    assert running.progress.output_tail == "first"  # what task.get_status shows of a running task
    await go(client)
    rest = await read_to_end(resp)
    assert "".join(c.text for c in rest) == "second\n" and {c.stream for c in rest[:-1]} == {"stderr"}
    assert rest[0].offset == 6 and rest[-1].end and rest[-1].offset == len("first\nsecond\n")
    done = await state_of(client, view.task_id, wait_s=30)
    assert done.state == "succeeded" and done.progress.output_tail == ""  # the result has the output now


async def test_a_reconnect_continues_at_its_offset(client: AgentClient) -> None:
    view = await start(client, WAIT_FOR_GO)
    resp = await follow(client, view.task_id)
    first = await next_chunk(resp)  # "first\n", or its first part
    resp.close()  # the connection drops
    await go(client)
    again = await read_to_end(await follow(client, view.task_id, offset=first.next_offset))
    assert first.text + "".join(c.text for c in again) == "first\nsecond\n"  # nothing twice, nothing lost
    assert again[0].offset == first.next_offset and again[0].skipped == 0
    # After the end, a reader past it is told so in a sentence.
    resp = await client.get(routes.TASK_OUTPUT.path.format(task_id=view.task_id), params={"offset": "999"})
    assert resp.status == 400
    assert "past the end of this task's output" in (await resp.json())["error"]["message"]


async def test_a_slow_reader_gets_the_tail_and_a_skip_count(client: AgentClient) -> None:
    view = await start(client, FLOOD)
    resp = await follow(client, view.task_id)  # ...and not read until the run is over
    live = client.app[AGENT].tasks.get(view.task_id).output
    biggest = 0
    while not (await state_of(client, view.task_id, wait_s=0.05)).state.finished:
        biggest = max(biggest, live.kept)
    assert biggest <= LIVE_OUTPUT_CHARS and live.kept <= FINISHED_OUTPUT_CHARS
    chunks = await read_to_end(resp)
    total = FLOOD_LINES * 1000
    assert chunks[-1].offset == total
    skipped = sum(c.skipped for c in chunks)
    assert skipped > total // 2, "the agent buffered what a slow reader did not take"
    assert skipped + sum(len(c.text) for c in chunks) == total  # every character sent or counted as skipped
    assert chunks[-2].text.endswith(f"{FLOOD_LINES - 1:09d}" + "x" * 990 + "\n")  # the tail is there


async def test_a_stopping_agent_ends_its_streams_without_waiting_for_their_tasks(client: AgentClient) -> None:
    view = await start(client, WAIT_FOR_GO)
    resp = await follow(client, view.task_id)
    await read_until(resp, "first\n")
    assert client.app is not None
    await client.app.shutdown()  # what the agent's runner does first when it stops
    async with asyncio.timeout(10):  # without the shutdown hook: until the run ends (never, here)
        rest = await resp.content.read()
    assert rest == b""  # the stream ended, with no end line: the task did not end
    assert (await state_of(client, view.task_id)).state == "running"


async def test_a_quiet_stream_gets_heartbeats(client: AgentClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output_stream, "HEARTBEAT_S", 0.05)
    view = await start(client, WAIT_FOR_GO)
    resp = await follow(client, view.task_id)
    await read_until(resp, "first\n")
    async with asyncio.timeout(10):
        assert await resp.content.readline() == b"\n"  # an empty line: how a reader that went away is noticed
    await go(client)


async def test_bad_requests_get_one_sentence(client: AgentClient) -> None:
    unknown = await client.get(routes.TASK_OUTPUT.path.format(task_id="task_0000000000000000"))
    assert unknown.status == 404 and "task_0000000000000000" in (await unknown.json())["error"]["message"]
    view = await start(client, "print('x')")
    for bad in ("-1", "x", "1.5"):
        resp = await client.get(routes.TASK_OUTPUT.path.format(task_id=view.task_id), params={"offset": bad})
        error: dict[str, Any] = (await resp.json())["error"]
        assert resp.status == 400 and error["message"].startswith("`offset` must be"), error


def test_the_buffer_keeps_the_tail_and_joins_split_characters() -> None:
    live = LiveOutput(limit=10)
    live.write("stdout", "é".encode()[:1])
    assert live.end == 0  # half a character waits for its other half
    live.write("stdout", "é".encode()[1:] + b"0123456789abc")
    assert (live.end, live.kept, live.start) == (14, 10, 4)
    behind = live.read(0)
    assert behind is not None and (behind.skipped, behind.offset, behind.text) == (4, 4, "3456789abc")
    live.write("stderr", b"!")
    assert json.loads(live.read(14).model_dump_json())["stream"] == "stderr"  # type: ignore[union-attr]
    assert live.read(15) is None
