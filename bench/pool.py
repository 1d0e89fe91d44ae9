"""Warm pool on the real control plane: pooled claim → Ready, and session create → first call with and without a pool.

The same stack as bench/control_plane.py (real etcd, kube-apiserver, controller-manager and scheduler from
KUBEBUILDER_ASSETS; the kubelet harness as the node, a real agent process per sandbox Pod; the real kopf
operator in a thread), plus a `CodegenSandboxPool` of `--replicas` sandboxes.

- claim → Ready: `--claims` times, once the pool is full again, a `CodegenSession` naming the pool is created
  and a watch on it started before the create reports the moment its status says Ready (the operator adopted
  a pooled sandbox: the session's Pod is the pool's, checked). From just before the POST to that watch event.
- create → first call: a real coordinator process (kubernetes backend) serves `--sessions` MCP sessions one
  after the other, each timed from its first tool call's start to the answer (the coordinator creates the
  session and waits for Ready), first without a pool, then with CODEGEN_K8S_POOL naming it.

    KUBEBUILDER_ASSETS=$(../shared/k8s/unpack) .venv/bin/python bench/pool.py [--claims 30] [--sessions 7]

Everything started is stopped again, also on error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.control_plane import NS, kubernetes_coordinator, one_session, operated_cluster, start_plane  # noqa: E402
from codegen_mcp.api import pool  # noqa: E402
from codegen_mcp.api import session as api  # noqa: E402
from codegen_mcp.api.session import SessionSpec  # noqa: E402
from codegen_mcp.operator.adoption import candidates  # noqa: E402
from tests.support.control_plane import ControlPlane, assets_problem  # noqa: E402
from tests.support.real_cluster import RealCluster, api_path  # noqa: E402

POOL = "bench"
SESSIONS = api_path(api.GROUP, api.VERSION, api.PLURAL, NS)
POOLS = api_path(api.GROUP, api.VERSION, pool.POOL_PLURAL, NS)
FILL_TIMEOUT = 60.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": statistics.median(values),
        "p95": percentile(values, 0.95),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


async def wait_full(cluster: RealCluster, replicas: int) -> set[str]:
    """Wait until the pool has `replicas` Ready, unclaimed sandboxes (its Pods, not its status, which lags a
    claim by a moment); the uids of their Pods."""
    wanted = pool.sandbox_hash(SessionSpec(pool_ref=POOL))
    deadline = time.monotonic() + FILL_TIMEOUT
    while time.monotonic() < deadline:
        pods = [p for p in cluster.list_objects("", "v1", "pods", NS) if p["metadata"].get("labels")]
        ready = candidates(pods, wanted)
        if len(ready) >= replicas:
            return {p["metadata"]["uid"] for p in ready}
        await asyncio.sleep(0.05)
    raise TimeoutError(f"pool {POOL} did not fill to {replicas} within {FILL_TIMEOUT:g} s")


async def claim_once(cluster: RealCluster, name: str) -> tuple[float, str | None]:
    """Seconds from just before the create to the watch event saying Ready; the session's Pod uid."""
    listed = cluster.request("GET", SESSIONS)
    version = listed["metadata"]["resourceVersion"]
    query = f"?watch=true&resourceVersion={version}&fieldSelector=metadata.name%3D{name}"
    body = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name}, "spec": {"poolRef": POOL}}
    async with asyncio.timeout(30), cluster.get(SESSIONS + query) as stream:
        t0 = time.monotonic()
        async with cluster.post(SESSIONS, json=body) as resp:
            assert resp.status == 201, await resp.text()
        async for line in stream.content:
            event = json.loads(line)
            status = event["object"].get("status") or {}
            if status.get("phase") == api.Phase.READY.value:
                return time.monotonic() - t0, status.get("podUID")
    raise AssertionError(f"the watch on {name} ended before it was Ready")


