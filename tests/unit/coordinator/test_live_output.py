"""The coordinator's side of live output: batches that do not flood a client, lines kept whole, bounded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from codegen_mcp.api import routes
from codegen_mcp.api.errors import CodegenError, ErrorCode
from codegen_mcp.api.task_results import OutputChunk, OutputStream
from codegen_mcp.coordinator.agent_client import MAX_OUTPUT_STREAMS, AgentClient, AgentEndpoint
from codegen_mcp.coordinator.live_output import DRAIN_S, MAX_BATCH_CHARS, Batcher, Follower, skipped_note


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[OutputStream, str]] = []

    async def __call__(self, stream: OutputStream, text: str) -> None:
        self.got.append((stream, text))


async def test_a_print_loop_becomes_a_few_batches_with_every_line() -> None:
    sink = Sink()
    batcher = Batcher(sink)
    for i in range(1000):
        batcher.add("stdout", f"line {i}\n")
    await batcher.flush()
    assert len(sink.got) == 1  # not one notification per line
    assert sink.got[0] == ("stdout", "".join(f"line {i}\n" for i in range(1000)))


async def test_a_line_written_in_parts_goes_out_whole() -> None:
    sink = Sink()
    batcher = Batcher(sink, interval_s=0.05)
    batcher.add("stdout", "first")  # print writes the text, then the newline
    asyncio.get_running_loop().call_later(0.01, batcher.add, "stdout", "\n")
    await batcher.flush()
    batcher.add("stdout", "no end yet")  # a line that does not end soon goes as it is
    await batcher.flush()
    assert sink.got == [("stdout", "first\n"), ("stdout", "no end yet")]


async def test_streams_stay_apart_and_in_order() -> None:
    sink = Sink()
    batcher = Batcher(sink)
    for stream, text in [("stdout", "a\n"), ("stdout", "b\n"), ("stderr", "oops\n"), ("stdout", "c\n")]:
        batcher.add(stream, text)  # type: ignore[arg-type]
    await batcher.flush()
    assert sink.got == [("stdout", "a\nb\n"), ("stderr", "oops\n"), ("stdout", "c\n")]


async def test_more_than_a_batch_holds_is_cut_to_its_end_with_a_note() -> None:
    sink = Sink()
    batcher = Batcher(sink)
    batcher.add("stdout", "a" * (MAX_BATCH_CHARS - 1) + "\n", skipped=7)  # the agent had already skipped 7
    batcher.add("stdout", "b" * 9 + "\n")
    await batcher.flush()
    assert sink.got == [("stdout", skipped_note(17) + "a" * (MAX_BATCH_CHARS - 11) + "\n" + "b" * 9 + "\n")]


# --- following an agent's stream ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fake_agent(stream: Callable[[web.Request, int], Awaitable[None]]) -> AsyncIterator[AgentClient]:
    """An agent whose output route runs `stream(response, offset)`; a client to it."""

    async def output(request: web.Request) -> web.StreamResponse:
        await stream(request, int(request.query["offset"]))
        return web.Response()  # not reached: `stream` ends the response its own way

    app = web.Application()
    app.router.add_get(routes.TASK_OUTPUT.path, output)
    async with TestServer(app) as server:
        client = AgentClient(AgentEndpoint(base_url=str(server.make_url("")), token="t"))
        try:
            yield client
        finally:
            await client.aclose()


def line(chunk: OutputChunk) -> bytes:
    return chunk.model_dump_json().encode() + b"\n"


async def test_a_dropped_stream_is_resumed_at_its_offset() -> None:
    offsets: list[int] = []

    async def stream(request: web.Request, offset: int) -> None:
        offsets.append(offset)
        response = web.StreamResponse()
        await response.prepare(request)
        if offset == 0:
            await response.write(line(OutputChunk(offset=0, text="one\n")))
            assert request.transport is not None
            request.transport.close()  # the connection drops mid-stream
        else:
            await response.write(line(OutputChunk(offset=offset, text="two\n")) + line(OutputChunk(offset=8, end=True)))
            await response.write_eof()
        raise asyncio.CancelledError  # this handler is done, one way or the other

    sink = Sink()
    async with fake_agent(stream) as client:
        follower = Follower(client, "task_x", sink)
        await follower.close(finished=True)
    assert offsets == [0, 4]
    assert "".join(text for _, text in sink.got) == "one\ntwo\n"


async def test_one_agent_gets_a_bounded_number_of_open_streams() -> None:
    async def stream(request: web.Request, offset: int) -> None:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(line(OutputChunk(offset=0, text="hi\n")))
        await asyncio.sleep(60)

    async with fake_agent(stream) as client:
        streams = [client.output(f"task_{i}") for i in range(MAX_OUTPUT_STREAMS)]
        for opened in streams:
            assert (await anext(opened)).text == "hi\n"
        with pytest.raises(CodegenError) as refused:
            await anext(client.output("task_one_too_many"))
        assert refused.value.code is ErrorCode.CONFLICT
        await streams[0].aclose()  # one ends: there is room again
        another = client.output("task_next")
        assert (await anext(another)).text == "hi\n"
        for opened in [*streams[1:], another]:
            await opened.aclose()


async def test_a_refused_stream_does_not_hold_the_result_back() -> None:
    async def stream(request: web.Request, offset: int) -> None:
        raise web.HTTPNotFound(
            text='{"error": {"code": "task_not_found", "message": "there is no task"}}', content_type="application/json"
        )

    sink = Sink()
    async with fake_agent(stream) as client:
        follower = Follower(client, "task_gone", sink)
        async with asyncio.timeout(DRAIN_S / 2):  # the follower gave up: nothing to wait for
            await follower.close(finished=True)
    assert sink.got == []
