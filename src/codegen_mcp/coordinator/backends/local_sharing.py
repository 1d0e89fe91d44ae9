"""What the local backend keeps in the state folder so that every coordinator sharing it serves any session.

With `shared_sessions`, a sandbox's agent outlives the coordinator that started it, and any coordinator on the
same state folder finds it from the session's key:

    session-keys/<digest of the key>     the sandbox id serving that session key (written when it is attached,
                                         under the flock of session-keys.lock)
    sessions/<sandbox_id>/session        the same digest: the folder belongs to a session (not to a warm pool)
    sessions/<sandbox_id>/agent.json     its agent's pid, address and token (0600), so another coordinator talks
                                         to it, or ends it
    sessions/<sandbox_id>/activity       its modification time is the last call any coordinator made on it

The folder's owner lock (`owner.lock`) still says which live coordinator owns the sandbox (stops, reaps and
closes it); the others use its agent as guests. Files are replaced atomically (write, then rename), so two
coordinators never read half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

KEYS_DIR: Final = "session-keys"
SESSION_FILE: Final = "session"
AGENT_RECORD: Final = "agent.json"
ACTIVITY: Final = "activity"
KEYS_LOCK: Final = "session-keys.lock"


@dataclass(frozen=True)
class AgentRecord:
    pid: int
    address: str  # as the agent printed it: `unix:<path>` or `host:port`
    token: str = field(repr=False)  # never in a log line or traceback that shows the record


def key_digest(session_key: str) -> str:
    return hashlib.sha256(session_key.encode()).hexdigest()[:32]


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class SharedFolders:
    def __init__(self, root: Path, sessions_dir: Path) -> None:
        self.keys_dir = root / KEYS_DIR
        self.keys_lock = root / KEYS_LOCK
        self.sessions_dir = sessions_dir

    def prepare(self) -> None:
        self.keys_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.keys_dir, 0o700)  # also a folder made before: which sandbox serves which session is ours

    def link(self, session_key: str, sandbox_id: str) -> str:
        """Make `sandbox_id` serve the session key, unless another sandbox does already (two coordinators served
        the session's first calls at once): the one that serves it. Blocks while another coordinator links."""
        digest = key_digest(session_key)
        write_atomically(self.sessions_dir / sandbox_id / SESSION_FILE, digest.encode())
        with self._keys_locked():  # the first coordinator to link wins, even over a link to an ended sandbox
            serving = self.find(session_key)
            if serving is not None:
                return serving
            write_atomically(self.keys_dir / digest, sandbox_id.encode())
        return sandbox_id

    @contextlib.contextmanager
    def _keys_locked(self) -> Iterator[None]:
        """Held while a key's link is checked and changed, by one coordinator on the state folder at a time."""
        fd = os.open(self.keys_lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def find(self, session_key: str) -> str | None:
        """The sandbox id serving the key, if its folder is still there."""
        try:
            sandbox_id = (self.keys_dir / key_digest(session_key)).read_text().strip()
        except OSError:
            return None
        if not sandbox_id.startswith(("s-", "w-")) or "/" in sandbox_id:
            return None
        return sandbox_id if (self.sessions_dir / sandbox_id).is_dir() else None

    def unlink(self, session_dir: Path) -> None:
        """The folder's sandbox ended: its key no longer leads to it."""
        with contextlib.suppress(OSError), self._keys_locked():
            digest = (session_dir / SESSION_FILE).read_text().strip()
            link = self.keys_dir / digest
            if link.read_text().strip() == session_dir.name:
                link.unlink()
        for name in (SESSION_FILE, AGENT_RECORD):
            (session_dir / name).unlink(missing_ok=True)

    @staticmethod
    def write_agent(session_dir: Path, agent: AgentRecord) -> None:
        record = {"pid": agent.pid, "address": agent.address, "token": agent.token}
        write_atomically(session_dir / AGENT_RECORD, json.dumps(record).encode())
        SharedFolders.touch(session_dir)

    @staticmethod
    def read_agent(session_dir: Path) -> AgentRecord | None:
        try:
            fields = json.loads((session_dir / AGENT_RECORD).read_bytes())
            return AgentRecord(pid=int(fields["pid"]), address=str(fields["address"]), token=str(fields["token"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @staticmethod
    def touch(session_dir: Path) -> None:
        with contextlib.suppress(OSError):
            (session_dir / ACTIVITY).touch()

    @staticmethod
    def idle_for(session_dir: Path) -> float | None:
        """Seconds since any coordinator last used the folder's sandbox (None: the folder is gone)."""
        for path in (session_dir / ACTIVITY, session_dir):
            with contextlib.suppress(OSError):
                return max(0.0, time.time() - path.stat().st_mtime)
        return None

    @staticmethod
    def serves_a_session(session_dir: Path) -> bool:
        return (session_dir / SESSION_FILE).exists()
