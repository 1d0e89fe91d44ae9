"""Durable artifact stores for artifact.upload: copies that outlive the sandbox.

A store takes a file the agent staged (a private copy, so what is uploaded is exactly what was hashed) and
a key, and returns a stable URI. Two implementations: a local folder (the default; `file://` URIs) and any
S3-compatible service (`s3://bucket/key`; AWS, MinIO, Ceph, moto), through boto3, imported only when
configured so the sandbox image needs it only when it uses it. Credentials come from the standard AWS
variables or files boto3 reads itself (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
AWS_PROFILE, a web identity token...); code the agent runs never sees them (its environment is rebuilt
from scratch for every run).

Keys are `<prefix>[<namespace>/]<artifact_id>/<file name>`: one per artifact, so uploading the same
artifact again replaces its copy under the same URI.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import logging
import os
import re
import secrets
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from codegen_mcp.api.agent_settings import AgentSettings
from codegen_mcp.api.errors import CodegenError, ErrorCode, InvalidArgument, NotFound
from codegen_mcp.api.tools import ArtifactInfo, ArtifactUploadArgs, ArtifactUploadResult
from codegen_mcp.sandbox_agent.artifacts import ArtifactStore, media_type
from codegen_mcp.sandbox_agent.workspace import Workspace, is_inside

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
S3_CONNECT_TIMEOUT_S = 10.0
S3_READ_TIMEOUT_S = 60.0


class DurableStore(Protocol):
    """Where artifact.upload puts copies."""

    kind: str

    def describe(self) -> str: ...

    def put(self, staged: Path, key: str, *, sha256: str, media_type: str) -> str:
        """Store `staged` under `key` (blocking; run in a thread); returns the stable URI."""
        ...


def safe_key_part(name: str) -> str:
    """A file name as one key component: no slashes, no control characters, never empty or dots only."""
    cleaned = re.sub(r"[\x00-\x1f\x7f/\\]", "_", name).strip()
    return cleaned if cleaned.strip(".") else "artifact"


def artifact_key(prefix: str, namespace: str | None, info: ArtifactInfo) -> str:
    ns = f"{namespace}/" if namespace else ""
    return f"{prefix}{ns}{info.artifact_id}/{safe_key_part(info.name)}"


# --- local folder --------------------------------------------------------------------------------------


@dataclass
class LocalDirectoryStore:
    """Copies under a folder outside every workspace; `file://` URIs."""

    root: Path
    kind: str = "local"

    def describe(self) -> str:
        return f"local folder {self.root}"

    def put(self, staged: Path, key: str, *, sha256: str, media_type: str) -> str:
        dest = self.root.joinpath(*key.split("/"))
        if not is_inside(self.root, Path(os.path.normpath(dest))):
            raise InvalidArgument("the artifact's key would leave the store")
        # Private to the agent: the store holds every session's uploads.
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
        try:
            shutil.copyfile(staged, tmp, follow_symlinks=False)
            os.chmod(tmp, 0o600)
            os.replace(tmp, dest)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise CodegenError(
                f"the local artifact store could not write the copy: {err.strerror or err}",
                code=ErrorCode.STORE_FAILED,
            ) from None
        return dest.as_uri()


# --- S3-compatible --------------------------------------------------------------------------------------


class S3Store:
    """An S3-compatible bucket, through boto3 (its client is made on first use, then reused)."""

    kind = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None,
        region: str | None,
        addressing_style: str,
        environ: Mapping[str, str],
    ) -> None:
        self.bucket = bucket
        # Explicit keys from the agent's environment; without them boto3 uses its own chain (profiles,
        # web identity, instance metadata...).
        self._credentials = {
            "aws_access_key_id": environ.get("AWS_ACCESS_KEY_ID"),
            "aws_secret_access_key": environ.get("AWS_SECRET_ACCESS_KEY"),
            "aws_session_token": environ.get("AWS_SESSION_TOKEN"),
            "profile_name": environ.get("AWS_PROFILE"),
        }
        self.endpoint_url = endpoint_url
        self.region = region or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.addressing_style = addressing_style
        self._client: Any = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"S3 bucket {self.bucket}{where}"

    def _make_client(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    boto3 = importlib.import_module("boto3")
                    config_module = importlib.import_module("botocore.config")
                except ImportError:
                    raise CodegenError(
                        "artifact_store=s3 needs boto3 in the agent's environment (pip install 'codegen-mcp[s3]')",
                        code=ErrorCode.STORE_FAILED,
                    ) from None
                config = config_module.Config(
                    connect_timeout=S3_CONNECT_TIMEOUT_S,
                    read_timeout=S3_READ_TIMEOUT_S,
                    retries={"max_attempts": 3, "mode": "standard"},
                    s3={"addressing_style": self.addressing_style},
                )
                session = boto3.session.Session(**self._credentials)
                self._client = session.client(
                    "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
                )
            return self._client

    def put(self, staged: Path, key: str, *, sha256: str, media_type: str) -> str:
        client = self._make_client()
        exceptions = importlib.import_module("botocore.exceptions")
        try:
            client.upload_file(
                str(staged),
                self.bucket,
                key,
                ExtraArgs={"ContentType": media_type, "Metadata": {"sha256": sha256}},
            )
        except exceptions.NoCredentialsError:
            raise CodegenError(
                "the S3 artifact store has no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a "
                "profile, for the agent)",
                code=ErrorCode.STORE_FAILED,
            ) from None
        except (exceptions.EndpointConnectionError, exceptions.ConnectTimeoutError, exceptions.ReadTimeoutError):
            raise CodegenError(
                f"the S3 artifact store ({self.describe()}) is not reachable", code=ErrorCode.STORE_FAILED
            ) from None
        except (exceptions.ClientError, importlib.import_module("boto3.exceptions").S3UploadFailedError) as err:
            raise CodegenError(_s3_sentence(err, self.bucket), code=ErrorCode.STORE_FAILED) from None
        except exceptions.BotoCoreError as err:
            raise CodegenError(f"uploading to S3 failed: {err}", code=ErrorCode.STORE_FAILED) from None
        return f"s3://{self.bucket}/{key}"


def _s3_sentence(err: Exception, bucket: str) -> str:
    text = str(err)
    if "NoSuchBucket" in text:
        return f"the S3 bucket `{bucket}` does not exist"
    if "AccessDenied" in text or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
        return f"the S3 artifact store refused the upload to `{bucket}` (check the agent's credentials)"
    return f"uploading to S3 failed: {text[:300]}"


def default_store_dir(environ: Mapping[str, str], state_dir: Path) -> Path:
    """$XDG_DATA_HOME/codegen-mcp/artifacts, else ~/.local/share/…, else the agent's state (not durable there)."""
    data = environ.get("XDG_DATA_HOME") or (
        os.path.join(environ["HOME"], ".local", "share") if environ.get("HOME") else ""
    )
    if data and os.path.isabs(data):
        return Path(data) / "codegen-mcp" / "artifacts"
    return state_dir / "artifact-store"


