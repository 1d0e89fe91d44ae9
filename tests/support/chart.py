"""The Helm chart installed for real, and the identities it creates, for tests on the real control plane.

`install_release` runs `helm install` through helm-python-sdk (Helm v4's own install action, CRDs included)
with the admin's kubeconfig; `installed_chart` wraps it with fresh namespaces, a `Placement` for the sandbox Pods
(the kubelet harness's node by default, a real node in tests/support/node_stack.py) and a full clean-up.
`Identity` is one ServiceAccount of the release: a token from the TokenRequest API, a kubeconfig holding only that
token, and plain requests that return the server's answer, 403 included. `deployment_env` turns a rendered
Deployment's env into the environment its Pod would get, so the operator (`running_operator`) and the coordinator
(`running_coordinator`) run here, on the host, with the chart's settings and the chart's identities.
`OPERATOR_NEEDS` / `COORDINATOR_NEEDS` list every right each component's code uses, and the call that uses it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from codegen_mcp.api import session as api
from codegen_mcp.api.pool import POOL_PLURAL
from codegen_mcp.operator.settings import OperatorSettings
from tests.support.control_plane import ControlPlane, free_port, tail, terminate
from tests.support.coordinator import CoordinatorProcess, print_log_tail, start_coordinator, stop_process
from tests.support.real_cluster import RealCluster, api_path
from tests.support.redis import start_redis, stop_redis
from tests.support.waiting import wait_for

G = api.GROUP
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
CHART_CRDS = (
    "codegensessions.codegen-mcp.io",
    "codegensandboxpools.codegen-mcp.io",
    "kopfpeerings.kopf.dev",
    "clusterkopfpeerings.kopf.dev",
)
WORKSPACE_VOLUMES = 6  # static volumes, one per workspace claim a module makes (each is used once: Retain)
# Every refusal names itself: the API's "... is forbidden: User ..." and kopf's APIForbiddenError.
FORBIDDEN = re.compile("forbidden", re.IGNORECASE)
CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "codegen-mcp"
TOKEN_SECONDS = 3600
# Rights every authenticated user has (system:basic-user): asking what one may do. Not granted by the chart.
SELF_REVIEW_GROUPS = {"authorization.k8s.io", "authentication.k8s.io"}

Right = tuple[str, str, str]  # (API group, resource[/subresource], verb)


@dataclass
class Answer:
    status: int
    body: dict[str, Any]

    @property
    def forbidden(self) -> bool:
        return self.status == 403

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


@dataclass
class Identity:
    """One ServiceAccount, speaking to the API server with its own token and nothing else."""

    namespace: str
    name: str
    token: str
    kubeconfig: Path
    plane: ControlPlane
    _ssl: ssl.SSLContext = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._ssl = ssl.create_default_context(cafile=str(self.plane.ca_file))  # trust only; no client certificate

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    def call(self, method: str, path: str, body: Any = None, **query: str) -> Answer:
        """One request; the answer whatever its status. PATCH bodies are merge patches."""
        content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
        url = self.plane.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        request = urllib.request.Request(  # noqa: S310 - https to the test's own API server
            url,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": content_type},
        )
        try:
            with urllib.request.urlopen(request, context=self._ssl, timeout=10) as resp:  # noqa: S310
                return Answer(int(resp.status), json.loads(resp.read() or b"{}"))
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                decoded = json.loads(raw)
            except ValueError:
                decoded = {"message": raw.decode(errors="replace")}
            return Answer(int(exc.code), decoded)

    def may(self, right: Right, namespace: str | None) -> bool:
        """SelfSubjectAccessReview: what the server's authorizer says this identity may do."""
        group, resource, verb = right
        plural, _, subresource = resource.partition("/")
        attributes = {"group": group, "resource": plural, "subresource": subresource, "verb": verb}
        if namespace is not None:
            attributes["namespace"] = namespace
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        answer = self.call("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)
        assert answer.status == 201, answer
        return bool(answer.body["status"]["allowed"])

    def rights_in(self, namespace: str) -> set[Right]:
        """SelfSubjectRulesReview: every (group, resource, verb) this identity holds in `namespace`, wildcards and
        all, minus the self-review rights every authenticated user has."""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectRulesReview",
            "spec": {"namespace": namespace},
        }
        answer = self.call("POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", review)
        assert answer.status == 201, answer
        status = answer.body["status"]
        assert not status.get("incomplete"), status
        return expand_rules(status.get("resourceRules") or [])


