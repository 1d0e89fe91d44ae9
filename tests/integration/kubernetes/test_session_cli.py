"""`codegen-mcp session list|get|delete` against the API emulator, as an operator would run it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from codegen_mcp.api import session as api
from tests.support.k8s import ClusterEmulator

from .conftest import NS, Kubectl


async def cli(kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "codegen_mcp.cli",
        "session",
        "--kubeconfig",
        str(kubeconfig),
        "-n",
        NS,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_list_get_delete(cluster: ClusterEmulator, kubectl: Kubectl, kubeconfig_path: Path) -> None:
    code, out, _ = await cli(kubeconfig_path, "list")
    assert code == 0 and out.strip() == f"No CodegenSessions in namespace {NS}."

    await kubectl.apply("alpha", {"ttlSeconds": 600})
    await kubectl.patch("alpha", {"status": {"phase": "Ready", "podName": "alpha-sandbox"}}, status=True)
    code, out, _ = await cli(kubeconfig_path, "list")
    header, row = out.splitlines()
    assert header.split()[:3] == ["NAME", "PHASE", "POD"]
    assert row.split()[:3] == ["alpha", "Ready", "alpha-sandbox"]

    code, out, _ = await cli(kubeconfig_path, "get", "alpha")
    assert code == 0 and json.loads(out)["spec"]["ttlSeconds"] == 600

    code, out, _ = await cli(kubeconfig_path, "delete", "alpha")
    assert code == 0 and "deleted" in out
    assert kubectl.session("alpha") is None
    assert cluster.list_objects(api.GROUP, api.VERSION, api.PLURAL, NS) == []

    code, _, err = await cli(kubeconfig_path, "get", "alpha")
    assert code == 1 and "alpha" in err and "Traceback" not in err