def create_durable_store(settings: AgentSettings, environ: Mapping[str, str], state_dir: Path) -> DurableStore:
    if settings.artifact_store == "s3":
        assert settings.s3_bucket is not None  # checked by AgentSettings
        return S3Store(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            addressing_style=settings.s3_addressing_style,
            environ=environ,
        )
    root = settings.artifact_store_dir or default_store_dir(environ, state_dir)
    return LocalDirectoryStore(Path(os.path.abspath(root)))


# --- artifact.upload ---------------------------------------------------------------------------------


class Uploader:
    """Stages an artifact's bytes privately, hashes them, and hands them to the durable store."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        workspace: Workspace,
        artifacts: ArtifactStore,
        store: DurableStore,
        staging_dir: Path,
    ) -> None:
        self.settings = settings
        self.workspace = workspace
        self.artifacts = artifacts
        self.store = store
        self.staging_dir = staging_dir
        if isinstance(store, LocalDirectoryStore) and is_inside(workspace.root, store.root):
            log.warning("the local artifact store %s is inside the workspace: uploads will not outlive it", store.root)

    async def upload(self, args: ArtifactUploadArgs, timeout_s: float) -> ArtifactUploadResult:
        if args.path is not None:
            info = await asyncio.to_thread(self.artifacts.register, args.path)
        else:
            assert args.artifact_id is not None
            info = self.artifacts.get(args.artifact_id)
        staged, sha256, size = await asyncio.to_thread(self._stage, info)
        try:
            key = artifact_key(
                self.settings.s3_prefix if self.store.kind == "s3" else "", self.settings.artifact_store_namespace, info
            )
            async with asyncio.timeout(timeout_s):
                uri = await asyncio.to_thread(
                    self.store.put, staged, key, sha256=sha256, media_type=info.media_type or media_type(info.name)
                )
        except TimeoutError:
            raise CodegenError(f"the upload did not finish within {timeout_s:g} s", code=ErrorCode.TIMEOUT) from None
        finally:
            with contextlib.suppress(OSError):
                staged.unlink()
        changed = sha256 != info.sha256 or size != info.size
        recorded = await asyncio.to_thread(self.artifacts.record_upload, info.artifact_id, uri, sha256, size)
        return ArtifactUploadResult(
            artifact=recorded,
            uri=uri,
            sha256=sha256,
            size=size,
            store=self.store.kind,
            changed_since_recorded=changed,
        )

    def _stage(self, info: ArtifactInfo) -> tuple[Path, str, int]:
        """Copy the artifact's file (through the workspace's confinement) to a private file, hashing it."""
        try:
            _, fd = self.workspace.open_regular_file(info.path)
        except NotFound:
            raise CodegenError(
                f"the file `{info.path}` of artifact `{info.artifact_id}` no longer exists",
                code=ErrorCode.ARTIFACT_NOT_FOUND,
            ) from None
        self.staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        staged = self.staging_dir / f"{info.artifact_id}.{secrets.token_hex(4)}"
        digest = hashlib.sha256()
        size = 0
        limit = self.settings.upload_max_bytes
        try:
            with os.fdopen(fd, "rb") as src, open(staged, "xb") as out:
                os.chmod(staged, 0o600)
                while chunk := src.read(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise CodegenError(
                            f"`{info.path}` is larger than {limit} bytes, the most artifact.upload copies",
                            code=ErrorCode.TOO_LARGE,
                        )
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            with contextlib.suppress(OSError):
                staged.unlink()
            raise
        return staged, digest.hexdigest(), size
