"""Which sandbox uid belongs to which workspace folder, for every coordinator on this host.

A root coordinator runs each sandbox's code as a uid of its own. Two rules make that uid mean something:
a uid is never handed out while files it owns may remain (its folder exists), and a named workspace finds
its uid again after a restart, or its code could not read what it made before.

Why one host-wide registry rather than a range per coordinator: a range must itself be allocated and
remembered per state folder (and reclaimed when that folder goes), which is this registry with coarser
entries, and it caps each coordinator at its range. Keyed by uid, any number of coordinators (with any
state folders, even overlapping `sandbox_uid_base` settings) share the uid space safely.

The registry is a folder with one symlink per taken uid, `<uid> -> <the folder it was given for>`: made with
symlink(2), which fails when the name exists, never followed, and read with readlink. Every change happens
under an exclusive flock of `.lock` in that folder, so reclaiming an entry whose folder is gone cannot race
a claim by another coordinator. It lives on disk (default /var/lib/codegen-mcp/uids), not under /run: named
workspaces outlive reboots, so their uids must too. Coordinators share uids safely only if they share it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from codegen_mcp.api.errors import SandboxUnavailable

# Never handed out: root, and nobody/nogroup's 65534 (shared by every daemon that drops to it) and 65535.
_RESERVED = frozenset({0, 65534, 65535})


class UidTaken(SandboxUnavailable):
    """A workspace's recorded uid now belongs to another folder (the registry was lost or replaced)."""


class UidRegistry:
    """Claims and releases sandbox uids in [first, first + count) for folders. Blocking: call in a thread."""

    def __init__(self, directory: Path, first: int, count: int) -> None:
        self.directory = directory
        self._first = first
        self._count = count
        self._next = 0  # where this process starts looking, so a just-released uid is not the next one given

    def prepare(self) -> None:
        """Create the registry folder, refusing one that others could write (they could forge entries)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = self.directory.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise RuntimeError(
                f"the uid registry {self.directory} must be a folder owned by uid {os.geteuid()} that only its owner "
                "can write; fix it or set CODEGEN_LOCAL_UID_REGISTRY_DIR"
            )

    def claim(self, folder: Path, preferred: int | None = None) -> int:
        """The uid of `folder`: the one it already has, else `preferred` (its own record), else a free one."""
        target = str(folder)
        with self._locked():
            entries = self._entries()
            for uid, owner in entries.items():
                if owner == target:
                    return uid
            if preferred is not None:
                holder = entries.get(preferred)
                if holder is not None and os.path.lexists(holder):
                    raise UidTaken(
                        f"this workspace's uid {preferred} now belongs to {holder}; its files cannot be given back "
                        "safely, ask the operator"
                    )
                self._link(preferred, target, replace=holder is not None)
                return preferred
            for i in range(self._count):
                uid = self._first + (self._next + i) % self._count
                if uid in _RESERVED or uid == os.geteuid():
                    continue
                holder = entries.get(uid)
                if holder is None or not os.path.lexists(holder):  # free, or its folder is gone
                    self._link(uid, target, replace=holder is not None)
                    self._next = (self._next + i + 1) % self._count
                    return uid
        raise SandboxUnavailable(
            f"all {self._count} sandbox uids from {self._first} are taken on this host; raise "
            "CODEGEN_LOCAL_SANDBOX_UID_SLOTS or end some workspaces"
        )

    def owned(self, folder: Path) -> list[int]:
        """The uids given to `folder` (normally one)."""
        with self._locked():
            return [uid for uid, owner in self._entries().items() if owner == str(folder)]

    def release(self, folder: Path, uid: int) -> None:
        """Free `uid` if it is still `folder`'s (call only once nothing it owns remains there)."""
        with self._locked():
            if self._owner(uid) == str(folder):
                (self.directory / str(uid)).unlink()

    def prune(self) -> int:
        """Free the uids whose folders are gone; return how many."""
        freed = 0
        with self._locked():
            for uid, owner in self._entries().items():
                if not os.path.lexists(owner):
                    (self.directory / str(uid)).unlink()
                    freed += 1
        return freed

    # -- internals -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _entries(self) -> dict[int, str]:
        entries = {}
        for name in os.listdir(self.directory):
            if name.isdigit():
                owner = self._owner(int(name))
                if owner is not None:
                    entries[int(name)] = owner
        return entries

    def _owner(self, uid: int) -> str | None:
        try:
            return os.readlink(self.directory / str(uid))
        except OSError:  # gone meanwhile, or not a link (nothing this registry made)
            return None

    def _link(self, uid: int, target: str, *, replace: bool) -> None:
        link = self.directory / str(uid)
        if replace:
            link.unlink(missing_ok=True)
        os.symlink(target, link)  # fails if the name exists: never two owners, even without the lock
