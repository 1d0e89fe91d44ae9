"""A small dict-in, dict-out Kubernetes client over kubernetes_asyncio's ApiClient.

The operator works on plain manifest dicts (what the builders return), so it uses the generic
`call_api` rather than the typed model classes. Idempotence lives here: a create that meets 409 returns the
existing object, a delete that meets 404 is a success.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import kopf
from kubernetes_asyncio import client, config

from codegen_mcp.api import pool
from codegen_mcp.api import session as api
from codegen_mcp.api.pool import PoolStatus
from codegen_mcp.api.session import SessionStatus
from codegen_mcp.operator.settings import OperatorSettings

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STATUS_CONFLICT_RETRIES = 8
StatusT = TypeVar("StatusT", SessionStatus, PoolStatus)


@dataclass(frozen=True)
class Kind:
    api_version: str
    plural: str
    kind: str

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        path = f"{base}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


SECRETS = Kind("v1", "secrets", "Secret")
CLAIMS = Kind("v1", "persistentvolumeclaims", "PersistentVolumeClaim")
PODS = Kind("v1", "pods", "Pod")
EVENTS = Kind("v1", "events", "Event")
NETWORK_POLICIES = Kind("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy")
SESSIONS = Kind(api.API_VERSION, api.PLURAL, api.KIND)
POOLS = Kind(api.API_VERSION, pool.POOL_PLURAL, pool.POOL_KIND)
KINDS_BY_NAME = {k.kind: k for k in (SECRETS, CLAIMS, PODS, EVENTS, NETWORK_POLICIES, SESSIONS, POOLS)}
# A pooled sandbox's children, in the order a session adopts them: the Pod (the lock) first.
SANDBOX_KINDS = (PODS, SECRETS, CLAIMS, NETWORK_POLICIES)


class KubeError(Exception):
    """An API answer the caller did not expect; `status` is the HTTP status (0: no answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.status in (0, 409, 429) or self.status >= 500


def _error(exc: Exception) -> KubeError:
    if isinstance(exc, client.ApiException):
        return KubeError(int(exc.status or 0), f"{exc.status} {exc.reason}: {str(exc.body)[:500]}")
    return KubeError(0, f"{type(exc).__name__}: {exc}")


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class KubeClient:
    def __init__(self, api_client: client.ApiClient, *, timeout: float = 30.0) -> None:
        self._api = api_client
        self._timeout = timeout

    @classmethod
    async def connect(cls, settings: OperatorSettings) -> KubeClient:
        """In-cluster credentials, else the kubeconfig (settings.kubeconfig or the usual places)."""
        configuration = client.Configuration()
        if settings.kubeconfig is not None:
            await config.load_kube_config(config_file=str(settings.kubeconfig), client_configuration=configuration)
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except config.ConfigException:
                await config.load_kube_config(client_configuration=configuration)
        return cls(client.ApiClient(configuration), timeout=settings.request_timeout_seconds)

    async def close(self) -> None:
        await self._api.close()

    async def connection_info(self) -> kopf.ConnectionInfo:
        """The same credentials, for kopf's own API calls (one source of truth)."""
        cfg = self._api.configuration
        header = await cfg.get_api_key_with_prefix("BearerToken") or await cfg.get_api_key_with_prefix("authorization")
        scheme, token = None, None
        if header:
            parts = str(header).split(" ", 1)
            scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
        return kopf.ConnectionInfo(
            server=cfg.host or "",
            ca_path=cfg.ssl_ca_cert,
            insecure=not cfg.verify_ssl,
            username=cfg.username or None,
            password=cfg.password or None,
            scheme=scheme,
            token=token,
            certificate_path=cfg.cert_file,
            private_key_path=cfg.key_file,
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        try:
            result = await self._api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                response_types_map={200: "object", 201: "object", 202: "object"},
                _return_http_data_only=True,
                _request_timeout=self._timeout,
            )
        except client.ApiException:
            raise
        except Exception as exc:  # connection errors, timeouts: one family for the callers
            raise _error(exc) from exc
        return dict(result or {})

    async def serves(self, api_version: str, plural: str) -> bool:
        """Whether the API server serves this resource (discovery, which every authenticated user may read)."""
        try:
            found = await self._call("GET", f"/apis/{api_version}")
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise _error(exc) from exc
        return any(r.get("name") == plural for r in found.get("resources", []))

    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", kind.path(namespace, name))
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise _error(exc) from exc

    async def list(self, kind: Kind, namespace: str, *, label_selector: str | None = None) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        try:
            result = await self._call("GET", kind.path(namespace), query=query)
        except client.ApiException as exc:
            raise _error(exc) from exc
        return list(result.get("items", []))

    async def create(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create, or return the object already there: (object, created)."""
        kind = KINDS_BY_NAME[body["kind"]]
        meta = body["metadata"]
        try:
            return await self._call("POST", kind.path(meta["namespace"]), body=body), True
        except client.ApiException as exc:
            if exc.status != 409:
                raise _error(exc) from exc
        existing = await self.get(kind, meta["namespace"], meta["name"])
        if existing is None:  # deleted between our create and get: let the caller retry
            raise KubeError(409, f"{body['kind']} {meta['name']} exists but could not be read")
        return existing, False

    async def patch(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        patch: Any,
        *,
        subresource: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> dict[str, Any] | None:
        """Patch; None when the object is gone."""
        try:
            return await self._call(
                "PATCH", kind.path(namespace, name, subresource), body=patch, content_type=content_type
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise _error(exc) from exc

    async def delete(self, kind: Kind, namespace: str, name: str, *, propagation: str = "Background") -> bool:
        """Delete; False when it was already gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        try:
            await self._call("DELETE", kind.path(namespace, name), body=body)
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise _error(exc) from exc
        return True

    async def update_status(
        self,
        namespace: str,
        name: str,
        mutate: Callable[[dict[str, Any], SessionStatus], SessionStatus | Awaitable[SessionStatus]],
        *,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Read-modify-write of a session's status, guarded by resourceVersion (retried on 409).

        `mutate(body, status)` returns the new status; nothing is written when it returns an equal one.
        `body`: the session as just returned by the API server, to write on without reading it first.
        Returns the session as written (or as read, when unchanged); None when the session is gone.
        """
        return await self._update_status(SESSIONS, SessionStatus, namespace, name, mutate, body)

    async def update_pool_status(
        self,
        namespace: str,
        name: str,
        mutate: Callable[[dict[str, Any], PoolStatus], PoolStatus | Awaitable[PoolStatus]],
    ) -> dict[str, Any] | None:
        """`update_status` for a CodegenSandboxPool."""
        return await self._update_status(POOLS, PoolStatus, namespace, name, mutate)

    async def _update_status(
        self,
        kind: Kind,
        model: type[StatusT],
        namespace: str,
        name: str,
        mutate: Callable[[dict[str, Any], StatusT], StatusT | Awaitable[StatusT]],
        known: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        for _ in range(STATUS_CONFLICT_RETRIES):
            body, known = known or await self.get(kind, namespace, name), None
            if body is None:
                return None
            old = model.model_validate(body.get("status") or {})
            result = mutate(body, old)
            new = result if isinstance(result, model) else await result  # type: ignore[misc]
            if new == old:
                return body
            patch = {"metadata": {"resourceVersion": body["metadata"].get("resourceVersion")}, "status": new.to_patch()}
            try:
                written = await self._call(
                    "PATCH", kind.path(namespace, name, "status"), body=patch, content_type=MERGE_PATCH
                )
            except client.ApiException as exc:
                if exc.status == 409:
                    continue  # someone else wrote first: read again and redo
                if exc.status == 404:
                    return None
                raise _error(exc) from exc
            return written
        raise KubeError(409, f"status of {namespace}/{name} kept changing under us; will retry")

    async def post_event(self, session: dict[str, Any], *, type_: str, reason: str, message: str) -> None:
        """A Kubernetes Event on a session or a pool (best effort: a lost Event must never fail a reconcile)."""
        meta = session.get("metadata", {})
        kind = str(session.get("kind") or api.KIND)
        owner_label = pool.LABEL_POOL if kind == pool.POOL_KIND else api.LABEL_SESSION
        stamp = now().isoformat().replace("+00:00", "Z")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name')}.{secrets.token_hex(8)}",
                "namespace": meta.get("namespace"),
                "labels": {api.LABEL_MANAGED_BY: api.MANAGED_BY, owner_label: str(meta.get("name"))},
            },
            "involvedObject": {
                "apiVersion": api.API_VERSION,
                "kind": kind,
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "codegen-mcp-operator"},
            "reportingComponent": "codegen-mcp.io/operator",
            "reportingInstance": "codegen-mcp-operator",
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self._call("POST", EVENTS.path(str(meta.get("namespace"))), body=event)
        except Exception as exc:  # noqa: BLE001 - Events are advisory; log and go on
            log.warning("could not post Event %s on %s: %s", reason, meta.get("name"), exc)
