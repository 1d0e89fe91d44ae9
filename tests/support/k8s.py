"""A Kubernetes API stand-in for tests: kmock's KubernetesEmulator plus the API-server behaviours it lacks.

`kmock.KubernetesEmulator` serves discovery, create/get/list/watch/patch/delete and finalizers over real
HTTP, but keeps objects as bare JSON. `ClusterEmulator` adds, each as a small clearly named step:

- metadata the server assigns: namespace from the URL, `generateName`, `uid`, `creationTimestamp`,
  `generation` (bumped when anything but metadata/status changes), a counting `resourceVersion`;
- optimistic concurrency: a PATCH or PUT carrying `metadata.resourceVersion` that is not current gets 409;
- the status subresource: for resources declared with it, writes to the main resource leave `status` alone
  and writes to `/status` change nothing but `status`;
- PUT (replace), which kmock answers with 404;
- `labelSelector` (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`) and `fieldSelector` (`metadata.name`,
  `metadata.namespace`) on list and watch;
- ownerReference garbage collection, with the Background and Foreground propagation policies
  (Orphan leaves dependents alone), honouring the dependents' own finalizers.

Still missing (covered by unit tests instead): schema validation, defaulting and CEL rules of CRDs,
admission, RBAC, watch bookmarks and `resourceVersion` resumption.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import json
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import dicts, enums, parsing, rendering  # noqa: PLC2701 - the emulator's own helpers

from codegen_mcp.api import pool
from codegen_mcp.api import session as api

# The real API server parses boolean query parameters like Go's strconv.ParseBool ("true", "True", "1", …);
# kmock 0.8 recognises a watch only by `watch=true`, and kubernetes_asyncio sends `watch=True`.
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_kmock_guess_k8s = parsing.guess_k8s


def _guess_k8s_accepting_go_booleans(k8s: Any, method: Any, query: dict[str, str]) -> Any:
    if query.get("watch") in _GO_TRUE:
        query = {**query, "watch": "true"}
    return _kmock_guess_k8s(k8s, method, query)


parsing.guess_k8s = _guess_k8s_accepting_go_booleans


def _resource(group: str, version: str, plural: str) -> kmock.resource:
    return kmock.resource(group, version, plural)


# Every resource the operator and the coordinator touch, with the verbs kopf needs to see in discovery.
VERBS = {"list", "watch", "get", "create", "patch", "update", "delete"}
RESOURCES: dict[tuple[str, str, str], kmock.ResourceInfo] = {
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions"): kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs=VERBS
    ),
    ("", "v1", "namespaces"): kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs=VERBS),
    ("", "v1", "pods"): kmock.ResourceInfo(kind="Pod", namespaced=True, verbs=VERBS, subresources={"status"}),
    ("", "v1", "secrets"): kmock.ResourceInfo(kind="Secret", namespaced=True, verbs=VERBS),
    ("", "v1", "persistentvolumeclaims"): kmock.ResourceInfo(
        kind="PersistentVolumeClaim", namespaced=True, verbs=VERBS, subresources={"status"}
    ),
    ("", "v1", "events"): kmock.ResourceInfo(kind="Event", namespaced=True, verbs=VERBS),
    ("networking.k8s.io", "v1", "networkpolicies"): kmock.ResourceInfo(
        kind="NetworkPolicy", namespaced=True, verbs=VERBS
    ),
    (api.GROUP, api.VERSION, api.PLURAL): kmock.ResourceInfo(
        kind=api.KIND,
        namespaced=True,
        verbs=VERBS,
        subresources={"status"},
        shortnames=set(api.SHORT_NAMES),
        singular=api.SINGULAR,
    ),
    (api.GROUP, api.VERSION, pool.POOL_PLURAL): kmock.ResourceInfo(
        kind=pool.POOL_KIND,
        namespaced=True,
        verbs=VERBS,
        subresources={"status"},
        shortnames=set(pool.POOL_SHORT_NAMES),
        singular=pool.POOL_SINGULAR,
    ),
    ("kopf.dev", "v1", "kopfpeerings"): kmock.ResourceInfo(kind="KopfPeering", namespaced=True, verbs=VERBS),
    ("kopf.dev", "v1", "clusterkopfpeerings"): kmock.ResourceInfo(
        kind="ClusterKopfPeering", namespaced=False, verbs=VERBS
    ),
}

_MUTATING = (enums.action.CREATE, enums.action.UPDATE, enums.action.DELETE)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _conflict(message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=409, reason="Conflict", message=message, details={})


def _invalid(message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=422, reason="Invalid", message=message, details={})


# --- selectors ---------------------------------------------------------------------------------------------

_SET_RE = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def matches_label_selector(labels: dict[str, str], selector: str | None) -> bool:
    """Kubernetes label-selector semantics for the forms clients send."""
    if not selector:
        return True
    for term in _split_selector(selector):
        if m := _SET_RE.match(term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            present = key in labels and labels[key] in values
            if (op == "in" and not present) or (op == "notin" and present):
                return False
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def matches_field_selector(obj: dict[str, Any], selector: str | None) -> bool:
    if not selector:
        return True
    meta = obj.get("metadata", {})
    fields = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace")}
    for term in _split_selector(selector):
        negate = "!=" in term
        key, value = (s.strip() for s in term.replace("!=", "=").replace("==", "=").split("=", 1))
        if key not in fields:
            raise _invalid(f"field selector {key!r} is not supported by the emulator")
        if (fields[key] == value) == negate:
            return False
    return True


def _selected(request: rendering.Request, obj: dict[str, Any]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return matches_label_selector(labels, request.params.get("labelSelector")) and matches_field_selector(
        obj, request.params.get("fieldSelector")
    )


# --- the emulator ------------------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with server-assigned metadata, conflicts, status subresource, selectors and GC."""

    _write_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    _versions: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for (group, version, plural), info in RESOURCES.items():
            self.resources[_resource(group, version, plural)] = attrs.evolve(info)

    # --- helpers available to tests -----------------------------------------------------------------------

    def read(self, group: str, version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object (a copy), or None: for assertions, without an HTTP request."""
        key = (_resource(group, version, plural), namespace, name)
        obj = self._objects._objects.get(key)
        if obj is None or obj.deleted:
            return None
        return copy.deepcopy(obj.raw)

    def list_objects(self, group: str, version: str, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        res = _resource(group, version, plural)
        return [
            copy.deepcopy(obj.raw)
            for (r, ns, _), obj in self._objects.items()
            if r == res and not obj.deleted and (namespace is None or ns == namespace)
        ]

    # --- request handling ----------------------------------------------------------------------------------

    def _has_status(self, resource: kmock.resource | None) -> bool:
        return resource is not None and resource in self.resources and "status" in self.resources[resource].subresources

    def _stored(self, request: rendering.Request) -> Any:
        key = (request.resource, request.namespace, request.name)
        obj = self._objects._objects.get(key)  # type: ignore[arg-type]
        return None if obj is None or obj.deleted else obj

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None:
            return await super()._handle(request)
        if request.method == enums.method.PUT and request.name is not None:
            async with self._write_lock:
                return await self._replace(request)
        if request.action not in _MUTATING:
            return await super()._handle(request)
        async with self._write_lock:
            if request.action == enums.action.CREATE:
                self._prepare_create(request)
            elif request.action == enums.action.UPDATE:
                self._prepare_patch(request)
            elif request.action == enums.action.DELETE and self._stored(request) is not None:
                policy = (request.data or {}).get("propagationPolicy") if isinstance(request.data, dict) else None
                if policy == "Foreground":
                    await self._collect(self._stored(request).raw["metadata"]["uid"])
            before = self._stored(request)
            uid = before.raw["metadata"].get("uid") if before is not None else None
            response = await super()._handle(request)
            if uid is not None and self._stored(request) is None:
                policy = (request.data or {}).get("propagationPolicy") if isinstance(request.data, dict) else None
                if policy != "Orphan":
                    await self._collect(uid)
            return response

    def _prepare_create(self, request: rendering.Request) -> None:
        body = request.data
        if not isinstance(body, dict):
            raise _invalid("the body of a create must be an object")
        meta = body.setdefault("metadata", {})
        # Not .get(): kmock's ResourcesArray creates missing entries on lookup.
        info = self.resources[request.resource] if request.resource in self.resources else None  # noqa: SIM401
        if info is not None and info.namespaced and request.namespace:
            if meta.get("namespace") not in (None, request.namespace):
                raise kmock.KubernetesError(status=400, reason="BadRequest", message="namespace does not match the URL")
            meta["namespace"] = request.namespace
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise _invalid("metadata.name or metadata.generateName is required")
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        meta["resourceVersion"] = str(next(self._versions))
        meta.pop("deletionTimestamp", None)
        if self._has_status(request.resource):
            body.pop("status", None)  # the status subresource: create never sets it

    def _prepare_patch(self, request: rendering.Request) -> None:
        stored = self._stored(request)
        if stored is None:
            return  # the emulator answers 404
        current = stored.raw
        patch = request.data
        status_only = request.subresource == "status"
        if isinstance(patch, dict):
            expected = (patch.get("metadata") or {}).get("resourceVersion")
            if expected is not None and str(expected) != current["metadata"]["resourceVersion"]:
                raise _conflict(
                    f"the object has been modified; please apply your changes to the latest version "
                    f"(resourceVersion {expected} is not {current['metadata']['resourceVersion']})"
                )
            if self._has_status(request.resource):
                if status_only:
                    for key in list(patch):
                        if key != "status":
                            del patch[key]
                else:
                    patch.pop("status", None)
        elif isinstance(patch, list):
            if self._has_status(request.resource):
                patch[:] = [op for op in patch if op.get("path", "").startswith("/status") == status_only]
        else:
            raise _invalid("unsupported patch body")
        after = dicts.patch_dict(copy.deepcopy(current), patch)
        bump = {"resourceVersion": str(next(self._versions))}
        if _content(after) != _content(current):
            bump["generation"] = int(current["metadata"].get("generation", 1)) + 1
        if isinstance(patch, dict):
            patch.setdefault("metadata", {}).update(bump)
            patch["metadata"] = {k: v for k, v in patch["metadata"].items() if k != "resourceVersion"} | bump
        else:
            patch += [{"op": "add", "path": f"/metadata/{k}", "value": v} for k, v in bump.items()]

    async def _replace(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        async with self._lock:
            stored = self._stored(request)
            if stored is None:
                raise kmock.KubernetesObjectNotFoundError()
            current = stored.raw
            new = request.data
            if not isinstance(new, dict):
                raise _invalid("the body of a replace must be an object")
            expected = (new.get("metadata") or {}).get("resourceVersion")
            if expected is not None and str(expected) != current["metadata"]["resourceVersion"]:
                raise _conflict("the object has been modified; please apply your changes to the latest version")
            if self._has_status(request.resource):
                if request.subresource == "status":
                    new = {**copy.deepcopy(current), "status": new.get("status")}
                else:
                    new = {**new, "status": copy.deepcopy(current.get("status"))}
            meta = new.setdefault("metadata", {})
            for key in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp"):
                if key in current["metadata"]:
                    meta[key] = current["metadata"][key]
            meta["generation"] = current["metadata"].get("generation", 1) + (_content(new) != _content(current))
            meta["resourceVersion"] = str(next(self._versions))
            stored.create(new)  # a new version of the same object
            raw = stored.raw
            await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
        return aiohttp.web.json_response(raw)

    async def _collect(self, owner_uid: str) -> None:
        """Garbage collection: dependents whose owners are all gone are deleted (recursively)."""
        for key, obj in list(self._objects.items()):
            if obj.deleted:
                continue
            raw = obj.raw
            refs = raw.get("metadata", {}).get("ownerReferences") or []
            if not any(r.get("uid") == owner_uid for r in refs):
                continue
            remaining = [r for r in refs if r.get("uid") != owner_uid and self._alive(r.get("uid"))]
            resource = key[0]
            async with self._lock:
                if remaining:
                    obj.patch(
                        {"metadata": {"ownerReferences": remaining, "resourceVersion": str(next(self._versions))}}
                    )
                    await self._buses[resource].put({"type": "MODIFIED", "object": obj.raw})
                    continue
                if raw["metadata"].get("finalizers"):
                    if not raw["metadata"].get("deletionTimestamp"):
                        obj.patch(
                            {"metadata": {"deletionTimestamp": _now(), "resourceVersion": str(next(self._versions))}}
                        )
                        await self._buses[resource].put({"type": "MODIFIED", "object": obj.raw})
                    continue
                dependent_uid = raw["metadata"].get("uid")
                obj.delete()
                await self._buses[resource].put({"type": "DELETED", "object": raw})
            if dependent_uid:
                await self._collect(dependent_uid)

    def _alive(self, uid: str | None) -> bool:
        return any(not o.deleted and o.raw.get("metadata", {}).get("uid") == uid for o in self._objects.values())

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        result: Any = await super()._serve_list(request)
        result["items"] = [obj for obj in result["items"] if _selected(request, obj)]
        result["metadata"] = {"resourceVersion": str(next(self._versions))}
        return result  # type: ignore[no-any-return]

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        async for event in super()._serve_watch(request):
            if (
                isinstance(event, dict)
                and isinstance(event.get("object"), dict)
                and not _selected(request, event["object"])
            ):
                continue
            yield event


def _content(obj: dict[str, Any]) -> str:
    """What `generation` counts: everything but metadata and status."""
    return json.dumps({k: v for k, v in obj.items() if k not in ("metadata", "status")}, sort_keys=True)


def kubeconfig(server_url: str) -> dict[str, Any]:
    """A kubeconfig that points a client (kopf, kubernetes_asyncio) at the emulator."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": server_url.rstrip("/")}}],
        "users": [{"name": "tester", "user": {"token": "emulator-token"}}],
        "contexts": [
            {"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": "default"}}
        ],
        "current-context": "emulator",
    }
