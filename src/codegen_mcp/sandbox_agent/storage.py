"""Start-up checks of the agent's storage, and how a fatal start-up error reaches whoever runs the agent.

A workspace volume the agent cannot write is a storage problem, not the agent's: on Kubernetes a provisioner
that ignores the Pod's `fsGroup` (hostPath, many NFS provisioners) hands over a root-owned folder. Found at
start, it is said in one sentence that names the folder, its owner and mode, the agent's ids and the fix,
instead of surfacing later as whichever `mkdir` failed first.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

# Kubernetes shows at most 4096 bytes of a container's termination message.
TERMINATION_MESSAGE_LIMIT = 4096


def error_reason(err: OSError) -> str:
    """The errno's own words ("Permission denied"); asyncio, for one, rewords strerror at length."""
    return os.strerror(err.errno) if err.errno else str(err)


def describe_unwritable_workspace(
    workspace: Path, folder: Path, st: os.stat_result, uid: int, gids: list[int], err: OSError
) -> str:
    """The sentence for a workspace the agent cannot write (`folder`: the workspace, or its nearest parent)."""
    owner = f"{st.st_uid}:{st.st_gid}"
    mode = f"{stat.S_IMODE(st.st_mode):04o}"
    where = (
        f"it belongs to {owner} with mode {mode}"
        if folder == workspace
        else f"{folder} belongs to {owner} with mode {mode}"
    )
    ids = f"uid {uid}, gids {','.join(str(g) for g in gids)}"
    if err.errno == errno.EROFS:
        fix = "mount the workspace volume read-write"
    else:
        fix = (
            "its volume does not honour the Pod's fsGroup (hostPath and many NFS provisioners do not): use a "
            f"StorageClass whose provisioner honours fsGroup, or pre-own the volume to the sandbox uid "
            f"(chown -R {uid} on the volume)"
        )
    return f"the agent ({ids}) cannot write its workspace {workspace}: {where} ({error_reason(err)}); {fix}"


def workspace_storage_problem(workspace: Path) -> str | None:
    """None when the agent can create folders in `workspace` (made if missing); else one sentence saying why not."""
    try:
        workspace.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=".codegen-write-check-", dir=workspace))
        return None
    except OSError as err:
        folder = workspace
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            st = folder.stat()
        except OSError:
            return f"the agent cannot write its workspace {workspace} ({error_reason(err)})"
        gids = sorted({os.getgid(), *os.getgroups()})
        return describe_unwritable_workspace(workspace, folder, st, os.getuid(), gids, err)


def write_termination_message(path: Path | None, message: str) -> None:
    """Leave `message` where Kubernetes reads a container's last words, if that file is there (never made here)."""
    if path is None:
        return
    data = message.encode()[:TERMINATION_MESSAGE_LIMIT]
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        log.debug("no termination message written to %s: %s", path, err)
        return
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
