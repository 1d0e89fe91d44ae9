"""Thin kopf handlers: translate kopf's arguments, call the reconciler, map errors to kopf's.

Handlers are registered into a registry built per operator (`build_registry`), so tests can run several
operators with different settings in one process and nothing lives in module globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from codegen_mcp.api import pool
from codegen_mcp.api import session as api
from codegen_mcp.operator.kube import KubeClient, KubeError, now
from codegen_mcp.operator.metrics import OperatorMetrics, counted
from codegen_mcp.operator.pools import PoolReconciler
from codegen_mcp.operator.reconcile import SessionReconciler, temporary
from codegen_mcp.operator.settings import OperatorSettings

log = logging.getLogger(__name__)

MANAGED: dict[str, Any] = {api.LABEL_MANAGED_BY: api.MANAGED_BY, api.LABEL_SESSION: kopf.PRESENT}
POOLED: dict[str, Any] = {api.LABEL_MANAGED_BY: api.MANAGED_BY, pool.LABEL_POOL: kopf.PRESENT}
EVENT_RETRIES = 4


def reconciler(memo: kopf.Memo) -> SessionReconciler:
    found = memo.get("reconciler")
    if not isinstance(found, SessionReconciler):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return found


def pool_reconciler(memo: kopf.Memo) -> PoolReconciler:
    found = memo.get("pools")
    if not isinstance(found, PoolReconciler):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return found


def operator_settings(memo: kopf.Memo) -> OperatorSettings:
    found = memo.get("config")
    assert isinstance(found, OperatorSettings), "memo.config must hold the OperatorSettings"
    return found


# --- operator lifecycle ---------------------------------------------------------------------------------------


async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    """Tune kopf once, open the API client, start the expiry sweeper (fed by the `sessions` index)."""
    sessions: kopf.Index[Any, Any] = kwargs["sessions"]
    config = operator_settings(memo)
    # Progress and diff-base in our own annotations; never in status (the schema would prune it).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=api.GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{api.GROUP}/finalizer"  # never added: no handler needs one
    settings.posting.enabled = config.post_events
    settings.posting.level = logging.WARNING  # kopf's own Events: only handler failures
    settings.networking.request_timeout = config.request_timeout_seconds
    # Exact namespace names (or cluster-wide) need no namespace scanning, hence no cluster-wide list RBAC.
    settings.scanning.disabled = not any(set(ns) & set("*?[!") for ns in config.namespaces)
    settings.execution.max_workers = 8
    kube = await KubeClient.connect(config)
    if not config.standalone:
        await choose_peering(settings, kube, config)
    memo["reconciler"] = SessionReconciler(kube=kube, settings=config)
    memo["pools"] = PoolReconciler(kube=kube, settings=config)
    memo["sweeper"] = asyncio.create_task(sweep_forever(memo["reconciler"], sessions, config.expiry_check_seconds))
    metrics: OperatorMetrics = memo["metrics"]
    metrics.watch(sessions, kwargs["pool_pods"])
    if config.metrics_port:
        await metrics.serve("0.0.0.0", config.metrics_port)  # noqa: S104 - scraped from outside the Pod


PEERING_INSTALL_HINT = "install them with `codegen-mcp crd --peering | kubectl apply -f -` (the chart ships them)"


async def choose_peering(settings: kopf.OperatorSettings, kube: KubeClient, config: OperatorSettings) -> None:
    """Peer only where kopf's peering CRD exists: without it kopf would pause every watch, silently, for ever.

    Runs in the startup handler, which kopf finishes before it starts any watch or peering.
    """
    clustered = not config.namespaces
    plural = "clusterkopfpeerings" if clustered else "kopfpeerings"
    settings.peering.name = config.peering_name
    settings.peering.mandatory = config.standalone is False
    if await kube.serves("kopf.dev/v1", plural):
        return
    if config.standalone is False:
        raise kopf.PermanentError(
            f"peering is required (standalone=false) but the {plural}.kopf.dev CRD is not installed: "
            + PEERING_INSTALL_HINT
        )
    log.warning(
        "kopf's peering CRD %s.kopf.dev is not installed: running standalone, as the only operator replica; "
        "to run several replicas, %s",
        plural,
        PEERING_INSTALL_HINT,
    )
    settings.peering.standalone = True


async def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf uses the same credentials as the operator's own client."""
    return await reconciler(memo).kube.connection_info()


