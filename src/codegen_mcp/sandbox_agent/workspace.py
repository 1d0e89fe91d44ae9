"""Workspace confinement: every user path resolves inside one root folder, or is refused before any I/O.

`resolve()` is the pure rule (string in, absolute path inside the root out). `Workspace` does the file
operations on top of it without trusting the result blindly: it walks from the root with `openat`-style
calls and `O_NOFOLLOW` on every component, so a symlink swapped in between the check and the use (by code
the agent runs) makes the operation fail instead of escaping.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from codegen_mcp.api.errors import CodegenError, ErrorCode, InvalidArgument, NotFound, WorkspaceEscape
from codegen_mcp.api.tools import (
    MAX_LIST_ENTRIES,
    MAX_PATH_LENGTH,
    MAX_WRITE_BYTES,
    Encoding,
    EntryType,
    FsEntry,
    FsListResult,
    FsReadResult,
    FsWriteResult,
)

MAX_COMPONENT_BYTES = 255
# Folders a recursive listing (and the artifact scan) never descends into: the session venv and the
# agent's own bookkeeping are big and not the user's work.
SKIPPED_DIRS = frozenset({".venv", ".codegen"})

# Opening a folder to walk from: never through a symlink, never inherited by a child.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _shown(user_path: str) -> str:
    """The user's path quoted for an error sentence (kept short, control characters escaped)."""
    text = user_path if len(user_path) <= 120 else user_path[:117] + "..."
    return "`" + text.encode("unicode_escape").decode("ascii") + "`"


