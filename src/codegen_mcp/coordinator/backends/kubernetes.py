"""The kubernetes backend: every MCP session is a `CodegenSession` resource that the operator turns into a Pod.

Session start creates the resource (or finds it again: the name derives from the session key, so a restarted
coordinator or another replica lands on the same one), waits for `status.phase == Ready` with a watch, reads
the agent endpoint from status and the token from the Secret the status names. Nothing lives only in this
process: what we know about a session is on the resource.

Suspension is `spec.suspend` on the resource: `suspend` sets it (the session manager calls it for a session
idle for `suspend_after_s`) and waits for the operator to say Suspended; the operator sets it too, by itself,
for a session idle for `spec.suspendAfterSeconds` (which sessions created here carry, a backstop for when no
coordinator serves them). A session found suspended — by this coordinator, or by the operator behind its back
(the watch sees it, or the call finds the agent gone) — is resumed by `revive` (or `open`, for a named
workspace found again): spec.suspend false, then the same wait for Ready as a new session, then the new token.
While sessions may be suspended for idleness, those with a task still running report activity, so that the
operator does not take a busy session for an idle one.

With `shared_sessions`, several coordinators serve the same sessions (any request to any replica): a stopping
one only lets go of its sessions' resources, and a session counts as idle only when status.lastActivityAt,
which every replica writes, says so too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from codegen_mcp.api.errors import CodegenError, ErrorCode, SandboxUnavailable, validation_sentence
from codegen_mcp.api.session import (
    ANNOTATION_MCP_SESSION,
    API_VERSION,
    GROUP,
    KIND,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    MAX_TTL_SECONDS,
    PLURAL,
    TOKEN_SECRET_KEY,
    VERSION,
    Phase,
    SessionSpec,
)
from codegen_mcp.coordinator.agent_client import AgentClient, AgentEndpoint
from codegen_mcp.coordinator.backends.base import Backend, Sandbox
from codegen_mcp.coordinator.settings import CoordinatorSettings, KubernetesBackendSettings

log = logging.getLogger(__name__)

LABEL_MCP_SESSION = f"{GROUP}/mcp-session"
REREAD_S = 5.0  # while waiting for Ready, a fresh read this often, whatever the watch says
SUSPEND_WAIT_S = 5.0  # how long `suspend` waits for the operator to say Suspended (it takes ~0.1 s)
_IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9._-]")


def session_resource_name(session_key: str) -> str:
    """A stable, valid resource name for an MCP session key (the same key always gives the same name)."""
    return "mcp-" + hashlib.sha256(session_key.encode()).hexdigest()[:16]


def label_value(text: str) -> str:
    """`text` squeezed into a valid label value (≤63 chars, alphanumeric at both ends)."""
    value = _LABEL_VALUE_BAD.sub("-", text)[:63].strip("-._")
    return value or "none"


def operator_suspend_after(settings: CoordinatorSettings) -> int | None:
    """spec.suspendAfterSeconds of the sessions this coordinator creates (None: the operator does not suspend them).

    The coordinator's own `suspend_after_s` plus how far status.lastActivityAt may lag the last call (the activity
    interval, and a second for its whole seconds): a session this coordinator serves is suspended by it first, on
    its own clock. The operator's suspension is for sessions nobody serves (a named workspace after its
    coordinator stopped, or a coordinator that died).
    """
    if not 0 < settings.suspend_after_s < settings.session_idle_timeout_s:
        return None  # the coordinator does not suspend either (its setting's "0, or not below the idle timeout")
    lag = settings.kubernetes.activity_interval_s + 1
    return min(math.ceil(settings.suspend_after_s + lag), MAX_TTL_SECONDS)


def build_session_manifest(
    name: str, namespace: str, session_key: str, template: KubernetesBackendSettings, suspend_after: int | None = None
) -> dict[str, Any]:
    """The CodegenSession the coordinator asks for, from the session template."""
    spec: dict[str, Any] = {
        "workspace": {"size": template.workspace_size, "retain": template.retain_workspace},
        "network": {"egress": template.network_egress},
        "owner": f"mcp-session {session_key}",
    }
    if suspend_after is not None:
        spec["suspendAfterSeconds"] = suspend_after
    if template.storage_class:
        spec["workspace"]["storageClassName"] = template.storage_class
    optional = {
        "image": template.image,
        "imagePullPolicy": template.image_pull_policy,
        "runtimeClassName": template.runtime_class_name,
        "ttlSeconds": template.ttl_seconds,
        "idleTimeoutSeconds": template.idle_timeout_seconds,
        "poolRef": template.pool,
    }
    spec.update({k: v for k, v in optional.items() if v is not None})
    if template.packages:
        spec["packages"] = list(template.packages)
    requests = {k: v for k, v in {"cpu": template.cpu_request, "memory": template.memory_request}.items() if v}
    limits = {k: v for k, v in {"cpu": template.cpu_limit, "memory": template.memory_limit}.items() if v}
    if requests or limits:
        spec["resources"] = {**({"requests": requests} if requests else {}), **({"limits": limits} if limits else {})}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_MCP_SESSION: label_value(session_key)},
            "annotations": {ANNOTATION_MCP_SESSION: session_key},
        },
        "spec": spec,
    }


def check_template(template: KubernetesBackendSettings) -> None:
    """Refuse at start-up a session template the operator would reject for every session."""
    spec = build_session_manifest("mcp-template", "default", "template", template)["spec"]
    try:
        SessionSpec.model_validate(spec)
    except ValidationError as exc:
        problem = validation_sentence(exc, prefix="spec")
        raise ValueError(f"the CODEGEN_K8S_* session template is invalid: {problem}") from None


class ActivityThrottle:
    """Says when a session's activity is worth writing: at most once per `interval_s` per session."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def due(self, key: str, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            return False
        self._last[key] = now
        return True

    def forget(self, key: str) -> None:
        self._last.pop(key, None)


