"""The session's disk quota, seen from the agent: stop a run that fills it, and say so in its result.

The local backend puts the workspace and the jail's /tmp on one size-limited filesystem per session (see
`coordinator/backends/disks.py`) and names its /tmp folder in `CODEGEN_AGENT_TMP_DIR`. The kernel already
refuses writes past it (ENOSPC); this module makes that visible: a run is stopped as soon as the disk is full
(code that swallows ENOSPC and keeps going does not keep running), and its stderr ends with a message naming
the quota, while the session itself keeps working (delete files to free space).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
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


@contextlib.asynccontextmanager
async def guard(tmp_dir: Path | None, stop: asyncio.Event) -> AsyncIterator[asyncio.Event]:
    """While the block runs, set `stop` when the run fills the quota disk; yields an event set in that case.

    A run that starts on a disk already full (to delete files, say) is not stopped: the kernel still refuses its
    writes, and freeing space must stay possible.
    """
    full = asyncio.Event()
    if tmp_dir is None or await asyncio.to_thread(is_full, tmp_dir):
        yield full
        return

    async def watch() -> None:
        while not stop.is_set():
            if await asyncio.to_thread(is_full, tmp_dir):
                full.set()
                stop.set()
                return
            await asyncio.sleep(POLL_S)

    watcher = asyncio.create_task(watch())
    try:
        yield full
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if not full.is_set() and await asyncio.to_thread(is_full, tmp_dir):
            full.set()  # filled and exited between two polls
