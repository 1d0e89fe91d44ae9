"""The test-facing surface of `ClusterEmulator`, served by a real API server (`ControlPlane`).

Scenario tests are written once against this surface (`url`, aiohttp-style `get/post/patch/put/delete` on API
paths, `read`/`list_objects` for assertions) and run on both the emulator and the real server. Reads here are
plain blocking HTTPS GETs (a few milliseconds on loopback): assertions stay one line, and the real server is a
separate process, so blocking the test's loop for that long starves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from codegen_mcp.api import session as api
from codegen_mcp.api.pool import LABEL_POOL, POOL_PLURAL
from tests.support.control_plane import ControlPlane
from tests.support.operator import SSL_CLOSE_GRACE

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "codegensession.yaml"
POOL_CRD_FILE = CRD_FILE.with_name("codegensandboxpool.yaml")
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
STORAGE_CLASS = "harness-hostpath"


def api_path(group: str, version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if namespace is not None:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    return f"{base}/{name}" if name else base


class RealCluster:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self._ssl: ssl.SSLContext = plane.ssl_context()
        self._http: aiohttp.ClientSession | None = None
        self.namespace: str | None = None  # the namespace a test module works in (`module_namespace`), if any

    async def __aenter__(self) -> RealCluster:
        self._http = aiohttp.ClientSession(
            base_url=self.plane.url,
            connector=aiohttp.TCPConnector(ssl=self._ssl),
            timeout=aiohttp.ClientTimeout(total=30),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()
            await asyncio.sleep(SSL_CLOSE_GRACE)  # TLS transports close after the session (aio-libs/aiohttp#1925)

    @property
    def url(self) -> str:
        return self.plane.url

    @property
    def ssl(self) -> ssl.SSLContext:
        return self._ssl

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None, "use RealCluster as an async context manager"
        return self._http

    # aiohttp-style requests on API paths, like the emulator's own client methods.
    def get(self, path: str, **kwargs: Any) -> Any:
        return self.http.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.http.post(path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.http.put(path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.http.patch(path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.http.delete(path, **kwargs)

    # --- synchronous reads for assertions ---

    def request(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Any:
        """One blocking request; None for 404, the decoded JSON otherwise."""
        code, data = self.call(method, path + (f"?{urllib.parse.urlencode(query)}" if query else ""), body)
        if code == 404:
            return None
        if code >= 400:
            raise AssertionError(f"{method} {path}: {code} {data.get('message', data)}")
        return data

    def call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, dict[str, Any]]:
        """One blocking request: (HTTP status, decoded JSON body — the object, or the server's Status)."""
        code, raw = self.plane.call(method, path, body, content_type=content_type)
        try:
            return code, dict(json.loads(raw)) if raw else {}
        except ValueError:  # a plain-text answer, e.g. "404 page not found" for an unknown API group
            return code, {"message": raw.decode(errors="replace")}

    def read(self, group: str, version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.request("GET", api_path(group, version, plural, namespace, name))
        # An object on its way out (finalizers or a Pod's grace period) no longer exists for the tests.
        if obj is None or obj.get("metadata", {}).get("deletionTimestamp"):
            return None
        return dict(obj)

    def list_objects(self, group: str, version: str, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        found = self.request("GET", api_path(group, version, plural, namespace)) or {"items": []}
        return [i for i in found["items"] if not i.get("metadata", {}).get("deletionTimestamp")]


def apply_crd_file(cluster: RealCluster, path: Path = CRD_FILE) -> dict[str, Any]:
    """Create or replace a CRD from its file and wait until the server says it is Established."""
    crd = yaml.safe_load(path.read_text())
    name = crd["metadata"]["name"]
    existing = cluster.request("GET", f"{CRDS}/{name}")
    if existing is None:
        cluster.request("POST", CRDS, crd)
    elif existing["spec"] != crd["spec"]:
        crd["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        cluster.request("PUT", f"{CRDS}/{name}", crd)
    deadline = time.monotonic() + 30
    while True:
        got = cluster.request("GET", f"{CRDS}/{name}")
        conditions = {c["type"]: c["status"] for c in (got.get("status") or {}).get("conditions") or []}
        if conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True":
            return dict(got)
        if time.monotonic() > deadline:
            raise AssertionError(f"the CRD {name} was not Established within 30 s: {got.get('status')}")
        time.sleep(0.1)


@contextlib.contextmanager
def module_namespace(plane: ControlPlane, prefix: str) -> Iterator[RealCluster]:
    """The admin's `RealCluster` with the CRD applied and a fresh namespace in `.namespace`, deleted afterwards."""
    cluster = RealCluster(plane)
    apply_crd_file(cluster)
    cluster.namespace = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cluster.request("POST", "/api/v1/namespaces", {"metadata": {"name": cluster.namespace}})
    try:
        yield cluster
    finally:
        cluster.request("DELETE", f"/api/v1/namespaces/{cluster.namespace}")


def prepare_for_sessions(cluster: RealCluster) -> None:
    """The CRDs, and a default StorageClass served by the controller-manager's hostPath provisioner."""
    apply_crd_file(cluster)
    apply_crd_file(cluster, POOL_CRD_FILE)
    classes = "/apis/storage.k8s.io/v1/storageclasses"
    if cluster.request("GET", f"{classes}/{STORAGE_CLASS}") is None:
        cluster.request("POST", classes, {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "kubernetes.io/host-path",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        })  # fmt: skip


async def drain_namespace(cluster: RealCluster, namespace: str, timeout: float = 60.0) -> None:
    """Delete every session of a test and wait until their children are gone, so the next test starts clean."""
    sessions = api_path(api.GROUP, api.VERSION, api.PLURAL, namespace)
    pools = api_path(api.GROUP, api.VERSION, POOL_PLURAL, namespace)
    # The garbage collector learns of a CRD created moments ago only at its next discovery (up to 30 s): a pool's
    # sandbox Pods go explicitly. Retained workspaces and a test's own objects have no owner: they go too.
    pooled = api_path("", "v1", "pods", namespace) + f"?labelSelector={LABEL_POOL}"
    others = (api_path("", "v1", p, namespace) for p in ("persistentvolumeclaims", "secrets"))
    for collection in (pools, pooled, sessions, *others):
        async with cluster.delete(collection, json={"propagationPolicy": "Background"}) as resp:
            assert resp.status in (200, 404), await resp.text()
    deadline = asyncio.get_running_loop().time() + timeout
    left: list[str] = []
    while asyncio.get_running_loop().time() < deadline:
        left = []
        for plural, group in ((api.PLURAL, api.GROUP), ("pods", ""), ("persistentvolumeclaims", ""), ("secrets", "")):
            version = api.VERSION if group else "v1"
            async with cluster.get(api_path(group, version, plural, namespace)) as resp:
                items = (await resp.json()).get("items", [])
            left += [f"{plural}/{i['metadata']['name']}" for i in items]
        if not left:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"namespace {namespace} still holds {left} {timeout:g} s after its sessions were deleted")
    async with cluster.delete(api_path("", "v1", "events", namespace)) as resp:
        assert resp.status == 200, await resp.text()
