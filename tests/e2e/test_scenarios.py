"""One set of end-to-end scenarios, on kind with the chart (`make e2e`) and on the local real cluster here.

Sessions become sandbox Pods, MCP clients use them through the coordinator, NetworkPolicy isolates sandboxes,
deletion and TTL clean everything up. The cluster is a pytest-kubernetes `AClusterManager` and the release says
where the operator and the coordinator run (tests/e2e/conftest.py, tests/e2e/release.py); what a cluster cannot
show is skipped with the reason. Every wait is bounded.
"""

from __future__ import annotations

import json
import shlex
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
import yaml
from mcp import ClientSession
from mcp.client.sse import sse_client
from pytest_kubernetes.providers.base import AClusterManager

from codegen_mcp.api import session as api
from codegen_mcp.api.tools import TOOLS
from tests.support.mcp_client import bearer, call, mcp_session, text_of
from tests.support.waiting import wait_for

from .release import (
    NO_CHART_HERE,
    REPO,
    ChartRelease,
    Release,
    apply,
    delete,
    exec_python,
    get,
    list_objects,
    session_manifest,
    unique,
    wait_gone,
    wait_ready,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

TOOL_NAMES = {t.name for t in TOOLS}  # what the coordinator serves: every tool of the shared model
SANDBOX_UID = 10001
MCP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)
EXAMPLE = REPO / "examples" / "codegensession.yaml"


def children_of(name: str) -> dict[str, str]:
    return {
        "pod": api.sandbox_pod_name(name),
        "secret": api.token_secret_name(name),
        "persistentvolumeclaim": api.workspace_claim_name(name),
        "networkpolicy": api.network_policy_name(name),
    }


def the_chart(release: Release) -> ChartRelease:
    if not isinstance(release, ChartRelease):
        pytest.skip(reason=NO_CHART_HERE)
    return release


@pytest.fixture
def sessions(cluster: AClusterManager) -> Iterator[list[tuple[str, str]]]:
    """Sessions a test creates, as (namespace, name): deleted afterwards, whatever happened."""
    made: list[tuple[str, str]] = []
    yield made
    for namespace, name in made:
        delete(cluster, "codegensession", name, namespace)


def create_session(release: Release, made: list[tuple[str, str]], prefix: str, **spec: Any) -> str:
    name = unique(prefix)
    made.append((release.namespace, name))
    apply(release.cluster, session_manifest(name, release.namespace, **spec))
    return name


def pod_ip(cluster: AClusterManager, session: str, namespace: str) -> str:
    pod = get(cluster, "pod", api.sandbox_pod_name(session), namespace)
    assert pod is not None and pod["status"].get("podIP"), f"sandbox Pod of {session} has no IP"
    return str(pod["status"]["podIP"])


def connect_from(cluster: AClusterManager, pod: str, host: str, port: int, namespace: str) -> str:
    """'connected' or 'blocked ...': a TCP connect from inside `pod`, with a 5 s deadline."""
    code = (
        (
            "import socket\n"
            "s = socket.socket(socket.AF_INET6 if ':' in HOST else socket.AF_INET)\n"
            "s.settimeout(5)\n"
            "try:\n"
            "    s.connect((HOST, PORT)); print('connected')\n"
            "except OSError as e:\n"
            "    print('blocked', type(e).__name__)\n"
        )
        .replace("HOST", repr(host))
        .replace("PORT", str(port))
    )
    return exec_python(cluster, pod, code, namespace).strip()


# --- the release ---------------------------------------------------------------------------------------------


