"""The product on a real node, installed by its Helm chart and run with the chart's identities.

`SandboxStack.start()` installs the chart, CRDs included (tests/support/chart.py), into the node's control plane
with values that fit the node: sessions pinned to it (`sessions.nodeSelector`), on a StorageClass of static workspace
volumes pre-owned by the sandbox uid (`Node.workspace_volumes`), from the sandbox image imported into it
(`imagePullPolicy: Never`), and the Deployments at 0 replicas. `codegen-mcp operator` and `codegen-mcp serve` then
run here, on the host, with the rendered Deployments' env and args and a token of each Deployment's ServiceAccount,
so the chart's RBAC judges every call they make. (Pods cannot reach the API server, which listens on 127.0.0.1; the
host reaches the Pods over the node's bridge.)

Used by tests/e2e_node, tests/e2e (on the local cluster) and bench/real_node.py. `stop()` ends the coordinator
first (it deletes its sessions), waits until the operator has removed them and their children, then ends the
operator and uninstalls the chart.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
from mcp import ClientSession

from codegen_mcp.api import session as api
from tests.support.chart import (
    Installed,
    OperatorProcess,
    Placement,
    installed_chart,
    merge,
    running_coordinator,
    running_operator,
)
from tests.support.coordinator import CoordinatorProcess
from tests.support.mcp_client import mcp_session
from tests.support.node import Node
from tests.support.real_cluster import RealCluster, api_path

STORAGE_CLASS = "codegen-real-node"
DRAIN_TIMEOUT = 90.0
STACK_VALUES: dict[str, Any] = {
    "sessions": {
        "readyTimeoutSeconds": 120,
        "network": {"egress": "none"},  # nothing beyond this machine is reachable anyway
    },
}


@contextlib.contextmanager
def node_placement(node: Node, volumes: int) -> Iterator[Placement]:
    """Sandbox Pods on `node`, from the image it holds, on `volumes` new workspace volumes (gone when it stops)."""
    node.workspace_volumes(STORAGE_CLASS, volumes)
    repository, tag = node.image_tags[-1].rsplit(":", 1)
    yield Placement(node.name, {
        "sessions": {
            "nodeSelector": {"kubernetes.io/hostname": node.name},
            "workspace": {"storageClassName": STORAGE_CLASS},
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},  # no registry: the node has it
        },
    })  # fmt: skip


@dataclass
class SandboxStack:
    node: Node
    folder: Path
    volumes: int = 4
    values: dict[str, Any] = field(default_factory=dict)  # more chart values, over STACK_VALUES
    extra_namespace: str | None = None  # an existing namespace the operator watches too (see installed_chart)
    installed: Installed | None = field(default=None, init=False)
    operator: OperatorProcess | None = field(default=None, init=False)
    coordinator: CoordinatorProcess | None = field(default=None, init=False)
    auth_token: str | None = field(default=None, init=False)  # what the coordinator asks MCP clients for
    _running: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, init=False)

    def __post_init__(self) -> None:
        self.cluster = RealCluster(self.node.plane)

    @property
    def sandbox_image(self) -> str:
        return self.node.image_tags[-1]

    @property
    def namespace(self) -> str:
        """Where the coordinator creates sessions."""
        assert self.installed is not None, "the stack is not started"
        return self.installed.sessions_ns

    # --- lifecycle ---

    def start(self) -> SandboxStack:
        try:
            self.installed = self._running.enter_context(
                installed_chart(
                    self.node.plane,
                    self.folder,
                    own_sessions_namespace=True,
                    values=merge(STACK_VALUES, self.values),
                    placement=node_placement(self.node, self.volumes),
                    extra_namespace=self.extra_namespace,
                )
            )
            self.operator = self._running.enter_context(running_operator(self.installed, self.folder))
            self._running.callback(self.delete_sessions)  # once the coordinator is gone, while the operator runs
            self.coordinator = self._running.enter_context(running_coordinator(self.installed, self.folder))
            self.auth_token = self.installed.auth_token()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Coordinator first (it deletes its sessions), then wait for the operator to clean up, then the operator
        and the chart."""
        self._running.close()

    def delete_sessions(self) -> None:
        """Delete every session of the watched namespaces and wait until they and their children are gone."""
        assert self.installed is not None
        watched = self.installed.watched
        for namespace in watched:
            self.cluster.request("DELETE", api_path(api.GROUP, api.VERSION, api.PLURAL, namespace))

        def leftovers() -> list[str]:
            left = []
            for namespace in watched:
                for group, version, plural in (
                    (api.GROUP, api.VERSION, api.PLURAL),
                    ("", "v1", "pods"),
                    ("", "v1", "persistentvolumeclaims"),
                ):
                    found = self.list(group, version, plural, namespace)
                    left += [f"{namespace}/{plural}/{o['metadata']['name']}" for o in found]
            return left

        deadline = time.monotonic() + DRAIN_TIMEOUT
        while (left := leftovers()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"still there {DRAIN_TIMEOUT:g} s after the sessions were deleted: {left}"

    # --- reading the cluster ---

    def list(self, group: str, version: str, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        path = api_path(group, version, plural, namespace or self.namespace)
        found = self.cluster.request("GET", path) or {"items": []}
        return list(found["items"])

    def sessions(self) -> list[dict[str, Any]]:
        return self.list(api.GROUP, api.VERSION, api.PLURAL)

    def read(self, plural: str, name: str) -> dict[str, Any] | None:
        group, version = (api.GROUP, api.VERSION) if plural == api.PLURAL else ("", "v1")
        found = self.cluster.request("GET", api_path(group, version, plural, self.namespace, name))
        return dict(found) if found else None

    def logs(self) -> str:
        parts = []
        if self.operator is not None:
            parts.append(f"--- operator\n{self.operator.log_tail()}")
        if self.coordinator is not None:
            parts.append(f"--- coordinator\n{self.coordinator.log_tail()}")
        parts += [f"--- {name}\n{text}" for name, text in self.node.logs().items()]
        return "\n".join(parts)

    # --- MCP ---

    @contextlib.asynccontextmanager
    async def mcp(self) -> AsyncIterator[ClientSession]:
        """An initialized official-SDK client session on the coordinator's streamable HTTP endpoint."""
        assert self.coordinator is not None
        timeout = httpx.Timeout(30.0, read=180.0)
        async with mcp_session(self.coordinator.url, self.auth_token, timeout=timeout) as session:
            yield session


@contextlib.contextmanager
def running_stack(
    node: Node, *, volumes: int = 4, values: dict[str, Any] | None = None, extra_namespace: str | None = None
) -> Iterator[SandboxStack]:
    """A started stack in a folder of its own; the node takes Pods while it lasts. Its logs are printed at the end."""
    folder = Path(tempfile.mkdtemp(prefix="codegen-mcp-stack-"))
    try:
        with node.accepting_pods():
            stack = SandboxStack(node, folder, volumes=volumes, values=values or {}, extra_namespace=extra_namespace)
            stack.start()
            try:
                yield stack
            finally:
                print(stack.logs())
                stack.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
