"""The product on a real node: the CRD, `codegen-mcp operator` and `codegen-mcp serve --backend kubernetes`.

Both run here, on the host, as separate processes with a kubeconfig (Pods cannot reach the API server, which
listens on 127.0.0.1; the host reaches the Pods over the node's bridge). Sessions live in one namespace, use
the sandbox image imported into the node (`imagePullPolicy: Never`), a StorageClass of static workspace
volumes pre-owned by the sandbox uid (see `Node.workspace_volumes`), and a nodeSelector naming the node.

Used by tests/e2e_node, tests/e2e (on the local cluster) and bench/real_node.py. `stop()` ends the coordinator
first (it deletes its sessions), waits until the operator has removed them and their children, then ends the
operator.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from codegen_mcp.api import session as api
from tests.support.control_plane import free_port, tail
from tests.support.coordinator import CoordinatorProcess, start_coordinator, stop_process
from tests.support.node import Node
from tests.support.real_cluster import RealCluster, api_path, apply_crd_file

STORAGE_CLASS = "codegen-real-node"
START_TIMEOUT = 60.0
DRAIN_TIMEOUT = 90.0


@dataclass
class OperatorProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - the operator's own liveness probe
            return int(resp.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def wait_for(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@dataclass
class SandboxStack:
    node: Node
    folder: Path
    namespace: str = "default"
    volumes: int = 4
    operator_kubeconfig: Path | None = None  # default: the admin's
    coordinator_kubeconfig: Path | None = None
    operator_env: dict[str, str] = field(default_factory=dict)  # more CODEGEN_OPERATOR_* settings
    coordinator_env: dict[str, str] = field(default_factory=dict)  # more CODEGEN_* settings (e.g. AUTH_TOKENS)
    operator: OperatorProcess | None = field(default=None, init=False)
    coordinator: CoordinatorProcess | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.cluster = RealCluster(self.node.plane)

    @property
    def sandbox_image(self) -> str:
        return self.node.image_tags[-1]

    # --- lifecycle ---

    def start(self) -> SandboxStack:
        try:
            apply_crd_file(self.cluster)
            self.node.workspace_volumes(STORAGE_CLASS, self.volumes)
            self.operator = self._start_operator()
            self.coordinator = self._start_coordinator()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_operator(self) -> OperatorProcess:
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        env = {
            **os.environ,
            "KUBECONFIG": "/nonexistent",  # only the kubeconfig given below
            "CODEGEN_OPERATOR_DEFAULT_IMAGE": self.sandbox_image,
            "CODEGEN_OPERATOR_IMAGE_PULL_POLICY": "Never",  # no registry: the node has the image
            "CODEGEN_OPERATOR_STORAGE_CLASS": STORAGE_CLASS,
            "CODEGEN_OPERATOR_NODE_SELECTOR": f"kubernetes.io/hostname={self.node.name}",
            "CODEGEN_OPERATOR_LIVENESS_ENDPOINT": liveness,
            **self.operator_env,
        }
        kubeconfig = self.operator_kubeconfig or self.node.plane.kubeconfig
        command = [str(Path(sys.executable).with_name("codegen-mcp")), "operator", "--standalone"]
        command += ["--namespace", self.namespace, "--kubeconfig", str(kubeconfig)]
        log_path = self.folder / "operator.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        running = OperatorProcess(proc, log_path)
        try:
            wait_for(lambda: proc.poll() is not None or _answers(liveness), START_TIMEOUT, "the operator's liveness")
            assert proc.poll() is None, f"the operator exited ({proc.returncode}):\n{running.log_tail()}"
        except BaseException:
            _end(proc)
            raise
        return running

    def _start_coordinator(self) -> CoordinatorProcess:
        state = self.folder / "coordinator"
        state.mkdir()
        kubeconfig = self.coordinator_kubeconfig or self.node.plane.kubeconfig
        env = {
            "KUBECONFIG": "/nonexistent",
            "CODEGEN_K8S_KUBECONFIG": str(kubeconfig),
            "CODEGEN_K8S_NAMESPACE": self.namespace,
            "CODEGEN_K8S_READY_TIMEOUT_S": "120",
            "CODEGEN_K8S_IMAGE_PULL_POLICY": "Never",
            "CODEGEN_K8S_STORAGE_CLASS": STORAGE_CLASS,
            "CODEGEN_K8S_NETWORK_EGRESS": "none",  # nothing beyond this machine is reachable anyway
            **self.coordinator_env,
        }
        return start_coordinator(state, "--backend", "kubernetes", env=env)

    def stop(self) -> None:
        """Coordinator first (it deletes its sessions), then wait for the operator to clean up, then the operator."""
        problems = []
        if self.coordinator is not None:
            stop_process(self.coordinator.proc)
        try:
            self.delete_sessions()
        except AssertionError as exc:
            problems.append(str(exc))
        if self.operator is not None:
            _end(self.operator.proc)
        if problems:
            raise AssertionError("; ".join(problems))

    def delete_sessions(self) -> None:
        """Delete every session of the namespace and wait until they and their children are gone."""
        self.cluster.request("DELETE", api_path(api.GROUP, api.VERSION, api.PLURAL, self.namespace))

        def leftovers() -> list[str]:
            left = []
            for group, version, plural in (
                (api.GROUP, api.VERSION, api.PLURAL),
                ("", "v1", "pods"),
                ("", "v1", "persistentvolumeclaims"),
            ):
                left += [f"{plural}/{o['metadata']['name']}" for o in self.list(group, version, plural)]
            return left

        deadline = time.monotonic() + DRAIN_TIMEOUT
        while (left := leftovers()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"still there {DRAIN_TIMEOUT:g} s after the sessions were deleted: {left}"

    # --- reading the cluster ---

    def list(self, group: str, version: str, plural: str) -> list[dict[str, Any]]:
        found = self.cluster.request("GET", api_path(group, version, plural, self.namespace)) or {"items": []}
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
        async with (
            httpx.AsyncClient(timeout=timeout) as http,
            streamable_http_client(f"{self.coordinator.url}/mcp", http_client=http) as streams,
            ClientSession(streams[0], streams[1]) as session,
        ):
            await session.initialize()
            yield session


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
