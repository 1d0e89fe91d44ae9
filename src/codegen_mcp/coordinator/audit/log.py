"""The audit log: each tool call's event goes to a sink from one writer thread, off the event loop.

A sink that fails (a full disk, a database that is down) never fails the tool call it records: its events wait
in a bounded buffer and the writer retries with backoff, in order, until the sink takes them. Only what the
buffer cannot hold, or what is still waiting when the coordinator stops, is lost, and each lost event is
counted (`codegen_mcp_audit_dropped_total`). The problem is logged and reported by `/healthz` and `/metrics`,
and the log recovers by itself once the sink works again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from codegen_mcp.coordinator.audit.event import AuditEvent
from codegen_mcp.coordinator.audit.metrics import AuditCollector
from codegen_mcp.coordinator.audit.sinks import Sink, SinkDown

log = logging.getLogger(__name__)

# Events waiting for the sink; past this the sink is far behind and new events are dropped (and counted).
QUEUE_LIMIT = 10_000
# Events written to the sink at once (one transaction for PostgreSQL).
BATCH_LIMIT = 500
# Retries of a failing sink wait this long at first, doubling up to the maximum.
FIRST_RETRY_S = 0.1
MAX_RETRY_S = 5.0
# A write that has not returned for this long is reported as a problem (a sink that hangs rather than fails).
STALLED_AFTER_S = 10.0
# While the sink keeps failing, the failure is logged again at most this often (with the counts so far).
REMIND_EVERY_S = 60.0

_Pending = tuple[AuditEvent, concurrent.futures.Future[bool]]


class AuditLog:
    """Buffers events for one sink and writes them from a thread; failures degrade and are retried, never raised."""

    def __init__(
        self, sink: Sink, *, registry: CollectorRegistry | None = None, queue_limit: int = QUEUE_LIMIT
    ) -> None:
        self.sink = sink
        self.queue_limit = queue_limit
        self._queue: queue.Queue[_Pending] = queue.Queue(queue_limit)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # the counters and the problem, changed by the loop and the writer
        # Read by the event loop and /metrics, written under the lock: plain values, replaced whole.
        self.written = 0  # events the sink took
        self.failures = 0  # failed writes (their events were kept and retried)
        self.dropped = 0  # events lost for good
        self._in_flight = 0  # events of the batch being written
        self._write_started: float | None = None
        self._problem: str | None = None
        self._last_reminder = 0.0
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(AuditCollector(self))

    def describe(self) -> str:
        return self.sink.describe()

    # -- lifecycle -----------------------------------------------------------------------------------

    def open(self) -> None:
        """Reach the sink now (so a problem shows at start), and start the writer."""
        if self._thread is not None:
            return
        try:
            self.sink.connect()
        except SinkDown as exc:
            self._failed(exc.reason)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is buffered (for at most `timeout_s`; what a down sink cannot take is lost), then stop."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        thread.join(timeout_s)
        if thread.is_alive():
            log.error("the audit sink did not take the last events within %.0f s: %d are lost", timeout_s, self.backlog)

    # -- recording -----------------------------------------------------------------------------------

    def record(self, event: AuditEvent) -> concurrent.futures.Future[bool]:
        """Buffer one call's event; the future says (True/False) whether the sink took it. Never raises."""
        done: concurrent.futures.Future[bool] = concurrent.futures.Future()
        if self._thread is None:
            log.warning("audit log closed; dropped the event of call %s (%s)", event.call_id, event.tool)
            self._drop(1)
            done.set_result(False)
            return done
        try:
            self._queue.put_nowait((event, done))
        except queue.Full:
            self._drop(1)
            self._failed(f"{self.queue_limit} events are waiting for the audit sink; new ones are dropped")
            done.set_result(False)
        return done

    async def written_within(self, done: concurrent.futures.Future[bool], timeout_s: float) -> bool:
        """Wait (without blocking the loop) until the sink took an event, at most `timeout_s`; never raises.

        While the sink is known to be failing, this does not wait: the event stays buffered and is retried, and
        a call is not slowed down for a sink that is down.
        """
        if self._problem is not None and not done.done():
            return False
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(done)), timeout_s)
        return False

    # -- health ----------------------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Events waiting for the sink (the batch being written included)."""
        return self._queue.qsize() + self._in_flight

    @property
    def problem(self) -> str | None:
        """Why events are late or lost right now, or None while the sink takes them."""
        started = self._write_started
        if self._problem is None and started is not None and time.monotonic() - started > STALLED_AFTER_S:
            waited = time.monotonic() - started
            return f"the audit sink has not answered a write for {waited:.0f} s; {self.backlog} events wait"
        return self._problem

    # -- the writer thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._deliver(batch)
        finally:
            self.sink.close()

    def _next_batch(self) -> list[_Pending] | None:
        """Up to BATCH_LIMIT waiting events (waiting for one), or None once closing with nothing left."""
        while True:
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stopping.is_set():
                    return None
                continue
            batch = [first]
            with contextlib.suppress(queue.Empty):
                while len(batch) < BATCH_LIMIT:
                    batch.append(self._queue.get_nowait())
            self._in_flight = len(batch)
            return batch

    def _deliver(self, batch: list[_Pending]) -> None:
        """Write `batch` until the sink takes it all, retrying with backoff; lose it only when closing."""
        delay = FIRST_RETRY_S
        while batch:
            self._write_started = time.monotonic()
            try:
                self.sink.write([event for event, _ in batch])
                delivered, reason = len(batch), None
            except SinkDown as exc:
                delivered, reason = exc.delivered, exc.reason
            except Exception as exc:  # a sink's bug: still never the tool call's problem
                log.exception("the audit sink failed unexpectedly")
                delivered, reason = 0, f"the audit sink failed: {exc}"
            finally:
                self._write_started = None
            written, batch = batch[:delivered], batch[delivered:]
            self._in_flight = len(batch)  # before the futures say "written": the backlog is right by then
            self._took(written)
            if reason is None:
                return
            self._failed(reason, failures=1)
            if self._stopping.is_set() or self._stopping.wait(delay):
                # Closing: one more try after the wait, then what the sink still cannot take is lost.
                if delay == 0:
                    self._lose(batch)
                    return
                delay = 0
                continue
            delay = min(delay * 2, MAX_RETRY_S)

    def _took(self, written: list[_Pending]) -> None:
        if not written:
            return
        with self._lock:
            self.written += len(written)
            if self._problem is not None:
                log.warning(
                    "the audit sink (%s) takes events again; %d were lost so far", self.describe(), self.dropped
                )
                self._problem = None
        for _, done in written:
            done.set_result(True)

    def _lose(self, batch: list[_Pending]) -> None:
        """Closing with the sink down: this batch and all still queued are lost (and counted)."""
        with contextlib.suppress(queue.Empty):
            while True:
                batch.append(self._queue.get_nowait())
        log.error("the audit sink is down at shutdown: %d events are lost", len(batch))
        self._drop(len(batch))
        self._in_flight = 0
        for _, done in batch:
            done.set_result(False)

    def _drop(self, count: int) -> None:
        with self._lock:
            self.dropped += count

    def _failed(self, reason: str, *, failures: int = 0) -> None:
        with self._lock:
            self.failures += failures
            now = time.monotonic()
            if self._problem is None:
                since = datetime.now(UTC).isoformat(timespec="seconds")
                log.error(
                    "the audit sink (%s) fails (%s); tool calls go on, their events wait in a buffer of %d and are "
                    "retried; codegen_mcp_audit_backlog and codegen_mcp_audit_dropped_total count them",
                    self.describe(),
                    reason,
                    self.queue_limit,
                )
                self._problem = f"{reason} (since {since})"
                self._last_reminder = now
            elif now - self._last_reminder >= REMIND_EVERY_S:
                log.error(
                    "the audit sink still fails (%s); %d events wait, %d lost so far",
                    reason,
                    self.backlog,
                    self.dropped,
                )
                self._last_reminder = now
