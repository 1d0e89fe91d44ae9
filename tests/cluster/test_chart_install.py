"""The chart installs for real, and its RBAC is exactly what the operator and the coordinator use.

`helm install` (helm-python-sdk: Helm v4's own install action, CRDs included) puts the release into the real
control plane. The chart's Deployments are scaled to 0: their processes run here, on the host, with the
Deployment's env and the token of the Deployment's ServiceAccount (TokenRequest API), so every API call they
make is judged by the real RBAC authorizer against the Roles the chart created — nothing else.

Least privilege, both ways:
- each identity holds exactly the rights its code uses (`*_NEEDS` below, each with the call that needs it):
  the server's SelfSubjectRulesReview equals that list in each namespace it works in and is empty elsewhere,
  and a SelfSubjectAccessReview allows each right;
- real calls beyond those rights are refused with 403;
- the real operator and the real coordinator do their work end to end with only those rights, and neither log
  shows a refusal.

The release: its own namespace, a separate sessions namespace (the coordinator's Role lives there, bound to a
ServiceAccount of the release namespace), one extra watched namespace, and an unwatched one for contrast.
"""

from __future__ import annotations

import base64
import functools
import json
import shutil
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from codegen_mcp.api import pool
from codegen_mcp.api import session as api
from codegen_mcp.operator import builders
from tests.support.chart import (
    CHART_CRDS,
    COORDINATOR_NEEDS,
    CRDS,
    FORBIDDEN,
    OPERATOR_NEEDS,
    G,
    Identity,
    Installed,
    OperatorProcess,
    Right,
    deployment_env,
    installed_chart,
    object_path,
    operator_settings,
    running_coordinator,
    session_body,
)
from tests.support.control_plane import ControlPlane
from tests.support.coordinator import CoordinatorProcess
from tests.support.kubelet import FakeKubelet
from tests.support.mcp_client import mcp_session
from tests.support.real_cluster import api_path
from tests.support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    with installed_chart(control_plane, tmp_path_factory.mktemp("identities"), own_sessions_namespace=True) as done:
        yield done


@pytest.fixture(scope="module")
def extra_ns(installed: Installed) -> str:
    assert installed.extra_ns is not None
    return installed.extra_ns


@pytest.fixture
def coordinator(installed: Installed, tmp_path: Path) -> Iterator[tuple[CoordinatorProcess, str]]:
    """`codegen-mcp serve --backend kubernetes` with the chart's env, as the chart's coordinator ServiceAccount.

    Yields the process and the bearer token clients must send (from the chart's generated auth Secret).
    """
    token = installed.auth_token()
    assert token is not None, "the chart's default is auth.enabled"
    with running_coordinator(installed, tmp_path) as running:
        yield running, token


@pytest.fixture
async def node(installed: Installed) -> AsyncIterator[FakeKubelet]:
    """A node for the sandbox Pods: registered with the real API server, it runs a real agent per Pod."""
    root = Path(tempfile.mkdtemp(prefix="codegen-mcp-node-"))
    root.chmod(0o711)  # agents drop run code to the sandbox uid, which must traverse to its workspace
    try:
        async with FakeKubelet(
            installed.plane.url,
            root / "node",
            namespaces=(installed.sessions_ns,),
            node_name=installed.node,
            ssl_context=installed.plane.ssl_context(),
        ) as kubelet:
            yield kubelet
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- the install --------------------------------------------------------------------------------------------------


def test_helm_installs_the_release_with_its_crds(installed: Installed, extra_ns: str) -> None:
    assert installed.release.installed["status"] == "deployed"
    admin = installed.admin
    for name in CHART_CRDS:
        crd = admin.request("GET", f"{CRDS}/{name}")
        assert crd is not None, f"helm did not install the CRD {name}"
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", (name, crd["status"])
    # Every object of the manifest is on the server, where the chart put it.
    missing = [object_path(doc) for doc in installed.release.manifest if admin.request("GET", object_path(doc)) is None]
    assert not missing, missing
    roles = {
        (r["metadata"]["namespace"], r["metadata"]["name"].rsplit("-", 1)[1]) for r in installed.release.all("Role")
    }
    assert roles == {
        (installed.sessions_ns, "coordinator"),
        (installed.sessions_ns, "operator"),
        (extra_ns, "operator"),
    }
    assert not installed.release.all("ClusterRole") and not installed.release.all("ClusterRoleBinding")