def test_release_is_up_and_sessions_are_listable(cluster: AClusterManager, release: Release) -> None:
    chart = the_chart(release)
    for component in ("operator", "coordinator"):
        status = chart.deployment(component)["status"]
        assert status.get("availableReplicas", 0) >= 1, component
    listed = cluster.kubectl(["get", "cgs", "-A"])
    assert isinstance(listed, dict) and listed["kind"] == "List"
    coordinator = chart.coordinator_pod()
    spec = coordinator["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


# --- a session from the example manifest -------------------------------------------------------------------


def test_example_session_becomes_a_locked_down_sandbox_and_is_cleaned_up(
    cluster: AClusterManager, release: Release
) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    name, namespace = example["metadata"]["name"], example["metadata"]["namespace"]
    manifest = shlex.quote(str(EXAMPLE))
    cluster.kubectl(
        ["delete", "-f", manifest, "--ignore-not-found", "--wait=true", "--timeout=120s"], as_dict=False, timeout=150
    )
    cluster.apply(EXAMPLE)
    try:
        body = wait_ready(cluster, name, namespace, timeout=300)
        status = body["status"]
        assert status["podName"] == api.sandbox_pod_name(name)
        assert status["endpoint"].startswith("http://") and status["endpoint"].endswith(":8080")
        assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
        assert "Ready" in str(cluster.kubectl(["get", "cgs", name, "-n", namespace], as_dict=False))  # printer columns

        pod = get(cluster, "pod", api.sandbox_pod_name(name), namespace)
        assert pod is not None
        spec = pod["spec"]
        (agent,) = spec["containers"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == SANDBOX_UID
        assert spec["automountServiceAccountToken"] is False
        sc = agent["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m["name"] for m in agent["volumeMounts"]}
        assert mounts == {"/workspace": "workspace", "/tmp": "tmp"}, "no service-account token, nothing else"
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["workspace"]["persistentVolumeClaim"]["claimName"] == api.workspace_claim_name(name)
        assert "emptyDir" in volumes["tmp"]

        # What the kernel says inside the running sandbox.
        probe = (
            "import json, os\n"
            "out = {'uid': os.getuid(), 'gid': os.getgid()}\n"
            "open('/workspace/.e2e-probe', 'w').write('x'); os.remove('/workspace/.e2e-probe')\n"
            "try:\n"
            "    open('/opt/e2e-probe', 'w'); out['root_writable'] = True\n"
            "except OSError as e:\n"
            "    out['root_writable'] = False\n"
            "out['token_mounted'] = os.path.exists('/var/run/secrets/kubernetes.io/serviceaccount/token')\n"
            "print(json.dumps(out))\n"
        )
        seen = json.loads(exec_python(cluster, api.sandbox_pod_name(name), probe, namespace))
        assert seen == {"uid": SANDBOX_UID, "gid": SANDBOX_UID, "root_writable": False, "token_mounted": False}
        assert "sandbox agent ready" in cluster.logs(api.sandbox_pod_name(name), namespace=namespace)

        if release.sandboxes_reach_pypi():  # spec.packages (requests==2.32.3) is installed at start, from the index
            check = "import subprocess; print(subprocess.run(['/workspace/.venv/bin/python', '-c', "
            check += "'import requests; print(requests.__version__)'], capture_output=True, text=True).stdout)"
            wait_for(
                lambda: "2.32.3" in exec_python(cluster, api.sandbox_pod_name(name), check, namespace),
                timeout=240,
                interval=5,
                what="spec.packages to be installed into the session venv",
            )
    finally:
        cluster.kubectl(["delete", "-f", manifest, "--ignore-not-found", "--wait=false"], as_dict=False)

    # Deleting the session removes its Pod, Secret, NetworkPolicy and (not retained) workspace claim.
    wait_gone(cluster, "codegensession", name, namespace)
    for kind, child in children_of(name).items():
        wait_gone(cluster, kind, child, namespace)


def test_retained_workspace_outlives_its_session(release: Release, sessions: list[tuple[str, str]]) -> None:
    cluster, namespace = release.cluster, release.namespace
    name = create_session(release, sessions, "e2e-retain", workspace={"size": "256Mi", "retain": True})
    wait_ready(cluster, name, namespace)
    delete(cluster, "codegensession", name, namespace)
    wait_gone(cluster, "codegensession", name, namespace)
    children = children_of(name)
    for kind in ("pod", "secret", "networkpolicy"):
        wait_gone(cluster, kind, children[kind], namespace)
    claim = get(cluster, "persistentvolumeclaim", children["persistentvolumeclaim"], namespace)
    try:
        assert claim is not None, "a retained workspace must survive its session"
        owners = [r["kind"] for r in claim["metadata"].get("ownerReferences") or []]
        assert api.KIND not in owners
    finally:
        delete(cluster, "persistentvolumeclaim", children["persistentvolumeclaim"], namespace)


def test_ttl_expiry_deletes_the_session(release: Release, sessions: list[tuple[str, str]]) -> None:
    cluster, namespace = release.cluster, release.namespace
    ttl = 20
    name = create_session(release, sessions, "e2e-ttl", ttlSeconds=ttl)
    expires = wait_for(
        lambda: ((get(cluster, "codegensession", name, namespace) or {}).get("status") or {}).get("expiresAt"),
        timeout=60,
        interval=1,
        what="status.expiresAt",
    )
    assert expires
    # TTL + the operator's expiry check interval (2 s on kind and here) + deletion of the children.
    wait_gone(cluster, "codegensession", name, namespace, timeout=ttl + 150)
    for kind, child in children_of(name).items():
        wait_gone(cluster, kind, child, namespace, timeout=120)


# --- isolation ---------------------------------------------------------------------------------------------


def test_network_policy_keeps_sandboxes_apart(release: Release, sessions: list[tuple[str, str]]) -> None:
    reason = release.network_policy_problem()
    if reason:
        pytest.skip(reason=reason)
    chart = the_chart(release)
    cluster, namespace = chart.cluster, chart.namespace
    # The prober may send anything anywhere: only the target's own policy can stop it.
    prober = create_session(release, sessions, "e2e-np-a", network={"egress": "open"})
    target = create_session(release, sessions, "e2e-np-b", network={"egress": "none"})
    wait_ready(cluster, prober, namespace)
    wait_ready(cluster, target, namespace)
    target_ip = pod_ip(cluster, target, namespace)
    coordinator = chart.coordinator_pod()

    result = connect_from(cluster, api.sandbox_pod_name(prober), target_ip, 8080, namespace)
    assert result.startswith("blocked"), f"sandbox {prober} reached {target}'s agent: {result}"
    # Controls: the network works, and the coordinator (the one allowed peer) does reach the agent.
    coordinator_ip = coordinator["status"]["podIP"]
    assert connect_from(cluster, api.sandbox_pod_name(prober), coordinator_ip, 8765, namespace) == "connected"
    assert connect_from(cluster, coordinator["metadata"]["name"], target_ip, 8080, namespace) == "connected"


# --- MCP clients through the coordinator (a port-forward to its Service on kind) ---------------------------


@pytest.fixture
def coordinator_url(release: Release) -> Iterator[str]:
    with release.coordinator_url() as url:
        wait_for(lambda: _healthy(url), timeout=30, interval=0.5, what="the coordinator's /healthz")
        yield url


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def session_names(release: Release) -> set[str]:
    return {s["metadata"]["name"] for s in list_objects(release.cluster, "codegensession", release.namespace)}


async def test_mcp_client_runs_every_tool_in_a_sandbox_pod(release: Release, coordinator_url: str) -> None:
    token = release.auth_token()
    before = session_names(release)
    with anyio.fail_after(600):
        async with mcp_session(coordinator_url, token, timeout=MCP_TIMEOUT) as s:
            assert {t.name for t in (await s.list_tools()).tools} == TOOL_NAMES

            assert text_of(await call(s, "echo", message="hello from kind")) == "hello from kind"
            script = "print('hello from a pod')\n"
            written = await call(s, "fs.write", path="e2e/hello.py", content=script)
            assert written.structured_content["bytes_written"] == len(script.encode())
            listing = (await call(s, "fs.list", recursive=True)).structured_content["entries"]
            assert {e["name"]: e["type"] for e in listing}["e2e/hello.py"] == "file"
            read = (await call(s, "fs.read", path="e2e/hello.py")).structured_content
            assert read["content"] == script

            ran = (await call(s, "run.python", file="e2e/hello.py")).structured_content
            assert ran["state"] == "succeeded" and ran["run"]["stdout"] == "hello from a pod\n"
            who = (await call(s, "run.python", code="import os; print(os.getuid())")).structured_content
            assert who["run"]["stdout"].strip() == str(SANDBOX_UID)

            made = (await call(s, "run.python", code="open('report.csv','w').write('a,b\\n1,2\\n')")).structured_content
            (artifact,) = made["run"]["artifacts"]
            got = (await call(s, "artifact.get", artifact_id=artifact["artifact_id"])).structured_content
            assert got["content"] == "a,b\n1,2\n"

            slow = await call(s, "run.python", code="import time; time.sleep(3); print('late')", wait_s=0.5)
            task_id = slow.structured_content["task_id"]
            assert slow.structured_content["state"] in ("queued", "running")
            status = (await call(s, "task.get_status", task_id=task_id)).structured_content
            assert status["task_id"] == task_id
            done = (await call(s, "task.get_result", task_id=task_id, wait_s=60)).structured_content
            assert done["state"] == "succeeded" and done["run"]["stdout"] == "late\n"

            installed = await s.call_tool("pkg.install", {"packages": "iniconfig==2.0.0"})
            if release.sandboxes_reach_pypi():  # the default egress is `packages`: DNS + the package index
                assert not installed.is_error, text_of(installed)
                assert {"name": "iniconfig", "version": "2.0.0"} in installed.structured_content["install"]["installed"]
            else:
                assert installed.is_error and "\n" not in text_of(installed)

            escape = await s.call_tool("fs.read", {"path": "../../etc/passwd"})
            assert escape.is_error and "workspace" in text_of(escape).lower()

            # The sandbox is a CodegenSession in the cluster, found by the MCP session it serves.
            new = session_names(release) - before
            assert len(new) == 1, f"expected one new CodegenSession, found {new}"
            (mine,) = new
            body = get(release.cluster, "codegensession", mine, release.namespace)
            assert body is not None and body["status"]["phase"] == "Ready"
            assert api.ANNOTATION_MCP_SESSION in body["metadata"].get("annotations", {})

    # Ending the MCP session ends its sandbox (sessions.retainSessions is false).
    wait_gone(release.cluster, "codegensession", mine, release.namespace, timeout=180)


async def test_sse_transport_and_bearer_auth(release: Release, coordinator_url: str) -> None:
    token = release.auth_token()
    with anyio.fail_after(400):
        async with (
            sse_client(f"{coordinator_url}/sse", headers=bearer(token)) as streams,
            ClientSession(streams[0], streams[1]) as s,
        ):
            await s.initialize()
            assert text_of(await call(s, "echo", message="over SSE")) == "over SSE"
            await call(s, "fs.write", path="sse.txt", content="sse")
            assert (await call(s, "fs.read", path="sse.txt")).structured_content["content"] == "sse"
    if token is None:
        pytest.skip(reason="auth.enabled is false in this release: nothing more to check")
    request = urllib.request.Request(
        f"{coordinator_url}/mcp",
        data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    with refused.value:  # the error holds the response and its socket
        assert refused.value.code == 401
