"""What the tools answer: the agent's JSON bodies, and how each reads as text to an LLM.

Each tool's result model is also its MCP output schema (the coordinator sends the same data as structured
content) and knows its own text (`reply`), so a tool is described once: its arguments, this model, and
its entry in `api.tools.TOOLS`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from abc import abstractmethod
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from codegen_mcp.api.arguments import Encoding

# How much of a long text the text content repeats (the structured content has it all), and how many items.
TEXT_TAIL_CHARS = 2000
MAX_TEXT_ITEMS = 50


class _Result(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Reply(NamedTuple):
    """A result as an LLM reads it: the text content, and whether the call failed."""

    text: str
    is_error: bool = False


# `notes` say, by field, where a part cut to fit the MCP result is (the coordinator cuts; the text says so).
NO_NOTES: Mapping[str, str] = MappingProxyType({})


class ToolResult(_Result):
    """A tool's answer."""

    @abstractmethod
    def reply(self, notes: Mapping[str, str] = NO_NOTES) -> Reply:
        """The text content of the MCP result."""


def sentence(text: str) -> str:
    """`text` as a sentence: capitalised, with a full stop."""
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def tail(text: str, limit: int = TEXT_TAIL_CHARS) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]


def content_bytes(content: str, encoding: Encoding) -> int:
    """How many bytes of the file `content` stands for."""
    if encoding is Encoding.BASE64:
        with contextlib.suppress(binascii.Error, ValueError):
            return len(base64.b64decode(content))
        return len(content) // 4 * 3
    return len(content.encode("utf-8", "surrogateescape"))


def _shown(content: str, encoding: Encoding) -> str:
    return content if encoding is Encoding.UTF8 else f"[binary, base64-encoded]\n{content}"


# --- echo -----------------------------------------------------------------------------------------


class EchoResult(ToolResult):
    message: str

    def reply(self, notes: Mapping[str, str] = NO_NOTES) -> Reply:
        return Reply("".join([self.message, *(f"\n{note}" for note in notes.values())]))


# --- fs.* -----------------------------------------------------------------------------------------


class FsReadResult(ToolResult):
    path: str
    content: str = Field(description="The bytes read: text, or base64 when `encoding` is base64.")
    encoding: Encoding
    size: int = Field(description="The whole file's size in bytes.")
    offset: int
    bytes_read: int
    truncated: bool = Field(description="True when bytes beyond offset+limit were not returned.")

    def reply(self, notes: Mapping[str, str] = NO_NOTES) -> Reply:
        text = _shown(self.content, self.encoding)
        if self.truncated:
            end = self.offset + self.bytes_read
            text += (
                f"\n[truncated: bytes {self.offset}–{end} of {self.size}; read on with fs.read path={self.path} "
                f"offset={end}]"
            )
        return Reply(text)


class FsWriteResult(ToolResult):
    path: str
    bytes_written: int
    size: int

    def reply(self, notes: Mapping[str, str] = NO_NOTES) -> Reply:
        return Reply(f"Wrote {self.bytes_written} bytes to {self.path} (now {self.size} bytes).")


