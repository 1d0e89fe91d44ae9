"""The work behind the kopf handlers: make children exist, keep status truthful, replace failed Pods, expire.

Every step is level-triggered and idempotent: it reads the current state fresh, compares it with what the
spec asks for, and changes only the difference. A retry after a partial failure therefore finds what the
first attempt made and carries on. Status is written read-modify-write under `resourceVersion`.

Suspension (`spec.suspend`, set by a user, the coordinator, or the expiry sweep after `suspendAfterSeconds`
idle) stops the sandbox and keeps its workspace: the Pod is deleted and the token Secret, handed to the Pod
first, goes with it (garbage collection: the operator cannot delete Secrets); the claim and NetworkPolicy stay,
and nothing recreates the Pod while the session is Suspended. `spec.suspend: false` makes a new Secret (a new
token) and Pod on the same claim, once the old Pod is gone: Pending → Starting → Ready, no restart counted.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import kopf
from pydantic import ValidationError

from codegen_mcp.api import pool
from codegen_mcp.api import session as api
from codegen_mcp.api.errors import validation_sentence
from codegen_mcp.api.pool import PoolReason
from codegen_mcp.api.session import Phase, Reason, SessionSpec, SessionStatus
from codegen_mcp.operator import adoption, builders
from codegen_mcp.operator import status as st
from codegen_mcp.operator.kube import CLAIMS, KINDS_BY_NAME, PODS, SECRETS, SESSIONS, KubeClient, KubeError, now
from codegen_mcp.operator.settings import OperatorSettings
from codegen_mcp.operator.tracing import step

log = logging.getLogger(__name__)

NORMAL, WARNING = "Normal", "Warning"
Ownership = Literal["ours", "orphan", "stale", "foreign"]


def ownership(obj: dict[str, Any], session: builders.SessionRef) -> Ownership:
    """Whose a child is: ours, ours but unowned (e.g. a retained claim), a previous namesake's, or not ours."""
    meta = obj.get("metadata", {})
    labels = meta.get("labels") or {}
    if labels.get(api.LABEL_SESSION) != session.name or labels.get(api.LABEL_MANAGED_BY) != api.MANAGED_BY:
        return "foreign"
    owners = [r.get("uid") for r in meta.get("ownerReferences") or [] if r.get("kind") == api.KIND]
    if session.uid in owners:
        return "ours"
    return "stale" if owners else "orphan"


def with_owner(obj: dict[str, Any], session: builders.SessionRef, *, owned: bool) -> list[dict[str, Any]] | None:
    """The ownerReferences `obj` should have, or None when it already has them."""
    refs = [r for r in obj.get("metadata", {}).get("ownerReferences") or [] if r.get("kind") != api.KIND]
    if owned:
        refs.append(builders.owner_reference(session))
    current = obj.get("metadata", {}).get("ownerReferences") or []
    return None if refs == current else refs


def validate(body: dict[str, Any]) -> tuple[SessionSpec | None, str]:
    """The validated spec, or None and one readable message."""
    problem = api.check_session_name(str(body.get("metadata", {}).get("name", "")))
    if problem:
        return None, problem
    try:
        return SessionSpec.model_validate(body.get("spec") or {}), ""
    except ValidationError as exc:
        return None, validation_sentence(exc, prefix="spec")


def temporary(exc: KubeError, what: str) -> kopf.TemporaryError:
    return kopf.TemporaryError(f"{what}: {exc.message}", delay=2 if exc.retryable else 30)


