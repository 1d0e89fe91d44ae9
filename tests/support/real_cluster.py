"""The test-facing surface of `ClusterEmulator`, served by a real API server (`ControlPlane`).

Scenario tests are written once against this surface (`url`, aiohttp-style `get/post/patch/put/delete` on API
paths, `read`/`list_objects` for assertions) and run on both the emulator and the real server. Reads here are
plain blocking HTTPS GETs (a few milliseconds on loopback): assertions stay one line, and the real server is a
separate process, so blocking the test's loop for that long starves nothing.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import aiohttp

from tests.support.control_plane import ControlPlane


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
        url = self.plane.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, context=self._ssl, timeout=10) as resp:  # noqa: S310
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')}") from exc

    def read(self, group: str, version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.request("GET", api_path(group, version, plural, namespace, name))
        # An object on its way out (finalizers or a Pod's grace period) no longer exists for the tests.
        if obj is None or obj.get("metadata", {}).get("deletionTimestamp"):
            return None
        return dict(obj)

    def list_objects(self, group: str, version: str, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        found = self.request("GET", api_path(group, version, plural, namespace)) or {"items": []}
        return [i for i in found["items"] if not i.get("metadata", {}).get("deletionTimestamp")]
