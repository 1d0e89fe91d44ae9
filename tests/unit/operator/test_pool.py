"""The CodegenSandboxPool: model, CRD (drift, schema, CEL rules), pooled sandbox children, the fill plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import celpy
import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from codegen_mcp.api import pool
from codegen_mcp.api import session as api
from codegen_mcp.api.errors import validation_sentence
from codegen_mcp.operator import adoption, builders, crd, pools
from codegen_mcp.operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[3]
CHECKED_IN = ROOT / "crds" / "codegensandboxpool.yaml"


def test_checked_in_pool_crd_matches_the_models() -> None:
    assert CHECKED_IN.read_text() == crd.render_pool_crd(), (
        "crds/codegensandboxpool.yaml is out of date: run `make crd`"
    )


def test_pool_crd_is_valid_for_kubernetes_and_shows_replicas_ready_claimed() -> None:
    doc = yaml.safe_load(CHECKED_IN.read_text())
    kubernetes_validate.validate(doc, "1.33", strict=True)
    (version,) = doc["spec"]["versions"]
    assert [c["name"] for c in version["additionalPrinterColumns"]][:4] == ["Replicas", "Ready", "Claimed", "Age"]
    assert version["subresources"] == {"status": {}}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"replicas", "ready", "claimed", "conditions", "observedGeneration"} <= set(status)


def template_rules() -> list[dict[str, str]]:
    schema = crd.build_pool_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return list(schema["properties"]["spec"]["properties"]["template"]["x-kubernetes-validations"])


def cel_refusals(template: dict[str, Any]) -> list[str]:
    env = celpy.Environment()
    activation = {"self": celpy.json_to_cel(template)}
    return [r["message"] for r in template_rules() if not env.program(env.compile(r["rule"])).evaluate(activation)]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ({"poolRef": "other"}, "template.poolRef belongs on the session, not on a pool"),
        ({"ttlSeconds": 60}, "template.ttlSeconds belongs on the session, not on a pool"),
        ({"idleTimeoutSeconds": 60}, "template.idleTimeoutSeconds belongs on the session, not on a pool"),
        ({"workspace": {"retain": True}}, "template.workspace.retain belongs on the session, not on a pool"),
    ],
)
def test_session_only_fields_are_refused_in_a_template_by_the_crd_and_the_model(
    template: dict[str, Any], message: str
) -> None:
    assert cel_refusals(template) == [message]
    with pytest.raises(ValidationError) as exc:
        pool.PoolSpec.model_validate({"template": template})
    assert message.removeprefix("template.").split(" ")[0] in validation_sentence(exc.value, prefix="spec")


def test_a_plain_template_passes_every_rule() -> None:
    assert cel_refusals({"image": "a:1", "env": [{"name": "X", "value": "1"}], "workspace": {"size": "1Gi"}}) == []
    assert cel_refusals({}) == []  # the CRD's defaults, as the API server checks them when the CRD is created


def test_pool_ref_is_immutable_on_a_session() -> None:
    assert "poolRef" in api.IMMUTABLE_SPEC_FIELDS
    assert "poolRef" not in pool.SANDBOX_SPEC_FIELDS


def test_sandbox_hash_covers_what_shapes_a_sandbox_and_nothing_else() -> None:
    base = api.SessionSpec.model_validate({"image": "a:1"})
    same = api.SessionSpec.model_validate(
        {"image": "a:1", "poolRef": "p", "ttlSeconds": 5, "owner": "bob", "workspace": {"size": "1Gi", "retain": True}}
    )
    assert pool.sandbox_hash(base) == pool.sandbox_hash(same)
    for other in ({"image": "a:2"}, {"image": "a:1", "env": [{"name": "X"}]}, {"image": "a:1", "packages": ["rich"]}):
        assert pool.sandbox_hash(api.SessionSpec.model_validate(other)) != pool.sandbox_hash(base), other
    assert pool.sandbox_hash(api.SessionSpec.model_validate({"image": "a:1", "workspace": {"size": "2Gi"}})) != (
        pool.sandbox_hash(base)
    )


@pytest.mark.parametrize(
    ("name", "problem"),
    [("warm", None), ("a" * pool.MAX_POOL_NAME_LENGTH, None), ("a" * 58, "at most 57"), ("Warm", "lowercase")],
)
def test_pool_names(name: str, problem: str | None) -> None:
    found = pool.check_pool_name(name)
    assert (found is None) if problem is None else (found is not None and problem in found)


# --- the children of a pooled sandbox ---------------------------------------------------------------------------


def pooled_ref(template: dict[str, Any] | None = None) -> builders.SessionRef:
    spec = api.SessionSpec.model_validate(template or {})
    return builders.SessionRef(
        name="warm", namespace="ns", uid="pool-uid", spec=spec, sandbox="warm-abcde", kind=pool.POOL_KIND
    )


def test_pooled_children_are_the_pools_and_named_after_the_sandbox(settings: OperatorSettings) -> None:
    ref = pooled_ref()
    children = builders.build_children(ref, settings, "token")
    names = [c["metadata"]["name"] for c in children]
    assert names == ["warm-abcde-agent-token", "warm-abcde-workspace", "warm-abcde", "warm-abcde-sandbox"]
    for child in children:
        meta = child["metadata"]
        assert meta["labels"][pool.LABEL_POOL] == "warm" and api.LABEL_SESSION not in meta["labels"]
        assert meta["labels"][pool.LABEL_SANDBOX] == "warm-abcde"
        assert meta["labels"][pool.LABEL_TEMPLATE_HASH] == pool.sandbox_hash(ref.spec)
        assert meta["ownerReferences"] == [
            {
                "apiVersion": api.API_VERSION,
                "kind": pool.POOL_KIND,
                "name": "warm",
                "uid": "pool-uid",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    pod = children[3]
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "warm-abcde-workspace"
    token_env = [
        e for e in pod["spec"]["containers"][0]["env"] if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    ]
    assert token_env[0]["valueFrom"]["secretKeyRef"]["name"] == "warm-abcde-agent-token"
    # Each pooled sandbox keeps its own artifact keys, whichever session adopts it.
    assert builders.artifact_store_namespace(ref) == "ns.warm-abcde"


def test_an_adopted_session_rebuilds_its_pod_on_the_sandboxs_children(settings: OperatorSettings) -> None:
    meta = {"name": "demo", "namespace": "ns", "uid": "u1", "annotations": {pool.ANNOTATION_SANDBOX: "warm-abcde"}}
    body = {"kind": api.KIND, "metadata": meta}
    ref = builders.SessionRef.from_body(body, api.SessionSpec())
    pod = builders.build_sandbox_pod(ref, settings)
    assert pod["metadata"]["name"] == "warm-abcde-sandbox"
    assert pod["metadata"]["labels"][api.LABEL_SESSION] == "demo"
    assert pod["metadata"]["ownerReferences"][0]["kind"] == api.KIND
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "warm-abcde-workspace"


def test_the_claim_patch_moves_labels_and_owners_and_keeps_the_pool_as_provenance() -> None:
    spec = api.SessionSpec.model_validate({"owner": "alice"})
    session = builders.SessionRef(name="demo", namespace="ns", uid="u1", spec=spec)
    patch = adoption.claim_patch(session)["metadata"]
    assert patch["labels"] == {api.LABEL_SESSION: "demo", pool.LABEL_TEMPLATE_HASH: None}
    assert [r["uid"] for r in patch["ownerReferences"]] == ["u1"]
    assert patch["annotations"] == {api.ANNOTATION_OWNER: "alice"}
    assert adoption.claim_patch(session, owned=False)["metadata"]["ownerReferences"] is None


# --- candidates and the fill plan -------------------------------------------------------------------------------


def pod(
    name: str, *, ready: bool = True, hash_: str = "h1", session: str | None = None, at: str = "1"
) -> dict[str, Any]:
    labels = {pool.LABEL_SANDBOX: name, pool.LABEL_POOL: "warm", pool.LABEL_TEMPLATE_HASH: hash_}
    if session:
        labels[api.LABEL_SESSION] = session
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {
        "metadata": {"name": f"{name}-sandbox", "labels": labels, "creationTimestamp": at, "uid": name},
        "status": {"phase": "Running", "conditions": conditions, "podIP": "10.0.0.1"},
    }


def test_candidates_are_ready_unclaimed_matching_and_oldest_first() -> None:
    pods = [
        pod("b", at="2"),
        pod("a", at="1"),
        pod("c", ready=False),
        pod("d", hash_="other"),
        pod("e", session="s"),
    ]
    assert [p["metadata"]["uid"] for p in adoption.candidates(pods, "h1")] == ["a", "b"]


def failed(name: str) -> dict[str, Any]:
    found = pod(name)
    found["status"] = {"phase": "Failed", "containerStatuses": [{"state": {"terminated": {"exitCode": 1}}}]}
    return found


@pytest.mark.parametrize(
    ("pods", "replicas", "removed", "make"),
    [
        ([], 2, [], 2),
        ([pod("a")], 2, [], 1),
        ([pod("a"), pod("b")], 2, [], 0),
        ([failed("a"), pod("b")], 2, ["a"], 1),
        ([pod("a", hash_="old"), pod("b")], 2, ["a"], 1),
        ([pod("a", at="1"), pod("b", ready=False, at="2"), pod("c", at="3")], 1, ["b", "c"], 0),
        ([pod("a"), pod("b")], 0, ["a", "b"], 0),
    ],
)
def test_plan(pods: list[dict[str, Any]], replicas: int, removed: list[str], make: int) -> None:
    sandboxes = pools.group_sandboxes(pods, [])
    todo = pools.plan(sandboxes, replicas, "h1")
    assert sorted(s.name for s, _, _ in todo.remove) == removed
    assert todo.make == make


def claim(name: str, owner_kind: str) -> dict[str, Any]:
    labels = {pool.LABEL_SANDBOX: name, pool.LABEL_TEMPLATE_HASH: "h1"}
    refs = [{"kind": owner_kind, "uid": "x"}]
    return {"metadata": {"name": f"{name}-workspace", "labels": labels, "ownerReferences": refs}}


def test_a_sandbox_without_its_pod_is_left_to_the_garbage_collector_or_given_a_pod() -> None:
    # Its claim owned by its (deleted) Pod: going. Still the pool's (a fill stopped half-way): it gets its Pod.
    going, halfway = pools.group_sandboxes([], [claim("x", "Pod"), claim("y", pool.POOL_KIND)])
    todo = pools.plan([going, halfway], 2, "h1")
    assert todo.remove == [] and [s.name for s in todo.repair] == ["y"] and todo.make == 1
    assert pools.plan([halfway], 0, "h1").repair == []


def test_a_claimed_sandbox_is_not_the_pools() -> None:
    claimed = pools.group_sandboxes([pod("y", session="demo")], [])
    assert [s.claimed for s in claimed] == [True]


def test_a_failed_sandbox_waits_out_its_backoff_and_counts_until_then() -> None:
    ended = datetime(2026, 1, 1, tzinfo=UTC)
    dead = failed("a")
    dead["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] = "2026-01-01T00:00:00Z"
    sandboxes = pools.group_sandboxes([dead], [])
    soon = pools.plan(sandboxes, 1, "h1", at=ended + timedelta(seconds=1), backoff=5)
    assert (soon.remove, soon.make, soon.retry_in) == ([], 0, 4.0)
    due = pools.plan(sandboxes, 1, "h1", at=ended + timedelta(seconds=6), backoff=5)
    assert [s.name for s, _, _ in due.remove] == ["a"] and due.make == 1 and due.retry_in is None
