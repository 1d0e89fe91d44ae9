"""`codegen-mcp operator` against a real API server without kopf's peering CRDs (a plain `kubectl apply` of ours).

kopf 1.45 with a peering name and no peering CRD pauses every watch for ever, saying so only at DEBUG: a user
following the README waited with nothing happening. Now the operator runs standalone and says so, or — when
peering was asked for — stops at once with how to install the CRDs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from codegen_mcp.api import session as api
from tests.support.control_plane import ControlPlane
from tests.support.real_cluster import RealCluster, api_path

pytestmark = pytest.mark.cluster


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"peer-{uuid.uuid4().hex[:8]}"
    cluster = RealCluster(control_plane)
    cluster.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    cluster.request("DELETE", f"/api/v1/namespaces/{name}")


def start_operator(plane: ControlPlane, namespace: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "codegen_mcp.cli",
                "operator",
                "--kubeconfig",
                str(plane.kubeconfig),
                "-n",
                namespace,
            ],
            env={**os.environ, "CODEGEN_OPERATOR_LIVENESS_ENDPOINT": "", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_without_peering_crds_the_operator_runs_standalone_and_says_so(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    assert RealCluster(control_plane).request("GET", "/apis/kopf.dev/v1") is None, "this test needs no peering CRDs"
    log = tmp_path / "operator.log"
    operator = start_operator(control_plane, namespace, log)
    try:
        cluster = RealCluster(control_plane)
        body = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "hello"}}
        cluster.request("POST", api_path(api.GROUP, api.VERSION, api.PLURAL, namespace), body)
        deadline = time.monotonic() + 30
        phase = None
        while time.monotonic() < deadline and phase is None:
            found = cluster.request("GET", api_path(api.GROUP, api.VERSION, api.PLURAL, namespace, "hello"))
            phase = (found.get("status") or {}).get("phase")
            time.sleep(0.1)
        assert phase is not None, f"the operator never handled the session:\n{log.read_text()[-3000:]}"
        secret = cluster.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{api.token_secret_name('hello')}")
        assert secret is not None
    finally:
        operator.terminate()
        operator.wait(timeout=30)
    text = log.read_text()
    assert "peering CRD kopfpeerings.kopf.dev is not installed: running standalone" in text
    assert "codegen-mcp crd --peering | kubectl apply -f -" in text


def test_required_peering_without_its_crds_stops_with_how_to_install_them(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    log = tmp_path / "operator.log"
    operator = start_operator(control_plane, namespace, log, CODEGEN_OPERATOR_STANDALONE="false")
    try:
        code = operator.wait(timeout=60)
    finally:
        if operator.poll() is None:
            operator.kill()
            operator.wait()
    text = log.read_text()
    assert code != 0, text[-2000:]
    assert "peering is required (standalone=false) but the kopfpeerings.kopf.dev CRD is not installed" in text
    assert "codegen-mcp crd --peering | kubectl apply -f -" in text