def expand_rules(rules: Iterable[dict[str, Any]]) -> set[Right]:
    found: set[Right] = set()
    for rule in rules:
        assert not rule.get("resourceNames"), rule  # the chart grants by resource only
        for group in rule.get("apiGroups") or []:
            if group in SELF_REVIEW_GROUPS:
                continue
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    found.add((group, resource, verb))
    return found


def request_token(admin: RealCluster, namespace: str, service_account: str) -> str:
    """A bound token for the ServiceAccount (TokenRequest API), as the kubelet would project into its Pod."""
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": TOKEN_SECONDS},
    }
    answer = admin.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token", body)
    assert answer is not None, f"no ServiceAccount {namespace}/{service_account}"
    return str(answer["status"]["token"])


def identity(plane: ControlPlane, admin: RealCluster, namespace: str, service_account: str, folder: Path) -> Identity:
    token = request_token(admin, namespace, service_account)
    kubeconfig = plane.token_kubeconfig(service_account, token, path=folder / f"{service_account}.kubeconfig")
    return Identity(namespace, service_account, token, kubeconfig, plane)


# --- the release ------------------------------------------------------------------------------------------------


@dataclass
class Release:
    name: str
    namespace: str
    values: dict[str, Any]
    manifest: list[dict[str, Any]]
    installed: dict[str, Any]

    def find(self, kind: str, suffix: str) -> dict[str, Any]:
        found = [d for d in self.manifest if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
        assert len(found) == 1, f"one {kind} *{suffix} expected, found {[d['metadata']['name'] for d in found]}"
        return found[0]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.manifest if d["kind"] == kind]

    def sandbox_service_account(self) -> str:
        (name,) = {
            d["metadata"]["name"] for d in self.all("ServiceAccount") if d["metadata"]["name"].endswith("-sandbox")
        }
        return str(name)

    def service_account(self, component: str) -> str:
        spec = self.find("Deployment", f"-{component}")["spec"]["template"]["spec"]
        return str(spec["serviceAccountName"])


IRREGULAR_PLURALS = {"NetworkPolicy": "networkpolicies", "PodDisruptionBudget": "poddisruptionbudgets"}


def object_path(doc: dict[str, Any]) -> str:
    """The API path of a manifest's object."""
    version = doc["apiVersion"]
    base = f"/apis/{version}" if "/" in version else f"/api/{version}"
    namespace = doc["metadata"].get("namespace")
    if namespace:
        base += f"/namespaces/{namespace}"
    plural = IRREGULAR_PLURALS.get(doc["kind"], doc["kind"].lower() + "s")
    return f"{base}/{plural}/{doc['metadata']['name']}"


def helm_config(plane: ControlPlane, namespace: str) -> Any:
    import helm_python

    return helm_python.Config(kubeconfig_path=str(plane.kubeconfig), namespace=namespace)


def install_release(plane: ControlPlane, name: str, namespace: str, values: dict[str, Any]) -> Release:
    """`helm install NAME helm/codegen-mcp -n NAMESPACE` with these values, as the cluster admin."""
    with helm_config(plane, namespace) as config:
        installed = config.install(str(CHART_DIR), name, values, namespace=namespace, timeout=60)
    manifest = [d for d in yaml.safe_load_all(installed["manifest"]) if d]
    return Release(name, namespace, values, manifest, installed)


