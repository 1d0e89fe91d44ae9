"""What `kubectl get cgs` prints, as the real kube-apiserver renders it (kubectl asks the server for a Table)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from codegen_mcp.api import session as api
from tests.support.control_plane import ControlPlane
from tests.support.real_cluster import RealCluster, api_path, module_namespace

pytestmark = pytest.mark.cluster

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


@pytest.fixture(scope="module")
def real(control_plane: ControlPlane) -> Iterator[RealCluster]:
    with module_namespace(control_plane, "columns") as cluster:
        yield cluster


def send(cluster: RealCluster, method: str, path: str, body: Any, content_type: str, accept: str) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        cluster.plane.url + path, data=data, method=method, headers={"Content-Type": content_type, "Accept": accept}
    )
    with urllib.request.urlopen(request, context=cluster.ssl, timeout=10) as resp:  # noqa: S310
        return dict(json.loads(resp.read()))


def test_expires_shows_when_the_session_expires_not_invalid(real: RealCluster) -> None:
    sessions = api_path(api.GROUP, api.VERSION, api.PLURAL, real.namespace)
    real.request("POST", sessions, {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "demo"}})
    expires = (datetime.now(UTC) + timedelta(hours=23)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {"status": {"phase": "Ready", "expiresAt": expires}}
    send(real, "PATCH", f"{sessions}/demo/status", status, "application/merge-patch+json", "application/json")

    table = send(real, "GET", f"{sessions}/demo", None, "application/json", TABLE)
    names = [c["name"] for c in table["columnDefinitions"]]
    [row] = table["rows"]
    cells = dict(zip(names, row["cells"], strict=True))
    assert cells["Phase"] == "Ready"
    assert cells["Expires"] == expires
