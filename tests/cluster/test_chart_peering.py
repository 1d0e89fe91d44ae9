"""The chart's default layout with operator peering on, installed for real.

Sessions live in the release namespace (the chart's default) and `operator.peering.enabled` adds kopf's peering
rights to the operator's Role and a KopfPeering object; the chart then sets CODEGEN_OPERATOR_STANDALONE=false,
so the operator refuses to run without peering. Run with the operator ServiceAccount's token, it must keep its
peering object alive and reconcile sessions with exactly those rights.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from codegen_mcp.api import session as api
from tests.support.chart import (
    COORDINATOR_NEEDS,
    OPERATOR_NEEDS,
    PEERING_NEEDS,
    G,
    Installed,
    OperatorProcess,
    installed_chart,
    session_body,
)
from tests.support.control_plane import ControlPlane
from tests.support.real_cluster import api_path
from tests.support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    values = {"operator": {"peering": {"enabled": True}}}
    folder = tmp_path_factory.mktemp("identities")
    with installed_chart(control_plane, folder, own_sessions_namespace=False, values=values) as done:
        yield done


def test_the_release_namespace_holds_exactly_what_each_identity_uses(installed: Installed) -> None:
    assert installed.sessions_ns == installed.release_ns
    for namespace in (installed.release_ns, installed.outside_ns):
        inside = namespace == installed.release_ns
        assert installed.operator.rights_in(namespace) == (
            set(OPERATOR_NEEDS) | set(PEERING_NEEDS) if inside else set()
        )
        assert installed.coordinator.rights_in(namespace) == (set(COORDINATOR_NEEDS) if inside else set())
        assert installed.sandbox.rights_in(namespace) == set()


def test_in_the_default_layout_the_coordinator_reads_the_release_secrets(installed: Installed) -> None:
    """Why the README recommends a sessions namespace of its own: `secrets get` cannot be limited to the agent
    tokens, so here, where sessions share the release namespace, the coordinator can read the chart's auth
    Secret and Helm's release storage by name (it still cannot list them)."""
    ns = installed.release_ns
    auth = installed.release.find("Secret", "-auth")["metadata"]["name"]
    for name in (auth, f"sh.helm.release.v1.{installed.release.name}.v1"):
        assert installed.coordinator.call("GET", f"/api/v1/namespaces/{ns}/secrets/{name}").status == 200
    assert installed.coordinator.call("GET", f"/api/v1/namespaces/{ns}/secrets").forbidden


async def test_the_operator_peers_and_reconciles_with_its_own_identity(
    installed: Installed, operator: OperatorProcess
) -> None:
    env_standalone = next(
        e["value"]
        for e in installed.release.find("Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "CODEGEN_OPERATOR_STANDALONE"
    )
    assert env_standalone == "false"  # peering is required: without its rights the operator could not run
    ns = installed.release_ns
    peering = installed.release.find("KopfPeering", "")["metadata"]["name"]
    peering_path = api_path("kopf.dev", "v1", "kopfpeerings", ns, peering)
    # kopf announces itself in the peering object (a patch) and keeps watching it.
    await eventually(
        lambda: (installed.admin.request("GET", peering_path) or {}).get("status"),
        timeout=30,
        what="the operator's entry in the KopfPeering status",
    )

    name = "peered"
    sessions = api_path(G, api.VERSION, api.PLURAL, ns)
    created = installed.coordinator.call("POST", sessions, session_body(name))  # the coordinator's `create`
    assert created.status == 201, created
    await eventually(
        lambda: (
            installed.read("pods", api.sandbox_pod_name(name)) is not None
            and installed.read("secrets", api.token_secret_name(name)) is not None
        ),
        timeout=30,
        what="the session's children, made by the active (peered) operator",
    )
    deleted = installed.coordinator.call("DELETE", f"{sessions}/{name}")  # the coordinator's `delete`
    assert deleted.status == 200, deleted
    await eventually(
        lambda: installed.read("pods", api.sandbox_pod_name(name)) is None, timeout=30, what="the children gone"
    )
    assert operator.proc.poll() is None
    assert operator.refusals() == [], operator.refusals()
