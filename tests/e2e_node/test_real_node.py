"""Real sandbox Pods on a real node: an MCP client, the coordinator, the operator, the kubelet and containerd.

Nothing is played here: the operator builds the Pod (builders.py) and the real kubelet runs it with runc from
the sandbox image built without Docker (`make sandbox-image-offline`), so the security context is the one the
kernel enforces. The operator and the coordinator run with the Helm chart's settings and ServiceAccount tokens
(tests/support/node_stack.py), so the chart's RBAC is what lets them do it. Skipped, saying exactly what is
missing, where a node cannot start (tests/support/node.py).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import anyio
import pytest
from mcp import ClientSession
from mcp.types import CallToolResult

from codegen_mcp.api import session as api
from tests.support import mcp_client
from tests.support.chart import FORBIDDEN
from tests.support.node_stack import SandboxStack
from tests.support.waiting import eventually

pytestmark = [pytest.mark.node, pytest.mark.cluster, pytest.mark.timeout(600)]

CALL_TIMEOUT = 180.0  # the first call waits for the session's Pod (create → Ready)
SANDBOX_UID = 10001

# What the code running in the sandbox sees of itself; printed as one JSON line.
PROBE = r"""
import json, os, tempfile
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
mounts = {l.split()[4]: l.split(" - ")[1].split()[0] for l in open("/proc/self/mountinfo")}
try:
    open("/probe", "w")
    root = "writable"
except OSError as exc:
    root = exc.strerror
