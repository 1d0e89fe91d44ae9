"""Artifacts: files a run created or changed, remembered in an index that survives an agent restart.

The index (JSON under the state folder) holds metadata only; the content is read from the workspace when
an artifact is fetched, through the same confinement as fs.read.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mimetypes
import os
import secrets
import stat
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from codegen_mcp.api.errors import CodegenError, ErrorCode, NotFound
from codegen_mcp.api.tools import ArtifactContent, ArtifactInfo
from codegen_mcp.sandbox_agent.workspace import DIR_FLAGS, SKIPPED_DIRS, Workspace, encode_content

log = logging.getLogger(__name__)

MAX_ARTIFACT_CONTENT = 16 * 1024 * 1024
MAX_ARTIFACTS_PER_RUN = 100
MAX_SNAPSHOT_FILES = 20_000
MAX_INDEX_ENTRIES = 10_000

# File system timestamps are coarser than time.time_ns(): a file written right at the start still counts.
_MTIME_SLACK_NS = 50_000_000
_INDEX = TypeAdapter(list[ArtifactInfo])


@dataclass(frozen=True)
class Snapshot:
    """Regular files of the workspace: relative path -> (mtime_ns, size)."""

    files: dict[str, tuple[int, int]]
    complete: bool
    taken_at_ns: int


def take_snapshot(root: Path, cap: int = MAX_SNAPSHOT_FILES) -> Snapshot:
    """Walk the workspace without following symlinks, skipping the venv and the agent's state."""
    taken_at_ns = time.time_ns()
    files: dict[str, tuple[int, int]] = {}
    complete = True
    stack: list[tuple[int, str]] = [(os.open(root, DIR_FLAGS), "")]
    try:
        while stack:
            dir_fd, prefix = stack.pop()
            try:
                with os.scandir(dir_fd) as it:
                    for entry in it:
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        if stat.S_ISDIR(st.st_mode):
                            if entry.name in SKIPPED_DIRS:
                                continue
                            try:
                                stack.append((os.open(entry.name, DIR_FLAGS, dir_fd=dir_fd), f"{prefix}{entry.name}/"))
                            except OSError:
                                continue
                        elif stat.S_ISREG(st.st_mode):
                            if len(files) >= cap:
                                complete = False
                                break
                            files[prefix + entry.name] = (st.st_mtime_ns, st.st_size)
            finally:
                os.close(dir_fd)
            if not complete:
                break
    finally:
        for fd, _ in stack:
            os.close(fd)
    return Snapshot(files=files, complete=complete, taken_at_ns=taken_at_ns)


def changed_files(before: Snapshot, after: Snapshot) -> list[str]:
    """Files new or changed since `before`, in path order."""
    out: list[str] = []
    for path, meta in sorted(after.files.items()):
        old = before.files.get(path)
        if old is None:
            if before.complete or meta[0] >= before.taken_at_ns - _MTIME_SLACK_NS:
                out.append(path)
        elif old != meta:
            out.append(path)
    return out


def media_type(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


class ArtifactStore:
    """The artifact index of one workspace (thread-safe: its methods run in worker threads)."""

    def __init__(self, workspace: Workspace, index_path: Path) -> None:
        self.workspace = workspace
        self.index_path = index_path
        self._lock = threading.Lock()
        self._items: dict[str, ArtifactInfo] = {}

    def load(self) -> None:
        try:
            raw = self.index_path.read_bytes()
        except FileNotFoundError:
            return
        try:
            items = _INDEX.validate_json(raw)
        except ValidationError:
            log.warning("artifact index %s is unreadable; starting a new one", self.index_path)
            return
        with self._lock:
            self._items = {a.artifact_id: a for a in items}

    def _save(self) -> None:
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.index_path.with_name(f".{self.index_path.name}.{secrets.token_hex(4)}.tmp")
        tmp.write_bytes(_INDEX.dump_json(list(self._items.values())))
        os.replace(tmp, self.index_path)

    def _describe(self, user_path: str, task_id: str | None) -> ArtifactInfo:
        path, fd = self.workspace.open_regular_file(user_path)
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "rb") as f:
            while chunk := f.read(1024 * 1024):
                digest.update(chunk)
                size += len(chunk)
        rel = self.workspace.relative(path)
        return ArtifactInfo(
            artifact_id=f"art_{secrets.token_hex(8)}",
            name=path.name,
            path=rel,
            size=size,
            media_type=media_type(path.name),
            sha256=digest.hexdigest(),
            created_at=datetime.now(UTC),
            task_id=task_id,
        )

    def _add(self, infos: list[ArtifactInfo]) -> None:
        with self._lock:
            for info in infos:
                self._items[info.artifact_id] = info
            while len(self._items) > MAX_INDEX_ENTRIES:
                del self._items[next(iter(self._items))]
            self._save()

    def collect(self, before: Snapshot, task_id: str) -> list[ArtifactInfo]:
        """Register the files a run created or changed (at most MAX_ARTIFACTS_PER_RUN)."""
        after = take_snapshot(self.workspace.root)
        infos: list[ArtifactInfo] = []
        for rel in changed_files(before, after):
            if len(infos) >= MAX_ARTIFACTS_PER_RUN:
                log.info("task %s: more than %d changed files; the rest are not artifacts", task_id, len(infos))
                break
            with contextlib.suppress(CodegenError, OSError):  # deleted or replaced since the scan
                infos.append(self._describe(rel, task_id))
        if infos:
            self._add(infos)
        return infos

    def register(self, user_path: str) -> ArtifactInfo:
        info = self._describe(user_path, None)
        self._add([info])
        return info

    def list(self) -> list[ArtifactInfo]:
        with self._lock:
            return list(self._items.values())

    def get(self, artifact_id: str) -> ArtifactInfo:
        with self._lock:
            info = self._items.get(artifact_id)
        if info is None:
            raise CodegenError(f"there is no artifact `{artifact_id}`", code=ErrorCode.ARTIFACT_NOT_FOUND)
        return info

    def record_upload(self, artifact_id: str, uri: str, sha256: str, size: int) -> ArtifactInfo:
        """Remember where artifact.upload put an artifact (and the checksum of what it uploaded)."""
        with self._lock:
            info = self._items.get(artifact_id)
            if info is None:
                raise CodegenError(f"there is no artifact `{artifact_id}`", code=ErrorCode.ARTIFACT_NOT_FOUND)
            info = info.model_copy(update={"uri": uri, "sha256": sha256, "size": size})
            self._items[artifact_id] = info
            self._save()
        return info

    def content(self, artifact_id: str, cap: int = MAX_ARTIFACT_CONTENT) -> ArtifactContent:
        info = self.get(artifact_id)
        try:
            _, fd = self.workspace.open_regular_file(info.path)
        except NotFound:
            raise CodegenError(
                f"the file `{info.path}` of artifact `{artifact_id}` no longer exists",
                code=ErrorCode.ARTIFACT_NOT_FOUND,
            ) from None
        with os.fdopen(fd, "rb") as f:
            data = f.read(cap + 1)
        truncated = len(data) > cap
        content, encoding = encode_content(data[:cap])
        return ArtifactContent(artifact=info, content=content, encoding=encoding, truncated=truncated)