def normalize(user_path: str) -> PurePosixPath:
    """Check a user path and normalize it lexically to a relative path (no I/O).

    Absolute paths are read as relative to the workspace root; `..` may not climb above the root.
    """
    if "\x00" in user_path:
        raise InvalidArgument("the path must not contain NUL bytes")
    if len(user_path.encode("utf-8", "surrogateescape")) > MAX_PATH_LENGTH:
        raise InvalidArgument(f"the path is longer than {MAX_PATH_LENGTH} bytes")
    parts: list[str] = []
    for part in user_path.split("/"):
        if len(part.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_BYTES:
            raise InvalidArgument(f"a component of the path is longer than {MAX_COMPONENT_BYTES} bytes")
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise WorkspaceEscape(f"the path {_shown(user_path)} is outside the workspace")
            parts.pop()
        else:
            parts.append(part)
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def is_inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def resolve(root: Path, user_path: str) -> Path:
    """Map a user path to an absolute path inside `root`, symlinks resolved, or raise.

    `root` must be absolute and already resolved. The final component may not exist (a file about to be
    written); whatever exists along the way is resolved, so a symlink that points out of the workspace
    (to `/etc`, or to `..`) is refused here, before the target is opened.
    """
    relative = normalize(user_path)
    candidate = root / relative
    # realpath only lstat()s and readlink()s the components; it never opens the target.
    real = Path(os.path.realpath(candidate))
    if not is_inside(root, real):
        raise WorkspaceEscape(f"the path {_shown(user_path)} resolves outside the workspace")
    if len(os.fsencode(real)) > MAX_PATH_LENGTH:
        raise InvalidArgument(f"the path is longer than {MAX_PATH_LENGTH} bytes once resolved")
    return real


@dataclass(frozen=True)
class Owner:
    """Who should own what the agent creates in the workspace (the uid sandboxed code runs as)."""

    uid: int
    gid: int


def _os_error(err: OSError, shown: str) -> CodegenError:
    """One sentence for an OSError met while touching a workspace path."""
    if err.errno == errno.ENOENT:
        return NotFound(f"{shown} does not exist")
    if err.errno == errno.EISDIR:
        return CodegenError(f"{shown} is a directory", code=ErrorCode.IS_A_DIRECTORY)
    if err.errno == errno.ENOTDIR:
        return CodegenError(f"a parent of {shown} is not a directory", code=ErrorCode.NOT_A_DIRECTORY)
    if err.errno == errno.ELOOP:
        return WorkspaceEscape(f"{shown} was replaced by a symlink while it was being opened")
    if err.errno == errno.EEXIST:
        return CodegenError(f"{shown} exists and is not a directory", code=ErrorCode.NOT_A_DIRECTORY)
    if err.errno in (errno.EFBIG, errno.ENOSPC, errno.EDQUOT):
        return CodegenError(f"no room to write {shown}: {err.strerror}", code=ErrorCode.TOO_LARGE)
    if err.errno in (errno.EACCES, errno.EPERM):
        return InvalidArgument(f"{shown} cannot be accessed: {err.strerror}")
    return InvalidArgument(f"{shown} could not be used: {err.strerror}")


class Workspace:
    """File operations confined to one root folder."""

    def __init__(self, root: Path, *, owner: Owner | None = None, protected: tuple[Path, ...] = ()) -> None:
        self.root = Path(os.path.realpath(root))
        self.owner = owner
        # Folders the agent itself manages (venv, state); fs.write may not change them.
        self.protected = tuple(Path(os.path.realpath(p)) for p in protected)

    # --- path handling -------------------------------------------------------------------------

    def resolve(self, user_path: str) -> Path:
        return resolve(self.root, user_path)

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    @contextlib.contextmanager
    def _open_parent(self, path: Path, *, create: bool) -> Iterator[int]:
        """An fd of `path`'s parent, walked from the root without following any symlink."""
        parts = path.relative_to(self.root).parts[:-1]
        fd = os.open(self.root, DIR_FLAGS)
        try:
            for part in parts:
                try:
                    nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    if self.owner is not None:
                        os.chown(part, self.owner.uid, self.owner.gid, dir_fd=fd, follow_symlinks=False)
                    nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)

    def _open(self, path: Path, flags: int, mode: int = 0o644, *, create_parents: bool = False) -> int:
        if path == self.root:
            return os.open(self.root, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
        with self._open_parent(path, create=create_parents) as parent:
            return os.open(path.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent)

    def open_regular_file(self, user_path: str) -> tuple[Path, int]:
        """Resolve and open an existing regular file for reading; the caller closes the fd."""
        path = self.resolve(user_path)
        shown = _shown(user_path)
        try:
            fd = self._open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as err:
            raise _os_error(err, shown) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                raise CodegenError(f"{shown} is a directory, not a file", code=ErrorCode.IS_A_DIRECTORY)
            raise InvalidArgument(f"{shown} is not a regular file")
        return path, fd

    # --- fs.read / fs.write / fs.list ----------------------------------------------------------

    def read(self, user_path: str, offset: int, limit: int) -> FsReadResult:
        path, fd = self.open_regular_file(user_path)
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            data = f.read(limit)
        content, encoding = encode_content(data)
        return FsReadResult(
            path=self.relative(path),
            content=content,
            encoding=encoding,
            size=size,
            offset=offset,
            bytes_read=len(data),
            truncated=offset + len(data) < size,
        )

    def write(self, user_path: str, content: str, encoding: Encoding, append: bool) -> FsWriteResult:
        data = decode_content(content, encoding)
        if len(data) > MAX_WRITE_BYTES:
            raise CodegenError(
                f"the content is {len(data)} bytes; at most {MAX_WRITE_BYTES} bytes can be written at once",
                code=ErrorCode.TOO_LARGE,
            )
        path = self.resolve(user_path)
        shown = _shown(user_path)
        if path == self.root:
            raise CodegenError(f"{shown} is the workspace folder, not a file", code=ErrorCode.IS_A_DIRECTORY)
        for folder in self.protected:
            if is_inside(folder, path):
                raise InvalidArgument(
                    f"{shown} is inside `{folder.name}`, which the agent manages; write somewhere else"
                )
        # No O_TRUNC here: the file is checked first, truncated after.
        flags = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | (os.O_APPEND if append else 0)
        try:
            fd = self._open(path, flags, create_parents=True)
        except OSError as err:
            raise _os_error(err, shown) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InvalidArgument(f"{shown} is not a regular file")
            if st.st_nlink > 1:
                # A hard link made by sandboxed code could point at a file outside the workspace.
                raise InvalidArgument(f"{shown} is a hard link; fs.write does not write through hard links")
            if not append:
                os.ftruncate(fd, 0)
            if self.owner is not None and st.st_uid == os.geteuid():
                os.fchown(fd, self.owner.uid, self.owner.gid)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            size = os.fstat(fd).st_size
        except OSError as err:
            raise _os_error(err, shown) from None
        finally:
            os.close(fd)
        return FsWriteResult(path=self.relative(path), bytes_written=len(data), size=size)

    def list(self, user_path: str, recursive: bool) -> FsListResult:
        path = self.resolve(user_path)
        shown = _shown(user_path)
        try:
            fd = self._open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as err:
            if err.errno == errno.ENOTDIR:
                raise CodegenError(f"{shown} is a file, not a directory", code=ErrorCode.NOT_A_DIRECTORY) from None
            raise _os_error(err, shown) from None
        entries: list[FsEntry] = []
        truncated = False
        # Iterative walk over directory fds: (fd, prefix). Symlinks are reported, never followed.
        stack: list[tuple[int, str]] = [(fd, "")]
        try:
            while stack and not truncated:
                dir_fd, prefix = stack.pop()
                try:
                    with os.scandir(dir_fd) as it:
                        children = sorted(it, key=lambda e: e.name)
                    subdirs: list[str] = []
                    for child in children:
                        if len(entries) >= MAX_LIST_ENTRIES:
                            truncated = True
                            break
                        try:
                            st = child.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        name = prefix + child.name
                        entries.append(_entry(name, st))
                        if recursive and stat.S_ISDIR(st.st_mode) and child.name not in SKIPPED_DIRS:
                            subdirs.append(child.name)
                    for sub in reversed(subdirs):
                        try:
                            sub_fd = os.open(sub, DIR_FLAGS, dir_fd=dir_fd)
                        except OSError:
                            continue
                        stack.append((sub_fd, f"{prefix}{sub}/"))
                finally:
                    os.close(dir_fd)
        finally:
            for left_fd, _ in stack:
                os.close(left_fd)
        entries.sort(key=lambda e: e.name)
        return FsListResult(
            path=self.relative(path) if path != self.root else ".", entries=entries, truncated=truncated
        )


def _entry(name: str, st: os.stat_result) -> FsEntry:
    if stat.S_ISLNK(st.st_mode):
        kind = EntryType.SYMLINK
    elif stat.S_ISDIR(st.st_mode):
        kind = EntryType.DIRECTORY
    elif stat.S_ISREG(st.st_mode):
        kind = EntryType.FILE
    else:
        kind = EntryType.OTHER
    return FsEntry(name=name, type=kind, size=st.st_size, mtime=datetime.fromtimestamp(st.st_mtime, UTC))


def encode_content(data: bytes) -> tuple[str, Encoding]:
    """Text if the bytes decode strictly as UTF-8, else base64."""
    try:
        return data.decode("utf-8"), Encoding.UTF8
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), Encoding.BASE64


