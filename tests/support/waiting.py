"""Wait on a predicate with a deadline (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], T | None | Awaitable[T | None]],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "",
) -> T:
    """Call `probe` until it returns something truthy (returned), or fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = None
    while True:
        result = probe()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        last = result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or probe} (last: {last!r})")
        await asyncio.sleep(interval)


def wait_for(probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """`eventually` for code outside an event loop (fixtures, host processes): blocks between calls."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {found!r})")
        time.sleep(interval)