def uninstall_release(plane: ControlPlane, release: Release) -> None:
    with helm_config(plane, release.namespace) as config:
        config.uninstall(release.name, ignore_not_found=True, wait="watcher", timeout=60)


def deployment_env(deployment: dict[str, Any], admin: RealCluster, pod_name: str) -> dict[str, str]:
    """The environment of the Deployment's container as the kubelet would give it (fieldRefs, Secret keys)."""
    namespace = deployment["metadata"]["namespace"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        source = entry.get("valueFrom") or {}
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        elif (ref := source.get("fieldRef")) is not None:
            assert ref["fieldPath"] == "metadata.name", ref
            env[entry["name"]] = pod_name
        elif (ref := source.get("secretKeyRef")) is not None:
            secret = admin.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{ref['name']}")
            assert secret is not None, f"the chart's Secret {ref['name']} is missing"
            env[entry["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        else:
            raise AssertionError(f"an env source this harness does not know: {entry}")
    return env


def operator_settings(env: dict[str, str]) -> OperatorSettings:
    """The operator's settings from its Deployment's environment, as the operator itself reads them."""
    prefix = OperatorSettings.model_config.get("env_prefix", "")
    fields = {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
    return OperatorSettings.model_validate(fields)  # validated like the env, but no other env leaks in


def container_args(deployment: dict[str, Any]) -> list[str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return [str(a) for a in container.get("args", [])]


# --- what each component's code calls, per namespace it works in — and the call that needs it.
COORDINATOR_NEEDS: dict[Right, str] = {
    (G, "codegensessions", "list"): "backends/kubernetes.py start(): sessions already there",
    (G, "codegensessions", "create"): "open(): one CodegenSession per MCP session",
    (G, "codegensessions", "get"): "_wait_ready(): read the status",
    (G, "codegensessions", "watch"): "_wait_ready(): watch until Ready",
    (G, "codegensessions", "delete"): "close() / close_unopened(): the MCP session ended",
    (G, "codegensessions", "patch"): "suspend() / revive(): spec.suspend of an idle session",
    (G, "codegensessions/status", "patch"): "touch(): status.lastActivityAt for idle expiry",
    ("", "secrets", "get"): "_read_token(): the agent token from status.tokenSecretName",
}
OPERATOR_NEEDS: dict[Right, str] = {
    (G, "codegensessions", "list"): "kopf: list then watch sessions (handlers, the expiry index)",
    (G, "codegensessions", "watch"): "kopf: list then watch sessions",
    (G, "codegensessions", "get"): "kube.py update_status() and the reconciler's reads",
    (G, "codegensessions", "patch"): "kopf: its progress annotations; the expiry loop: spec.suspend when idle",
    (G, "codegensessions", "delete"): "reconcile.py expire(): TTL and idle expiry",
    (G, "codegensessions/status", "patch"): "kube.py update_status()",
    (G, "codegensessions/finalizers", "update"): "children's blockOwnerDeletion (OwnerReferencesPermissionEnforcement)",
    (G, "codegensandboxpools", "list"): "kopf: list then watch pools",
    (G, "codegensandboxpools", "watch"): "kopf: list then watch pools",
    (G, "codegensandboxpools", "get"): "pools.py sync(), adoption.py: why a session could not adopt",
    (G, "codegensandboxpools", "patch"): "kopf: its progress annotations",
    (G, "codegensandboxpools/status", "patch"): "kube.py update_pool_status()",
    (G, "codegensandboxpools/finalizers", "update"): "pooled children's blockOwnerDeletion",
    ("", "pods", "list"): "kopf: the Pod event handlers; a pool's sandboxes; a session's adoption candidates",
    ("", "pods", "watch"): "kopf: the Pod event handler",
    ("", "pods", "get"): "sync_sandbox()",
    ("", "pods", "create"): "_ensure() and the replacement of a failed Pod",
    ("", "pods", "patch"): "_ensure(): adopt an orphaned Pod (ownerReferences)",
    (
        "",
        "pods",
        "delete",
    ): "sync_sandbox(): replace a failed Pod; pools.py: remove a pooled sandbox (GC does the rest)",
    ("", "persistentvolumeclaims", "list"): "kopf: the claim event handler; pools.py: a pool's sandboxes",
    ("", "persistentvolumeclaims", "watch"): "kopf: the claim event handler",
    ("", "persistentvolumeclaims", "get"): "_ensure() on 409, sync_sandbox(), expire()",
    ("", "persistentvolumeclaims", "create"): "_ensure()",
    ("", "persistentvolumeclaims", "patch"): "_ensure() adoption; retain on/off; a pooled claim adopted by a session",
    ("", "secrets", "get"): "_ensure() on 409",
    ("", "secrets", "create"): "_ensure(): the agent token",
    ("", "secrets", "patch"): "_ensure(): adopt an orphan; a session adopts a pooled sandbox",
    ("networking.k8s.io", "networkpolicies", "get"): "_ensure() on 409",
    ("networking.k8s.io", "networkpolicies", "create"): "_ensure()",
    ("networking.k8s.io", "networkpolicies", "patch"): "_ensure(): adopt an orphan; a session adopts a pooled sandbox",
    ("", "events", "create"): "kube.py post_event() and kopf's own Events",
}
PEERING_NEEDS: dict[Right, str] = {
    ("kopf.dev", "kopfpeerings", verb): "kopf peering (operator.peering.enabled): watch and keep-alive patches"
    for verb in ("get", "list", "watch", "patch")
}


# --- a release for a test module --------------------------------------------------------------------------------


def session_body(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name}, "spec": spec}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm-style deep merge of values."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@dataclass
class Placement:
    """Where a release's sandbox Pods go: the node `sessions.nodeSelector` names, and the values that fit it
    (its workspace StorageClass; for a real node, the image it holds)."""

    node: str
    values: dict[str, Any]


@contextlib.contextmanager
def harness_placement(admin: RealCluster, volumes: int = WORKSPACE_VOLUMES) -> Iterator[Placement]:
    """For the kubelet harness (tests/support/kubelet.py) registered under `Placement.node`.

    Workspaces: static hostPath volumes in a folder of their own, bound by the real PV controller and mounted by the
    harness; unlike provisioned ones they leave nothing behind on the host. The agents listen on a free port: each
    Pod of the harness has its own loopback IP, but the port is the operator's.
    """
    tag = uuid.uuid4().hex[:6]
    node, storage_class = f"chart-{tag}-node", f"chart-{tag}-workspaces"
    root = Path(tempfile.mkdtemp(prefix="codegen-mcp-chart-volumes-"))
    root.chmod(0o711)
    names = [f"chart-{tag}-workspace-{n}" for n in range(volumes)]
    try:
        admin.request("POST", "/apis/storage.k8s.io/v1/storageclasses", {
            "metadata": {"name": storage_class}, "provisioner": "kubernetes.io/no-provisioner",
        })  # fmt: skip
        for volume in names:
            (root / volume).mkdir()
            admin.request("POST", "/api/v1/persistentvolumes", {
                "metadata": {"name": volume},
                "spec": {
                    "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain", "storageClassName": storage_class,
                    "hostPath": {"path": str(root / volume), "type": "Directory"},
                },
            })  # fmt: skip
        yield Placement(node, {
            "operator": {"extraEnv": [{"name": "CODEGEN_OPERATOR_AGENT_PORT", "value": str(free_port())}]},
            "sessions": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "workspace": {"storageClassName": storage_class, "size": "64Mi"},
            },
        })  # fmt: skip
    finally:
        for volume in names:
            admin.request("DELETE", f"/api/v1/persistentvolumes/{volume}")
        admin.request("DELETE", f"/apis/storage.k8s.io/v1/storageclasses/{storage_class}")
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Installed:
    plane: ControlPlane
    admin: RealCluster
    release: Release
    sessions_ns: str  # where the coordinator creates sessions; watched by the operator
    extra_ns: str | None  # also watched by the operator (operator.watchNamespaces), when the layout has one
    outside_ns: str  # watched by no one
    node: str  # the node sandbox Pods are pinned to (sessions.nodeSelector)
    coordinator: Identity
    operator: Identity
    sandbox: Identity  # what sandbox Pods run as (no token is mounted: this one comes from the TokenRequest API)

    @property
    def release_ns(self) -> str:
        return self.release.namespace

    @property
    def watched(self) -> list[str]:
        return [self.sessions_ns] + ([self.extra_ns] if self.extra_ns else [])

    def sessions(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.admin.list_objects(G, api.VERSION, api.PLURAL, namespace or self.sessions_ns)

    def read(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        group, version = {
            "networkpolicies": ("networking.k8s.io", "v1"),
            api.PLURAL: (G, api.VERSION),
            POOL_PLURAL: (G, api.VERSION),
        }.get(plural, ("", "v1"))
        return self.admin.read(group, version, plural, namespace or self.sessions_ns, name)

    def auth_token(self) -> str | None:
        """The first bearer token the coordinator accepts (from the chart's auth Secret); None with auth off."""
        env = deployment_env(self.release.find("Deployment", "-coordinator"), self.admin, pod_name="any")
        return env.get("CODEGEN_AUTH_TOKENS", "").split(",")[0].strip() or None


@contextlib.contextmanager
def installed_chart(
    plane: ControlPlane,
    folder: Path,
    *,
    own_sessions_namespace: bool,
    values: dict[str, Any] | None = None,
    placement: contextlib.AbstractContextManager[Placement] | None = None,
    extra_namespace: str | None = None,
) -> Iterator[Installed]:
    """The chart installed into fresh namespaces, with what the processes on this host need; all gone after.

    `own_sessions_namespace`: sessions in a namespace of their own plus one more watched namespace (the layout
    the README recommends); otherwise the chart's default, sessions in the release namespace.
    `placement`: where sandbox Pods go; by default the kubelet harness's node (`harness_placement`).
    `extra_namespace`: an existing namespace to be that one more watched namespace (e.g. `default`, which manifests
    name), neither made nor deleted here; by default a fresh one.
    """
    assert own_sessions_namespace or extra_namespace is None, "only the own-sessions layout has an extra namespace"
    admin = RealCluster(plane)
    tag = uuid.uuid4().hex[:6]
    release_ns, outside_ns = f"chart-{tag}-rel", f"chart-{tag}-out"
    sessions_ns, extra_ns = (
        (f"chart-{tag}-sess", extra_namespace or f"chart-{tag}-extra") if own_sessions_namespace else (release_ns, None)
    )
    made = sorted({release_ns, sessions_ns, outside_ns} | ({extra_ns} if extra_ns and not extra_namespace else set()))
    created_crds = [name for name in CHART_CRDS if admin.request("GET", f"{CRDS}/{name}") is None]
    release: Release | None = None
    base: dict[str, Any] = {
        # The Deployments stay at 0 replicas: their processes run on this host (their Pods could not reach the API
        # server, which listens on 127.0.0.1).
        "operator": {"replicas": 0, "expiryCheckSeconds": 1},
        "coordinator": {"replicas": 0},
        "sessions": {"readyTimeoutSeconds": 60},
    }
    if own_sessions_namespace:
        base = merge(base, {"operator": {"watchNamespaces": [extra_ns]}, "sessions": {"namespace": sessions_ns}})
    with placement or harness_placement(admin) as where:
        try:
            for namespace in made:
                admin.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
            began = time.monotonic()
            release = install_release(plane, f"cg-{tag}", release_ns, merge(merge(base, where.values), values or {}))
            took = time.monotonic() - began
            print(f"helm install took {took:.2f} s (CRDs it created: {created_crds})", file=sys.stderr)
            # A CRD just created answers 429 "storage is (re)initializing" for a moment.
            sessions = api_path(G, api.VERSION, api.PLURAL, sessions_ns)
            wait_for(lambda: _lists(admin, sessions), timeout=30, what="sessions served")
            wait_for_garbage_collector(admin, outside_ns)
            yield Installed(
                plane=plane,
                admin=admin,
                release=release,
                sessions_ns=sessions_ns,
                extra_ns=extra_ns,
                outside_ns=outside_ns,
                node=where.node,
                coordinator=identity(plane, admin, release_ns, release.service_account("coordinator"), folder),
                operator=identity(plane, admin, release_ns, release.service_account("operator"), folder),
                sandbox=identity(plane, admin, sessions_ns, release.sandbox_service_account(), folder),
            )
        finally:
            for namespace in sorted({*made, *([extra_ns] if extra_ns else [])}):
                admin.request(
                    "DELETE", api_path(G, api.VERSION, api.PLURAL, namespace), {"propagationPolicy": "Background"}
                )
            for namespace in made:  # any Pod left on a node that is gone (a node must confirm a graceful deletion)
                admin.request("DELETE", f"/api/v1/namespaces/{namespace}/pods", {"gracePeriodSeconds": 0})
            left: list[str] = []
            if release is not None:
                uninstall_release(plane, release)
                left = [object_path(d) for d in release.manifest if admin.request("GET", object_path(d)) is not None]
            for namespace in made:
                admin.request("DELETE", f"/api/v1/namespaces/{namespace}")
            # Leave the cluster as it was: no kopf peering CRDs (other tests' operators peer only when they exist),
            # gone from discovery too, which is what operators look at.
            peering_crds = [name for name in created_crds if name.endswith(".kopf.dev")]
            for name in peering_crds:
                admin.request("DELETE", f"{CRDS}/{name}")
            if peering_crds:
                wait_for(
                    lambda: admin.request("GET", "/apis/kopf.dev/v1") is None,
                    timeout=60,
                    what="the kopf.dev API to leave discovery",
                )
            assert not left, f"helm uninstall left {left}"


def wait_for_garbage_collector(admin: RealCluster, namespace: str) -> None:
    """Wait until the garbage collector handles CodegenSessions: it finds a CRD created after it started only at
    its next discovery sync (every 30 s), and until then neither orphans nor deletes a session's children."""
    owner = admin.request("POST", api_path(G, api.VERSION, api.PLURAL, namespace), session_body("gc-probe"))
    reference = {"apiVersion": api.API_VERSION, "kind": api.KIND, "name": "gc-probe", "uid": owner["metadata"]["uid"]}
    dependent = {"metadata": {"name": "gc-probe", "ownerReferences": [reference]}}
    admin.request("POST", f"/api/v1/namespaces/{namespace}/configmaps", dependent)
    admin.request(
        "DELETE", api_path(G, api.VERSION, api.PLURAL, namespace, "gc-probe"), {"propagationPolicy": "Orphan"}
    )
    path = f"/api/v1/namespaces/{namespace}/configmaps/gc-probe"
    wait_for(
        lambda: not (admin.request("GET", path) or {}).get("metadata", {}).get("ownerReferences"),
        timeout=90,
        what="the garbage collector to orphan a session's dependent",
    )
    admin.request("DELETE", path)


def _lists(admin: RealCluster, path: str) -> bool:
    try:
        return admin.request("GET", path) is not None
    except AssertionError as exc:  # RealCluster reports other statuses this way
        if " 429 " in str(exc):
            return False
        raise


# --- the operator and the coordinator as processes on this host ----------------------------------------------------


def _without(args: list[str], flags: tuple[str, ...]) -> list[str]:
    """`args` minus each of `flags` and the value after it."""
    kept: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg in flags:
            next(rest, None)
        else:
            kept.append(arg)
    return kept


@dataclass
class OperatorProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def refusals(self) -> list[str]:
        return [line for line in self.log().splitlines() if FORBIDDEN.search(line)]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - the operator's local liveness probe
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def running_operator(installed: Installed, folder: Path) -> Iterator[OperatorProcess]:
    """`codegen-mcp operator` with the chart's Deployment env and args, as the chart's operator ServiceAccount."""
    deployment = installed.release.find("Deployment", "-operator")
    env = deployment_env(deployment, installed.admin, pod_name="operator-on-the-host")
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    env["CODEGEN_OPERATOR_LIVENESS_ENDPOINT"] = liveness  # the chart's 0.0.0.0:8081, moved off a shared port
    env["CODEGEN_OPERATOR_METRICS_PORT"] = str(free_port())  # the chart's 8082, likewise
    command = [sys.executable, "-m", "codegen_mcp.cli", *container_args(deployment)]
    command += ["--kubeconfig", str(installed.operator.kubeconfig)]
    log_path = folder / "operator.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CODEGEN_") and k != "KUBECONFIG"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            command, env={**clean, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    running = OperatorProcess(proc, log_path)
    try:
        wait_for(lambda: proc.poll() is not None or _answers(liveness), timeout=60, what="the operator's liveness")
        assert proc.poll() is None, f"the operator exited ({proc.returncode}):\n{running.log_tail()}"
        yield running
    finally:
        terminate(proc, grace=20, sig=signal.SIGINT)
        print(f"--- operator log (last 40 lines) ---\n{running.log_tail(40)}", file=sys.stderr)


@contextlib.contextmanager
def running_coordinator(installed: Installed, folder: Path) -> Iterator[CoordinatorProcess]:
    """`codegen-mcp serve` with the chart's Deployment env and args, as the chart's coordinator ServiceAccount.

    Only where the Pod listens and keeps its files is changed: the host's coordinator serves on a free loopback port
    and keeps its state and audit log in `folder`; for the chart's own Redis (a Service name in the cluster) a
    redis-server on the host stands in.
    """
    deployment = installed.release.find("Deployment", "-coordinator")
    env = deployment_env(deployment, installed.admin, pod_name="coordinator-on-the-host")
    state = folder / "coordinator"
    state.mkdir()
    # The chart's audit sink is stdout (nobody reads the test's pipe past LISTENING): a file in `folder` instead.
    env["CODEGEN_AUDIT_SINK"] = "file"
    env["CODEGEN_AUDIT_LOG"] = str(state / "audit.jsonl")  # the chart's path is an emptyDir in the Pod
    env["CODEGEN_K8S_KUBECONFIG"] = str(installed.coordinator.kubeconfig)
    # Nothing from this shell's environment leaks in; the local backend's CODEGEN_LOCAL_* do not apply to the
    # chart's kubernetes backend (and an empty value would not even parse: tests/conftest.py sets one).
    for key in [k for k in os.environ if k.startswith("CODEGEN_") and not k.startswith("CODEGEN_LOCAL_")]:
        env.setdefault(key, "")
    command, *args = container_args(deployment)
    assert command == "serve", command
    args = _without(args, ("--host", "--port"))  # start_coordinator's 127.0.0.1 and a free port instead
    with contextlib.ExitStack() as stack:
        if ".svc:" in env.get("CODEGEN_REDIS_URL", ""):
            redis = start_redis(folder)
            stack.callback(stop_redis, redis)
            env["CODEGEN_REDIS_URL"] = redis.url
        coordinator = start_coordinator(state, *args, env={**env, "KUBECONFIG": "/nonexistent"})
        try:
            yield coordinator
        finally:
            stop_process(coordinator.proc)
            print_log_tail(coordinator)