# --- (a) each identity holds exactly what its code uses -------------------------------------------------------------


def describe(rights: set[Right], needs: dict[Right, str] | None = None) -> list[str]:
    return sorted(f"{g or 'core'}/{r} {v}" + (f"  ({needs[(g, r, v)]})" if needs else "") for g, r, v in rights)


@pytest.mark.parametrize("component", ["operator", "coordinator", "sandbox"])
def test_each_identity_holds_exactly_the_rights_its_code_uses(installed: Installed, component: str) -> None:
    who: Identity = getattr(installed, component)
    needs, works_in = {
        "operator": (OPERATOR_NEEDS, installed.watched),
        "coordinator": (COORDINATOR_NEEDS, [installed.sessions_ns]),
        "sandbox": ({}, []),  # code in a sandbox must not reach the API at all
    }[component]
    for namespace in (*works_in, installed.release_ns, installed.outside_ns, "default", "kube-system"):
        held = who.rights_in(namespace)
        expected = set(needs) if namespace in works_in else set()
        assert not expected - held, f"{who.username} lacks in {namespace}: {describe(expected - held, needs)}"
        assert not held - expected, (
            f"{who.username} holds more than it uses in {namespace}: {describe(held - expected)}"
        )
    # The authorizer's own answer, right by right, in each namespace the component works in.
    refused = [(ns, right) for ns in works_in for right in needs if not who.may(right, ns)]
    assert not refused, refused
    # And nothing cluster-wide: no listing across namespaces, no cluster-scoped objects.
    for right in [(g, r, "list") for g, r, _ in needs] + [("", "namespaces", "get"), ("", "nodes", "list")]:
        assert not who.may(right, None), f"{who.username} may {right} cluster-wide"


# --- (b) the server refuses what the chart does not grant -----------------------------------------------------------


def pod_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


def role_body(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}