def decode_content(content: str, encoding: Encoding) -> bytes:
    if encoding is Encoding.BASE64:
        try:
            # Line breaks are common in base64 from mail-style encoders; anything else must be base64.
            return base64.b64decode("".join(content.split()).encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise InvalidArgument("`content` is not valid base64 (encoding is base64)") from None
    try:
        return content.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument("`content` has characters that cannot be written as UTF-8 (lone surrogates)") from None


def claim_workspace(root: Path, owner: Owner, skip: tuple[Path, ...] = (), cap: int = 100_000) -> int:
    """Let the sandbox uid write the workspace while the agent keeps its own folders to itself.

    The root folder stays the agent's, group-writable for the sandbox gid and sticky (like /tmp): sandboxed
    code can create and replace its own files there, but cannot rename or replace the venv or the state
    folder (a `.codegen` swapped for a symlink to /etc would make the agent, as root, write there).
    Everything else the agent owns is given to the sandbox uid; the walk holds directory fds and never
    follows a symlink, so a folder swapped for a symlink mid-walk is not entered.
    """
    me = os.geteuid()
    changed = 0
    seen = 0
    os.chown(root, me, owner.gid)
    os.chmod(root, 0o1770)  # noqa: S103 - group-writable for the sandbox gid only, sticky
    for dirpath, dirnames, filenames, dir_fd in os.fwalk(root, follow_symlinks=False):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip and not (here == root and d in SKIPPED_DIRS)]
        for name in [*dirnames, *filenames]:
            seen += 1
            if seen > cap:
                return changed
            with contextlib.suppress(OSError):
                if os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_uid == me:
                    os.chown(name, owner.uid, owner.gid, dir_fd=dir_fd, follow_symlinks=False)
                    changed += 1
    return changed
