"""Any replica serves any session, on the kubernetes backend: coordinator processes with `shared_sessions` on one
API server (the emulator, and the real control plane), the real operator and the kubelet harness, one Redis.

The client talks to them through a round-robin proxy (a Service without session affinity). A run started as a
task goes on across the stop of each replica in turn: the session's CodegenSession and Pod stay, and the
replicas left serve its calls, the task's result included.
"""

from __future__ import annotations

import asyncio
import sys
import time

import httpx2 as httpx
import pytest

from tests.support.coordinator import stop_process
from tests.support.k8s import ClusterEmulator
from tests.support.kubelet import FakeKubelet
from tests.support.mcp_client import call, mcp_session, text_of
from tests.support.operator import OperatorThread
from tests.support.redis import RedisServer, redis_server  # noqa: F401  (a fixture)
from tests.support.round_robin import round_robin

from .conftest import StartCoordinator
from .test_kubernetes_backend import sessions

pytestmark = pytest.mark.timeout(180)

TIMEOUT = httpx.Timeout(60.0, read=120.0)
RUN = "import time\nprint('started', flush=True)\ntime.sleep(4)\nprint('finished')"


async def test_a_session_goes_on_across_the_stop_of_each_replica(
    operator: OperatorThread,
    kubelet: FakeKubelet,
    cluster: ClusterEmulator,
    k8s_coordinator: StartCoordinator,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    env = {"CODEGEN_SHARED_SESSIONS": "true", "CODEGEN_EVENT_STORE": "redis", "CODEGEN_REDIS_URL": redis_server.url}
    first = await k8s_coordinator(**env)
    second = await k8s_coordinator(**env)
    async with round_robin([first.url, second.url]) as (url, proxy), mcp_session(url, timeout=TIMEOUT) as s:
        await call(s, "fs.write", path="notes.txt", content="kept across replicas")
        started = (await call(s, "run.python", code=RUN, wait_s=0.5)).structured_content
        assert started is not None and started["state"] in ("queued", "running")
        served = {backend for backend, _, session in proxy.served if session}
        assert served == {first.url, second.url}, "both replicas served the session"
        [resource] = sessions(cluster)

        await asyncio.to_thread(stop_process, first.proc)
        began = time.monotonic()
        status = (await call(s, "task.get_status", task_id=started["task_id"])).structured_content
        first_call_ms = (time.monotonic() - began) * 1000
        print(f"first call on the other replica after one stopped: {first_call_ms:.0f} ms", file=sys.stderr)
        assert status is not None and status["state"] in ("running", "succeeded")
        assert [r["metadata"]["uid"] for r in sessions(cluster)] == [resource["metadata"]["uid"]]

        third = await k8s_coordinator(**env)
        proxy.backends.append(third.url)
        await asyncio.to_thread(stop_process, second.proc)
        result = (await call(s, "task.get_result", task_id=started["task_id"], wait_s=30)).structured_content
        assert result is not None and result["state"] == "succeeded"
        assert result["run"]["stdout"] == "started\nfinished\n"
        assert "kept across replicas" in text_of(await call(s, "fs.read", path="notes.txt"))
        assert {backend for backend, _, _ in proxy.served[-2:]} == {third.url}
        assert [r["metadata"]["uid"] for r in sessions(cluster)] == [resource["metadata"]["uid"]]
