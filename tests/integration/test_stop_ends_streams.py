"""A coordinator that stops ends its sessions' open GET streams as complete responses.

The client of a session's notification stream then sees the stream end, not a broken connection, and opens it
again (with Last-Event-ID) on another replica, as after any stream that ends.
"""

from __future__ import annotations

import asyncio
import signal

import httpx2 as httpx

from tests.integration.test_resumable_streams import RawSession, sse_events
from tests.support.coordinator import start_coordinator, state_root, stop_process

TIMEOUT = httpx.Timeout(30.0)


async def test_a_stopping_coordinator_completes_the_open_get_stream() -> None:
    for root in state_root():
        cp = start_coordinator(root / "state")
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT) as http:
                session = RawSession(http, f"{cp.url}/mcp")
                await session.initialize()
                headers = session.headers(accept="text/event-stream")
                async with http.stream("GET", session.url, headers=headers) as response:
                    assert response.status_code == 200  # the stream is open (it sends nothing until a notification)
                    cp.proc.send_signal(signal.SIGINT)
                    # A stream cut mid-response raises here (an incomplete chunked read); an ended one just ends.
                    events = [event async for event in sse_events(response)]
            assert all(event.message() is None for event in events)
            assert await asyncio.to_thread(cp.proc.wait, 15) == 0
            assert "without completing response" not in cp.log_path.read_text()
        finally:
            stop_process(cp.proc)
