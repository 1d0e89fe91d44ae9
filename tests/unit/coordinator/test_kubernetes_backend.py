"""Pure parts of the kubernetes backend: names, the activity throttle, status reading, the session manifest."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from kubernetes_asyncio.client.exceptions import ApiException

from codegen_mcp.api import session as api
from codegen_mcp.api.errors import CodegenError, ErrorCode
from codegen_mcp.coordinator.backends.kubernetes import (
    ActivityThrottle,
    _api_error,
    build_session_manifest,
    check_template,
    label_value,
    ready_endpoint,
    session_resource_name,
)
from codegen_mcp.coordinator.settings import KubernetesBackendSettings

CRD = Path(__file__).parents[3] / "crds" / "codegensession.yaml"


@pytest.mark.parametrize("key", ["3756fc84f17b4adaa5fc6e9da6d8cc17", "c-0011", "ws-abcd1234-My.Thesis", "x" * 500])
def test_resource_names_are_stable_valid_and_distinct(key: str) -> None:
    name = session_resource_name(key)
    assert name == session_resource_name(key)
    assert api.check_session_name(name) is None
    assert len(name) <= 63 and name.startswith("mcp-")
    assert session_resource_name(key + "!") != name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3756fc84f17b4adaa5fc6e9da6d8cc17", "3756fc84f17b4adaa5fc6e9da6d8cc17"),
        ("ws-ab12-my thesis", "ws-ab12-my-thesis"),
        ("-leading.and.trailing_", "leading.and.trailing"),
        ("é" * 10, "none"),
        ("a" * 80, "a" * 63),
    ],
)
def test_label_values_are_valid(text: str, expected: str) -> None:
    assert label_value(text) == expected


def test_activity_is_written_at_most_once_per_interval() -> None:
    throttle = ActivityThrottle(30.0)
    assert throttle.due("s1", 100.0)
    assert not throttle.due("s1", 110.0)
    assert throttle.due("s2", 110.0)  # per session
    assert not throttle.due("s1", 129.9)
    assert throttle.due("s1", 130.0)
    throttle.forget("s1")
    assert throttle.due("s1", 131.0)


def _obj(phase: str | None, **status: object) -> dict[str, object]:
    return {"metadata": {"name": "mcp-1"}, "status": {"phase": phase, **status}}


def test_ready_endpoint_reads_status() -> None:
    ready = _obj("Ready", endpoint="http://10.0.0.7:8080", tokenSecretName="mcp-1-agent-token")
    assert ready_endpoint(ready) == ("http://10.0.0.7:8080", "mcp-1-agent-token")
    assert ready_endpoint(_obj("Starting", message="pulling the image")) is None
    assert ready_endpoint(_obj("Ready")) is None  # Ready but no endpoint yet: keep waiting


def test_a_failed_session_quotes_the_operator() -> None:
    with pytest.raises(CodegenError) as info:
        ready_endpoint(_obj("Failed", message="the sandbox image cannot be pulled: ImagePullBackOff"))
    assert info.value.code is ErrorCode.SANDBOX_UNAVAILABLE
    assert info.value.message == "your sandbox could not start: the sandbox image cannot be pulled: ImagePullBackOff"


def test_a_session_being_deleted_is_not_waited_for() -> None:
    obj = _obj("Ready", endpoint="http://x:1", tokenSecretName="t")
    obj["metadata"] = {"name": "mcp-1", "deletionTimestamp": "2026-11-25T00:00:00Z"}
    with pytest.raises(CodegenError, match="being deleted"):
        ready_endpoint(obj)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (403, "the coordinator is not allowed to create your sandbox (Forbidden); check its RBAC"),
        (500, "could not create your sandbox: the Kubernetes API answered Internal Server Error"),
    ],
)
def test_api_errors_become_one_sentence(status: int, expected: str) -> None:
    reason = {403: "Forbidden", 500: "Internal Server Error"}[status]
    error = _api_error("create your sandbox", ApiException(status=status, reason=reason))
    assert error.message == expected and error.code is ErrorCode.SANDBOX_UNAVAILABLE


def test_the_session_manifest_follows_the_template_and_validates_against_the_crd() -> None:
    template = KubernetesBackendSettings(
        image="registry.example/sandbox:1",
        runtime_class_name="gvisor",
        memory_limit="2Gi",
        cpu_request="250m",
        network_egress="packages",
        ttl_seconds=600,
        idle_timeout_seconds=120,
        packages=["rich", "numpy==2.1.0"],
        storage_class="fast",
        retain_workspace=True,
    )
    manifest = build_session_manifest("mcp-0123", "tools", "3756fc84f17b4adaa5fc6e9da6d8cc17", template)
    assert manifest["metadata"]["annotations"][api.ANNOTATION_MCP_SESSION] == "3756fc84f17b4adaa5fc6e9da6d8cc17"
    spec = manifest["spec"]
    assert spec["resources"] == {"requests": {"cpu": "250m"}, "limits": {"memory": "2Gi"}}
    assert spec["workspace"] == {"size": "1Gi", "retain": True, "storageClassName": "fast"}
    assert spec["network"] == {"egress": "packages"} and spec["runtimeClassName"] == "gvisor"
    # The operator's own model accepts it, and so does the CRD's schema.
    api.SessionSpec.model_validate(spec)
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.validate(manifest, schema)


def test_an_invalid_template_is_refused_at_start_up() -> None:
    template = KubernetesBackendSettings(network_egress="none", packages=["rich"])
    with pytest.raises(ValueError, match="session template is invalid: .*packages need network.egress"):
        check_template(template)
    check_template(KubernetesBackendSettings())  # the defaults are valid