with tempfile.NamedTemporaryFile(dir="/tmp") as f:
    tmp_writable = f.write(b"x") == 1
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "cap_eff": status["CapEff"].strip(), "cap_bnd": status["CapBnd"].strip(),
    "no_new_privs": status["NoNewPrivs"].strip(), "seccomp": status["Seccomp"].strip(),
    "root": root, "root_read_only": bool(os.statvfs("/").f_flag & os.ST_RDONLY),
    "workspace_mounted": "/workspace" in mounts, "tmp_mounted": "/tmp" in mounts, "tmp_writable": tmp_writable,
    "cwd": os.getcwd(), "note": open("note.txt").read(),
}))
"""


async def call(session: ClientSession, tool: str, **arguments: Any) -> CallToolResult:
    with anyio.fail_after(CALL_TIMEOUT):
        return await mcp_client.call(session, tool, **arguments)


def stdout_of(result: CallToolResult) -> str:
    structured = result.structured_content or {}
    run = structured.get("run") or {}
    assert run.get("exit_code") == 0, f"the run failed: {run}"
    return str(run["stdout"])


def the_session(stack: SandboxStack) -> dict[str, Any]:
    [session] = stack.sessions()
    return session


def the_pod(stack: SandboxStack, name: str) -> dict[str, Any]:
    pod = stack.read("pods", api.sandbox_pod_name(name))
    assert pod is not None, f"no Pod for session {name}"
    return pod


async def gone(stack: SandboxStack) -> None:
    await eventually(lambda: not stack.sessions(), timeout=60, what="the MCP session's CodegenSession to go")


async def test_code_runs_in_a_real_pod_as_the_unprivileged_sandbox(stack: SandboxStack) -> None:
    async with stack.mcp() as s:
        await call(s, "fs.write", path="note.txt", content="written through MCP")
        seen = json.loads(stdout_of(await call(s, "run.python", code=PROBE)))

        name = the_session(stack)["metadata"]["name"]
        pod = the_pod(stack, name)
        # The Pod really is on the node, from the image built offline, with the operator's security context.
        assert pod["spec"]["nodeName"] == stack.node.name
        [container] = pod["spec"]["containers"]
        assert container["image"] == stack.sandbox_image and container["imagePullPolicy"] == "Never"
        assert stack.installed is not None
        assert pod["spec"]["serviceAccountName"] == stack.installed.sandbox.name, "the chart's token-less identity"
        assert stack.node.subnet is not None
        assert ipaddress.ip_address(pod["status"]["podIP"]) in stack.node.subnet, "an address on the node's bridge"

        # ...and the kernel enforces it on the code the agent runs.
        assert seen["uid"] == SANDBOX_UID and seen["gid"] == SANDBOX_UID, seen
        assert seen["cap_eff"] == "0000000000000000", f"capabilities left: {seen['cap_eff']}"
        assert seen["cap_bnd"] == "0000000000000000", f"bounding set: {seen['cap_bnd']}"
        assert seen["no_new_privs"] == "1", "allowPrivilegeEscalation: false sets no_new_privs"
        assert seen["seccomp"] == "2", "seccompProfile RuntimeDefault: a filter (mode 2)"
        assert seen["root"] == "Read-only file system" and seen["root_read_only"], seen["root"]
        assert seen["tmp_mounted"] and seen["tmp_writable"], "/tmp is the Pod's writable emptyDir"
        assert seen["workspace_mounted"] and seen["cwd"] == api.WORKSPACE_MOUNT_PATH
        assert seen["note"] == "written through MCP"

        # /workspace is the session's PersistentVolume: the file is in its folder on the host, owned by the sandbox.
        claim = stack.read("persistentvolumeclaims", api.workspace_claim_name(name))
        assert claim is not None and claim["status"]["phase"] == "Bound"
        on_host = stack.node.volume_folder(claim["spec"]["volumeName"]) / "note.txt"
        assert on_host.read_text() == "written through MCP"
        assert on_host.stat().st_uid == SANDBOX_UID
    await gone(stack)


async def test_a_deleted_pod_is_replaced_and_the_workspace_survives(stack: SandboxStack) -> None:
    async with stack.mcp() as s:
        await call(s, "fs.write", path="keep.txt", content="on the PVC")
        # A mark in /tmp, the Pod's emptyDir: it dies with the Pod, which shows the next Pod is a new one.
        await call(s, "run.python", code="open('/tmp/first-pod', 'w').write('x')")
        name = the_session(stack)["metadata"]["name"]
        first = the_pod(stack, name)["metadata"]["uid"]

        pods = f"/api/v1/namespaces/{stack.namespace}/pods"
        stack.cluster.request("DELETE", f"{pods}/{api.sandbox_pod_name(name)}")
        await eventually(
            lambda: (pod := stack.read("pods", api.sandbox_pod_name(name))) is None or pod["metadata"]["uid"] != first,
            timeout=60,
            what="the deleted Pod to be gone",
        )

        # The next call reaches the replacement Pod, which mounts the same workspace volume.
        code = "import os; print(open('keep.txt').read(), os.path.exists('/tmp/first-pod'))"
        assert stdout_of(await call(s, "run.python", code=code)) == "on the PVC False\n"
        second = the_pod(stack, name)
        assert second["metadata"]["uid"] != first
        assert second["spec"]["nodeName"] == stack.node.name
        status = the_session(stack).get("status") or {}
        assert status.get("restartCount", 0) >= 1, status
    await gone(stack)
    # All of it with the chart's RBAC: neither the operator nor the coordinator was refused anything.
    assert stack.operator is not None and stack.operator.refusals() == []
    assert stack.coordinator is not None
    assert not FORBIDDEN.search(stack.coordinator.log_path.read_text(errors="replace"))


async def test_a_volume_that_ignores_fsgroup_fails_the_session_with_the_storage_problem(stack: SandboxStack) -> None:
    """Issue 9, defect 4: the hostPath provisioner makes root:root 0750 folders and ignores fsGroup.

    The agent (uid 10001) cannot write there: the session must fail at once with a sentence naming the storage
    problem — not "cannot listen", and not after a series of Pod replacements without backoff.
    """
    classes = "/apis/storage.k8s.io/v1/storageclasses"
    dynamic = "node-dynamic-hostpath"
    if stack.cluster.request("GET", f"{classes}/{dynamic}") is None:
        stack.cluster.request("POST", classes, {
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": dynamic},
            "provisioner": "kubernetes.io/host-path", "reclaimPolicy": "Delete",
        })  # fmt: skip
    sessions = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{stack.namespace}/{api.PLURAL}"
    body = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "fsgroup"},
        "spec": {"imagePullPolicy": "Never", "workspace": {"storageClassName": dynamic}},
    }
    stack.cluster.request("POST", sessions, body)
    try:

        def failed() -> api.SessionStatus | None:
            found = stack.cluster.request("GET", f"{sessions}/fsgroup") or {}
            status = api.SessionStatus.model_validate(found.get("status") or {})
            return status if status.phase == api.Phase.FAILED else None

        status = await eventually(failed, timeout=120, what="the session on unwritable storage to fail")
        assert status.message is not None
        assert status.message.startswith("WorkspaceNotWritable: the agent (uid 10001"), status.message
        assert "cannot write its workspace /workspace: it belongs to 0:0 with mode 0750" in status.message
        assert "does not honour the Pod's fsGroup" in status.message
        assert "cannot listen" not in status.message
        assert status.restart_count == 0  # the same volume would fail the same way: no replacement
    finally:
        stack.cluster.request("DELETE", f"{sessions}/fsgroup")
        await eventually(lambda: stack.read("pods", "fsgroup-sandbox") is None, timeout=60, what="the Pod to go")
        stack.cluster.request("DELETE", f"{classes}/{dynamic}")
