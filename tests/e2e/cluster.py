"""Driving a real kind cluster with kubectl: every call and every wait has a deadline.

The cluster is prepared by `make kind-up images kind-load deploy` (what `make e2e` runs before pytest); these
helpers only read and change it through kubectl, so a failure names the exact command that failed.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import re
import secrets
import selectors
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
REQUIRED_TOOLS = ("docker", "kind", "kubectl", "helm")


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
def skip_reason() -> str | None:
    """Why the e2e tests cannot run here (every reason at once), or None when they can."""
    problems = []
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        problems.append(f"not on PATH: {', '.join(missing)}")
    if "docker" not in missing:
        engine = _docker_engine_problem()
        if engine:
            problems.append(engine)
    if problems:
        return (
            "e2e needs docker with a running engine, kind, kubectl and helm; here "
            + "; ".join(problems)
            + " (run `make e2e` on a machine that has them)"
        )
    if os.environ.get("CODEGEN_E2E") != "1":
        return (
            "e2e tests drive a kind cluster for minutes and run only on request: `make e2e` "
            "(kind-up, images, kind-load, deploy, then pytest with CODEGEN_E2E=1)"
        )
    return None


def eventually(probe: Callable[[], T | None], *, timeout: float, interval: float = 1.0, what: str) -> T:
    """Call `probe` until it returns something truthy; fail after `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        result = probe()
        if result:
            return result
        last = result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


class KubectlError(AssertionError):
    pass


@dataclass(frozen=True)
class Cluster:
    context: str
    namespace: str  # the release namespace (operator, coordinator, and the sessions the coordinator creates)
    release: str

    # --- kubectl -----------------------------------------------------------------------------------------

    def kubectl(
        self, *args: str, stdin: str | None = None, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = ["kubectl", "--context", self.context, *args]
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise KubectlError(f"`{' '.join(argv)}` did not finish within {timeout}s") from exc
        if check and done.returncode != 0:
            raise KubectlError(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        out = self.kubectl("get", kind, name, "-n", namespace or self.namespace, "-o", "json", "--ignore-not-found")
        return json.loads(out.stdout) if out.stdout.strip() else None

    def list(self, kind: str, namespace: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-n", namespace or self.namespace, "-o", "json"]
        if selector:
            args += ["-l", selector]
        items: list[dict[str, Any]] = json.loads(self.kubectl(*args).stdout)["items"]
        return items

    def apply(self, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        self.kubectl(
            "delete", kind, name, "-n", namespace or self.namespace, "--ignore-not-found", "--wait=false", timeout=60
        )

    def describe(self, kind: str, name: str, namespace: str | None = None) -> str:
        out = self.kubectl("describe", kind, name, "-n", namespace or self.namespace, check=False, timeout=30)
        return out.stdout + out.stderr

    def exec_python(
        self, pod: str, code: str, namespace: str | None = None, *, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.kubectl(
            "exec", pod, "-n", namespace or self.namespace, "--", "python", "-c", code, timeout=timeout, check=False
        )

    # --- the release -------------------------------------------------------------------------------------

    def component(self, name: str) -> str:
        return f"app.kubernetes.io/instance={self.release},app.kubernetes.io/component={name}"

    def deployment(self, component: str) -> dict[str, Any]:
        (found,) = self.list("deployment", selector=self.component(component))
        return found

    def coordinator_service(self) -> dict[str, Any]:
        (found,) = self.list("service", selector=self.component("coordinator"))
        return found

    def coordinator_pod(self) -> dict[str, Any]:
        pods = [
            p
            for p in self.list("pod", selector=self.component("coordinator"))
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        ]
        assert pods, "no running coordinator Pod"
        return pods[0]

    def auth_token(self) -> str | None:
        """The first bearer token the coordinator accepts, read from the Secret its Deployment references."""
        (container,) = self.deployment("coordinator")["spec"]["template"]["spec"]["containers"]
        ref = next(
            (e["valueFrom"]["secretKeyRef"] for e in container["env"] if e["name"] == "CODEGEN_AUTH_TOKENS"), None
        )
        if ref is None:
            return None
        secret = self.get("secret", ref["name"])
        assert secret is not None, f"Secret {ref['name']} is missing"
        tokens = base64.b64decode(secret["data"][ref["key"]]).decode()
        return tokens.split(",")[0].strip()

    # --- sessions ----------------------------------------------------------------------------------------

    def wait_ready(self, name: str, namespace: str | None = None, timeout: float = 300) -> dict[str, Any]:
        namespace = namespace or self.namespace

        def ready() -> dict[str, Any] | None:
            body = self.get("codegensession", name, namespace)
            phase = (body or {}).get("status", {}).get("phase")
            if phase == "Failed":
                raise AssertionError(f"session {namespace}/{name} failed:\n{self.describe('cgs', name, namespace)}")
            return body if phase == "Ready" else None

        try:
            return eventually(ready, timeout=timeout, interval=2, what=f"session {namespace}/{name} to be Ready")
        except AssertionError as exc:
            pod = self.describe("pod", f"{name}-sandbox", namespace)
            raise AssertionError(f"{exc}\n{self.describe('cgs', name, namespace)}\n{pod}") from None

    def wait_gone(self, kind: str, name: str, namespace: str | None = None, timeout: float = 180) -> None:
        eventually(
            lambda: self.get(kind, name, namespace) is None,
            timeout=timeout,
            interval=2,
            what=f"{kind} {namespace or self.namespace}/{name} to be deleted",
        )

    def calico_enforces_network_policy(self) -> bool:
        nodes = self.kubectl("get", "daemonset", "calico-node", "-n", "kube-system", "--ignore-not-found", "-o", "name")
        return bool(nodes.stdout.strip())


def session_manifest(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """A small session for kind: little CPU/memory, a small workspace, no egress unless asked."""
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


@contextlib.contextmanager
def port_forward(cluster: Cluster, target: str, remote_port: str, timeout: float = 30) -> Iterator[int]:
    """`kubectl port-forward` to a free local port; yields the port, stops the process afterwards."""
    argv = ["kubectl", "--context", cluster.context, "-n", cluster.namespace, "port-forward", target, f":{remote_port}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        watch = selectors.DefaultSelector()
        watch.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        port = None
        while port is None:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
                raise AssertionError(f"`{' '.join(argv)}` did not start forwarding within {timeout}s: {err}")
            if not watch.select(timeout=min(left, 1.0)):
                continue
            match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", proc.stdout.readline())
            if match:
                port = int(match.group(1))
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=5):
            return True
    except OSError:
        return False