class EntryType(StrEnum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    OTHER = "other"


class FsEntry(_Result):
    name: str = Field(description="Path relative to the listed folder.")
    type: EntryType
    size: int
    mtime: datetime


class FsListResult(ToolResult):
    path: str
    entries: list[FsEntry]
    truncated: bool = False

    def reply(self, notes: Mapping[str, str] = NO_NOTES) -> Reply:
        if not self.entries:
            return Reply(f"{self.path}: empty")
        marks = {"directory": "/", "symlink": "@"}
        lines = [f"{e.name}{marks.get(e.type.value, '')}\t{e.size}" for e in self.entries]
        if self.truncated:
            lines.append("[listing truncated]")
        return Reply("\n".join(lines))


# --- artifacts ------------------------------------------------------------------------------------


class ArtifactInfo(_Result):
    artifact_id: str
    name: str
    path: str = Field(description="Workspace-relative path of the file.")
    size: int
    media_type: str
    sha256: str
    created_at: datetime
    task_id: str | None = Field(None, description="The task that produced it, if any.")
    uri: str | None = Field(None, description="Where artifact.upload last stored it (s3://… or file://…), if it did.")


class ArtifactContent(ToolResult):
    artifact: ArtifactInfo
    content: str
    encoding: Encoding
    truncated: bool = False

    def reply(self, notes: Mapping[str, str] = NO_NOTES) -> Reply:
        a = self.artifact
        head = f"{a.artifact_id}: {a.path} ({a.size} bytes, {a.media_type}, sha256 {a.sha256})"
        body = _shown(self.content, self.encoding)
        if not self.truncated:
            return Reply(f"{head}\n{body}")
        shown = content_bytes(self.content, self.encoding)
        return Reply(f"{head}\n{body}\n[truncated at {shown} bytes; read on with fs.read path={a.path} offset={shown}]")


class ArtifactListResult(ToolResult):
    artifacts: list[ArtifactInfo] = Field(description="Newest first.")
    total: int = Field(0, description="How many artifacts match, listed or not.")
    truncated: bool = False

    def reply(self, notes: Mapping[str, str] = NO_NOTES) -> Reply:
        if not self.artifacts:
            return Reply("No artifacts yet: files a run creates or changes become artifacts.")
        lines = [f"{self.total} artifact(s), newest first:"]
        for a in self.artifacts:
            made = f", task {a.task_id}" if a.task_id else ""
            uploaded = f", uploaded to {a.uri}" if a.uri else ""
            created = f"{a.created_at:%Y-%m-%d %H:%M:%S}Z"
            lines.append(f"  {a.artifact_id}  {a.path}  ({a.size} bytes, {a.media_type}, {created}{made}{uploaded})")
        if self.truncated:
            lines.append(f"  [{self.total - len(self.artifacts)} older ones not listed; raise `limit`]")
        return Reply("\n".join(lines))


class ArtifactUploadResult(ToolResult):
    artifact: ArtifactInfo
    uri: str = Field(description="Stable reference to the stored copy, e.g. s3://bucket/key or file:///path.")
    sha256: str = Field(description="SHA-256 of the uploaded bytes (hex).")
    size: int
    store: str = Field(description="The kind of store: local or s3.")
    changed_since_recorded: bool = Field(
        False, description="True when the file differed from the artifact's recorded checksum (it was re-recorded)."
    )

    def reply(self, notes: Mapping[str, str] = NO_NOTES) -> Reply:
        a = self.artifact
        changed = " (the file had changed since it was recorded; this is its current content)"
        note = changed if self.changed_since_recorded else ""
        return Reply(
            f"Uploaded {a.artifact_id} ({a.path}, {self.size} bytes) to {self.uri}\nsha256 {self.sha256}{note}"
        )


# --- git.commit -----------------------------------------------------------------------------------


class GitFileChange(_Result):
    path: str = Field(description="Path relative to the repository.")
    status: Literal["added", "modified", "deleted", "renamed", "copied", "type_changed", "other"]
    old_path: str | None = Field(None, description="The previous path of a renamed or copied file.")
    insertions: int | None = Field(None, description="Lines added; None for binary files.")
    deletions: int | None = Field(None, description="Lines removed; None for binary files.")


class GitCommitResult(ToolResult):
    commit: str = Field(description="The new commit id (full SHA).")
    branch: str | None = Field(None, description="The branch it was committed on; None when HEAD is detached.")
    repo: str = Field(description="Workspace-relative folder of the repository.")
    initialized: bool = Field(False, description="True when this call created the repository.")
    author: str = Field(description="'Name <email>'.")
    files: list[GitFileChange]
    files_changed: int
    insertions: int
    deletions: int
    diffstat: str = Field(description="e.g. '2 files changed, 10 insertions(+), 1 deletion(-)'.")

    def reply(self, notes: Mapping[str, str] = NO_NOTES) -> Reply:
        where = f" on {self.branch}" if self.branch else " (detached HEAD)"
        head = f"Committed {self.commit[:12]}{where} in {self.repo}" + (" (new repository)" if self.initialized else "")
        lines = [f"{head}: {self.diffstat}"]
        marks = {"added": "A", "modified": "M", "deleted": "D", "renamed": "R", "copied": "C", "type_changed": "T"}
        for f in self.files[:MAX_TEXT_ITEMS]:
            stat = "binary" if f.insertions is None else f"+{f.insertions} -{f.deletions}"
            name = f"{f.old_path} -> {f.path}" if f.old_path else f.path
            lines.append(f"  {marks.get(f.status, '?')} {name} ({stat})")
        if len(self.files) > MAX_TEXT_ITEMS:
            lines.append(f"  [{len(self.files) - MAX_TEXT_ITEMS} more files]")
        return Reply("\n".join(lines))


# --- run.contexts ---------------------------------------------------------------------------------


class ContextInfo(_Result):
    name: str
    running: bool = Field(description="True while its interpreter is up (a context that lost it starts a new one).")
    busy: bool = Field(False, description="True while a cell runs in it.")
    started_at: datetime | None = Field(None, description="When its current interpreter started.")
    cells: int = Field(0, description="Cells its current interpreter has run.")
    memory_bytes: int | None = Field(None, description="Its interpreter's resident memory after its last cell.")
    lost: str | None = Field(None, description="Why its state was lost when its interpreter died (the next call says).")


class ContextListResult(ToolResult):
    contexts: list[ContextInfo]
    max_contexts: int = Field(description="How many contexts this session may hold at once.")

    def reply(self, notes: Mapping[str, str] = NO_NOTES) -> Reply:
        if not self.contexts:
            return Reply(
                f"No Python contexts yet (at most {self.max_contexts}): run.python with context='main' starts one."
            )
        lines = [f"{len(self.contexts)} of at most {self.max_contexts} Python contexts:"]
        for c in self.contexts:
            if not c.running:
                lines.append(f"  {c.name}: stopped ({c.lost or 'not started'}); its next cell starts a fresh one")
                continue
            memory = f", {c.memory_bytes / 2**20:.1f} MiB" if c.memory_bytes else ""
            busy = ", running a cell" if c.busy else ""
            started = f"{c.started_at:%Y-%m-%d %H:%M:%S}Z" if c.started_at else "?"
            cells = f"{c.cells} cell" + ("" if c.cells == 1 else "s")
            lines.append(f"  {c.name}: started {started}, {cells}{memory}{busy}")
        return Reply("\n".join(lines))


# --- health ---------------------------------------------------------------------------------------


class HealthView(_Result):
    status: Literal["ok"] = "ok"
    version: str
    workspace: str
    isolation: str = Field(description="What confines code the agent runs, e.g. 'bwrap+rlimits' or 'rlimits'.")
    python: str
    running_tasks: int = Field(0, description="Tasks queued or running: a busy sandbox is not idle.")
