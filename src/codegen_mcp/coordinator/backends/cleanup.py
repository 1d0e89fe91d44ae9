"""Removing what a sandbox left on this host: its folder tree, and its uid's processes.

Both run as the coordinator (root, when sandboxes get their own uids) on things the sandboxed code made, so
they must hold against whatever that code did: a tree thousands of folders deep, symlinks pointing anywhere,
folders it made unreadable, processes that left their process group.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Folders held open at once while removing a tree. A folder found deeper is first moved up to the top of the
# tree (a rename inside the tree), so the open files and the work list stay this small at any depth.
MAX_OPEN_LEVELS = 32
# How often a folder that keeps filling up while we empty it (a process still writing) is tried again.
_MAX_REFILLS = 100


def remove_tree(path: Path) -> None:
    """Delete `path` and everything below it, however deep, never following a symlink (idempotent).

    A loop, not a recursion, over folder descriptors: each entry is opened relative to its parent's
    descriptor with O_NOFOLLOW, so a symlink anywhere (even one swapped in while this runs) is removed as a
    name and never entered. `path` itself may be a symlink or a file: then only that name goes. Its parent is
    trusted (the coordinator's own folder).
    """
    parent_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for _ in range(_MAX_REFILLS):
            top = _open_dir(path.name, parent_fd)
            if top is None:
                return
            try:
                _empty(top)
            finally:
                os.close(top)
            if _rmdir(path.name, parent_fd):
                return
        raise OSError(errno.ENOTEMPTY, "a folder keeps filling up while it is removed", str(path))
    finally:
        os.close(parent_fd)


def _open_dir(name: str, dir_fd: int) -> int | None:
    """The folder `name` under `dir_fd`, opened; None when it is gone, or was not a folder (then it is removed)."""
    for attempt in (1, 2):
        try:
            fd = os.open(name, _OPEN_DIR, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR):  # a symlink or a file: drop the name, not its target
                _unlink(name, dir_fd)
                return None
            if err.errno != errno.EACCES or attempt == 2:
                raise
            _make_usable(name, dir_fd)  # only without root: a folder its owner (us) made unreadable
            continue
        if os.geteuid() != 0 and stat.S_IMODE(os.fstat(fd).st_mode) & 0o700 != 0o700:
            os.fchmod(fd, 0o700)  # without root, emptying a folder needs write and search on it
        return fd
    return None  # pragma: no cover - the loop returns or raises


def _make_usable(name: str, dir_fd: int) -> None:
    """chmod 0700 a folder we may not open, through an O_PATH descriptor: a symlink there is never followed."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.chmod(f"/proc/self/fd/{fd}", 0o700)
    finally:
        os.close(fd)


def _unlink(name: str, dir_fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def _rmdir(name: str, dir_fd: int) -> bool:
    """Remove an empty folder; False when it filled up again meanwhile (the caller empties it once more)."""
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        return False
    return True


def _clear_files(fd: int) -> list[str]:
    """Unlink every entry of the folder that is not a folder; return the names of its sub-folders."""
    folders: list[str] = []
    with os.scandir(fd) as entries:
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if is_dir:
                folders.append(entry.name)
                continue
            try:
                _unlink(entry.name, fd)
            except IsADirectoryError:  # swapped for a folder after the scan
                folders.append(entry.name)
    return folders


def _empty(top: int) -> None:
    """Empty the open folder `top`: a depth-first walk with an explicit stack of at most MAX_OPEN_LEVELS."""
    # Each level: (its descriptor, its name in the level above, sub-folders of it still to remove).
    stack: list[tuple[int, str, list[str]]] = [(top, "", _clear_files(top))]
    hoisted = refills = 0
    try:
        while stack:
            fd, name, pending = stack[-1]
            if not pending:
                if len(stack) == 1:
                    return
                stack.pop()
                os.close(fd)
                if not _rmdir(name, stack[-1][0]):
                    refills += 1
                    if refills > _MAX_REFILLS:
                        raise OSError(errno.ENOTEMPTY, "a folder keeps filling up while it is removed", name)
                    stack[-1][2].append(name)
                continue
            child = pending.pop()
            if len(stack) >= MAX_OPEN_LEVELS:
                hoisted, moved = _hoist(child, fd, top, hoisted)
                if moved is not None:
                    stack[0][2].append(moved)
                continue
            child_fd = _open_dir(child, fd)
            if child_fd is not None:
                stack.append((child_fd, child, []))
                stack[-1][2].extend(_clear_files(child_fd))
    finally:
        for fd, _, _ in stack[1:]:
            os.close(fd)


def _hoist(name: str, dir_fd: int, top: int, counter: int) -> tuple[int, str | None]:
    """Move the folder `name` up to `top` under a fresh name: (the next counter value, that name or None)."""
    while True:
        new = f".codegen-removing-{counter}"
        counter += 1
        try:
            os.rename(name, new, src_dir_fd=dir_fd, dst_dir_fd=top)
        except FileNotFoundError:
            return counter, None
        except OSError as err:
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                continue  # that name is taken at the top: try the next one
            raise
        return counter, new


def kill_processes_of(uid: int) -> bool:
    """SIGKILL every process running as `uid` (a sandbox uid: never root, never ours); True once none is left.

    Needs root. `kill -KILL -1` run as that uid signals, in one pass of the kernel over all processes, every
    process that uid may signal: all of its own, in any namespace, including those that left their process
    group or session; a process forking meanwhile cannot finish the fork with a kill pending. What /proc
    still shows afterwards (say, a process that only switched its effective uid) is killed by pid.
    """
    if uid in (0, os.geteuid()):
        raise ValueError(f"refusing to kill every process of uid {uid}")
    if not processes_of(uid):
        return True
    kill = shutil.which("kill")
    for _ in range(5):
        if kill is not None:
            with contextlib.suppress(subprocess.SubprocessError):  # then the kills by pid below do the work
                subprocess.run(  # noqa: S603 - fixed argv; the uid drop happens in the child without preexec_fn
                    [kill, "-s", "KILL", "--", "-1"],
                    user=uid,
                    group=uid,
                    extra_groups=[],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=10,
                    check=False,
                )
        left = processes_of(uid)
        if not left:
            return True
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return not processes_of(uid)


def processes_of(uid: int) -> list[int]:
    """Live (not zombie) processes whose real or effective uid is `uid`."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue
        uids = fields.get("Uid", "").split()
        if fields.get("State", "").strip().startswith("Z") or len(uids) < 2:
            continue
        if uid in (int(uids[0]), int(uids[1])):
            found.append(int(entry.name))
    return found
