"""The session's disk quota, seen from the agent: stop a run that fills it, and say so in its result.

The local backend puts the workspace and the jail's /tmp on one size-limited filesystem per session (see
`coordinator/backends/disks.py`) and names its /tmp folder in `CODEGEN_AGENT_TMP_DIR`. The kernel already
refuses writes past it (ENOSPC); this module makes that visible: every confined child (run.python, pip,
pytest, ruff, mypy, git) is stopped as soon as the disk is full (code that swallows ENOSPC and keeps going
does not keep running; see `process.supervise`), and its task fails with a message naming the quota, while
the session itself keeps working (delete files to free space).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

# Below this much free space the disk counts as full: ext4 refuses writes (ENOSPC) with ~2 MiB still free on a
# 256 MiB disk (blocks held back for metadata and delayed allocation), so "free" never reaches zero.
FULL_BELOW_BYTES = 4 << 20
POLL_S = 0.2


def usage(path: Path) -> tuple[int, int] | None:
    """(size, free bytes) of the filesystem holding `path`, or None if it cannot be read."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def is_full(path: Path) -> bool:
    got = usage(path)
    return got is not None and got[1] < FULL_BELOW_BYTES


def message(path: Path) -> str:
    got = usage(path)
    size = f"{got[0] // 2**20} MiB" if got else "its size"
    return (
        f"codegen-mcp: the session's disk quota ({size}, workspace and /tmp together) is full: the run was "
        "stopped. Delete files (fs.delete, or rm in a run) to free space; the session keeps working."
    )


async def filled(path: Path | None) -> None:
    """Return once the disk holding `path` is full; never when `path` is None."""
    if path is None:
        await asyncio.Event().wait()
        return
    while True:
        if await asyncio.to_thread(is_full, path):
            return
        await asyncio.sleep(POLL_S)  # polled: statvfs has no change notification
