"""Real control-plane figures: how long it takes to start, and a session's create → Ready → first tool call.

Uses what `make test`'s `cluster` tests use (tests/support/): etcd + kube-apiserver + controller-manager +
scheduler from KUBEBUILDER_ASSETS, the kubelet harness as the node (a real agent process per sandbox Pod the
real scheduler binds to it; claims bound by the real PV controller on the hostPath provisioner), the real kopf
operator (in a thread) and a real coordinator process on the kubernetes backend. Then, one after the other,
`--sessions` MCP sessions each make a first tool call (`echo`, which makes the coordinator create the
CodegenSession and wait for it to be Ready) and a second one.

    KUBEBUILDER_ASSETS=$(../shared/k8s/unpack) .venv/bin/python bench/control_plane.py [--starts 3] [--sessions 7]

Printed: the control plane's start time (API server ready; controllers working, i.e. the default
ServiceAccount exists) over `--starts` cold starts, and per session, from the first call's start: the session
Ready (the operator's status, polled every 20 ms) and the first call answered; then a second call's round trip.
Everything started is stopped again, also on error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mcp import Client  # noqa: E402

from codegen_mcp.api import session as api  # noqa: E402
from codegen_mcp.operator.settings import OperatorSettings  # noqa: E402
from tests.support.control_plane import ASSETS_ENV, ControlPlane, assets_problem, free_port  # noqa: E402
from tests.support.coordinator import start_coordinator, stop_process  # noqa: E402
from tests.support.kubelet import FakeKubelet  # noqa: E402
from tests.support.operator import OperatorThread  # noqa: E402
from tests.support.real_cluster import RealCluster, prepare_for_sessions  # noqa: E402

NS = "default"
CRD = REPO / "crds" / "codegensession.yaml"


def start_plane(root: Path) -> ControlPlane:
    return ControlPlane(Path(os.environ[ASSETS_ENV]), root, crds=(CRD,)).start()


def time_starts(count: int) -> list[float]:
    took = []
    for _ in range(count):
        root = Path(tempfile.mkdtemp(prefix="bench-k8s-"))
        plane = ControlPlane(Path(os.environ[ASSETS_ENV]), root, crds=(CRD,))
        try:
            plane.start()
            assert plane.started_seconds is not None
            took.append(plane.started_seconds)
        finally:
            plane.stop()
            shutil.rmtree(root, ignore_errors=True)
    return took


@contextlib.asynccontextmanager
async def operated_cluster(plane: ControlPlane, work: Path) -> AsyncIterator[RealCluster]:
    """The real cluster with the CRDs, the kubelet harness as its node and the real operator (in a thread)."""
    async with RealCluster(plane) as cluster:
        prepare_for_sessions(cluster)
        node_root = work / "node"
        node_root.mkdir(mode=0o711)
        async with FakeKubelet(plane.url, node_root, node_name="bench-node", ssl_context=cluster.ssl) as node:
            settings = OperatorSettings(
                namespaces=[NS],
                kubeconfig=plane.kubeconfig,
                liveness_endpoint=None,
                default_image="codegen-mcp-sandbox:bench",
                agent_port=free_port(),
                expiry_check_seconds=1,
                request_timeout_seconds=10,
                node_selector={"kubernetes.io/hostname": node.node_name or ""},
            )
            async with OperatorThread(settings):
                yield cluster


@contextlib.asynccontextmanager
async def kubernetes_coordinator(plane: ControlPlane, state: Path, **env: str) -> AsyncIterator[str]:
    """A real coordinator process on the kubernetes backend (extra CODEGEN_K8S_* in `env`); yields its URL."""
    state.mkdir()
    env = {
        "CODEGEN_K8S_KUBECONFIG": str(plane.kubeconfig),
        "CODEGEN_K8S_NAMESPACE": NS,
        "CODEGEN_K8S_READY_TIMEOUT_S": "60",
        **env,
    }
    cp = await asyncio.to_thread(start_coordinator, state, "--backend", "kubernetes", env=env)
    try:
        yield cp.url
    finally:
        await asyncio.to_thread(stop_process, cp.proc)


async def time_sessions(plane: ControlPlane, sessions: int, work: Path) -> list[dict[str, float]]:
    async with operated_cluster(plane, work) as cluster, kubernetes_coordinator(plane, work / "coordinator") as url:
        return [await one_session(url, cluster) for _ in range(sessions)]


async def one_session(url: str, cluster: RealCluster) -> dict[str, float]:
    before = {s["metadata"]["name"] for s in cluster.list_objects(api.GROUP, api.VERSION, api.PLURAL, NS)}
    timeline: dict[str, float] = {}
    t0 = time.monotonic()

    async def watch() -> None:
        while "session_ready" not in timeline:
            for s in cluster.list_objects(api.GROUP, api.VERSION, api.PLURAL, NS):
                if s["metadata"]["name"] in before:
                    continue
                timeline.setdefault("session_created", time.monotonic() - t0)
                if (s.get("status") or {}).get("phase") == api.Phase.READY.value:
                    timeline["session_ready"] = time.monotonic() - t0
            await asyncio.sleep(0.02)

    async with asyncio.timeout(120), Client(f"{url}/mcp") as client:
        watcher = asyncio.create_task(watch())
        first = await client.call_tool("echo", {"message": "first"})
        timeline["first_call"] = time.monotonic() - t0
        assert not first.is_error, first
        await asyncio.wait_for(watcher, timeout=10)
        t1 = time.monotonic()
        await client.call_tool("echo", {"message": "second"})
        timeline["second_call"] = time.monotonic() - t1
    return timeline


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3, help="cold starts of the control plane to time")
    parser.add_argument("--sessions", type=int, default=7, help="sessions to time, one after the other")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of a table")
    args = parser.parse_args()
    if problem := assets_problem():
        sys.exit(f"bench/control_plane.py: {problem}")

    starts = time_starts(args.starts)
    work = Path(tempfile.mkdtemp(prefix="bench-k8s-"))
    work.chmod(0o711)
    plane = start_plane(work / "plane")
    try:
        timelines = await time_sessions(plane, args.sessions, work)
    finally:
        plane.stop()
        shutil.rmtree(work, ignore_errors=True)

    result: dict[str, Any] = {
        "control_plane_start_s": summary(starts),
        "sessions": args.sessions,
        **{key: summary([t[key] for t in timelines]) for key in timelines[0]},
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"control plane cold start (etcd, API server, controllers working), {args.starts} starts:")
    start = result["control_plane_start_s"]
    print(f"  median {start['median']:.2f} s  (min {start['min']:.2f}, max {start['max']:.2f})")
    print(f"\n{args.sessions} sessions on the real API server with the kubelet harness as the node,")
    print("seconds from the first tool call's start:")
    print(f"  {'milestone':<34}{'median':>8}{'min':>8}{'max':>8}")
    labels = {
        "session_created": "CodegenSession created",
        "session_ready": "session Ready (operator's status)",
        "first_call": "first tool call answered",
        "second_call": "second call (round trip)",
    }
    for key, label in labels.items():
        s = result[key]
        print(f"  {label:<34}{s['median']:>8.2f}{s['min']:>8.2f}{s['max']:>8.2f}")


if __name__ == "__main__":
    asyncio.run(main())
