"""The coordinator on the kubernetes backend against the API emulator, with the real operator and kubelet harness."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.integration.conftest import CoordinatorProcess, print_log_tail, start_coordinator, state_root, stop_process
from tests.integration.operator.conftest import (  # noqa: F401 - fixtures
    Kubectl,
    kubectl,
    operator,
    operator_settings,
)
from tests.support.fixtures import agent_port, cluster, kubeconfig_path, kubelet  # noqa: F401

NS = "default"


def coordinator_env(kubeconfig: Path, **extra: str) -> dict[str, str]:
    return {
        "CODEGEN_K8S_KUBECONFIG": str(kubeconfig),
        "CODEGEN_K8S_NAMESPACE": NS,
        "CODEGEN_K8S_READY_TIMEOUT_S": "30",
        "CODEGEN_K8S_ACTIVITY_INTERVAL_S": "0.5",
        **extra,
    }


StartCoordinator = Callable[..., Awaitable[CoordinatorProcess]]


@pytest.fixture
async def k8s_coordinator(kubeconfig_path: Path) -> AsyncIterator[StartCoordinator]:  # noqa: F811
    """Start (and restart) coordinator processes on the kubernetes backend; all are stopped at the end.

    Starting and stopping happen in threads: the API emulator lives on this event loop and must keep serving
    while a coordinator starts (it lists sessions) and stops (it deletes them).
    """
    started: list[CoordinatorProcess] = []
    roots = state_root()
    root = next(roots)

    async def start(**env: str) -> CoordinatorProcess:
        state = root / f"state{len(started)}"
        state.mkdir()
        cp = await asyncio.to_thread(
            start_coordinator, state, "--backend", "kubernetes", env=coordinator_env(kubeconfig_path, **env)
        )
        started.append(cp)
        return cp

    try:
        yield start
    finally:
        for cp in started:
            await asyncio.to_thread(stop_process, cp.proc)
            print_log_tail(cp)
        roots.close()