def refused_calls(installed: Installed) -> dict[str, list[tuple[str, str, str, Any]]]:
    """(why it must be refused, method, path, body) per identity."""
    sess, out, rel = installed.sessions_ns, installed.outside_ns, installed.release_ns
    auth_secret = installed.release.find("Secret", "-auth")["metadata"]["name"]
    helm_secret = f"sh.helm.release.v1.{installed.release.name}.v1"
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    sessions = api_path(G, api.VERSION, api.PLURAL, sess)
    return {
        "coordinator": [
            ("list every Secret of the cluster", "GET", "/api/v1/secrets", None),
            ("list the Secrets of the sessions namespace", "GET", f"/api/v1/namespaces/{sess}/secrets", None),
            ("read the release's Helm storage", "GET", f"/api/v1/namespaces/{rel}/secrets/{helm_secret}", None),
            ("read the auth Secret", "GET", f"/api/v1/namespaces/{rel}/secrets/{auth_secret}", None),
            ("create a Secret", "POST", f"/api/v1/namespaces/{sess}/secrets", {"metadata": {"name": "x"}}),
            ("create a Pod", "POST", f"/api/v1/namespaces/{sess}/pods", pod_body("x")),
            ("delete a Pod", "DELETE", f"/api/v1/namespaces/{sess}/pods/anything", None),
            ("read a Pod", "GET", f"/api/v1/namespaces/{sess}/pods/anything", None),
            ("exec into a Pod", "POST", f"/api/v1/namespaces/{sess}/pods/anything/exec", None),
            ("create a session elsewhere", "POST", api_path(G, api.VERSION, api.PLURAL, out), session_body("x")),
            ("list sessions cluster-wide", "GET", f"/apis/{G}/{api.VERSION}/{api.PLURAL}", None),
            ("change a session elsewhere", "PATCH", api_path(G, api.VERSION, api.PLURAL, out, "x"), {"spec": {}}),
            ("delete every session at once", "DELETE", sessions, None),
            ("create a Role", "POST", f"{rbac}/namespaces/{sess}/roles", role_body("x")),
            ("create a ClusterRole", "POST", f"{rbac}/clusterroles", role_body("x")),
            ("create a namespace", "POST", "/api/v1/namespaces", {"metadata": {"name": "x"}}),
            ("patch the CRD", "PATCH", f"{CRDS}/codegensessions.{G}", {"metadata": {"labels": {"x": "y"}}}),
        ],
        "sandbox": [
            ("read a session's agent token", "GET", f"/api/v1/namespaces/{sess}/secrets/anything-agent-token", None),
            ("list the Pods of its namespace", "GET", f"/api/v1/namespaces/{sess}/pods", None),
            ("list sessions", "GET", sessions, None),
            ("create a session", "POST", sessions, session_body("x")),
            ("create a Pod", "POST", f"/api/v1/namespaces/{sess}/pods", pod_body("x")),
            ("post an Event", "POST", f"/api/v1/namespaces/{sess}/events", {"metadata": {"name": "x"}}),
        ],
        "operator": [
            ("list every Secret of the cluster", "GET", "/api/v1/secrets", None),
            ("list the Secrets of a watched namespace", "GET", f"/api/v1/namespaces/{sess}/secrets", None),
            ("read the release's Helm storage", "GET", f"/api/v1/namespaces/{rel}/secrets/{helm_secret}", None),
            ("delete a Secret", "DELETE", f"/api/v1/namespaces/{sess}/secrets/anything", None),
            ("create a Pod in an unwatched namespace", "POST", f"/api/v1/namespaces/{out}/pods", pod_body("x")),
            ("read a Pod in an unwatched namespace", "GET", f"/api/v1/namespaces/{out}/pods/anything", None),
            ("create a Pod in its own namespace", "POST", f"/api/v1/namespaces/{rel}/pods", pod_body("x")),
            ("exec into a sandbox", "POST", f"/api/v1/namespaces/{sess}/pods/anything/exec", None),
            ("change a Pod's status", "PATCH", f"/api/v1/namespaces/{sess}/pods/anything/status", {"status": {}}),
            ("create a session", "POST", sessions, session_body("x")),
            ("watch sessions cluster-wide", "GET", f"/apis/{G}/{api.VERSION}/{api.PLURAL}", None),
            ("list namespaces", "GET", "/api/v1/namespaces", None),
            ("list CRDs", "GET", CRDS, None),
            ("create a Role", "POST", f"{rbac}/namespaces/{sess}/roles", role_body("x")),
            ("bind a ClusterRole", "POST", f"{rbac}/namespaces/{sess}/rolebindings", {
                "metadata": {"name": "x"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                "subjects": [{"kind": "ServiceAccount", "name": installed.operator.name, "namespace": rel}],
            }),
            ("create a ClusterRole", "POST", f"{rbac}/clusterroles", role_body("x")),
            ("create a PersistentVolume", "POST", "/api/v1/persistentvolumes", {"metadata": {"name": "x"}}),
            ("delete a claim (a workspace goes with its session only)", "DELETE",
             f"/api/v1/namespaces/{sess}/persistentvolumeclaims/anything", None),
            ("create a ServiceAccount token", "POST",
             f"/api/v1/namespaces/{rel}/serviceaccounts/{installed.coordinator.name}/token", {"spec": {}}),
        ],
    }  # fmt: skip


@pytest.mark.parametrize("component", ["operator", "coordinator", "sandbox"])
def test_the_server_refuses_what_the_chart_does_not_grant(installed: Installed, component: str) -> None:
    who: Identity = getattr(installed, component)
    allowed = []
    for why, method, path, body in refused_calls(installed)[component]:
        answer = who.call(method, path, body)
        if not answer.forbidden:
            allowed.append(f"{why}: {method} {path} -> {answer.status} {answer.message[:120]}")
        else:
            assert who.username in answer.message, answer.message  # refused for who it is, not for a bad token
    assert not allowed, "\n".join(allowed)


def test_the_coordinator_reads_a_secret_only_by_name_in_the_sessions_namespace(installed: Installed) -> None:
    """What `secrets get` allows: a Secret whose name it is told (status.tokenSecretName), in the sessions
    namespace — not a list, and nothing in the release namespace (the Helm storage, the auth tokens)."""
    name = "chart-test-readable"
    installed.admin.request(
        "POST", f"/api/v1/namespaces/{installed.sessions_ns}/secrets", {"metadata": {"name": name}, "data": {}}
    )
    try:
        answer = installed.coordinator.call("GET", f"/api/v1/namespaces/{installed.sessions_ns}/secrets/{name}")
        assert answer.status == 200, answer
        listed = installed.coordinator.call("GET", f"/api/v1/namespaces/{installed.sessions_ns}/secrets")
        assert listed.forbidden, listed
    finally:
        installed.admin.request("DELETE", f"/api/v1/namespaces/{installed.sessions_ns}/secrets/{name}")


# --- (c) the real components, with only those rights -----------------------------------------------------------------


def children_owned_by(installed: Installed, session: dict[str, Any], namespace: str) -> dict[str, str | None]:
    """Each child of the session → the uid of its CodegenSession owner (None: orphan; absent: missing)."""
    name = session["metadata"]["name"]
    found: dict[str, str | None] = {}
    for plural, child in (
        ("secrets", api.token_secret_name(name)),
        ("persistentvolumeclaims", api.workspace_claim_name(name)),
        ("networkpolicies", api.network_policy_name(name)),
        ("pods", api.sandbox_pod_name(name)),
    ):
        obj = installed.read(plural, child, namespace)
        if obj is not None:
            owners = [r["uid"] for r in obj["metadata"].get("ownerReferences") or [] if r["kind"] == api.KIND]
            found[plural] = owners[0] if owners else None
    return found


CHILD_KINDS = ("secrets", "persistentvolumeclaims", "networkpolicies", "pods")
LEFTOVER_TOKEN = "the-token-of-a-deleted-namesake"


def leftover_children(installed: Installed, namespace: str, name: str) -> list[dict[str, Any]]:
    """What the operator would make for a session `name`, without owner: the children of a namesake deleted with
    `kubectl delete --cascade=orphan` (the garbage collector strips their ownerReferences and leaves them)."""
    env = deployment_env(installed.release.find("Deployment", "-operator"), installed.admin, pod_name="any")
    settings = operator_settings(env)
    session = builders.SessionRef(name=name, namespace=namespace, uid="", spec=api.SessionSpec())
    children = builders.build_children(session, settings, token=LEFTOVER_TOKEN)
    for child in children:
        child["metadata"].pop("ownerReferences", None)
    return children


def owned_by_itself(installed: Installed, session: dict[str, Any]) -> bool:
    ns = session["metadata"]["namespace"]
    return children_owned_by(installed, session, ns) == dict.fromkeys(CHILD_KINDS, session["metadata"]["uid"])


def names_its_token(installed: Installed, session: dict[str, Any]) -> bool:
    meta = session["metadata"]
    status = (installed.read(api.PLURAL, meta["name"], meta["namespace"]) or {}).get("status") or {}
    return bool(status.get("tokenSecretName") == api.token_secret_name(meta["name"]))


def is_gone(installed: Installed, session: dict[str, Any]) -> bool:
    meta = session["metadata"]
    return installed.read(api.PLURAL, meta["name"], meta["namespace"]) is None and not children_owned_by(
        installed, session, meta["namespace"]
    )


async def test_the_operator_creates_adopts_and_expires_with_its_own_identity(
    installed: Installed, extra_ns: str, operator: OperatorProcess
) -> None:
    """Without a node, in the second watched namespace (its own Role): a session gets its four children, Events
    and status from the operator's identity; a session whose namesake left orphaned children adopts them (a
    patch of each kind); a TTL makes the operator delete both sessions, and their children go with them."""
    ns, admin = extra_ns, installed.admin
    sessions = api_path(G, api.VERSION, api.PLURAL, ns)
    made, adopting = f"made-{uuid.uuid4().hex[:6]}", f"adopt-{uuid.uuid4().hex[:6]}"
    for child in leftover_children(installed, ns, adopting):
        plural = "networkpolicies" if child["kind"] == "NetworkPolicy" else child["kind"].lower() + "s"
        group = "networking.k8s.io" if plural == "networkpolicies" else ""
        admin.request("POST", api_path(group, "v1", plural, ns), child)
    bodies = {name: admin.request("POST", sessions, session_body(name)) for name in (made, adopting)}

    for name, body in bodies.items():
        await eventually(
            functools.partial(owned_by_itself, installed, body), timeout=30, what=f"the four children of {name}"
        )
        await eventually(functools.partial(names_its_token, installed, body), what=f"{name}'s status.tokenSecretName")
    await eventually(
        lambda: any(
            e["involvedObject"].get("name") == made and e["source"].get("component") == "codegen-mcp-operator"
            for e in admin.request("GET", f"/api/v1/namespaces/{ns}/events")["items"]
        ),
        what="an Event posted by the operator",
    )
    # Adopted, not replaced: the Secret still holds the leftover token.
    secret = installed.read("secrets", api.token_secret_name(adopting), ns)
    assert secret is not None
    assert base64.b64decode(secret["data"][api.TOKEN_SECRET_KEY]).decode() == LEFTOVER_TOKEN

    # Expiry: the operator deletes each session itself (its `delete`); garbage collection takes the children.
    for name in bodies:
        merge_patch(installed, f"{sessions}/{name}", {"spec": {"ttlSeconds": 1}})
    for name, body in bodies.items():
        await eventually(functools.partial(is_gone, installed, body), timeout=30, what=f"{name} and its children gone")
    assert operator.proc.poll() is None
    assert operator.refusals() == [], operator.refusals()


def merge_patch(installed: Installed, path: str, body: dict[str, Any]) -> None:
    """A merge patch as the admin (RealCluster.request sends application/json, which PATCH refuses)."""
    request = urllib.request.Request(  # noqa: S310 - the test's own API server
        installed.plane.url + path,
        data=json.dumps(body).encode(),
        method="PATCH",
        headers={"Content-Type": "application/merge-patch+json"},
    )
    with urllib.request.urlopen(request, context=installed.admin.ssl, timeout=10):  # noqa: S310
        pass


async def test_an_mcp_session_lives_and_ends_with_the_charts_rights(
    installed: Installed,
    operator: OperatorProcess,
    node: FakeKubelet,
    coordinator: tuple[CoordinatorProcess, str],
) -> None:
    cp, token = coordinator
    ns = installed.sessions_ns
    began = time.monotonic()
    async with mcp_session(cp.url, token, timeout=httpx.Timeout(90)) as s:
        written = await s.call_tool("fs.write", {"path": "hello.py", "content": "print(6 * 7)"})
        assert not written.is_error, written
        ready_after = time.monotonic() - began
        [session] = installed.sessions(ns)
        name = session["metadata"]["name"]
        assert session["status"]["phase"] == api.Phase.READY
        assert node.runtime(ns, api.sandbox_pod_name(name)) is not None
        # Placed by the real scheduler on the node the chart's sessions.nodeSelector names, under the chart's
        # token-less sandbox ServiceAccount.
        pod = installed.read("pods", api.sandbox_pod_name(name))
        assert pod is not None and pod["spec"]["nodeName"] == installed.node
        assert pod["spec"]["serviceAccountName"] == installed.sandbox.name
        assert pod["spec"]["automountServiceAccountToken"] is False
        ran = await s.call_tool("run.python", {"file": "hello.py"})
        assert not ran.is_error, ran
        assert ran.structured_content["run"]["stdout"] == "42\n"
        read = await s.call_tool("fs.read", {"path": "hello.py"})
        assert not read.is_error and any("print(6 * 7)" in getattr(c, "text", "") for c in read.content)
        # The coordinator's identity reaches the session and its token, not the sandbox Pod itself.
        pod_path = f"/api/v1/namespaces/{ns}/pods/{api.sandbox_pod_name(name)}"
        assert installed.coordinator.call("GET", pod_path).forbidden
        assert installed.coordinator.call("DELETE", pod_path).forbidden
        await eventually(
            lambda: (installed.read(api.PLURAL, name) or {}).get("status", {}).get("lastActivityAt"),
            timeout=40, what="status.lastActivityAt written by the coordinator",
        )  # fmt: skip
    # The MCP session ended: the coordinator deleted the resource, garbage collection the children.
    await eventually(lambda: not installed.sessions(ns), timeout=30, what="the session deleted")
    await eventually(lambda: not children_owned_by(installed, session, ns), timeout=30, what="the children gone")
    print(f"create → Ready → tool call: {ready_after:.1f} s")
    assert operator.refusals() == [], operator.refusals()
    coordinator_log = cp.log_path.read_text(errors="replace")
    assert not FORBIDDEN.search(coordinator_log), coordinator_log[-3000:]


def pool_sandboxes(installed: Installed, ns: str, pool_name: str) -> list[dict[str, Any]]:
    """The pool's unclaimed sandbox Pods that are not being deleted."""
    pods = installed.admin.request("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector={pool.LABEL_POOL}={pool_name}")
    return [
        p
        for p in pods["items"]
        if api.LABEL_SESSION not in p["metadata"]["labels"] and not p["metadata"].get("deletionTimestamp")
    ]


def pool_ready(installed: Installed, ns: str, pool_name: str, ready: int, claimed: int = 0) -> bool:
    found = installed.read(pool.POOL_PLURAL, pool_name, ns) or {}
    status = found.get("status") or {}
    return (status.get("ready"), status.get("replicas"), status.get("claimed")) == (ready, ready, claimed)


async def test_a_pool_fills_is_adopted_from_refills_and_shrinks_with_the_charts_rights(
    installed: Installed, operator: OperatorProcess, node: FakeKubelet
) -> None:
    """Every call the pool makes (list its Pods and claims, create and delete sandboxes, patch the children a
    session adopts, write its status) is one the chart's Role allows: the operator's log shows no refusal."""
    ns, admin = installed.sessions_ns, installed.admin
    name = f"warm-{uuid.uuid4().hex[:6]}"
    pools = api_path(G, api.VERSION, pool.POOL_PLURAL, ns)
    admin.request("POST", pools, {"apiVersion": api.API_VERSION, "kind": pool.POOL_KIND, "metadata": {"name": name},
                                  "spec": {"replicas": 1}})  # fmt: skip
    await eventually(lambda: pool_ready(installed, ns, name, 1), timeout=60, what="the pool filled")
    (member,) = pool_sandboxes(installed, ns, name)

    session = admin.request("POST", api_path(G, api.VERSION, api.PLURAL, ns), session_body(f"s-{name}", poolRef=name))
    await eventually(
        lambda: (
            ((installed.read(api.PLURAL, f"s-{name}", ns) or {}).get("status") or {}).get("podUID")
            == member["metadata"]["uid"]
        ),
        timeout=30,
        what="the session on the pool's Pod",
    )
    await eventually(functools.partial(owned_by_session, installed, session, member), what="the children moved")
    await eventually(lambda: pool_ready(installed, ns, name, 1, claimed=1), timeout=60, what="the pool refilled")

    merge_patch(installed, f"{pools}/{name}", {"spec": {"replicas": 0}})
    await eventually(lambda: not pool_sandboxes(installed, ns, name), timeout=30, what="the pool emptied")
    admin.request("DELETE", f"{pools}/{name}")
    admin.request("DELETE", f"{api_path(G, api.VERSION, api.PLURAL, ns)}/s-{name}")
    await eventually(
        lambda: not any(member_children(installed, ns, member).values()), timeout=30, what="the session's children gone"
    )
    assert operator.refusals() == [], operator.refusals()


def member_children(installed: Installed, ns: str, member: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """Plural → the child (or None) of the pooled sandbox `member` is the Pod of."""
    sandbox = member["metadata"]["labels"][pool.LABEL_SANDBOX]
    names = {
        "pods": api.sandbox_pod_name(sandbox),
        "secrets": api.token_secret_name(sandbox),
        "persistentvolumeclaims": api.workspace_claim_name(sandbox),
        "networkpolicies": api.network_policy_name(sandbox),
    }
    return {plural: installed.read(plural, child, ns) for plural, child in names.items()}


def owned_by_session(installed: Installed, session: dict[str, Any], member: dict[str, Any]) -> bool:
    uid = session["metadata"]["uid"]
    children = member_children(installed, session["metadata"]["namespace"], member).values()
    return all(
        [r.get("uid") for r in (child or {}).get("metadata", {}).get("ownerReferences") or []] == [uid]
        for child in children
    )
