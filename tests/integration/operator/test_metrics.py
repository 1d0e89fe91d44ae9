"""The real kopf operator serves its own /metrics: the reconciles it ran and the sessions it knows by phase."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from codegen_mcp.api import session as api
from codegen_mcp.operator.settings import OperatorSettings
from tests.integration.operator.conftest import Kubectl
from tests.support.control_plane import free_port
from tests.support.k8s import ClusterEmulator
from tests.support.kubelet import FakeKubelet
from tests.support.operator import OperatorThread
from tests.support.waiting import eventually


async def test_operator_metrics_count_reconciles_and_sessions_by_phase(
    cluster: ClusterEmulator, kubelet: FakeKubelet, kubectl: Kubectl, operator_settings: OperatorSettings
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    async with (
        OperatorThread(operator_settings.model_copy(update={"metrics_port": port})),
        aiohttp.ClientSession() as http,
    ):

        async def samples() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
            async with http.get(url) as resp:
                assert resp.status == 200
                text = await resp.text()
            return {
                (s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }

        await kubectl.apply("counted")
        await eventually(lambda: kubectl.status("counted").phase == api.Phase.READY, timeout=20, what="Ready")

        async def ready_counted() -> bool:
            found = await samples()
            return found.get(("codegen_operator_sessions", frozenset({("phase", "Ready")}))) == 1

        await eventually(ready_counted, timeout=10, what="the Ready session in codegen_operator_sessions")
        found = await samples()
        created = frozenset({("resource", "session"), ("trigger", "create"), ("result", "ok")})
        assert found[("codegen_operator_reconciles_total", created)] >= 1
        runs = [v for (name, _), v in found.items() if name == "codegen_operator_reconciles_total"]
        assert sum(runs) >= 2  # the create, and the Pod events that followed it
        assert found[("codegen_operator_reconcile_duration_seconds_count", frozenset({("resource", "session")}))] >= 1
