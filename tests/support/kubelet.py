"""A test harness that plays the kubelet (and the volume provisioner) against a Kubernetes API server.

It watches Pods and PersistentVolumeClaims over HTTP, like a node would:

- a claim is "provisioned": its status becomes Bound, and it maps to a directory `<root>/volumes/<ns>/<claim>`
  that outlives any Pod, exactly what makes a workspace survive a Pod's replacement;
- a Pod whose container runs `codegen-mcp agent` gets a real sandbox agent process: its env is the Pod's env
  with `secretKeyRef`s resolved from the Secrets, its PVC volume is the claim's directory, its emptyDir
  `/tmp` a fresh directory; each Pod gets its own loopback IP (127.0.0.2, 127.0.0.3, ...) so the agent listens
  on `podIP:containerPort` as in a cluster, and a replacement Pod gets a new IP;
- the readiness probe is played by GETting the probe's path, then the Pod's status is patched (Running,
  Ready, podIP, containerStatuses); when the process exits the Pod becomes Failed with the exit code;
- a deleted Pod has its process terminated.

Against a real API server (`node_name` given) it is a node as the scheduler sees one: it registers a Node and
renews its Lease, runs only the Pods bound to it, confirms their deletion (the server waits for the node to do
that), and leaves claims to the real PV controller, mounting the hostPath of the PersistentVolume a claim is
bound to.

Tests can inject the failures a real node produces: `crash()` a Pod (optionally as OOMKilled), make an
image unpullable (`image_errors`), or make scheduling impossible (`unschedulable`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import logging
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

# One API request of the harness (not a watch); a loaded API server answers in well under a second.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)

log = logging.getLogger(__name__)

AGENT_COMMAND = ["codegen-mcp", "agent"]
MERGE_PATCH = "application/merge-patch+json"
START_TIMEOUT = 30.0


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class PodRuntime:
    namespace: str
    name: str
    uid: str
    ip: str
    port: int | None = None
    process: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None
    workspace: Path | None = None
    kill_reason: str | None = None
    log_path: Path | None = None
    stopping: bool = False
    env: dict[str, str] = field(default_factory=dict)


class FakeKubelet:
    def __init__(
        self,
        server: str,
        root: Path,
        *,
        namespaces: tuple[str, ...] | None = None,
        node_name: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.root = root
        self.namespaces = namespaces
        self.node_name = node_name  # set: a node of a real API server; unset: the emulator's stand-in
        self._ssl = ssl_context
        self.pods: dict[str, PodRuntime] = {}  # by uid
        self.image_errors: dict[str, str] = {}  # image -> waiting reason, e.g. ImagePullBackOff
        self.unschedulable = False
        self.started: list[str] = []  # "ns/name" of every Pod whose agent was started, in order
        self._ips = iter(f"127.0.0.{n}" for n in range(2, 255))
        self._http: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pod_tasks: set[asyncio.Task[None]] = set()  # every Pod's task, also of Pods already deleted
        self._claims_changed = asyncio.Event()
        self._mounted: dict[tuple[str, str], Path] = {}  # (namespace, claim) -> the volume's folder

    # --- lifecycle -----------------------------------------------------------------------------------------

    @property
    def real(self) -> bool:
        return self.node_name is not None

    async def __aenter__(self) -> FakeKubelet:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            connector=aiohttp.TCPConnector(ssl=self._ssl) if self._ssl else None,
        )
        if self.node_name is not None:
            await self._register_node()
            self._tasks = [
                asyncio.create_task(self._heartbeat(), name="kubelet-lease"),
                asyncio.create_task(
                    self._watch("/api/v1/pods", self._on_pod, {"fieldSelector": f"spec.nodeName={self.node_name}"}),
                    name="kubelet-pods",
                ),
            ]
        else:
            self._tasks = [
                asyncio.create_task(
                    self._watch("/api/v1/persistentvolumeclaims", self._on_claim), name="kubelet-claims"
                ),
                asyncio.create_task(self._watch("/api/v1/pods", self._on_pod), name="kubelet-pods"),
            ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.node_name is not None:
            await self._request("DELETE", f"/api/v1/nodes/{self.node_name}")
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(self._tasks)
        for runtime in self.pods.values():
            runtime.stopping = True
        for task in self._pod_tasks:
            if not task.cancelling():  # a second cancel would interrupt its cleanup
                task.cancel()
        if self._pod_tasks:
            await asyncio.wait(self._pod_tasks)
        if self._http is not None:
            await self._http.close()
            if self._ssl is not None:  # TLS transports close after the session (aio-libs/aiohttp#1925)
                await asyncio.sleep(0.25)

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None, "use FakeKubelet as an async context manager"
        return self._http

    # --- test controls -------------------------------------------------------------------------------------

    def runtime(self, namespace: str, name: str) -> PodRuntime | None:
        """The live runtime of the Pod with this name (the newest, if it was replaced)."""
        found = [r for r in self.pods.values() if r.namespace == namespace and r.name == name and not r.stopping]
        return found[-1] if found else None

    def claim_dir(self, namespace: str, claim: str) -> Path:
        """The folder behind a claim: the harness's own, or (real server) the bound volume's hostPath once mounted."""
        return self._mounted.get((namespace, claim), self.root / "volumes" / namespace / claim)

    async def set_unschedulable(self, value: bool) -> None:
        """No Pod fits this node: the real scheduler says why (a cordoned node); the emulator's stand-in, memory."""
        self.unschedulable = value
        if self.node_name is not None:
            await self._request(
                "PATCH", f"/api/v1/nodes/{self.node_name}", {"spec": {"unschedulable": value}}, MERGE_PATCH
            )

    async def crash(self, namespace: str, name: str, *, reason: str = "Error") -> None:
        """Kill the Pod's agent the way the node would (reason OOMKilled for the memory limit)."""
        runtime = self.runtime(namespace, name)
        assert runtime is not None and runtime.process is not None, f"no running Pod {namespace}/{name}"
        runtime.kill_reason = reason
        runtime.process.kill()

    # --- API plumbing ---------------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        """One API request; None for 404 (and for a 409 on delete: a precondition already moot).

        Bounded (`REQUEST_TIMEOUT`), unlike the watches: an API server that does not answer fails the request
        where it was made, rather than holding a teardown until the test's own timeout says nothing useful.
        """
        async with self.http.request(
            method,
            self.server + path,
            data=None if body is None else json.dumps(body),
            headers={"Content-Type": content_type},
            timeout=REQUEST_TIMEOUT,
        ) as resp:
            if resp.status == 404 or (resp.status == 409 and method == "DELETE"):
                return None
            if resp.status >= 400:
                raise aiohttp.ClientResponseError(
                    resp.request_info, resp.history, status=resp.status, message=await resp.text()
                )
            return await resp.json()

    async def _patch_status(self, namespace: str, plural: str, name: str, status: dict[str, Any]) -> None:
        await self._request(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/{plural}/{name}/status",
            {"status": status},
            MERGE_PATCH,
        )

    async def _watch(
        self, path: str, handler: Callable[[str, dict[str, Any]], Any], params: dict[str, str] | None = None
    ) -> None:
        """Watch forever (reconnecting), feeding every event to `handler`."""
        while True:
            try:
                async for kind, obj in self._stream(path, params or {}):
                    ns = obj.get("metadata", {}).get("namespace")
                    if self.namespaces is None or ns in self.namespaces:
                        try:
                            await handler(kind, obj)
                        except Exception:  # a harness bug must be loud but must not stop the node
                            log.exception("kubelet harness failed on %s %s", kind, obj.get("metadata", {}).get("name"))
            except (TimeoutError, aiohttp.ClientError) as exc:
                log.debug("kubelet watch of %s interrupted: %s", path, exc)
            await asyncio.sleep(0.05)

    async def _stream(self, path: str, params: dict[str, str]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        async with self.http.get(self.server + path, params={"watch": "true", **params}) as resp:
            resp.raise_for_status()
            async for line in resp.content:
                if line.strip():
                    event = json.loads(line)
                    yield event.get("type", ""), event.get("object", {})

    # --- the Node (real API server) ------------------------------------------------------------------------

    async def _register_node(self) -> None:
        name = self.node_name
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        }
        await self._request("POST", "/api/v1/nodes", node)
        resources = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        await self._patch_node_status({
            "capacity": resources,
            "allocatable": resources,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "the kubelet harness is ready",
                "lastHeartbeatTime": _now(), "lastTransitionTime": _now(),
            }],
            "nodeInfo": {
                "architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "harness",
                "kubeProxyVersion": "", "containerRuntimeVersion": "harness://1", "kernelVersion": "", "osImage": "",
                "machineID": "", "systemUUID": "", "bootID": "",
            },
        })  # fmt: skip

    async def _patch_node_status(self, status: dict[str, Any]) -> None:
        await self._request("PATCH", f"/api/v1/nodes/{self.node_name}/status", {"status": status}, MERGE_PATCH)

    async def _heartbeat(self) -> None:
        """Renew the node's Lease, as a kubelet does, so the node lifecycle controller keeps the node Ready."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        while True:
            renew = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            spec = {"holderIdentity": self.node_name, "leaseDurationSeconds": 40, "renewTime": renew}
            try:
                if await self._request("PATCH", path, {"spec": spec}, MERGE_PATCH) is None:
                    lease = {"metadata": {"name": self.node_name}, "spec": spec}
                    await self._request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)
            except aiohttp.ClientError as exc:
                log.warning("the harness node's lease was not renewed: %s", exc)
            await asyncio.sleep(5)

    # --- volumes ---------------------------------------------------------------------------------------------

    async def _on_claim(self, kind: str, claim: dict[str, Any]) -> None:
        meta = claim["metadata"]
        if kind != "DELETED" and (claim.get("status") or {}).get("phase") != "Bound":
            self.claim_dir(meta["namespace"], meta["name"]).mkdir(parents=True, exist_ok=True)
            capacity = ((claim.get("spec") or {}).get("resources") or {}).get("requests", {})
            await self._patch_status(
                meta["namespace"], "persistentvolumeclaims", meta["name"], {"phase": "Bound", "capacity": capacity}
            )
        self._claims_changed.set()

    async def _volume_dir(self, namespace: str, claim: dict[str, Any]) -> Path:
        """Where the bound claim's data lives: the harness's own folder, or the real PersistentVolume's hostPath."""
        if self.node_name is None:
            return self.claim_dir(namespace, claim["metadata"]["name"])
        volume = await self._request("GET", f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}")
        source = (volume or {}).get("spec", {})
        path = (source.get("hostPath") or source.get("local") or {}).get("path")
        if not path:
            raise RuntimeError(f"this node mounts only hostPath and local volumes, not {source}")
        # The provisioner makes the folder root:root 0750. This node's agents run as root and drop run code to
        # per-session uids (not the Pod's uid and fsGroup), so the folder is opened up as the harness's own
        # volume folders are; a volume that really ignores fsGroup is tested on the real node.
        folder = Path(path)
        folder.chmod(0o755)
        for parent in folder.parents:  # the provisioner's own folders (/tmp/kube/hostpath_pv) are 0750 too
            if parent == Path("/tmp") or parent == parent.parent:
                break
            parent.chmod(parent.stat().st_mode | 0o111)
        return folder

    async def _wait_for_claim(self, namespace: str, claim: str) -> Path:
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while True:
            self._claims_changed.clear()
            obj = await self._request("GET", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}")
            if obj is not None and (obj.get("status") or {}).get("phase") == "Bound":
                self._mounted[(namespace, claim)] = await self._volume_dir(namespace, obj)
                return self._mounted[(namespace, claim)]
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"claim {namespace}/{claim} never became Bound")
            with contextlib.suppress(TimeoutError):  # a real node is not told of claims: it asks again
                await asyncio.wait_for(self._claims_changed.wait(), timeout=min(remaining, 1.0 if self.real else 0.2))

    # --- pods --------------------------------------------------------------------------------------------------

    async def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            runtime = self.pods.pop(uid, None)
            if runtime is not None:
                await self._stop(runtime)
            if kind != "DELETED" and self.node_name is not None:
                # A real API server keeps a bound Pod until its node confirms that its containers are gone.
                await self._request(
                    "DELETE",
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                    {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
                )
            return
        if uid in self.pods or (pod.get("status") or {}).get("phase") in ("Running", "Failed", "Succeeded"):
            return
        runtime = PodRuntime(namespace=meta["namespace"], name=meta["name"], uid=uid, ip=next(self._ips))
        self.pods[uid] = runtime
        runtime.task = asyncio.create_task(self._run_pod(runtime, pod), name=f"pod {meta['name']}")
        self._pod_tasks.add(runtime.task)

    async def _run_pod(self, runtime: PodRuntime, pod: dict[str, Any]) -> None:
        ns, name = runtime.namespace, runtime.name
        spec = pod["spec"]
        container = spec["containers"][0]
        if self.unschedulable:
            await self._patch_status(ns, "pods", name, {
                "phase": "Pending",
                "conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/1 nodes are available: 1 Insufficient memory.", "lastTransitionTime": _now(),
                }],
            })  # fmt: skip
            return
        scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()}
        if container["image"] in self.image_errors:
            reason = self.image_errors[container["image"]]
            await self._patch_status(ns, "pods", name, {
                "phase": "Pending", "conditions": [scheduled],
                "containerStatuses": [{
                    "name": container["name"], "image": container["image"], "imageID": "", "ready": False,
                    "restartCount": 0, "started": False,
                    "state": {"waiting": {"reason": reason, "message": f"Back-off pulling image {container['image']}"}},
                }],
            })  # fmt: skip
            return
        await self._patch_status(
            ns, "pods", name, {"phase": "Pending", "conditions": [scheduled], "hostIP": "127.0.0.1"}
        )
        drain: asyncio.Task[None] | None = None
        try:
            try:
                await self._start(runtime, pod)
            except Exception as exc:
                log.exception("could not start the agent of %s/%s", ns, name)
                await self._terminated(runtime, container, exit_code=128, reason="StartError", message=str(exc))
                return
            assert runtime.process is not None and runtime.process.stdout is not None
            drain = asyncio.create_task(_drain(runtime.process.stdout))
            code = await runtime.process.wait()
            if runtime.stopping:
                return
            reason = runtime.kill_reason or ("Completed" if code == 0 else "Error")
            await self._terminated(runtime, container, exit_code=137 if code < 0 else code, reason=reason, message="")
        finally:
            # The process belongs to this task: whatever ends the task ends the process.
            await _kill(runtime.process)
            if drain is not None:
                drain.cancel()
                await asyncio.wait([drain])

    async def _resolve_env(self, namespace: str, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
            elif ref := (item.get("valueFrom") or {}).get("secretKeyRef"):
                secret = await self._request("GET", f"/api/v1/namespaces/{namespace}/secrets/{ref['name']}")
                if secret is None or ref["key"] not in (secret.get("data") or {}):
                    raise RuntimeError(f"CreateContainerConfigError: secret {ref['name']}/{ref['key']} not found")
                env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        return env

    async def _start(self, runtime: PodRuntime, pod: dict[str, Any]) -> None:
        ns, spec = runtime.namespace, pod["spec"]
        container = spec["containers"][0]
        command = list(container.get("command") or []) + list(container.get("args") or [])
        if command[:2] != AGENT_COMMAND:
            raise RuntimeError(f"this node only runs `codegen-mcp agent`, not {command}")
        port = next(p["containerPort"] for p in container.get("ports", []))
        mounts: dict[str, Path] = {}
        pod_dir = self.root / "pods" / runtime.uid
        for volume in spec.get("volumes", []):
            if claim := (volume.get("persistentVolumeClaim") or {}).get("claimName"):
                mounts[volume["name"]] = await self._wait_for_claim(ns, claim)
            elif "emptyDir" in volume:
                mounts[volume["name"]] = pod_dir / volume["name"]
                mounts[volume["name"]].mkdir(parents=True, exist_ok=True)
        paths = {m["mountPath"]: mounts[m["name"]] for m in container.get("volumeMounts", [])}
        env = await self._resolve_env(ns, container)
        # Container paths become the mounted directories on this "node".
        for key, value in list(env.items()):
            if value in paths:
                env[key] = str(paths[value])
        runtime.workspace = Path(env["CODEGEN_AGENT_WORKSPACE"])
        env["CODEGEN_AGENT_HOST"] = runtime.ip
        runtime.env = env
        runtime.log_path = pod_dir / "agent.log"
        pod_dir.mkdir(parents=True, exist_ok=True)
        with open(runtime.log_path, "wb") as log_file:
            runtime.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "codegen_mcp.sandbox_agent",
                *command[2:],
                "--workspace",
                str(runtime.workspace),
                "--host",
                runtime.ip,
                "--port",
                str(port),
                env={**os.environ, **env},
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                start_new_session=True,
            )
        assert runtime.process.stdout is not None
        line = await asyncio.wait_for(runtime.process.stdout.readline(), timeout=START_TIMEOUT)
        if not line.startswith(b"LISTENING"):
            raise RuntimeError(f"the agent did not start: {line!r}; see {runtime.log_path}")
        runtime.port = int(line.decode().strip().rsplit(":", 1)[1])
        await self._probe(runtime, container)
        self.started.append(f"{ns}/{runtime.name}")
        await self._patch_status(ns, "pods", runtime.name, {
            "phase": "Running",
            "podIP": runtime.ip,
            "podIPs": [{"ip": runtime.ip}],
            "hostIP": "127.0.0.1",
            "startTime": _now(),
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": _now()}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
            "containerStatuses": [{
                "name": container["name"], "image": container["image"], "imageID": "", "ready": True,
                "started": True, "restartCount": 0, "containerID": f"fake://{runtime.uid}",
                "state": {"running": {"startedAt": _now()}},
            }],
        })  # fmt: skip

    async def _probe(self, runtime: PodRuntime, container: dict[str, Any]) -> None:
        """Play the readiness probe: GET its path until it answers 200."""
        path = ((container.get("readinessProbe") or {}).get("httpGet") or {}).get("path", "/healthz")
        url = f"http://{runtime.ip}:{runtime.port}{path}"
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"readiness probe {url} never succeeded")
            await asyncio.sleep(0.05)  # probe period

    async def _terminated(
        self, runtime: PodRuntime, container: dict[str, Any], *, exit_code: int, reason: str, message: str
    ) -> None:
        state = {"terminated": {"exitCode": exit_code, "reason": reason, "message": message, "finishedAt": _now()}}
        await self._patch_status(runtime.namespace, "pods", runtime.name, {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "podIP": None,
            "podIPs": None,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()},
                {"type": "Ready", "status": "False", "reason": "PodFailed", "lastTransitionTime": _now()},
            ],
            "containerStatuses": [{
                "name": container["name"], "image": container["image"], "imageID": "", "ready": False,
                "started": False, "restartCount": 0, "state": state,
            }],
        })  # fmt: skip

    async def _stop(self, runtime: PodRuntime) -> None:
        runtime.stopping = True
        if runtime.task is not None and runtime.task is not asyncio.current_task():
            runtime.task.cancel()
            # asyncio.wait, not `await task`: suppressing CancelledError there would swallow our own.
            await asyncio.wait([runtime.task])
        else:
            await _kill(runtime.process)


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def _kill(process: asyncio.subprocess.Process | None) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers, and reap it, even when cancelled meanwhile."""
    if process is None:
        return
    reaping = asyncio.ensure_future(_terminate(process))
    try:
        await asyncio.shield(reaping)
    except asyncio.CancelledError:
        await reaping
        raise


async def _terminate(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    await process.wait()
