"""artifact.upload: the local-folder store, and the S3 store against a real S3-compatible server (moto).

moto's server mode runs a real S3 HTTP API on 127.0.0.1 in a thread; the agent talks to it with boto3 as
it would to AWS or MinIO. Nothing in boto3 is mocked.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pytest
from pydantic import ValidationError

from codegen_mcp.api.agent_settings import AgentSettings
from codegen_mcp.api.tools import ArtifactUploadResult
from codegen_mcp.sandbox_agent.app import create_app
from codegen_mcp.sandbox_agent.store import artifact_key, safe_key_part

from .conftest import AUTH, AgentClient, MakeClient, make_settings

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_REGION": "us-east-1"}
BUCKET = "codegen-artifacts"

needs_moto = pytest.mark.skipif(
    importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None,
    reason="the S3 store tests need boto3 and moto[server] (pip install 'moto[server]' boto3)",
)


async def upload(client: AgentClient, **body: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/artifacts/upload", json=body)
    return resp.status, await resp.json()


async def write(client: AgentClient, path: str, content: str) -> None:
    assert (await client.post("/v1/fs/write", json={"path": path, "content": content})).status == 200


def test_keys_are_one_folder_per_artifact() -> None:
    from datetime import UTC, datetime

    from codegen_mcp.api.tools import ArtifactInfo

    info = ArtifactInfo(
        artifact_id="art_1",
        name="report.csv",
        path="out/report.csv",
        size=1,
        media_type="text/csv",
        sha256="0" * 64,
        created_at=datetime.now(UTC),
    )
    assert artifact_key("codegen-mcp/", "session-a", info) == "codegen-mcp/session-a/art_1/report.csv"
    assert artifact_key("", None, info) == "art_1/report.csv"
    assert safe_key_part("..") == "artifact" and safe_key_part("a/b\x00c") == "a_b_c"


def test_s3_needs_a_bucket(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="s3_bucket"):
        AgentSettings(workspace=tmp_path, artifact_store="s3")


# --- the local store ------------------------------------------------------------------------------------


async def test_local_upload_by_path_and_by_id_is_stable(make_client: MakeClient, base_dir: Path) -> None:
    store = base_dir / f"store-{id(make_client)}"
    client = await make_client(artifact_store_dir=store)
    await write(client, "out/report.csv", "a,b\n1,2\n")
    status, data = await upload(client, path="out/report.csv")
    assert status == 200, data
    first = ArtifactUploadResult.model_validate(data)
    assert first.store == "local" and first.uri.startswith("file://")
    assert first.sha256 == hashlib.sha256(b"a,b\n1,2\n").hexdigest() and first.size == 8
    copy = Path(url2pathname(urlsplit(first.uri).path))
    assert copy.read_bytes() == b"a,b\n1,2\n" and store in copy.parents
    assert copy.stat().st_mode & 0o077 == 0  # private to the agent
    assert first.artifact.uri == first.uri and not first.changed_since_recorded

    # The same artifact again: the same URI; a changed file is re-recorded with its new checksum.
    await write(client, "out/report.csv", "a,b\n3,4\n")
    status, data = await upload(client, artifact_id=first.artifact.artifact_id)
    again = ArtifactUploadResult.model_validate(data)
    assert status == 200 and again.uri == first.uri and again.changed_since_recorded
    assert copy.read_bytes() == b"a,b\n3,4\n" and again.artifact.sha256 == again.sha256

    listed = await (await client.get("/v1/artifacts")).json()
    assert [a["uri"] for a in listed["artifacts"]] == [first.uri]

    # The copy outlives the workspace file.
    await client.post("/v1/run/python", json={"code": "import os; os.remove('out/report.csv')"})
    assert copy.exists()
    status, data = await upload(client, artifact_id=first.artifact.artifact_id)
    assert status == 404 and data["error"]["code"] == "artifact_not_found"


async def test_the_store_namespace_and_prefix_shape_the_key(make_client: MakeClient, base_dir: Path) -> None:
    store = base_dir / f"store-ns-{id(make_client)}"
    client = await make_client(artifact_store_dir=store, artifact_store_namespace="session-7")
    await write(client, "x.bin", "x")
    status, data = await upload(client, path="x.bin")
    assert status == 200 and data["uri"].endswith(f"/session-7/{data['artifact']['artifact_id']}/x.bin")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"artifact_id": "art_0000000000000000"}, 404, "artifact_not_found"),
        ({"artifact_id": "../../healthz"}, 400, "invalid_argument"),
        ({}, 400, "invalid_argument"),
        ({"artifact_id": "art_x", "path": "a.txt"}, 400, "invalid_argument"),
        ({"path": "../etc/passwd"}, 403, "path_outside_workspace"),
        ({"path": "missing.txt"}, 404, "not_found"),
    ],
)
async def test_bad_uploads(client: AgentClient, body: dict[str, Any], status: int, code: str) -> None:
    got, data = await upload(client, **body)
    assert got == status and data["error"]["code"] == code, data
    assert "\n" not in data["error"]["message"]


async def test_a_file_over_the_size_limit_is_refused(make_client: MakeClient, base_dir: Path) -> None:
    client = await make_client(upload_max_bytes=10, artifact_store_dir=base_dir / "store-small")
    await write(client, "big.txt", "x" * 11)
    status, data = await upload(client, path="big.txt")
    assert status == 413 and data["error"]["code"] == "too_large"


# --- the S3 store against moto's S3 server ----------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        s3 = _s3(endpoint)
        s3.create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


def _s3(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_REGION"],
    )


async def s3_client(
    aiohttp_client: Any, workspace: Path, shared_venv: Path, endpoint: str, **extra: Any
) -> AgentClient:
    settings = make_settings(
        workspace,
        shared_venv,
        artifact_store="s3",
        s3_bucket=extra.pop("bucket", BUCKET),
        s3_endpoint_url=endpoint,
        s3_addressing_style="path",
        **extra,
    )
    return await aiohttp_client(create_app(settings, environ={"PATH": "/usr/bin:/bin", **CREDENTIALS}), headers=AUTH)


@needs_moto
async def test_s3_upload_is_a_real_object_with_its_checksum(
    aiohttp_client: Any, workspace: Path, shared_venv: Path, s3_endpoint: str
) -> None:
    client = await s3_client(aiohttp_client, workspace, shared_venv, s3_endpoint, artifact_store_namespace="sess-1")
    run = await (
        await client.post("/v1/run/python", json={"code": "open('plot.png','wb').write(bytes(range(256)) * 64)"})
    ).json()
    [artifact] = run["run"]["artifacts"]
    status, data = await upload(client, artifact_id=artifact["artifact_id"])
    assert status == 200, data
    result = ArtifactUploadResult.model_validate(data)
    key = f"codegen-mcp/sess-1/{artifact['artifact_id']}/plot.png"
    assert result.store == "s3" and result.uri == f"s3://{BUCKET}/{key}"
    expected = bytes(range(256)) * 64
    assert result.sha256 == hashlib.sha256(expected).hexdigest() == artifact["sha256"]
    obj = _s3(s3_endpoint).get_object(Bucket=BUCKET, Key=key)
    assert obj["Body"].read() == expected
    assert obj["ContentType"] == "image/png" and obj["Metadata"]["sha256"] == result.sha256


@needs_moto
async def test_s3_errors_are_one_sentence(
    aiohttp_client: Any, workspace: Path, shared_venv: Path, s3_endpoint: str
) -> None:
    client = await s3_client(aiohttp_client, workspace, shared_venv, s3_endpoint, bucket="no-such-bucket")
    await write(client, "a.txt", "a")
    status, data = await upload(client, path="a.txt")
    assert status == 502 and data["error"]["code"] == "store_failed"
    assert data["error"]["message"] == "the S3 bucket `no-such-bucket` does not exist"

    unreachable = await s3_client(aiohttp_client, workspace, shared_venv, "http://127.0.0.1:9")
    status, data = await upload(unreachable, path="a.txt")
    assert status == 502 and "is not reachable" in data["error"]["message"], data