@dataclass
class SessionReconciler:
    kube: KubeClient
    settings: OperatorSettings

    # --- helpers -------------------------------------------------------------------------------------------

    def _ref(self, body: dict[str, Any], spec: SessionSpec) -> builders.SessionRef:
        return builders.SessionRef.from_body(body, spec)

    async def _event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        if self.settings.post_events:
            await self.kube.post_event(body, type_=type_, reason=reason, message=message)

    async def _fail(self, body: dict[str, Any], reason: Reason, message: str) -> kopf.PermanentError:
        """Status Failed plus a Warning Event; the caller raises the returned error to stop kopf's retries."""
        meta = body["metadata"]
        generation = meta.get("generation")
        await self.kube.update_status(
            meta["namespace"],
            meta["name"],
            lambda _b, s: st.mark_failed(s, reason, message, now=now(), generation=generation),
        )
        await self._event(body, WARNING, reason, message)
        return kopf.PermanentError(message)

    @step
    async def _ensure(
        self, desired: dict[str, Any], session: builders.SessionRef, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Create one child, or accept the one already there when it is ours; adopt orphans."""
        kind, name = desired["kind"], desired["metadata"]["name"]
        obj, created = await self.kube.create(desired)
        if created:
            await self._event(body, NORMAL, f"{kind}Created", f"created {kind} {name}")
            return obj
        whose = ownership(obj, session)
        if whose == "foreign":
            message = f"a {kind} named {name} already exists and is not managed by this session; delete or rename it"
            raise await self._fail(body, Reason.CONFLICT, message)
        if whose == "stale":
            raise kopf.TemporaryError(
                f"{kind} {name} still belongs to a deleted namesake; waiting for its removal", delay=3
            )
        owned = bool(desired["metadata"].get("ownerReferences"))
        refs = with_owner(obj, session, owned=owned)
        if refs is not None:
            patched = await self.kube.patch(
                KINDS_BY_NAME[kind], session.namespace, name, {"metadata": {"ownerReferences": refs or None}}
            )
            obj = patched or obj
            await self._event(body, NORMAL, f"{kind}Adopted", f"adopted the existing {kind} {name}")
        return obj

    # --- create / resume -----------------------------------------------------------------------------------

    @step
    async def reconcile(self, body: dict[str, Any], pool_pods: list[dict[str, Any]] | None = None) -> None:
        """Make every child exist and the status say where the session stands (create and resume).

        `pool_pods`: the Pods of the pool spec.poolRef names, as the operator's index knows them (None: list them).
        """
        spec, problem = validate(body)
        if spec is None:
            raise await self._fail(body, Reason.INVALID_SPEC, problem)
        session = self._ref(body, spec)
        meta = body["metadata"]
        generation = meta.get("generation")
        status = body.get("status") or {}
        try:
            if spec.suspend:
                await self._suspend(body, session)
                return
            if status.get("phase") == Phase.SUSPENDED:
                await self._resume(body, session)
            # A session that had a sandbox of its own (its claim is named in status) never adopts another.
            had_sandbox = status.get("podUID") or status.get("workspaceClaimName")
            unstarted = not had_sandbox and not meta.get("deletionTimestamp")
            if spec.pool_ref and not session.sandbox and unstarted and await self._adopt(body, session, pool_pods):
                return
            accepted = await self.kube.update_status(
                session.namespace, session.name, lambda _b, s: self._accepted(s, spec, generation)
            )
            if accepted is None or (accepted.get("metadata") or {}).get("deletionTimestamp"):
                # Gone or going (a fresh read): adopting children now would hand them to the garbage collector,
                # also those a `kubectl delete --cascade=orphan` meant to leave behind.
                return
            if spec.pool_ref and session.sandbox:
                # Adopted before: whatever an interrupted adoption left undone is done now (idempotent).
                await adoption.move_children(self.kube, session)
                if pool.ANNOTATION_SANDBOX not in (meta.get("annotations") or {}):
                    await adoption.annotate(self.kube, session)
            token = secrets.token_urlsafe(32)
            secret, claim, policy, pod = builders.build_children(session, self.settings, token)
            await self._ensure(secret, session, body)
            claim_obj = await self._ensure(claim, session, body)
            await self._ensure(policy, session, body)
            pod_obj = await self._ensure(pod, session, body)
            await self._observe(body, session, pod_obj, claim_obj)
        except KubeError as exc:
            raise temporary(exc, f"reconciling {session.namespace}/{session.name}") from exc

    @step
    async def _adopt(
        self, body: dict[str, Any], session: builders.SessionRef, pool_pods: list[dict[str, Any]] | None
    ) -> bool:
        """Take a Ready sandbox of spec.poolRef: its children move over while one status write makes the session
        Ready. False: none was taken."""
        spec = session.spec
        found = await adoption.adopt(self.kube, body, session, pool_pods)
        if isinstance(found, adoption.NotAdopted):
            await self._event(body, NORMAL, found.reason, found.message)
            return False
        generation = body["metadata"].get("generation")
        # A Ready Pod has its volume mounted: the claim's own object is not needed to say so.
        observed = self._observation(found.session, found.pod, None, generation)

        def mutate(_b: dict[str, Any], status: SessionStatus) -> SessionStatus:
            return observed(self._accepted(status, spec, generation))

        # Status on the session as kopf handed it over (no read first), while the children move.
        _, written = await asyncio.gather(
            adoption.move_children(self.kube, found.session),
            self.kube.update_status(session.namespace, session.name, mutate, body=body),
        )
        await adoption.annotate(self.kube, found.session)
        message = f"adopted sandbox {found.session.sandbox} from pool {spec.pool_ref}"
        await self._event(body, NORMAL, PoolReason.ADOPTED, message)
        await self._announce(status_before=body.get("status") or {}, written=written)
        return True

    def _accepted(self, status: SessionStatus, spec: SessionSpec, generation: int | None) -> SessionStatus:
        new = status.model_copy(deep=True)
        if new.phase in (None, Phase.FAILED) and new.pod_uid is None:
            new.phase = Phase.PENDING
            new.message = "creating the workspace, token and sandbox Pod"
        new.started_at = new.started_at or now()
        new.observed_generation = generation
        new.image = builders.effective_image(spec, self.settings)
        return new

    @step
    async def _observe(
        self,
        body: dict[str, Any],
        session: builders.SessionRef,
        pod: dict[str, Any] | None,
        claim: dict[str, Any] | None,
    ) -> None:
        generation = body["metadata"].get("generation")

        async def observed(_body: dict[str, Any], status: SessionStatus) -> SessionStatus:
            # The Pod as it is now, read after the session: a Pod event handled since `pod` was read (say, its
            # image cannot be pulled: Failed) wrote a newer status, which an older look must not undo.
            current = pod and await self.kube.get(PODS, session.namespace, pod["metadata"]["name"])
            return self._observation(session, current, claim, generation)(status)

        written = await self.kube.update_status(session.namespace, session.name, observed)
        await self._announce(status_before=body.get("status") or {}, written=written)

    def _observation(
        self,
        session: builders.SessionRef,
        pod: dict[str, Any] | None,
        claim: dict[str, Any] | None,
        generation: int | None,
    ) -> Callable[[SessionStatus], SessionStatus]:
        """The status change that what the Pod and claim look like now calls for."""
        pod_obs = st.observe_pod(pod)
        claim_obs = st.observe_claim(claim)

        def change(status: SessionStatus) -> SessionStatus:
            new = st.apply_observations(
                status,
                pod=pod_obs,
                claim=claim_obs,
                agent_port=self.settings.agent_port,
                now=now(),
                generation=generation,
                schedule_timeout=self.settings.schedule_timeout_seconds,
            )
            new.token_secret_name = api.token_secret_name(session.base)
            new.workspace_claim_name = api.workspace_claim_name(session.base)
            new.sandbox_name = session.sandbox or None
            return new

        return change

    async def _announce(self, *, status_before: dict[str, Any], written: dict[str, Any] | None) -> None:
        """One Event when the session becomes Ready or Failed."""
        if written is None:
            return
        before = status_before.get("phase")
        after = SessionStatus.model_validate(written.get("status") or {})
        if after.phase == before:
            return
        if after.phase == Phase.READY:
            await self._event(written, NORMAL, Reason.SANDBOX_READY, f"the sandbox agent is ready at {after.endpoint}")
        elif after.phase == Phase.FAILED:
            await self._event(written, WARNING, Reason.POD_FAILED, after.message or "the sandbox failed")

    # --- suspend / resume ------------------------------------------------------------------------------------

    @step
    async def _suspend(self, body: dict[str, Any], session: builders.SessionRef) -> None:
        """spec.suspend: the workspace claim and NetworkPolicy exist (also for a session created suspended), the
        sandbox stops."""
        await self._ensure(builders.build_workspace_claim(session, self.settings), session, body)
        await self._ensure(builders.build_network_policy(session, self.settings), session, body)
        await self._stop_sandbox(body, session)

    async def _stop_sandbox(self, body: dict[str, Any], session: builders.SessionRef) -> None:
        """Delete the sandbox Pod, its token Secret handed to it first (it goes with the Pod); status Suspended."""
        namespace, pod_name = session.namespace, api.sandbox_pod_name(session.base)
        pod = await self.kube.get(PODS, namespace, pod_name)
        if pod is not None and ownership(pod, session) in ("ours", "orphan"):
            secret_name = api.token_secret_name(session.base)
            secret = await self.kube.get(SECRETS, namespace, secret_name)
            mine = secret is not None and ownership(secret, session) in ("ours", "orphan")
            if mine and not builders.handed_to_pod(secret):
                handover = {"metadata": {"ownerReferences": [builders.pod_owner_reference(pod)]}}
                await self.kube.patch(SECRETS, namespace, secret_name, handover)
            if not pod["metadata"].get("deletionTimestamp"):
                await self.kube.delete(PODS, namespace, pod_name)
                pod = await self.kube.get(PODS, namespace, pod_name)
        obs = st.observe_pod(pod)
        claim = api.workspace_claim_name(session.base)
        generation = body["metadata"].get("generation")
        before: list[Phase | None] = []  # the phase as the write found it (Pod events race the update handler)

        def mutate(_b: dict[str, Any], status: SessionStatus) -> SessionStatus:
            before[:] = [status.phase]
            return st.mark_suspended(status, pod=obs, claim_name=claim, now=now(), generation=generation)

        written = await self.kube.update_status(namespace, session.name, mutate)
        if written is not None and before != [Phase.SUSPENDED]:
            message = f"stopped sandbox Pod {pod_name}; the workspace {claim} and the NetworkPolicy stay"
            await self._event(body, NORMAL, Reason.SUSPENDED, message)

    @step
    async def _resume(self, body: dict[str, Any], session: builders.SessionRef) -> None:
        """spec.suspend is false again: once the old Pod and its Secret are gone, the session is Pending again (the
        caller makes a new Secret and Pod). A Pod of the same name cannot be made while the old one still stops,
        and an old Secret taken over now would keep the old token."""
        namespace = session.namespace
        pod = await self.kube.get(PODS, namespace, api.sandbox_pod_name(session.base))
        secret = await self.kube.get(SECRETS, namespace, api.token_secret_name(session.base))
        if (pod is not None and pod["metadata"].get("deletionTimestamp")) or builders.handed_to_pod(secret):
            raise kopf.TemporaryError("waiting for the suspended sandbox's Pod to stop before starting anew", delay=0.5)
        generation = body["metadata"].get("generation")
        written = await self.kube.update_status(
            namespace, session.name, lambda _b, s: st.mark_resuming(s, now=now(), generation=generation)
        )
        if written is not None:
            await self._event(body, NORMAL, Reason.RESUMED, "resuming: a new sandbox Pod on the same workspace")

    # --- Pod and claim events ------------------------------------------------------------------------------

    @step
    async def sync_sandbox(self, namespace: str, session_name: str) -> None:
        """Level-triggered: look at the session's Pod now; replace it when it failed or vanished."""
        body = await self.kube.get(SESSIONS, namespace, session_name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return  # the session is going: its children go with it
        spec, _problem = validate(body)
        status = SessionStatus.model_validate(body.get("status") or {})
        if spec is None or status.phase == Phase.TERMINATING:
            return
        session = self._ref(body, spec)
        if spec.suspend:
            await self._stop_sandbox(body, session)  # nothing is recreated while suspended
            return
        if status.phase == Phase.SUSPENDED:
            return  # being resumed: the update handler makes the new Pod
        pod = await self.kube.get(PODS, namespace, api.sandbox_pod_name(session.base))
        obs = st.observe_pod(pod)
        if obs.state == st.PodState.FAILED:
            if status.restart_count >= self.settings.max_pod_restarts:
                await self._give_up(body, session, obs)
                return
            wait = self._backoff_left(status.restart_count, obs)
            if wait > 0:
                # Not yet: the expiry sweep looks at Starting sessions again and recreates the Pod when due.
                await self._waiting_to_restart(body, session, obs, wait)
                return
            await self._event(
                body, WARNING, Reason.POD_FAILED, f"sandbox Pod failed ({obs.reason}: {obs.message}); recreating it"
            )
            await self.kube.delete(PODS, namespace, api.sandbox_pod_name(session.base))
            pod = await self.kube.get(PODS, namespace, api.sandbox_pod_name(session.base))
            obs = st.observe_pod(pod)
        if obs.state == st.PodState.MISSING:
            if status.pod_uid is None and status.phase in (None, Phase.PENDING):
                return  # the create handler has not made the first Pod yet
            desired = builders.build_sandbox_pod(session, self.settings)
            pod, created = await self.kube.create(desired)
            if created:
                await self._count_restart(body, session, pod)
                return
        claim = await self.kube.get(CLAIMS, namespace, api.workspace_claim_name(session.base))
        await self._observe(body, session, pod, claim)

    def _backoff_left(self, restarts: int, obs: st.PodObservation) -> float:
        """Seconds until a failed Pod may be replaced: a crash loop must not hammer the node or the storage."""
        if obs.since is None:
            return 0.0
        delay = min(self.settings.restart_backoff_seconds * 2.0**restarts, self.settings.restart_backoff_max_seconds)
        return max(0.0, float((obs.since - now()).total_seconds()) + delay)

    async def _record_pod(
        self,
        body: dict[str, Any],
        session: builders.SessionRef,
        obs: st.PodObservation,
        message: Callable[[SessionStatus], str],
        *,
        gave_up: bool = False,
    ) -> dict[str, Any] | None:
        """Write what the Pod looks like now, with a message of the moment's own (given the new status)."""
        generation = body["metadata"].get("generation")

        def mutate(_b: dict[str, Any], status: SessionStatus) -> SessionStatus:
            new = st.apply_observations(
                status,
                pod=obs,
                claim=None,
                agent_port=self.settings.agent_port,
                now=now(),
                generation=generation,
                gave_up=gave_up,
            )
            new.message = message(new)
            return new

        return await self.kube.update_status(session.namespace, session.name, mutate)

    async def _waiting_to_restart(
        self, body: dict[str, Any], session: builders.SessionRef, obs: st.PodObservation, wait: float
    ) -> None:
        await self._record_pod(
            body,
            session,
            obs,
            lambda _new: f"the sandbox Pod failed ({obs.reason}: {obs.message}); recreating it in {wait:.0f} s",
        )

    async def _count_restart(self, body: dict[str, Any], session: builders.SessionRef, pod: dict[str, Any]) -> None:
        written = await self._record_pod(
            body,
            session,
            st.observe_pod(pod),
            lambda new: f"recreated the sandbox Pod on the same workspace (restart {new.restart_count})",
        )
        restarts = SessionStatus.model_validate((written or {}).get("status") or {}).restart_count
        await self._event(
            body, NORMAL, Reason.POD_RECREATED, f"recreated sandbox Pod {pod['metadata']['name']} (restart {restarts})"
        )

    async def _give_up(self, body: dict[str, Any], session: builders.SessionRef, obs: st.PodObservation) -> None:
        limit = self.settings.max_pod_restarts
        written = await self._record_pod(
            body,
            session,
            obs,
            lambda _new: f"{obs.reason}: {obs.message} (gave up after {limit} restarts)",
            gave_up=True,
        )
        if written is not None and (body.get("status") or {}).get("phase") != Phase.FAILED:
            await self._event(
                body, WARNING, Reason.RESTART_LIMIT, f"sandbox Pod failed {limit + 1} times ({obs.reason}); giving up"
            )

    @step
    async def sync_claim(self, namespace: str, session_name: str, claim: dict[str, Any] | None) -> None:
        """Keep the WorkspaceBound condition in step with the claim."""
        obs = st.observe_claim(claim)

        def mutate(body: dict[str, Any], status: SessionStatus) -> SessionStatus:
            if status.phase in (None, Phase.TERMINATING):
                return status
            new = status.model_copy(deep=True)
            ready = status.phase == Phase.READY
            if ready and obs.status != api.ConditionStatus.TRUE:
                return status  # a Ready Pod has its volume; a lagging claim event must not say otherwise
            new.conditions = st.set_condition(
                new.conditions,
                api.ConditionType.WORKSPACE_BOUND,
                obs.status,
                obs.reason,
                obs.message,
                now=now(),
                generation=body["metadata"].get("generation"),
            )
            return new

        await self.kube.update_status(namespace, session_name, mutate)

    # --- spec updates ---------------------------------------------------------------------------------------

    @step
    async def spec_changed(self, body: dict[str, Any], old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        spec, problem = validate(body)
        if spec is None:
            await self._event(body, WARNING, Reason.INVALID_SPEC, f"the change was not applied: {problem}")
            raise kopf.PermanentError(problem)
        session = self._ref(body, spec)
        old, new = old or {}, new or {}
        frozen = [f"spec.{f}" for f in api.IMMUTABLE_SPEC_FIELDS if old.get(f) != new.get(f)]
        frozen += [
            f"spec.workspace.{f}"
            for f in api.IMMUTABLE_WORKSPACE_FIELDS
            if (old.get("workspace") or {}).get(f) != (new.get("workspace") or {}).get(f)
        ]
        if frozen:
            await self._event(
                body,
                WARNING,
                Reason.IMMUTABLE_FIELD,
                f"{', '.join(frozen)} cannot change on a running session; the sandbox keeps its original settings",
            )
        try:
            claim = await self.kube.get(CLAIMS, session.namespace, api.workspace_claim_name(session.base))
            if claim is not None and ownership(claim, session) in ("ours", "orphan"):
                refs = with_owner(claim, session, owned=not spec.workspace.retain)
                if refs is not None:
                    await self.kube.patch(
                        CLAIMS,
                        session.namespace,
                        claim["metadata"]["name"],
                        {"metadata": {"ownerReferences": refs or None}},
                    )
            generation = body["metadata"].get("generation")

            def mutate(b: dict[str, Any], status: SessionStatus) -> SessionStatus:
                updated = status.model_copy(deep=True)
                updated.observed_generation = generation
                updated.expires_at = self.expiry(b, status).at
                return updated

            await self.kube.update_status(session.namespace, session.name, mutate)
        except KubeError as exc:
            raise temporary(exc, f"applying the change to {session.namespace}/{session.name}") from exc
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k != "suspend")
        if changed:
            await self._event(body, NORMAL, Reason.UPDATED, f"applied the change of spec.{', spec.'.join(changed)}")
        if bool(old.get("suspend")) != bool(new.get("suspend")):
            await self.reconcile(body)

    # --- expiry ----------------------------------------------------------------------------------------------

    def expiry(self, body: dict[str, Any], status: SessionStatus) -> st.Expiry:
        spec = body.get("spec") or {}
        created = st.parse_time(body["metadata"].get("creationTimestamp")) or now()
        ttl = spec.get("ttlSeconds") or self.settings.default_ttl_seconds
        idle = spec.get("idleTimeoutSeconds") or self.settings.default_idle_timeout_seconds
        return st.compute_expiry(ttl, idle, status, created)

    @step
    async def check_expiry(self, namespace: str, name: str, at: datetime) -> None:
        """Keep status.expiresAt current, and delete the session once it is due (re-checked on fresh data)."""
        body = await self.kube.get(SESSIONS, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        status = SessionStatus.model_validate(body.get("status") or {})
        expiry = self.expiry(body, status)
        if expiry.due(at):
            await self.expire(body, expiry)
            return
        await self._suspend_if_idle(body, status, at)
        if status.expires_at != expiry.at:

            def mutate(b: dict[str, Any], s: SessionStatus) -> SessionStatus:
                updated = s.model_copy(deep=True)
                updated.expires_at = self.expiry(b, s).at
                return updated

            await self.kube.update_status(namespace, name, mutate)

    async def _suspend_if_idle(self, body: dict[str, Any], status: SessionStatus, at: datetime) -> None:
        """A Ready session idle for suspendAfterSeconds gets spec.suspend (the update handler then stops it)."""
        spec = body.get("spec") or {}
        after = spec.get("suspendAfterSeconds") or self.settings.default_suspend_after_seconds
        created = st.parse_time(body["metadata"].get("creationTimestamp")) or at
        if spec.get("suspend") or not st.suspend_due(after, status, created, at):
            return
        meta = body["metadata"]
        # Guarded by resourceVersion: a session that changed since it was read (a tool call) is judged again.
        patch = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "spec": {"suspend": True}}
        try:
            patched = await self.kube.patch(SESSIONS, meta["namespace"], meta["name"], patch)
        except KubeError as exc:
            if exc.status == 409:
                return
            raise
        if patched is not None:
            log.info("suspending %s/%s: no tool call for %ss", meta["namespace"], meta["name"], after)
            await self._event(body, NORMAL, Reason.IDLE_SUSPEND, f"no tool call for {after}s: suspending the session")

    @step
    async def expire(self, body: dict[str, Any], expiry: st.Expiry) -> None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        spec, _ = validate(body)
        session = self._ref(body, spec) if spec is not None else None
        claim_name = api.workspace_claim_name(session.base if session is not None else name)
        claim = await self.kube.get(CLAIMS, namespace, claim_name)
        if (
            session is not None
            and spec is not None
            and claim is not None
            and ownership(claim, session) in ("ours", "orphan")
        ):
            # Settled first, whatever the update handler has done so far: a retained claim loses its
            # ownerReference (garbage collection cannot take it), any other gains one (it goes too).
            refs = with_owner(claim, session, owned=not spec.workspace.retain)
            if refs is not None:
                patch = {"metadata": {"ownerReferences": refs or None}}
                await self.kube.patch(CLAIMS, namespace, claim_name, patch)
        message = f"deleting the session: {expiry.message}"

        def mutate(_b: dict[str, Any], status: SessionStatus) -> SessionStatus:
            new = status.model_copy(deep=True)
            new.phase, new.message, new.expires_at = Phase.TERMINATING, message, expiry.at
            return new

        await self.kube.update_status(namespace, name, mutate)
        await self._event(body, NORMAL, expiry.reason or Reason.EXPIRED, message)
        # Foreground: the session stays (Terminating) until its children are gone.
        await self.kube.delete(SESSIONS, namespace, name, propagation="Foreground")
        log.info("expired %s/%s: %s", namespace, name, expiry.message)
