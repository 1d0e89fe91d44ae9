"""Run the real kopf operator in a thread of its own, as a separate process would run it.

Its own event loop keeps kopf's end-of-run task sweep (it cancels every task it did not create before it
started) away from the test's loop, where the API emulator and the kubelet harness live.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import kopf

from codegen_mcp.operator.handlers import operator_kwargs
from codegen_mcp.operator.settings import OperatorSettings

START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
# aiohttp closes TLS connections without waiting for their transports (aio-libs/aiohttp#1925): the loop must
# run a moment longer, or the transports are found unclosed after it is gone (ResourceWarning → test error).
SSL_CLOSE_GRACE = 0.25


class OperatorThread:
    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.kwargs: dict[str, Any] = operator_kwargs(settings)
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kopf-operator", daemon=True)

    @property
    def memo(self) -> kopf.Memo:
        memo: kopf.Memo = self.kwargs["memo"]
        return memo

    async def _operate(self) -> None:
        await kopf.operator(**self.kwargs, stop_flag=self._stop, ready_flag=self._ready)
        await asyncio.sleep(SSL_CLOSE_GRACE)

    def _run(self) -> None:
        try:
            asyncio.run(self._operate())
        except BaseException as exc:  # surfaced in the test by __aexit__
            self._error = exc
            self._ready.set()

    async def __aenter__(self) -> OperatorThread:
        self._thread.start()
        started = await asyncio.to_thread(self._ready.wait, START_TIMEOUT)
        if self._error is not None:
            raise RuntimeError("the operator failed to start") from self._error
        assert started, f"the operator did not start within {START_TIMEOUT}s"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, STOP_TIMEOUT)
        assert not self._thread.is_alive(), f"the operator did not stop within {STOP_TIMEOUT}s"
        if self._error is not None:
            raise RuntimeError("the operator crashed") from self._error
