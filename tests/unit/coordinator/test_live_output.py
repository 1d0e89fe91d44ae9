"""The coordinator's side of live output: batches that do not flood a client, lines kept whole, bounded."""

from __future__ import annotations

import asyncio

from codegen_mcp.api.task_results import OutputStream
from codegen_mcp.coordinator.live_output import MAX_BATCH_CHARS, Batcher, skipped_note


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
