"""Prometheus metrics of the operator: its reconciles (by resource, trigger and result), their duration, the
CodegenSessions it knows by phase, and its pools' sandboxes by state.

One registry per operator (tests run several in one process), kept in kopf's memo. The counts of sessions and
pooled sandboxes are read from kopf's indices (kept current by the watch streams) when scraped, so a scrape
costs no API call. `/metrics` is served by an aiohttp server on the operator's own event loop: the indices are
read on the loop that changes them, and kopf's liveness endpoint stays separate.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from typing import Any, Literal

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import disable_created_metrics as _disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from codegen_mcp.api import session as api
from codegen_mcp.operator import status as st

log = logging.getLogger(__name__)

# Counters carry no `_created` series: dashboards and alerts never use them, and they double every counter.
_disable_created_metrics()  # type: ignore[no-untyped-call]  # the library leaves it unannotated

# Seconds; a reconcile is a few API calls (tens of milliseconds) unless the API server is slow or throttles.
BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Resource = Literal["session", "pool"]
# ok; retry: kopf tries again; error: the handler failed for good, or gave up retrying.
Result = Literal["ok", "retry", "error"]
# kopf runs these change handlers again after any exception but PermanentError; an event handler's it only logs.
RETRIED_TRIGGERS = frozenset({"create", "resume", "update"})
Handler = Callable[..., Coroutine[Any, Any, Any]]


class _IndexCollector(Collector):
    """Sessions by phase and pooled sandboxes by state, from the operator's kopf indices when scraped."""

    def __init__(self, sessions: Mapping[Any, Iterable[Any]], pool_pods: Mapping[Any, Iterable[Any]]) -> None:
        self._sessions = sessions
        self._pool_pods = pool_pods

    def collect(self) -> Iterator[Metric]:
        phases = GaugeMetricFamily(
            "codegen_operator_sessions",
            "CodegenSessions this operator watches, by status.phase (Unknown: none written yet).",
            labels=["phase"],
        )
        counts = dict.fromkeys([str(p) for p in api.Phase] + ["Unknown"], 0)
        for entries in self._sessions.values():
            for entry in entries:
                phase = str(entry.get("phase") or "Unknown")
                counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            phases.add_metric([phase], count)
        yield phases
        sandboxes = GaugeMetricFamily(
            "codegen_operator_pool_sandboxes",
            "Sandbox Pods of each CodegenSandboxPool not yet claimed by a session, by state (ready, starting).",
            # Not `namespace`: Prometheus gives every scraped series the operator Pod's namespace under that name.
            labels=["pool_namespace", "pool", "state"],
        )
        for (namespace, name), pods in self._pool_pods.items():
            ready = starting = 0
            for pod in pods:
                if api.LABEL_SESSION in (pod.get("metadata", {}).get("labels") or {}):
                    continue  # claimed: a session's sandbox now, no longer the pool's
                state = st.observe_pod(pod).state
                ready += state == st.PodState.READY
                starting += state in (st.PodState.PENDING, st.PodState.STARTING, st.PodState.UNSCHEDULED)
            sandboxes.add_metric([str(namespace), str(name), "ready"], ready)
            sandboxes.add_metric([str(namespace), str(name), "starting"], starting)
        yield sandboxes


class OperatorMetrics:
    """One operator's metrics; `registry` is what its `/metrics` serves."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._reconciles = Counter(
            "codegen_operator_reconciles",
            "Handler runs of the operator, by resource (session, pool), trigger and result (ok, retry, error).",
            ["resource", "trigger", "result"],
            registry=self.registry,
        )
        self._durations = Histogram(
            "codegen_operator_reconcile_duration_seconds",
            "Duration of the operator's handler runs, by resource.",
            ["resource"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._runner: web.AppRunner | None = None
        self.port: int | None = None  # where /metrics listens, once served

    def watch(self, sessions: Mapping[Any, Iterable[Any]], pool_pods: Mapping[Any, Iterable[Any]]) -> None:
        """Report the sessions and pooled Pods of these kopf indices (handed to the startup handler)."""
        self.registry.register(_IndexCollector(sessions, pool_pods))

    def observe(self, resource: Resource, trigger: str, result: Result, duration_s: float) -> None:
        self._reconciles.labels(resource=resource, trigger=trigger, result=result).inc()
        self._durations.labels(resource=resource).observe(duration_s)

    # -- /metrics ------------------------------------------------------------------------------------------------

    async def serve(self, host: str, port: int) -> None:
        """Serve `/metrics` on this event loop (port 0: any free port, then in `self.port`)."""

        async def scrape(request: web.Request) -> web.Response:
            response = web.Response(body=generate_latest(self.registry))
            response.headers["Content-Type"] = CONTENT_TYPE_LATEST
            return response

        app = web.Application()
        app.router.add_get("/metrics", scrape)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("operator metrics on http://%s:%d/metrics", host, self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def counted(resource: Resource, trigger: str) -> Callable[[Handler], Handler]:
    """Count a kopf handler's runs and time them, on the `metrics` in its memo.

    An exception kopf retries is `retry`: a TemporaryError, or any exception but PermanentError from a change
    handler (`RETRIED_TRIGGERS`). Any other is `error`, and so is an event handler that returns False: it gave up
    retrying by itself (see `handlers._retrying`), since kopf never retries those.
    """
    retried = trigger in RETRIED_TRIGGERS

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def run(**kwargs: Any) -> Any:
            began = time.monotonic()
            result: Result | None = "error"
            try:
                value = await handler(**kwargs)
                result = "error" if value is False else "ok"
                # kopf patches a handler's result into the object's status: the verdict meant for the count must
                # not reach it (a Pod's or claim's status is not the operator's to write).
                return None if isinstance(value, bool) else value
            except kopf.TemporaryError:
                result = "retry"
                raise
            except asyncio.CancelledError:
                result = None  # the operator stops: the run neither succeeded nor failed
                raise
            except kopf.PermanentError:
                raise
            except Exception:
                result = "retry" if retried else "error"
                raise
            finally:
                metrics = kwargs["memo"].get("metrics")
                if result is not None and isinstance(metrics, OperatorMetrics):
                    metrics.observe(resource, trigger, result, time.monotonic() - began)

        return run

    return decorate