async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    await memo["metrics"].close()
    sweeper = memo.get("sweeper")
    if isinstance(sweeper, asyncio.Task):
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
    pools = memo.get("pools")
    if isinstance(pools, PoolReconciler):
        await pools.close()
    found = memo.get("reconciler")
    if isinstance(found, SessionReconciler):
        await found.kube.close()


async def probe_sessions(**kwargs: Any) -> int:
    """Reported by the liveness endpoint: how many sessions this operator knows."""
    sessions: kopf.Index[Any, Any] = kwargs["sessions"]
    return len(sessions)


# --- CodegenSession ---------------------------------------------------------------------------------------------


async def session_created(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    pool_pods: kopf.Index[Any, Any] = kwargs["pool_pods"]
    pool_name = (body.get("spec") or {}).get("poolRef")
    known = [_plain(p) for p in pool_pods.get((body.meta.namespace, pool_name), [])] if pool_name else None
    await reconciler(memo).reconcile(_plain(body), known)


def index_pool_pod(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """Every pooled sandbox Pod by (namespace, pool), kept by the watch: a session adopts without a list call."""
    return {(namespace, labels.get(pool.LABEL_POOL)): _plain(body)}


async def spec_updated(body: kopf.Body, old: Any, new: Any, memo: kopf.Memo, **_: Any) -> None:
    await reconciler(memo).spec_changed(_plain(body), _plain(old), _plain(new))


def index_session(namespace: str | None, name: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """Index of sessions for the expiry sweeper: kept current by the watch stream, costs no API calls."""
    return {
        (namespace, name): {
            "spec": _plain(body.get("spec")),
            "deleting": bool(body.meta.get("deletionTimestamp")),
            "phase": (body.get("status") or {}).get("phase"),
        }
    }


async def sweep_forever(rec: SessionReconciler, sessions: kopf.Index[Any, Any], interval: float) -> None:
    """Expire sessions past their TTL or idle timeout, suspend those idle for suspendAfterSeconds; keep
    status.expiresAt current.

    One loop for the operator rather than a kopf timer per session: kopf puts its finalizer on every
    object that has a timer or daemon, and a finalizer wedges namespace deletion when the operator is gone.
    The index only nominates sessions; each decision is made on a fresh read of the session.
    The same loop looks again at Starting sessions: waits that no event ends (an Unschedulable Pod's deadline,
    the backoff before a failed Pod is recreated) are decided here.
    """
    while True:
        at = now()
        for key, entries in list(sessions.items()):
            namespace, name = key
            try:
                await rec.check_expiry(str(namespace), str(name), at)
                if any(entry.get("phase") == api.Phase.STARTING for entry in entries):
                    await rec.sync_sandbox(str(namespace), str(name))
            except (KubeError, kopf.TemporaryError) as exc:
                log.warning("expiry check of %s/%s failed, will retry: %s", namespace, name, exc)
        await asyncio.sleep(interval)


# --- children -------------------------------------------------------------------------------------------------


async def _retrying(what: str, call: Callable[[], Awaitable[None]]) -> bool:
    """Event handlers are not retried by kopf: retry transient API errors here, with a short backoff.

    False when it gave up (logged here): the handler returns it, and its metrics count the run as an error.
    """
    for attempt in range(EVENT_RETRIES):
        try:
            await call()
            return True
        except KubeError as exc:
            if not exc.retryable or attempt == EVENT_RETRIES - 1:
                log.error("%s failed: %s", what, exc)
                return False
            await asyncio.sleep(0.5 * 2**attempt)
    return False


async def pod_event(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> bool:
    session = labels.get(api.LABEL_SESSION)
    if not namespace or not session:
        return True
    rec = reconciler(memo)
    return await _retrying(
        f"syncing the sandbox of {namespace}/{session}", lambda: rec.sync_sandbox(namespace, session)
    )


async def claim_event(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, event: kopf.RawEvent, memo: kopf.Memo, **_: Any
) -> bool:
    session = labels.get(api.LABEL_SESSION)
    if not namespace or not session:
        return True
    rec = reconciler(memo)
    claim = None if event.get("type") == "DELETED" else _plain(body)
    return await _retrying(
        f"syncing the workspace of {namespace}/{session}", lambda: rec.sync_claim(namespace, session, claim)
    )


# --- CodegenSandboxPool -----------------------------------------------------------------------------------------


async def pool_changed(namespace: str | None, name: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Create, resume and spec changes: fill (or trim) the pool; an invalid template stops kopf's retries."""
    if not namespace or not name:
        return
    try:
        problem = await pool_reconciler(memo).sync(namespace, name)
    except KubeError as exc:
        raise temporary(exc, f"filling pool {namespace}/{name}") from exc
    if problem:
        raise kopf.PermanentError(problem)


async def pooled_pod_event(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> bool:
    """A pooled sandbox's Pod changed (became ready, failed, vanished, was claimed): the pool looks again."""
    name = labels.get(pool.LABEL_POOL)
    if not namespace or not name:
        return True
    pools = pool_reconciler(memo)

    async def sync() -> None:
        await pools.sync(namespace, name)

    return await _retrying(f"syncing pool {namespace}/{name}", sync)


def _plain(value: Any) -> Any:
    """kopf's live views → plain dicts (the reconciler must not see them change underneath)."""
    if value is None:
        return None
    if isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def build_registry() -> kopf.OperatorRegistry:
    """Every handler of the operator, in a registry of its own (kopf's default one is left alone)."""
    registry = kopf.OperatorRegistry()
    res = (api.GROUP, api.VERSION, api.PLURAL)
    kopf.on.startup(registry=registry)(configure)
    kopf.on.cleanup(registry=registry)(shutdown)
    kopf.on.login(registry=registry)(login)
    kopf.on.probe(id="session_count", registry=registry)(probe_sessions)
    kopf.index(*res, id="sessions", registry=registry)(index_session)
    # Each reconciling handler is counted and timed (`metrics.counted`); kopf still ids it by its own name.
    kopf.on.create(*res, registry=registry, backoff=3)(counted("session", "create")(session_created))
    kopf.on.resume(*res, registry=registry, backoff=3)(counted("session", "resume")(session_created))
    kopf.on.update(*res, field="spec", registry=registry, backoff=3)(counted("session", "update")(spec_updated))
    kopf.on.event("v1", "pods", labels=MANAGED, registry=registry)(counted("session", "pod")(pod_event))
    kopf.on.event("v1", "persistentvolumeclaims", labels=MANAGED, registry=registry)(
        counted("session", "claim")(claim_event)
    )
    pools = (api.GROUP, api.VERSION, pool.POOL_PLURAL)
    kopf.on.create(*pools, registry=registry, backoff=3)(counted("pool", "create")(pool_changed))
    kopf.on.resume(*pools, registry=registry, backoff=3)(counted("pool", "resume")(pool_changed))
    kopf.on.update(*pools, field="spec", registry=registry, backoff=3)(counted("pool", "update")(pool_changed))
    kopf.on.event("v1", "pods", labels=POOLED, registry=registry)(counted("pool", "pod")(pooled_pod_event))
    kopf.index("v1", "pods", labels=POOLED, id="pool_pods", registry=registry)(index_pool_pod)
    return registry


def operator_kwargs(config: OperatorSettings) -> dict[str, Any]:
    """Arguments of kopf.run()/kopf.operator() for these settings."""
    return {
        "registry": build_registry(),
        "memo": kopf.Memo(config=config, metrics=OperatorMetrics()),
        "namespaces": list(config.namespaces),
        "clusterwide": not config.namespaces,
        # Peering is decided at startup (`choose_peering`): a peering name given here would make kopf's peering
        # mandatory before we know whether its CRD exists.
        "standalone": True if config.standalone else None,
        "peering_name": None,
        "priority": config.priority,
        "liveness_endpoint": config.liveness_endpoint,
    }
