"""Where the end-to-end scenarios find CodeGen-MCP on a pytest-kubernetes cluster (an `AClusterManager`).

- `ChartRelease`: the Helm chart in the cluster, as `make e2e` leaves it on kind (kind-up, images, kind-load,
  deploy); the coordinator is reached through a port-forward to its Service.
- `HostRelease`: the local real control plane and node of tests/support, where the chart is installed with its
  Deployments at 0 replicas and the operator and the coordinator run on the host with the Deployments' env and
  ServiceAccount tokens (tests/support/node_stack.py): the chart's Pods would have to reach the API server, and the
  local node's Pods cannot — it listens on 127.0.0.1 only (../shared/k8s/README.md).

Scenarios read and change the cluster through the manager's `kubectl()`, `apply()`, `wait()` and `logs()` only.
pytest-kubernetes joins kubectl's arguments into one shell command line: whatever the shell would read (code,
jsonpath, selectors) is passed through `shlex.quote` first, and manifests are applied from files (see `apply`).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_kubernetes.providers.base import AClusterManager

from codegen_mcp.api import session as api
from tests.support.control_plane import free_port
from tests.support.node_stack import SandboxStack

REPO = Path(__file__).resolve().parents[2]
KIND_TOOLS = ("docker", "kind", "kubectl", "helm")

# Why a scenario cannot run on the local real cluster (the host release).
NO_CHART_HERE = (
    "the chart's Deployments run no Pods on the local real cluster: their Pods must reach the API server, which "
    "listens on 127.0.0.1 only, out of reach of the local node's Pods (../shared/k8s/README.md), so the operator and "
    "the coordinator run on the host instead, as the chart's ServiceAccounts (tests/support/node_stack.py); "
    "`make e2e` checks the Deployments on kind"
)
NO_NETWORK_POLICY_HERE = (
    "the local node's CNI (bridge + host-local, tests/support/node.py) stores NetworkPolicy but does not enforce "
    "it, so isolation cannot be observed; `make e2e` checks it on kind with Calico"
)


# --- what kind needs ---------------------------------------------------------------------------------------


def _docker_engine_problem() -> str | None:
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if info.returncode != 0:
        lines = [line.strip() for line in info.stderr.splitlines() if line.strip()]
        return f"docker has no usable engine (`docker info`: {lines[-1] if lines else 'no output'})"
    return None


@functools.cache
def kind_problem() -> str | None:
    """Why the scenarios cannot run on kind here (every reason at once), or None when they can."""
    problems = []
    missing = [tool for tool in KIND_TOOLS if shutil.which(tool) is None]
    if missing:
        problems.append(f"not on PATH: {', '.join(missing)}")
    if "docker" not in missing:
        engine = _docker_engine_problem()
        if engine:
            problems.append(engine)
    if problems:
        return (
            "e2e on kind needs docker with a running engine, kind, kubectl and helm; here "
            + "; ".join(problems)
            + " (run `make e2e` on a machine that has them)"
        )
    return None


# --- small helpers on any cluster --------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=5):
            return True
    except OSError:
        return False


def apply(cluster: AClusterManager, manifest: dict[str, Any]) -> None:
    """`cluster.apply()` of a manifest, through a file.

    pytest-kubernetes applies a dict as `echo '<yaml.dump>' | kubectl apply -f -` in a shell: every string YAML
    quotes ('1', '42', 'true') loses its quotes, and its type, on the way. A file keeps them.
    """
    with tempfile.NamedTemporaryFile("w", prefix="e2e-", suffix=".json") as file:
        json.dump(manifest, file)
        file.flush()
        cluster.apply(Path(file.name))


def get(cluster: AClusterManager, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    out = str(cluster.kubectl(["get", kind, name, "-n", namespace, "-o", "json", "--ignore-not-found"], as_dict=False))
    return dict(json.loads(out)) if out.strip() else None


def list_objects(
    cluster: AClusterManager, kind: str, namespace: str, selector: str | None = None
) -> list[dict[str, Any]]:
    args = ["get", kind, "-n", namespace]
    if selector:
        args += ["-l", shlex.quote(selector)]
    found = cluster.kubectl(args)
    assert isinstance(found, dict)
    return list(found["items"])


def delete(cluster: AClusterManager, kind: str, name: str, namespace: str) -> None:
    cluster.kubectl(["delete", kind, name, "-n", namespace, "--ignore-not-found", "--wait=false"], as_dict=False)


def describe(cluster: AClusterManager, kind: str, name: str, namespace: str) -> str:
    try:
        return str(cluster.kubectl(["describe", kind, name, "-n", namespace], as_dict=False, timeout=30))
    except RuntimeError as exc:
        return f"(kubectl describe {kind} {name}: {exc})"


def pod_logs(cluster: AClusterManager, pod: str, namespace: str) -> str:
    try:
        return cluster.logs(pod, namespace=namespace)
    except RuntimeError as exc:
        return f"(no logs of {pod}: {exc})"


def exec_python(cluster: AClusterManager, pod: str, code: str, namespace: str, *, timeout: int = 60) -> str:
    """What `python -c code` prints inside `pod`; RuntimeError (kubectl's stderr) when it exits non-zero."""
    args = ["exec", pod, "-n", namespace, "--", "python", "-c", shlex.quote(code)]
    return str(cluster.kubectl(args, as_dict=False, timeout=timeout))


def wait_ready(cluster: AClusterManager, name: str, namespace: str, timeout: int = 300) -> dict[str, Any]:
    """Wait for the session's `status.phase` to be Ready (`kubectl wait`); its description and logs otherwise."""
    try:
        cluster.wait(f"codegensession/{name}", shlex.quote("jsonpath={.status.phase}=Ready"), timeout, namespace)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        pod = api.sandbox_pod_name(name)
        raise AssertionError(
            f"session {namespace}/{name} not Ready within {timeout}s: {exc}\n"
            f"{describe(cluster, 'codegensession', name, namespace)}\n{describe(cluster, 'pod', pod, namespace)}\n"
            f"--- logs of {pod}\n{pod_logs(cluster, pod, namespace)}"
        ) from None
    body = get(cluster, "codegensession", name, namespace)
    assert body is not None, f"session {namespace}/{name} is gone"
    return body


def wait_gone(cluster: AClusterManager, kind: str, name: str, namespace: str, timeout: int = 180) -> None:
    try:
        cluster.wait(f"{kind}/{name}", "delete", timeout, namespace)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        raise AssertionError(f"{kind} {namespace}/{name} still there after {timeout}s: {exc}") from None


def session_manifest(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """A small session: little CPU/memory, a small workspace, no egress unless asked."""
    base: dict[str, Any] = {
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "workspace": {"size": "256Mi"},
        "network": {"egress": "none"},
        "ttlSeconds": 3600,
        "owner": "e2e@codegen-mcp",
    }
    base.update(spec)
    return {
        "apiVersion": "codegen-mcp.io/v1alpha1",
        "kind": "CodegenSession",
        "metadata": {"name": name, "namespace": namespace},
        "spec": base,
    }


# --- the releases --------------------------------------------------------------------------------------------


class Release(ABC):
    """The operator and the coordinator serving `namespace` of `cluster`, wherever they run."""

    cluster: AClusterManager
    namespace: str

    @abstractmethod
    def coordinator_url(self) -> contextlib.AbstractContextManager[str]:
        """The coordinator's base URL, reachable from this process while the context lasts."""

    @abstractmethod
    def auth_token(self) -> str | None:
        """A bearer token the coordinator accepts, or None when it asks for none."""

    @abstractmethod
    def sandboxes_reach_pypi(self) -> bool:
        """Whether a sandbox Pod with package egress can install from the package index."""

    @abstractmethod
    def network_policy_problem(self) -> str | None:
        """Why NetworkPolicy isolation cannot be observed here, or None."""


@dataclass
class ChartRelease(Release):
    """The chart installed by `make deploy`: the operator and the coordinator as Deployments of release `name`."""

    cluster: AClusterManager
    namespace: str
    name: str

    def check(self) -> None:
        """The CRD is there and both Deployments have rolled out (AssertionError, or kubectl's RuntimeError)."""
        self.cluster.kubectl(["get", "crd", "codegensessions.codegen-mcp.io"], as_dict=False, timeout=30)
        for component in ("operator", "coordinator"):
            name = self.deployment(component)["metadata"]["name"]
            rollout = ["rollout", "status", f"deployment/{name}", "-n", self.namespace, "--timeout=180s"]
            self.cluster.kubectl(rollout, as_dict=False, timeout=200)

    def component(self, name: str) -> str:
        return f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component={name}"

    def the_one(self, kind: str, component: str) -> dict[str, Any]:
        selector = self.component(component)
        found = list_objects(self.cluster, kind, self.namespace, selector)
        assert len(found) == 1, f"expected one {kind} with labels {selector} in {self.namespace}, found {len(found)}"
        return found[0]

    def deployment(self, component: str) -> dict[str, Any]:
        return self.the_one("deployment", component)

    def coordinator_service(self) -> dict[str, Any]:
        return self.the_one("service", "coordinator")

    def coordinator_pod(self) -> dict[str, Any]:
        pods = [
            p
            for p in list_objects(self.cluster, "pod", self.namespace, self.component("coordinator"))
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        ]
        assert pods, "no running coordinator Pod"
        return pods[0]

    def auth_token(self) -> str | None:
        """The first token the coordinator accepts, read from the Secret its Deployment references."""
        (container,) = self.deployment("coordinator")["spec"]["template"]["spec"]["containers"]
        ref = next(
            (e["valueFrom"]["secretKeyRef"] for e in container["env"] if e["name"] == "CODEGEN_AUTH_TOKENS"), None
        )
        if ref is None:
            return None
        secret = get(self.cluster, "secret", ref["name"], self.namespace)
        assert secret is not None, f"Secret {ref['name']} is missing"
        tokens = base64.b64decode(secret["data"][ref["key"]]).decode()
        return tokens.split(",")[0].strip()

    @contextlib.contextmanager
    def coordinator_url(self) -> Iterator[str]:
        service = self.coordinator_service()
        (port,) = [p["port"] for p in service["spec"]["ports"] if p.get("name") == "mcp"]
        local = free_port()
        target = f"svc/{service['metadata']['name']}"
        previous = socket.getdefaulttimeout()
        try:
            with self.cluster.port_forwarding(target, local, port, namespace=self.namespace, timeout=30):
                yield f"http://127.0.0.1:{local}"
        finally:
            socket.setdefaulttimeout(previous)  # PortForwarding.stop() sets a process-wide 2 s default

    def sandboxes_reach_pypi(self) -> bool:
        return pypi_reachable()  # kind's Pods go out through the host

    def network_policy_problem(self) -> str | None:
        calico = ["get", "daemonset", "calico-node", "-n", "kube-system", "--ignore-not-found", "-o", "name"]
        if str(self.cluster.kubectl(calico, as_dict=False)).strip():
            return None
        return (
            "no Calico in kube-system: kind's default CNI (kindnet) does not enforce NetworkPolicy, so "
            "isolation cannot be observed; recreate the cluster with `make kind-down kind-up` (installs Calico)"
        )


@dataclass
class HostRelease(Release):
    """`SandboxStack` on the local node: the chart's operator and coordinator as host processes."""

    cluster: AClusterManager
    stack: SandboxStack
    namespace: str = field(init=False)

    def __post_init__(self) -> None:
        self.namespace = self.stack.namespace

    def auth_token(self) -> str | None:
        return self.stack.auth_token

    def coordinator_url(self) -> contextlib.AbstractContextManager[str]:
        assert self.stack.coordinator is not None, "the stack is not started"
        return contextlib.nullcontext(self.stack.coordinator.url)

    def sandboxes_reach_pypi(self) -> bool:
        return False  # the node's bridge leads nowhere beyond this machine (no masquerade, no routes)

    def network_policy_problem(self) -> str | None:
        return NO_NETWORK_POLICY_HERE
