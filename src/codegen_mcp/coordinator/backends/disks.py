"""A per-session disk of the local backend: the workspace and the jail's /tmp on one size-limited filesystem.

Why a loop-mounted image: RLIMIT_FSIZE limits one file, not a session (2 GiB of many files went through), and
the jail's /tmp was a tmpfs counted against nothing. Alternatives checked on this machine: a size-limited
tmpfs per run (bwrap 0.8 has no `--size`, and a tmpfs is memory, not disk), and filesystem project quotas
(need the state folder on XFS/ext4 mounted with prjquota — not something a coordinator can assume). An ext4
image of `disk_quota_bytes`, made sparse (it takes on the host only what is written), loop-mounted per session,
holds the workspace (venv included) and a `tmp` folder the agent binds as /tmp in the jail: the kernel refuses
any write past the size with ENOSPC, whichever process writes, for workspace and /tmp together.

Layout in the session folder: `disk.img` (the image, kept with a named workspace), `disk/` (its mount point:
`disk/workspace`, `disk/tmp`), and `workspace/`, a bind of `disk/workspace` so the workspace keeps its path.
Needs root (mount); without it, or when mounting fails, the caller runs without a quota and says so.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

IMAGE = "disk.img"
MOUNT = "disk"


class DiskError(RuntimeError):
    pass


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)  # noqa: S603
    if proc.returncode != 0:
        raise DiskError(f"{argv[0]} failed: {(proc.stderr or proc.stdout).strip()[:300]}")


def available() -> str | None:
    """None when per-session disks can be made here, else why not."""
    if os.geteuid() != 0:
        return "the coordinator is not root (mounting a per-session disk needs it)"
    for tool in ("mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def tmp_dir(session_dir: Path) -> Path:
    return session_dir / MOUNT / "tmp"


def attach(session_dir: Path, quota_bytes: int, uid: int | None) -> None:
    """Make (first time) and mount the session's disk, then bind its workspace over `session_dir/workspace`."""
    image, mount_point, workspace = session_dir / IMAGE, session_dir / MOUNT, session_dir / "workspace"
    if not image.exists():
        # The image is sparse: it must fit in what the state folder has free when it is made, or writes the
        # quota allows would hit the host's ENOSPC as I/O errors inside the session's filesystem. (Sessions
        # together can still over-commit the host; preallocating would reserve the whole quota per session.)
        st = os.statvfs(session_dir)
        if st.f_bavail * st.f_frsize < quota_bytes:
            raise DiskError(f"the state folder has less free space than the {quota_bytes // 2**20} MiB disk quota")
        if any(workspace.iterdir()):
            raise DiskError("the workspace already holds files outside a quota disk (made before quotas)")
        with image.open("wb") as f:
            f.truncate(quota_bytes)
        os.chmod(image, 0o600)
        # No journal and no reserved blocks: the whole size is the session's.
        _run("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", str(image))
    mount_point.mkdir(mode=0o711, exist_ok=True)
    if not os.path.ismount(mount_point):
        _run("mount", "-o", "loop,nosuid,nodev", str(image), str(mount_point))
    os.chmod(mount_point, 0o711)  # noqa: S103 - traverse-only, like the sessions folder
    inner = mount_point / "workspace"
    inner.mkdir(mode=0o700, exist_ok=True)
    tmp = tmp_dir(session_dir)
    tmp.mkdir(mode=0o700, exist_ok=True)
    if uid is not None:
        os.chown(tmp, uid, uid)
    if not os.path.ismount(workspace):
        _run("mount", "--bind", str(inner), str(workspace))


def detach(session_dir: Path) -> None:
    """Unmount the workspace bind and the disk (lazily: a process still holding a file cannot block it)."""
    for path in (session_dir / "workspace", session_dir / MOUNT):
        if os.path.ismount(path):
            _run("umount", "-l", str(path))