async def time_claims(cluster: RealCluster, claims: int, replicas: int) -> tuple[list[float], int]:
    took, fresh = [], 0
    for i in range(claims):
        members = await wait_full(cluster, replicas)
        seconds, pod_uid = await claim_once(cluster, f"claim-{i}")
        if pod_uid in members:
            took.append(seconds)
        else:
            fresh += 1  # not adopted (should not happen with a full pool): not a claim figure
            events = cluster.request("GET", f"/api/v1/namespaces/{NS}/events")["items"]
            why = [e["message"] for e in events if e["involvedObject"].get("name") == f"claim-{i}"]
            print(f"claim-{i} was not adopted: {why}", file=sys.stderr)
        async with cluster.delete(f"{SESSIONS}/claim-{i}"):
            pass
    return took, fresh


async def time_first_calls(
    plane: ControlPlane, cluster: RealCluster, work: Path, sessions: int, replicas: int | None
) -> list[float]:
    """First-call times of `sessions` MCP sessions; with `replicas`, from a full pool of that many."""
    pooled = {"CODEGEN_K8S_POOL": POOL} if replicas is not None else {}
    took = []
    async with kubernetes_coordinator(plane, work / f"coordinator-{'pool' if pooled else 'fresh'}", **pooled) as url:
        for _ in range(sessions):
            if replicas is not None:
                await wait_full(cluster, replicas)
            took.append((await one_session(url, cluster))["first_call"])
    return took


async def run(plane: ControlPlane, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    async with operated_cluster(plane, work) as cluster:
        body = {"apiVersion": api.API_VERSION, "kind": pool.POOL_KIND, "metadata": {"name": POOL}}
        cluster.request("POST", POOLS, {**body, "spec": {"replicas": args.replicas}})
        claims, fresh = await time_claims(cluster, args.claims, args.replicas)
        without = await time_first_calls(plane, cluster, work, args.sessions, None)
        with_pool = await time_first_calls(plane, cluster, work, args.sessions, args.replicas)
    return {
        "replicas": args.replicas,
        "claim_to_ready_s": summary(claims),
        "claims_not_adopted": fresh,
        "first_call_without_pool_s": summary(without),
        "first_call_with_pool_s": summary(with_pool),
    }


def show(result: dict[str, Any]) -> None:
    def row(label: str, s: dict[str, float], unit: float, suffix: str) -> None:
        print(
            f"  {label:<40}{s['p50'] * unit:>9.1f}{s['p95'] * unit:>9.1f}"
            f"{s['min'] * unit:>9.1f}{s['max'] * unit:>9.1f}  {suffix} (n={s['n']:.0f})"
        )

    print(f"warm pool of {result['replicas']} on the real API server, kubelet harness as the node:")
    print(f"  {'':<40}{'p50':>9}{'p95':>9}{'min':>9}{'max':>9}")
    row("pooled claim → session Ready", result["claim_to_ready_s"], 1000, "ms")
    if result["claims_not_adopted"]:
        print(f"  ({result['claims_not_adopted']} sessions were not adopted and are left out)")
    row("create → first call, no pool", result["first_call_without_pool_s"], 1000, "ms")
    row("create → first call, pool", result["first_call_with_pool_s"], 1000, "ms")
    ratio = result["first_call_without_pool_s"]["p50"] / result["first_call_with_pool_s"]["p50"]
    print(f"  the pool makes a new session's first call {ratio:.1f}x faster (p50)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=30, help="pooled claims to time, one after the other")
    parser.add_argument("--replicas", type=int, default=2, help="sandboxes the pool keeps ready")
    parser.add_argument("--sessions", type=int, default=7, help="MCP sessions to time with and without the pool")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of a table")
    args = parser.parse_args()
    if problem := assets_problem():
        sys.exit(f"bench/pool.py: {problem}")
    work = Path(tempfile.mkdtemp(prefix="bench-pool-"))
    work.chmod(0o711)
    plane = start_plane(work / "plane")
    try:
        result = await run(plane, work, args)
    finally:
        plane.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        show(result)


if __name__ == "__main__":
    asyncio.run(main())