def is_suspended(obj: dict[str, Any]) -> bool:
    """Whether the session is suspended, or asked to be (its Pod is gone or going)."""
    return bool((obj.get("spec") or {}).get("suspend")) or (obj.get("status") or {}).get("phase") == Phase.SUSPENDED


def ready_endpoint(obj: dict[str, Any]) -> tuple[str, str] | None:
    """(endpoint, token secret name) when the resource is Ready; raise when it Failed; None while starting."""
    status = obj.get("status") or {}
    phase = status.get("phase")
    if phase == Phase.FAILED:
        message = status.get("message") or "the operator marked it Failed without a message"
        raise CodegenError(f"your sandbox could not start: {message}", code=ErrorCode.SANDBOX_UNAVAILABLE)
    if phase == Phase.TERMINATING or (obj.get("metadata") or {}).get("deletionTimestamp"):
        raise CodegenError(
            "your sandbox is being deleted (it expired or was removed)", code=ErrorCode.SANDBOX_UNAVAILABLE
        )
    if phase == Phase.READY and status.get("endpoint") and status.get("tokenSecretName"):
        return str(status["endpoint"]), str(status["tokenSecretName"])
    return None


class KubernetesBackend(Backend):
    name = "kubernetes"
    suspends = True

    def __init__(self, settings: CoordinatorSettings) -> None:
        self._settings = settings
        self._k8s = settings.kubernetes
        # Read once here, not in the event loop: in a Pod, the service account says which namespace we are in.
        self._in_cluster = self._k8s.kubeconfig is None and _IN_CLUSTER_NAMESPACE.exists()
        in_cluster_ns = _IN_CLUSTER_NAMESPACE.read_text().strip() if self._in_cluster else None
        self._namespace = self._k8s.namespace or in_cluster_ns or "default"
        self._api: k8s.ApiClient | None = None
        self._http: aiohttp.ClientSession | None = None
        self._throttle = ActivityThrottle(self._k8s.activity_interval_s)
        # The sandboxes this process talks to, by resource name, and the watch that tells when their Pod moved.
        self._sandboxes: dict[str, Sandbox] = {}
        self._endpoint_watch: asyncio.Task[None] | None = None
        self._latest: dict[str, dict[str, Any]] = {}  # each session as the watch last saw it
        self._changed = asyncio.Condition()
        self._deleted_at: dict[str, float] = {}  # sessions the watch saw deleted, and when
        self._suspend_after = operator_suspend_after(settings)
        self.shared = settings.shared_sessions
        self._busy_reporter: asyncio.Task[None] | None = None
        check_template(self._k8s)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        configuration = k8s.Configuration()
        if self._in_cluster:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            await k8s_config.load_kube_config(
                config_file=str(self._k8s.kubeconfig) if self._k8s.kubeconfig else None,
                context=self._k8s.context,
                client_configuration=configuration,
            )
        self._api = k8s.ApiClient(configuration)
        # One pooled HTTP session for every agent this coordinator talks to.
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512, limit_per_host=32))
        existing = await self._custom.list_namespaced_custom_object(
            GROUP, VERSION, self._namespace, PLURAL, label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        )
        log.info(
            "kubernetes backend: namespace %s; %d session resource(s) already there",
            self._namespace,
            len(existing.get("items", [])),
        )
        rv = (existing.get("metadata") or {}).get("resourceVersion")
        self._endpoint_watch = asyncio.create_task(self._watch_endpoints(rv), name="sandbox endpoints")
        if self._suspend_after is not None:
            self._busy_reporter = asyncio.create_task(self._report_busy(), name="busy sandboxes")

    async def aclose(self) -> None:
        for task in (self._endpoint_watch, self._busy_reporter):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        if self._api is not None:
            await self._api.close()

    def describe(self) -> str:
        return f"kubernetes backend (CodegenSession resources in namespace {self._namespace})"

    @property
    def _custom(self) -> k8s.CustomObjectsApi:
        assert self._api is not None, "the backend was not started"
        return k8s.CustomObjectsApi(self._api)

    @property
    def _core(self) -> k8s.CoreV1Api:
        assert self._api is not None, "the backend was not started"
        return k8s.CoreV1Api(self._api)

    # -- sandboxes -----------------------------------------------------------------------------

    async def open(self, session_key: str) -> Sandbox:
        name = session_resource_name(session_key)
        body = build_session_manifest(name, self._namespace, session_key, self._k8s, self._suspend_after)
        try:
            await self._custom.create_namespaced_custom_object(GROUP, VERSION, self._namespace, PLURAL, body)
            log.info("created CodegenSession %s/%s for MCP session %s", self._namespace, name, session_key)
        except ApiException as exc:
            if exc.status != 409:
                raise _api_error("create your sandbox", exc) from None
            log.info("MCP session %s continues on CodegenSession %s/%s", session_key, self._namespace, name)
            # A named workspace found again may have been suspended while nobody served it.
            await self._resume_if_suspended(name)
        return await self._connect(name)

    async def revive(self, sandbox: Sandbox) -> Sandbox:
        log.info("reconnecting to CodegenSession %s (%s)", sandbox.sandbox_id, sandbox.exit_reason)
        if await self._resume_if_suspended(sandbox.sandbox_id):
            await sandbox.client.aclose()
            return await self._connect(sandbox.sandbox_id)
        old = sandbox.meta.get("endpoint")
        # A Pod known to be replaced is not asked first: a gone Pod's address may not answer at all.
        if sandbox.meta.get("moved") != "true" and await sandbox.client.healthy():
            sandbox.alive, sandbox.exit_reason = True, None
            return sandbox
        await sandbox.client.aclose()
        # The status may still name the old Pod until the operator notices: wait for a different endpoint.
        return await self._connect(sandbox.sandbox_id, stale_endpoint=old)

    async def suspend(self, sandbox: Sandbox) -> None:
        """spec.suspend: the operator deletes the Pod and its token, keeps the workspace. Returns once the operator
        says Suspended (bounded), so that a resume that follows is never taken for a suspension still to come."""
        name = sandbox.sandbox_id
        await self._patch_spec(name, {"spec": {"suspend": True}}, "suspend your idle sandbox")
        sandbox.alive, sandbox.exit_reason = False, "it was suspended while idle"
        await sandbox.client.aclose()
        log.info("suspended CodegenSession %s/%s", self._namespace, name)
        try:
            await self._wait_for(name, lambda obj: (obj.get("status") or {}).get("phase") == Phase.SUSPENDED)
        except TimeoutError:
            log.warning("the operator has not said CodegenSession %s is Suspended yet", name)

    async def close(self, sandbox: Sandbox) -> None:
        self._forget(sandbox)
        sandbox.alive = False
        await sandbox.client.aclose()
        self._throttle.forget(sandbox.sandbox_id)
        await self._delete_session(sandbox.sandbox_id)

    async def close_unopened(self, session_key: str) -> None:
        # `open` creates the resource before waiting for it to become Ready: a session that never got Ready
        # (image not pullable, timeout) still has one, which would otherwise wait for the operator's idle expiry.
        await self._delete_session(session_resource_name(session_key))

    async def detach(self, sandbox: Sandbox) -> None:
        # The resource stays: its workspace is found again by name; if no session comes back for it, the
        # operator deletes it at its idle timeout.
        self._forget(sandbox)
        await sandbox.client.aclose()

    async def touch(self, sandbox: Sandbox) -> None:
        if self._throttle.due(sandbox.sandbox_id, time.monotonic()):
            await self._write_activity(sandbox.sandbox_id)

    async def idle_for(self, sandbox: Sandbox) -> float | None:
        """Since status.lastActivityAt (as the watch last saw it), which any replica may have written."""
        written = ((self._latest.get(sandbox.sandbox_id) or {}).get("status") or {}).get("lastActivityAt")
        try:
            at = datetime.strptime(str(written), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            return None
        return max(0.0, (datetime.now(UTC) - at).total_seconds())

    async def _write_activity(self, name: str) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            await self._custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                self._namespace,
                PLURAL,
                name,
                {"status": {"lastActivityAt": now}},
                _content_type="application/merge-patch+json",  # type: ignore[call-arg]  # accepted via **kwargs
            )
        except ApiException as exc:
            # Activity is advisory (idle expiry and suspension); a failed write must not fail the user's call.
            log.warning("could not record activity on %s: %s", name, exc.reason)

    # -- internals -----------------------------------------------------------------------------

    async def _resume_if_suspended(self, name: str) -> bool:
        """If the session is suspended, ask for it back (spec.suspend false); whether it was.

        Its activity is written first: a resumed session counts as used now, not idle since before it was
        suspended (the operator would suspend it again at once).
        """
        if not is_suspended(await self._read_session(name)):
            return False
        log.info("resuming suspended CodegenSession %s/%s", self._namespace, name)
        self._throttle.forget(name)
        await self._write_activity(name)
        await self._patch_spec(name, {"spec": {"suspend": False}}, "resume your suspended sandbox")
        return True

    async def _patch_spec(self, name: str, patch: dict[str, Any], doing: str) -> None:
        try:
            await self._custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self._namespace,
                PLURAL,
                name,
                patch,
                _content_type="application/merge-patch+json",  # type: ignore[call-arg]  # accepted via **kwargs
            )
        except ApiException as exc:
            if exc.status == 404:
                raise _session_gone() from None
            raise _api_error(doing, exc) from None

    async def _report_busy(self) -> None:
        """Sandboxes with a task still running count as active (status.lastActivityAt), every activity interval.

        A task started with a short wait_s runs on after its call, and the operator sees only lastActivityAt:
        without this it would suspend a session busy with a long test run.
        """
        while True:
            await asyncio.sleep(self._k8s.activity_interval_s)
            serving = [s for s in self._sandboxes.values() if s.alive]
            busy = await asyncio.gather(*(s.client.running_tasks() for s in serving), return_exceptions=True)
            for sandbox, tasks in zip(serving, busy, strict=True):
                if isinstance(tasks, int) and tasks > 0:
                    await self._write_activity(sandbox.sandbox_id)

    async def _delete_session(self, name: str) -> None:
        if self._k8s.retain_sessions:
            return
        try:
            await self._custom.delete_namespaced_custom_object(GROUP, VERSION, self._namespace, PLURAL, name)
            log.info("deleted CodegenSession %s/%s", self._namespace, name)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("could not delete CodegenSession %s: %s", name, exc.reason)

    async def _connect(self, name: str, stale_endpoint: str | None = None) -> Sandbox:
        endpoint, secret_name = await self._wait_ready(name, stale_endpoint)
        token = await self._read_token(secret_name)
        assert self._http is not None
        client = AgentClient(
            AgentEndpoint(endpoint, token),
            request_timeout_s=self._settings.request_timeout_s,
            connect_timeout_s=self._settings.agent_connect_timeout_s,
            session=self._http,
        )
        sandbox = Sandbox(
            sandbox_id=name, client=client, where=f"{self._namespace}/{name}", meta={"endpoint": endpoint}
        )
        self._sandboxes[name] = sandbox
        return sandbox

    def _forget(self, sandbox: Sandbox) -> None:
        if self._sandboxes.get(sandbox.sandbox_id) is sandbox:
            del self._sandboxes[sandbox.sandbox_id]

    def _notice_move(self, obj: dict[str, Any]) -> None:
        """A session's status names another endpoint: its Pod was replaced, so the next call reconnects first.

        Without this the next call would go to the old Pod's address, which may not answer at all (a black hole
        until the connect timeout), before reconnecting.
        """
        name = (obj.get("metadata") or {}).get("name")
        sandbox = self._sandboxes.get(name) if isinstance(name, str) else None
        if sandbox is None or not sandbox.alive:
            return
        endpoint = (obj.get("status") or {}).get("endpoint")
        if is_suspended(obj):
            log.info("CodegenSession %s was suspended", name)
            sandbox.alive, sandbox.exit_reason = False, "it was suspended while idle"
        elif endpoint != sandbox.meta.get("endpoint"):
            log.info("CodegenSession %s moved from %s to %s", name, sandbox.meta.get("endpoint"), endpoint)
            sandbox.meta["moved"] = "true"
            sandbox.alive = False
            sandbox.exit_reason = "its Pod was replaced"

    async def _record(self, kind: str, obj: dict[str, Any]) -> None:
        """One watch event: remember the session as it is now, wake whoever waits on it, notice a moved Pod."""
        name = (obj.get("metadata") or {}).get("name")
        if not isinstance(name, str):
            return
        now = time.monotonic()
        if kind == "DELETED":
            obj = {"metadata": obj.get("metadata") or {}, "deleted": True}
            self._deleted_at[name] = now
        else:
            self._notice_move(obj)
            self._deleted_at.pop(name, None)
        async with self._changed:
            self._latest[name] = obj
            # A deletion is kept a minute, for whoever waits on that session; then forgotten.
            for gone in [n for n, at in self._deleted_at.items() if now - at > 60]:
                del self._deleted_at[gone]
                self._latest.pop(gone, None)
            self._changed.notify_all()

    async def _watch_endpoints(self, resource_version: str | None) -> None:
        """One watch on this namespace's sessions for as long as the backend runs (restarted when it ends)."""
        while True:
            watcher = k8s_watch.Watch()
            try:
                async for event in watcher.stream(
                    self._custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self._namespace,
                    PLURAL,
                    label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}",
                    resource_version=resource_version,
                    timeout_seconds=300,
                ):
                    changed = event["raw_object"] if isinstance(event, dict) else None
                    if changed:
                        resource_version = (changed.get("metadata") or {}).get("resourceVersion", resource_version)
                        await self._record(str(event.get("type")), changed)
            except ApiException as exc:
                if exc.status == 410:  # resourceVersion too old: start again from now
                    resource_version = None
                else:
                    log.warning("watching sandbox endpoints failed (%s); retrying", exc.reason)
                    await asyncio.sleep(5)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("watching sandbox endpoints was interrupted (%s); retrying", exc)
                await asyncio.sleep(1)
            finally:
                watcher.stop()
                await watcher.close()

    async def _wait_ready(self, name: str, stale_endpoint: str | None = None) -> tuple[str, str]:
        """Wait until the resource is Ready (or Failed, or the deadline), woken by the namespace watch.

        A Ready status that still names `stale_endpoint` (a Pod known to be gone) counts as not ready yet.
        """
        last_message = "it is still starting"
        async for obj in self._versions(name, within_s=self._k8s.ready_timeout_s):
            found = ready_endpoint(obj)
            if found and found[0] != stale_endpoint:
                return found
            last_message = (obj.get("status") or {}).get("message") or last_message
        raise CodegenError(
            f"your sandbox was not ready within {self._k8s.ready_timeout_s:g} s: {last_message}",
            code=ErrorCode.TIMEOUT,
        )

    async def _wait_for(self, name: str, reached: Callable[[dict[str, Any]], bool]) -> None:
        """Wait (at most SUSPEND_WAIT_S) until the resource is as `reached` says; TimeoutError if it is not."""
        async for obj in self._versions(name, within_s=SUSPEND_WAIT_S):
            if reached(obj):
                return
        raise TimeoutError(f"CodegenSession {name} did not get there within {SUSPEND_WAIT_S:g} s")

    async def _versions(self, name: str, within_s: float) -> AsyncIterator[dict[str, Any]]:
        """The resource now, then each newer version of it, for `within_s` seconds."""
        deadline = time.monotonic() + within_s
        obj = await self._read_session(name)
        while True:
            yield obj
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # The watch wakes us on every change; a fresh read now and then covers a watch that lags or broke.
            newer = await self._next_version(name, obj, within_s=min(remaining, REREAD_S))
            obj = newer if newer is not None else await self._read_session(name)

    async def _read_session(self, name: str) -> dict[str, Any]:
        try:
            found = await self._custom.get_namespaced_custom_object(GROUP, VERSION, self._namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                raise _session_gone() from None
            raise _api_error("read your sandbox's status", exc) from None
        return dict(found)

    async def _next_version(self, name: str, seen: dict[str, Any], within_s: float) -> dict[str, Any] | None:
        """The session as the watch reports it once it differs from `seen`; None if nothing came in time."""
        version = (seen.get("metadata") or {}).get("resourceVersion")

        def newer() -> bool:
            latest = self._latest.get(name)
            return latest is not None and (latest.get("metadata") or {}).get("resourceVersion") != version

        async with self._changed:
            try:
                async with asyncio.timeout(within_s):
                    await self._changed.wait_for(newer)
            except TimeoutError:
                return None
        latest = self._latest[name]
        if latest.get("deleted"):
            raise _session_gone()
        return latest

    async def _read_token(self, secret_name: str) -> str:
        try:
            secret = await self._core.read_namespaced_secret(secret_name, self._namespace)
        except ApiException as exc:
            raise _api_error("read your sandbox's token", exc) from None
        data = (secret.data or {}).get(TOKEN_SECRET_KEY)
        if not data:
            raise SandboxUnavailable(f"the Secret {secret_name} has no {TOKEN_SECRET_KEY!r} key")
        return base64.b64decode(data).decode()


def _session_gone() -> CodegenError:
    return CodegenError(
        "your sandbox's CodegenSession resource no longer exists (it expired or was deleted); start a new MCP session",
        code=ErrorCode.SANDBOX_UNAVAILABLE,
    )


def _api_error(doing: str, exc: ApiException) -> CodegenError:
    reason = exc.reason or f"HTTP {exc.status}"
    if exc.status in (401, 403):
        return CodegenError(
            f"the coordinator is not allowed to {doing} ({reason}); check its RBAC",
            code=ErrorCode.SANDBOX_UNAVAILABLE,
        )
    return CodegenError(f"could not {doing}: the Kubernetes API answered {reason}", code=ErrorCode.SANDBOX_UNAVAILABLE)
