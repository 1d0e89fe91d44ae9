"""A status write rests on the Pod as it is when the write happens, not as it was when the reconcile began."""

from __future__ import annotations

import inspect
from typing import Any

from codegen_mcp.api.session import Phase, SessionStatus
from codegen_mcp.operator.kube import PODS
from codegen_mcp.operator.reconcile import SessionReconciler
from codegen_mcp.operator.settings import OperatorSettings
from tests.unit.operator.test_builders import ref

POD_NAME = "demo-sandbox"


def pod(state: dict[str, Any] | None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Pending"}
    if state is not None:
        status["containerStatuses"] = [{"name": "agent", "ready": False, "state": state}]
    return {"metadata": {"name": POD_NAME, "namespace": "team-a", "uid": "pod-uid"}, "status": status}


class OneSession:
    """The API server holding one session whose status a Pod event already moved on, and its Pod."""

    def __init__(self, status: SessionStatus, current_pod: dict[str, Any]) -> None:
        self.status, self.pod = status, current_pod
        self.pod_reads: list[str] = []

    async def get(self, kind: Any, namespace: str, name: str) -> dict[str, Any] | None:
        assert kind is PODS
        self.pod_reads.append(name)
        return self.pod

    async def update_status(self, namespace: str, name: str, mutate: Any, **_: Any) -> dict[str, Any]:
        body = {"metadata": {"name": name, "namespace": namespace}, "status": self.status.to_patch()}
        result = mutate(body, self.status)
        self.status = await result if inspect.isawaitable(result) else result
        return {**body, "status": self.status.to_patch()}

    async def post_event(self, *_: Any, **__: Any) -> None:
        pass


async def test_an_older_look_at_the_pod_does_not_undo_a_failed_status(settings: OperatorSettings) -> None:
    # The create handler read the Pod as it made it (no container status yet: Starting). Meanwhile the node
    # reported that its image cannot be pulled, and the Pod event wrote Failed.
    stuck = pod({"waiting": {"reason": "ErrImageNeverPull", "message": "Back-off pulling image x"}})
    failed = SessionStatus(phase=Phase.FAILED, message="ErrImageNeverPull: Back-off pulling image x")
    kube = OneSession(failed, stuck)
    reconciler = SessionReconciler(kube=kube, settings=settings)  # type: ignore[arg-type]
    body = {"metadata": {"name": "demo", "namespace": "team-a", "generation": 1}, "status": failed.to_patch()}
    await reconciler._observe(body, ref(), pod(None), claim=None)
    assert kube.status.phase == Phase.FAILED, kube.status
    assert kube.pod_reads == [POD_NAME]
