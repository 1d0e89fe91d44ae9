"""The local backend: each sandbox is an agent process on this machine with its own workspace folder.

Layout under the state directory (created 0700):

    sessions/<sandbox_id>/workspace/   the session's files (and its venv in .venv/)
    sessions/<sandbox_id>/agent.sock   the agent's Unix socket (TCP loopback when the path is too long)
    sessions/<sandbox_id>/agent.log    the agent's own log
    sessions/<sandbox_id>/uid          as root: the uid the sandbox's code runs as (its files belong to it)
    sessions/<sandbox_id>/owner.lock   flock'd by the coordinator serving the folder, for as long as it does
    sessions/<sandbox_id>/agent.pid    the agent's pid, so a leftover agent can be found

The agent is trusted code and runs as this user; the code it runs is confined by the agent (bubblewrap
namespaces when they work here, rlimits always, a per-session uid when we are root). The coordinator probes
bubblewrap once at start-up, logs what is in force and tells every agent, so agents skip their own probe.

Agents are forked from the agent zygote (`agent_zygote.py`, `zygote` setting), one process per coordinator that
imported the agent once; without it (or while it is being replaced) each agent is started as its own
interpreter. Either way an agent is its session's own process, in its session's cgroups before it serves.

As root, each sandbox's uid comes from the host-wide registry of `uids.py`: a named workspace keeps its uid
across restarts (its folder's `uid` file and the registry both say it), and no coordinator on this host
hands out a uid while the folder it was given for exists.

Starting a sandbox (folder, uid, disk, cgroup, agent) and attaching it to a session are two steps: the warm
pool (`warm_pool.py`, `warm_pool` setting) keeps sandboxes started for nobody, and a new per-session key
claims one instead of waiting for a start. A named workspace always starts its own, on its own folder.
Pooled sandboxes hold folder locks like any other, and all of them together stay within max_sessions.

An idle session's sandbox may be suspended (`suspend`): its agent and every process of its uid and cgroup
end, while its folder, lock, uid and disk stay; `revive` resumes it on them. A suspended sandbox does not
count against max_sessions.

A coordinator that is killed leaves its folders behind, their owner locks free (the kernel drops a dead
process's flocks). The next start on the state folder sweeps them: a leftover agent and any process of the
folder's uid are killed, a per-session folder is removed and its uid freed; a named workspace stays, with
its uid. Folders whose lock is held belong to another live coordinator sharing the state folder: untouched.

With `shared_sessions` (several coordinators on one state folder serving the same MCP sessions), agents are
started on their own and outlive their coordinator, and what another coordinator needs to reach them is in the
state folder (`local_sharing`): it uses a live owner's sandbox as a guest, and takes over one whose owner is
gone. The sweep then spares a session's folder used within the idle timeout, and runs again every while.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codegen_mcp.api.agent_settings import AgentSettings, SandboxMode, agent_variables
from codegen_mcp.api.call_id import detached_task
from codegen_mcp.api.errors import SandboxUnavailable
from codegen_mcp.api.logs import LOG_FORMAT_ENV
from codegen_mcp.api.tracing import TRACING_ENV
from codegen_mcp.coordinator.agent_client import AgentClient, AgentEndpoint
from codegen_mcp.coordinator.backends import disks
from codegen_mcp.coordinator.backends.agent_zygote import AgentZygote, ForkedAgent, ZygoteUnavailable
from codegen_mcp.coordinator.backends.base import Backend, Sandbox, is_named_workspace
from codegen_mcp.coordinator.backends.cgroups import SessionCgroups
from codegen_mcp.coordinator.backends.cleanup import kill_processes_of, remove_tree
from codegen_mcp.coordinator.backends.local_sharing import AgentRecord, SharedFolders
from codegen_mcp.coordinator.backends.uids import UidRegistry
from codegen_mcp.coordinator.backends.warm_pool import WarmPool
from codegen_mcp.coordinator.settings import CoordinatorSettings

log = logging.getLogger(__name__)

# sockaddr_un.sun_path is 108 bytes on Linux; beyond that we fall back to TCP on loopback.
_MAX_UNIX_SOCKET_PATH = 100
_LISTENING = "LISTENING "
_UID_FILE = "uid"
_OWNER_LOCK = "owner.lock"
_AGENT_PID = "agent.pid"


@dataclass
class _Process:
    proc: asyncio.subprocess.Process | ForkedAgent
    watcher: asyncio.Task[None]
    drain: asyncio.Task[None] | None


def parent_death_prefix() -> list[str]:
    """An argv prefix by which the agent gets SIGTERM if the coordinator dies (util-linux `setpriv`).

    Set by `setpriv` between its own exec and the agent's, not in a `preexec_fn` (the coordinator has worker
    threads). Without `setpriv` the prefix is empty: a coordinator killed with SIGKILL then leaves its agents,
    which the next start on the same state folder sweeps.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


async def probe_bwrap(uid: int | None) -> str | None:
    """Return None when the agent's jail works here (as `uid`), else the reason it cannot.

    The agent's own probe, run as a module (the coordinator does not import the agent): the same minimal
    root, staging and confinement as real runs.
    """
    argv = [sys.executable, "-m", "codegen_mcp.sandbox_agent.jailprobe"]
    if uid is not None:
        argv += ["--uid", str(uid)]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except OSError as exc:
        return f"the jail probe could not start ({exc})"
    try:
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return "the jail probe did not finish within 30 s"
    if proc.returncode != 0:
        said = out.decode(errors="replace").strip() or err.decode(errors="replace").strip()
        return said[-300:] or f"the jail probe failed (exit {proc.returncode})"
    return None


def _try_lock(session_dir: Path) -> int | None:
    """Take the folder's owner lock (held until closed); None when a live coordinator holds it."""
    fd = os.open(session_dir / _OWNER_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _agent_of(session_dir: Path) -> int | None:
    """The pid of the agent running on this folder, if one is (by its `agent.pid`, checked against reuse)."""
    try:
        pid = int((session_dir / _AGENT_PID).read_text())
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except (OSError, ValueError):
        return None
    # The pid may have been reused since: only a process serving this very workspace is that agent. A started
    # agent has it in its environment; a forked one has the zygote's environment, and the folder as its cwd.
    started = f"{AgentSettings.env_name('workspace')}={session_dir / 'workspace'}".encode() in environ
    return pid if started or cwd == str(session_dir) else None


def _kill_leftover_agent(session_dir: Path) -> None:
    """SIGKILL the agent a dead coordinator started on this folder, if it is still running."""
    pid = _agent_of(session_dir)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        log.warning("killed agent %d, left running on %s by a coordinator that stopped uncleanly", pid, session_dir)


def _new_sandbox_id() -> str:
    return "s-" + secrets.token_hex(6)


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_bytes()[-limit:].decode(errors="replace")
    except OSError:
        return "(no agent log)"


class LocalBackend(Backend):
    name = "local"
    suspends = True

    def __init__(self, settings: CoordinatorSettings) -> None:
        self._settings = settings
        self._local = settings.local
        self._root = settings.state_dir.resolve()
        self._sessions_dir = self._root / "sessions"
        # Replicas on this state folder (`local_sharing`): agents outlive their coordinator and any coordinator
        # serves them. None suspends a sandbox, which another one may be serving a call of.
        self.shared = settings.shared_sessions
        self.suspends = not self.shared
        self._sharing = SharedFolders(self._root, self._sessions_dir) if self.shared else None
        # Agent settings given to the coordinator pass to every agent (e.g. the S3 artifact store's
        # CODEGEN_AGENT_S3_BUCKET).
        self._agent_variables = agent_variables(os.environ)
        self._procs: dict[str, _Process] = {}
        self._uids: dict[str, int] = {}
        self._locks: dict[str, int] = {}  # sandbox_id -> its folder's owner lock, held while we serve it
        self._suspended: set[str] = set()  # sandboxes stopped while their sessions idle (folder lock still held)
        self._registry = (
            UidRegistry(self._local.uid_registry_dir, self._local.sandbox_uid_base, self._local.sandbox_uid_slots)
            if os.geteuid() == 0
            else None
        )
        self._sandbox_mode: SandboxMode = "none"
        self._isolation = "rlimits"
        self.zygote = (
            AgentZygote(self._root / "zygote.log", self._inherited_env(), parent_death_prefix())
            if self._local.zygote and not self.shared  # forked agents end with the zygote, and it with us
            else None
        )
        self._cgroups = SessionCgroups(
            root=self._local.cgroup_root,
            parent=self._local.cgroup_parent,
            state_dir=self._root,
            memory_bytes=self._local.session_memory_bytes,
            max_pids=self._local.session_max_processes,
        )
        self._disk_quota: int | None = None  # set at start when per-session disks work here
        self._disks: set[str] = set()  # sandboxes whose workspace and /tmp are on their quota disk
        # Sandboxes started ahead for sessions to come. Each holds a folder lock, like a session's: pooled and
        # serving sandboxes together stay within max_sessions (`_has_room`).
        self.pool = WarmPool(
            self._local.warm_pool, start=self._start_for_pool, discard=self.close, has_room=self._has_room
        )
        self._opening = 0  # sessions' own starts under way (their folder may not be locked yet)
        self._orphan_reaper: asyncio.Task[None] | None = None
        self.agents_started = 0  # agent processes started, for tests and the bench: a claim starts none
        # What agents would refuse (a misspelt or bad CODEGEN_AGENT_* variable, a local option out of the agent's
        # range) stops the coordinator now, in one sentence, rather than every sandbox's start later.
        self._agent_settings("s-0", self._sessions_dir / "s-0" / "workspace", token="")

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        # Traverse-only for others: each session's uid must reach its own workspace (which the agent makes
        # 0700 and owned by that uid), but nobody may list the sessions.
        self._sessions_dir.mkdir(mode=0o711, exist_ok=True)
        os.chmod(self._sessions_dir, 0o711)  # noqa: S103 - traverse-only, see above
        if self._sharing is not None:
            self._sharing.prepare()
        if self._registry is not None:
            await asyncio.to_thread(self._registry.prepare)
        await asyncio.to_thread(self._start_cgroups)
        await asyncio.to_thread(self._sweep, self._orphaned_after())
        if self._registry is not None:
            freed = await asyncio.to_thread(self._registry.prune)
            if freed:
                log.info("uid registry %s: freed %d uids whose folders are gone", self._registry.directory, freed)
        probe_uid = self._local.sandbox_uid_base if os.geteuid() == 0 else None
        reason: str | None
        if self._local.sandbox == "none":
            reason = "disabled by settings (sandbox=none)"
        else:
            reason = await probe_bwrap(probe_uid)
            if reason is not None and self._local.sandbox == "bwrap":
                raise RuntimeError(f"sandbox=bwrap was asked for but {reason}")
        self._sandbox_mode = "bwrap" if reason is None else "none"
        if reason is not None:
            # Without the jail, code runs directly as its uid and must walk to its workspace on the host (in
            # the jail, the agent mounts the workspace for it).
            self._check_traversable(self._sessions_dir)
        parts = ["bwrap namespaces (net, pid, mount, ipc, uts, user)"] if reason is None else []
        if self._cgroups.found:
            parts.append(self._cgroups.describe())
        quota = self._local.disk_quota_bytes
        no_disk = "disabled by settings" if quota is None else disks.available()
        if no_disk is None and quota is not None:
            self._disk_quota = quota
            parts.append(f"a {quota // 2**20} MiB disk per session (workspace + /tmp)")
        else:
            log.warning("local backend: no per-session disk quota (%s): only the per-file size limit", no_disk)
        parts.append("rlimits (memory, cpu, processes, file size)")
        if self._registry is not None:
            parts.append(f"a uid per sandbox from {self._local.sandbox_uid_base} (registry {self._registry.directory})")
        self._isolation = " + ".join(parts)
        if reason is not None:
            log.warning(
                "local backend: bubblewrap not in force: %s; sandboxed code is confined by rlimits only",
                reason,
            )
        log.info("local backend: state in %s; isolation: %s", self._root, self._isolation)
        if self.zygote is not None:
            try:
                await self.zygote.start()
            except ZygoteUnavailable as err:
                log.warning("local backend: %s; agents are started directly", err)
        self.pool.begin()
        if self.shared:
            self._orphan_reaper = asyncio.create_task(self._reap_orphans(), name="orphan-reaper")

    async def aclose(self) -> None:
        if self._orphan_reaper is not None:
            self._orphan_reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._orphan_reaper
        await self.pool.aclose()
        await asyncio.gather(*(self._stop(sid) for sid in list(self._procs)), return_exceptions=True)
        if self.zygote is not None:
            await self.zygote.aclose_all()
        if self._cgroups.found:
            await asyncio.to_thread(self._cgroups.sweep)  # groups of sandboxes stopped above without a close
            await asyncio.to_thread(self._cgroups.close)
        while self._locks:
            os.close(self._locks.popitem()[1])

    def describe(self) -> str:
        return f"local backend ({self._isolation}), state in {self._root}"

    def warm_pool_size(self) -> tuple[int, int]:
        return self.pool.ready, self.pool.size

    # -- sandboxes -----------------------------------------------------------------------------

    async def open(self, session_key: str) -> Sandbox:
        if self._sharing is not None and (found := self._sharing.find(session_key)) is not None:
            return await self._join(found)  # started by this or another coordinator for the session
        if is_named_workspace(session_key):
            # A named workspace lives in a folder derived from its key, so it resumes after a restart: it is
            # never served from the pool.
            sandbox_id = "w-" + hashlib.sha256(session_key.encode()).hexdigest()[:12]
            if self.shared and (self._sessions_dir / sandbox_id).is_dir():
                return await self._join(sandbox_id)  # served, or left running, by a coordinator on this folder
        else:
            pooled = self.pool.claim()
            if pooled is not None:
                return await self._attach(pooled, session_key, "from the warm pool")
            sandbox_id = _new_sandbox_id()
        self._opening += 1
        try:
            await self._make_room()
            sandbox = await self._start_sandbox(sandbox_id)
        finally:
            self._opening -= 1
        return await self._attach(sandbox, session_key, "started for it")

    def _running(self) -> int:
        """Sandboxes that count against max_sessions: pooled, serving and being started; not suspended ones."""
        return len(self._locks) - len(self._suspended) + self._opening

    def _has_room(self) -> bool:
        """Whether one more sandbox fits under max_sessions."""
        return self._running() < self._settings.max_sessions

    async def _make_room(self) -> None:
        """Pooled sandboxes count against max_sessions, and give way to a session starting or resuming at the cap."""
        while self._running() > self._settings.max_sessions and await self.pool.shrink():
            pass

    async def _start_for_pool(self) -> Sandbox:
        sandbox = await self._start_sandbox(_new_sandbox_id())
        # One health request: the agent proves it answers, and its connection and first-request costs are paid
        # now rather than in a session's first call. It leaves nothing behind (no task, file or log of a session).
        if not await sandbox.client.healthy():
            await self.close(sandbox)
            raise SandboxUnavailable(f"the pooled sandbox {sandbox.sandbox_id} did not answer its health check")
        return sandbox

    async def _attach(self, sandbox: Sandbox, session_key: str, how: str) -> Sandbox:
        """Bind a started sandbox to its session: bookkeeping only, the agent already runs (and knows no session)."""
        log.info("session %s gets sandbox %s (%s)", session_key, sandbox.sandbox_id, how)
        if self._sharing is None:
            return sandbox
        serving = await asyncio.to_thread(self._sharing.link, session_key, sandbox.sandbox_id)
        if serving == sandbox.sandbox_id:
            return sandbox
        log.info(
            "session %s got sandbox %s from another coordinator meanwhile; %s ends",
            session_key,
            serving,
            sandbox.sandbox_id,
        )
        await self.close(sandbox)
        return await self._join(serving)

    async def _start_sandbox(self, sandbox_id: str) -> Sandbox:
        """Make a sandbox's folder, uid, disk and cgroup and start its agent; on failure, remove them again."""
        session_dir = self._sessions_dir / sandbox_id
        session_dir.mkdir(mode=0o711, exist_ok=True)
        lock = _try_lock(session_dir)
        if lock is None:
            raise SandboxUnavailable(
                "this workspace is open in another coordinator on this host (one sharing this state folder); "
                "end it there first"
            )
        self._locks[sandbox_id] = lock
        try:
            (session_dir / "workspace").mkdir(mode=0o700, exist_ok=True)
            if self._registry is not None:
                self._uids[sandbox_id] = await asyncio.to_thread(self._claim_uid, self._registry, session_dir)
            if self._disk_quota is not None:
                await asyncio.to_thread(self._attach_disk, sandbox_id, session_dir, self._disk_quota)
            return await self._launch(sandbox_id, session_dir)
        except BaseException:
            await self._discard(sandbox_id, session_dir)
            raise

    def _start_cgroups(self) -> None:
        """Find the cgroup controllers here and say which cap is a cgroup's and which falls back to rlimits."""
        missing = self._cgroups.detect()
        found = ", ".join(f"{ctl} ({path})" for ctl, path in self._cgroups.found.items()) or "none"
        fallback = {
            "memory": "per-process RLIMIT_AS only, no per-session memory cap",
            "pids": "RLIMIT_NPROC of the session's uid only (none when code runs as root)",
        }
        log.info("local backend: cgroup controllers found: %s", found)
        for ctl, why in missing.items():
            log.warning("local backend: cgroup %s controller unusable (%s): %s", ctl, why, fallback[ctl])
        swept = self._cgroups.sweep()
        if swept:
            log.warning("removed %d empty per-session cgroups left by a coordinator that stopped uncleanly", swept)

    async def revive(self, sandbox: Sandbox) -> Sandbox:
        sandbox_id = sandbox.sandbox_id
        if self.shared and sandbox_id not in self._locks:  # a guest's: its owner may be gone, or restarted it
            await sandbox.client.aclose()
            return await self._join(sandbox_id)
        await self._stop(sandbox_id)
        await sandbox.client.aclose()
        session_dir = self._sessions_dir / sandbox_id
        if sandbox_id not in self._suspended:
            log.warning("restarting sandbox %s on its workspace (%s)", sandbox_id, sandbox.exit_reason)
            return await self._launch(sandbox_id, session_dir)
        log.info("resuming suspended sandbox %s on its workspace", sandbox_id)
        self._suspended.discard(sandbox_id)
        try:
            await self._make_room()
            return await self._launch(sandbox_id, session_dir)
        except BaseException:
            self._suspended.add(sandbox_id)  # still stopped: it keeps not counting, and the next call tries again
            raise

    async def suspend(self, sandbox: Sandbox) -> None:
        sandbox_id = sandbox.sandbox_id
        sandbox.alive = False
        sandbox.exit_reason = "suspended while idle"
        await self._stop(sandbox_id)
        await sandbox.client.aclose()
        # Nothing of the session may run on: what its code left (in its cgroup, or as its uid) ends too.
        if self._cgroups.found:
            await asyncio.to_thread(self._cgroups.remove, sandbox_id)
        uid = self._uids.get(sandbox_id)
        if uid is not None:
            await asyncio.to_thread(self._kill_processes, uid, self._sessions_dir / sandbox_id)
        self._suspended.add(sandbox_id)
        self.pool.room_freed()

    async def close(self, sandbox: Sandbox) -> None:
        sandbox.alive = False
        if self.shared and sandbox.sandbox_id not in self._locks:
            # A guest's: the sandbox is its owner's to end, unless it has none any more.
            await sandbox.client.aclose()
            await self._end_orphan(sandbox.sandbox_id)
            return
        await self._stop(sandbox.sandbox_id)
        await sandbox.client.aclose()
        await self._discard(sandbox.sandbox_id, self._sessions_dir / sandbox.sandbox_id)
        self.pool.room_freed()

    # -- shared sessions (`local_sharing`) ------------------------------------------------------

    async def detach(self, sandbox: Sandbox) -> None:
        """Shared sessions: this coordinator stops, its sandboxes run on for the others (they adopt them)."""
        if not self.shared:
            await self.close(sandbox)
            return
        await sandbox.client.aclose()
        sandbox_id = sandbox.sandbox_id
        entry = self._procs.pop(sandbox_id, None)
        if entry is not None:
            for task in (entry.watcher, entry.drain):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        self._uids.pop(sandbox_id, None)
        self._disks.discard(sandbox_id)
        lock = self._locks.pop(sandbox_id, None)
        if lock is not None:
            os.close(lock)
        log.info("left sandbox %s running for the coordinators that go on serving its session", sandbox_id)

    async def close_unopened(self, session_key: str) -> None:
        found = self._sharing.find(session_key) if self._sharing is not None else None
        if found is not None:
            await self._end_orphan(found)

    async def touch(self, sandbox: Sandbox) -> None:
        if self.shared:
            SharedFolders.touch(self._sessions_dir / sandbox.sandbox_id)

    async def idle_for(self, sandbox: Sandbox) -> float | None:
        return SharedFolders.idle_for(self._sessions_dir / sandbox.sandbox_id) if self.shared else None

    async def _end_orphan(self, sandbox_id: str) -> None:
        """End a session's sandbox if no live coordinator owns it (one that does ends it when it idles out)."""
        if await asyncio.to_thread(self._clear_unowned, self._sessions_dir / sandbox_id):
            log.info("ended sandbox %s, whose coordinator had stopped", sandbox_id)

    async def _join(self, sandbox_id: str) -> Sandbox:
        """A session's sandbox that a coordinator on this state folder started: owned from now on if its owner
        stopped (its agent adopted, or started again on the workspace), else used as its owner's guest."""
        session_dir = self._sessions_dir / sandbox_id
        if sandbox_id in self._locks:
            agent = SharedFolders.read_agent(session_dir)
            if agent is None:
                raise SandboxUnavailable(f"sandbox {sandbox_id} is still starting; try again")
            return self._sandbox(sandbox_id, session_dir, agent.address, agent.token)
        try:
            lock = await asyncio.to_thread(_try_lock, session_dir)
        except OSError:
            raise SandboxUnavailable("your sandbox just ended; start a new MCP session") from None
        if lock is None:
            return await self._as_guest(sandbox_id, session_dir)
        self._locks[sandbox_id] = lock
        try:
            if self._registry is not None:
                self._uids[sandbox_id] = await asyncio.to_thread(self._claim_uid, self._registry, session_dir)
            if self._disk_quota is not None:
                await asyncio.to_thread(self._attach_disk, sandbox_id, session_dir, self._disk_quota)
            adopted = await self._adopt_agent(sandbox_id, session_dir)
            if adopted is not None:
                log.info("took over sandbox %s and its running agent from a stopped coordinator", sandbox_id)
                return adopted
            await asyncio.to_thread(_kill_leftover_agent, session_dir)  # one that runs but does not answer
            log.info("took over sandbox %s from a stopped coordinator; starting its agent again", sandbox_id)
            return await self._launch(sandbox_id, session_dir)
        except BaseException:
            self._uids.pop(sandbox_id, None)
            self._disks.discard(sandbox_id)
            os.close(self._locks.pop(sandbox_id))
            raise

    async def _adopt_agent(self, sandbox_id: str, session_dir: Path) -> Sandbox | None:
        """The folder's agent, still running after its coordinator stopped, followed by a pidfd; None if none."""
        agent = SharedFolders.read_agent(session_dir)
        pid = await asyncio.to_thread(_agent_of, session_dir)
        if agent is None or pid != agent.pid:
            return None
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        sandbox = self._sandbox(sandbox_id, session_dir, agent.address, agent.token)
        self._follow(sandbox, ForkedAgent(pid, pidfd), drain=None)
        if await sandbox.client.healthy():
            return sandbox
        await self._stop(sandbox_id)
        await sandbox.client.aclose()
        return None

    async def _as_guest(self, sandbox_id: str, session_dir: Path) -> Sandbox:
        """The agent of a sandbox that another live coordinator owns: this one sends it calls, nothing more."""
        agent = SharedFolders.read_agent(session_dir)
        sandbox = self._sandbox(sandbox_id, session_dir, agent.address, agent.token) if agent else None
        if sandbox is None or not await sandbox.client.healthy():
            if sandbox is not None:
                await sandbox.client.aclose()
            raise SandboxUnavailable(
                "your sandbox is being started or restarted by another coordinator on this host; try again"
            )
        return sandbox

    # -- internals -----------------------------------------------------------------------------

    @staticmethod
    def _check_traversable(path: Path) -> None:
        """As root, code runs as other uids that must be able to walk down to their workspaces."""
        if os.geteuid() != 0:
            return
        for parent in [path, *path.parents]:
            if not parent.stat().st_mode & 0o001:
                raise RuntimeError(
                    f"the state directory {path} lies inside {parent}, which other users cannot enter; sandboxed "
                    "code runs as its own uid and must reach its workspace: choose a state directory elsewhere "
                    f"(e.g. /var/lib/codegen-mcp) or run `chmod o+x {parent}`"
                )

    def _attach_disk(self, sandbox_id: str, session_dir: Path, quota: int) -> None:
        try:
            disks.attach(session_dir, quota, self._uids.get(sandbox_id))
        except (disks.DiskError, OSError) as err:
            log.warning("sandbox %s runs without a disk quota: %s", sandbox_id, err)
            return
        self._disks.add(sandbox_id)

    @staticmethod
    def _claim_uid(registry: UidRegistry, session_dir: Path) -> int:
        """The folder's uid: the one it had (a named workspace after a restart), else a free one, recorded."""
        record = session_dir / _UID_FILE
        try:
            recorded: int | None = int(record.read_text())
        except (FileNotFoundError, ValueError):
            recorded = None
        uid = registry.claim(session_dir, preferred=recorded)
        if uid != recorded:
            tmp = session_dir / f".{_UID_FILE}.{secrets.token_hex(4)}"
            with tmp.open("w") as f:
                f.write(f"{uid}\n")
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(record)
        return uid

    def _keeps(self, sandbox_id: str) -> bool:
        """Whether the folder outlives its sandbox: a named workspace's, or any with retain_workspaces."""
        return self._local.retain_workspaces or sandbox_id.startswith("w-")

    async def _discard(self, sandbox_id: str, session_dir: Path) -> None:
        if self._sharing is not None:
            await asyncio.to_thread(self._sharing.unlink, session_dir)
        uid = self._uids.pop(sandbox_id, None)
        lock = self._locks.pop(sandbox_id, None)
        self._suspended.discard(sandbox_id)
        try:
            if self._cgroups.found:
                await asyncio.to_thread(self._cgroups.remove, sandbox_id)
            if uid is not None:
                await asyncio.to_thread(self._kill_processes, uid, session_dir)
            self._disks.discard(sandbox_id)
            await asyncio.to_thread(self._detach_disk, session_dir)
            if self._keeps(sandbox_id):
                return  # the folder stays, and with it its uid
            try:
                await asyncio.to_thread(remove_tree, session_dir)
            except OSError:
                # Files of its uid may remain: the uid stays taken until a later start removes the folder.
                log.exception("could not remove the folder %s of sandbox %s", session_dir, sandbox_id)
                return
            if uid is not None and self._registry is not None:
                await asyncio.to_thread(self._registry.release, session_dir, uid)
        finally:
            if lock is not None:
                os.close(lock)

    @staticmethod
    def _detach_disk(session_dir: Path) -> None:
        try:
            disks.detach(session_dir)
        except disks.DiskError:
            log.exception("could not unmount the disk of %s", session_dir)

    @staticmethod
    def _kill_processes(uid: int, session_dir: Path) -> None:
        # Run code may leave processes behind (without the jail, a daemon leaves its process group): none may
        # outlive the sandbox, or it would share the uid with whoever gets it next.
        if not kill_processes_of(uid):
            log.error("processes of uid %d (sandbox folder %s) survived SIGKILL", uid, session_dir)

    def _orphaned_after(self) -> float | None:
        """With shared sessions, a session's folder nobody owns is kept this long for a coordinator to adopt."""
        return self._settings.session_idle_timeout_s if self.shared else None

    def _sweep(self, orphaned_after_s: float | None = None) -> None:
        """Clear what a killed coordinator left in this state folder, before anything is served.

        Its agents and their uids' processes are killed and its per-session folders removed; named workspaces
        stay, with their uids. With `orphaned_after_s`, a session's sandbox used more recently is left running:
        another coordinator may serve it (a warm pool's, serving no session, goes after a minute: a folder just
        made by a live coordinator is not locked yet).
        """
        removed = 0
        for session_dir in sorted(self._sessions_dir.iterdir()):
            if not session_dir.name.startswith(("s-", "w-")) or session_dir.is_symlink() or not session_dir.is_dir():
                continue
            if orphaned_after_s is not None:
                idle_s = SharedFolders.idle_for(session_dir)
                serving = SharedFolders.serves_a_session(session_dir)
                if idle_s is None or idle_s < (orphaned_after_s if serving else min(orphaned_after_s, 60.0)):
                    continue
            removed += self._clear_unowned(session_dir)
        if removed:
            log.warning("removed %d per-session folders left by a coordinator that stopped uncleanly", removed)

    def _clear_unowned(self, session_dir: Path) -> bool:
        """End the sandbox of a folder no live coordinator owns (and remove the folder unless kept); whether removed."""
        try:
            lock = _try_lock(session_dir)
        except OSError:  # removed meanwhile by its live coordinator
            return False
        if lock is None:
            return False  # served by a live coordinator sharing this state folder
        registry = self._registry
        try:
            if self._sharing is not None:
                self._sharing.unlink(session_dir)
            _kill_leftover_agent(session_dir)
            uids = registry.owned(session_dir) if registry is not None else []
            for uid in uids:
                self._kill_processes(uid, session_dir)
            self._detach_disk(session_dir)
            if self._keeps(session_dir.name):
                return False
            remove_tree(session_dir)
            if registry is not None:
                for uid in uids:
                    registry.release(session_dir, uid)
            return True
        except OSError:
            log.exception("could not clear %s, left by a coordinator that stopped uncleanly", session_dir)
            return False
        finally:
            os.close(lock)

    async def _reap_orphans(self) -> None:
        """Shared sessions: end the sandboxes whose coordinator stopped and that no session used since, for long."""
        after_s = self._settings.session_idle_timeout_s
        while True:
            await asyncio.sleep(max(1.0, min(60.0, after_s / 4)))
            try:
                await asyncio.to_thread(self._sweep, after_s)
            except OSError:
                log.exception("sweeping sandboxes left by stopped coordinators failed")

    @staticmethod
    def _inherited_env() -> dict[str, str]:
        """What agents inherit: the coordinator's environment but its own settings (PATH, AWS_* stay), except the
        log format and tracing choice: agents write their lines as it does, and trace only when it does."""
        shared = (LOG_FORMAT_ENV, TRACING_ENV)
        return {k: v for k, v in os.environ.items() if not k.upper().startswith("CODEGEN_") or k in shared}

    def _agent_env(self, sandbox_id: str, workspace: Path, token: str) -> dict[str, str]:
        return {**self._inherited_env(), **self._agent_settings(sandbox_id, workspace, token).to_env()}

    def _agent_settings(self, sandbox_id: str, workspace: Path, token: str) -> AgentSettings:
        """The agent's settings: this coordinator's `CODEGEN_AGENT_*` variables, then what it decides itself."""
        optional: dict[str, Any] = {
            "python": self._local.python,
            "memory_bytes": self._local.memory_bytes,
            "max_processes": self._local.max_processes,
            "output_cap_bytes": self._local.output_cap_bytes,
        }
        if sandbox_id in self._disks:
            optional["tmp_dir"] = disks.tmp_dir(workspace.parent)
        uid = self._uids.get(sandbox_id)
        if uid is not None:
            optional.update(sandbox_uid=uid, sandbox_gid=uid)
        return AgentSettings.from_environ(
            self._agent_variables,
            token=token,
            workspace=workspace,
            sandbox=self._sandbox_mode,
            network=self._local.network,
            hide_paths=[self._sessions_dir],
            # Shared by this coordinator's sandboxes: uploaded artifacts (outliving sessions). The test/lint tools'
            # wheels stay in the agents' default per-user cache, shared by every coordinator of this user.
            artifact_store_dir=self._root / "artifacts",
            artifact_store_namespace=sandbox_id,
            **{k: v for k, v in optional.items() if v is not None},
        )

    async def _launch(self, sandbox_id: str, session_dir: Path) -> Sandbox:
        workspace = session_dir / "workspace"
        socket_path = session_dir / "agent.sock"
        token = secrets.token_urlsafe(32)
        if len(str(socket_path)) <= _MAX_UNIX_SOCKET_PATH:
            socket_path.unlink(missing_ok=True)
            argv = ["--unix-socket", str(socket_path)]
        else:
            argv = ["--host", "127.0.0.1", "--port", "0"]
        if self._cgroups.found:
            await asyncio.to_thread(self._cgroups.create, sandbox_id)
        proc = await self._spawn(argv, session_dir, self._agent_env(sandbox_id, workspace, token))
        self.agents_started += 1
        (session_dir / _AGENT_PID).write_text(f"{proc.pid}\n")
        if self._cgroups.found:
            # Before it serves anything (it prints LISTENING first; a forked one waits for its go), so every
            # run and pip it starts is inside.
            try:
                self._cgroups.add(sandbox_id, proc.pid)
            except OSError:
                proc.kill()
                await proc.wait()
                raise
        if isinstance(proc, ForkedAgent):
            proc.go()
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(self._local.agent_start_timeout_s):
                while True:
                    raw = await proc.stdout.readline()
                    if not raw:
                        await proc.wait()
                        tail = _tail(session_dir / "agent.log")
                        log.error("sandbox agent %s failed to start (exit %s):\n%s", sandbox_id, proc.returncode, tail)
                        raise SandboxUnavailable(
                            f"the sandbox agent exited during start-up (exit code {proc.returncode}); "
                            "the coordinator's log has its output"
                        )
                    line = raw.decode(errors="replace").strip()
                    if line.startswith(_LISTENING):
                        address = line[len(_LISTENING) :]
                        break
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise SandboxUnavailable(
                f"the sandbox agent did not start within {self._local.agent_start_timeout_s:g} s"
            ) from None
        except asyncio.CancelledError:
            # The start was given up (the pool making room, the coordinator closing): its agent goes with it.
            proc.kill()
            await proc.wait()
            raise

        if self._sharing is not None:
            self._sharing.write_agent(session_dir, AgentRecord(proc.pid, address, token))
        sandbox = self._sandbox(sandbox_id, session_dir, address, token)
        drain = detached_task(self._drain(proc.stdout), name=f"drain-{sandbox_id}")
        self._follow(sandbox, proc, drain)
        return sandbox

    def _sandbox(self, sandbox_id: str, session_dir: Path, address: str, token: str) -> Sandbox:
        """A sandbox whose agent listens at `address` (as it printed it)."""
        if address.startswith("unix:"):
            endpoint = AgentEndpoint("http://sandbox", token, unix_socket=address[len("unix:") :])
        else:
            endpoint = AgentEndpoint(f"http://{address}", token)
        client = AgentClient(
            endpoint,
            request_timeout_s=self._settings.request_timeout_s,
            connect_timeout_s=self._settings.agent_connect_timeout_s,
        )
        return Sandbox(sandbox_id=sandbox_id, client=client, where=str(session_dir / "workspace"))

    def _follow(
        self, sandbox: Sandbox, proc: asyncio.subprocess.Process | ForkedAgent, drain: asyncio.Task[None] | None
    ) -> None:
        # The agent outlives the call that started it: its end is logged under no call.
        watcher = detached_task(self._watch(sandbox, proc), name=f"watch-{sandbox.sandbox_id}")
        self._procs[sandbox.sandbox_id] = _Process(proc, watcher, drain)

    async def _spawn(
        self, argv: list[str], session_dir: Path, env: dict[str, str]
    ) -> asyncio.subprocess.Process | ForkedAgent:
        """The agent process: forked by the zygote when there is one (it then waits for its go), else started."""
        log_path = session_dir / "agent.log"
        if self.zygote is not None:
            try:
                return await self.zygote.fork(env=env, argv=argv, log_path=log_path, cwd=session_dir)
            except ZygoteUnavailable as err:
                log.warning("starting the agent of %s directly: %s", session_dir.name, err)
        with log_path.open("ab") as log_file:
            return await asyncio.create_subprocess_exec(
                # Shared sessions: the agent outlives this coordinator (another one adopts it), and a signal to our
                # process group (a terminal's Ctrl-C) is not for it.
                *([] if self.shared else parent_death_prefix()),
                sys.executable,
                "-m",
                "codegen_mcp.sandbox_agent",
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                env=env,
                start_new_session=self.shared,
            )

    @staticmethod
    async def _drain(stream: asyncio.StreamReader) -> None:
        while await stream.read(65536):
            pass

    async def _watch(self, sandbox: Sandbox, proc: asyncio.subprocess.Process | ForkedAgent) -> None:
        code = await proc.wait()
        if sandbox.alive:
            sandbox.alive = False
            if isinstance(proc, ForkedAgent):  # the zygote reaped it: how it ended is not known here
                sandbox.exit_reason = "its process ended"
            else:
                sandbox.exit_reason = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            log.warning("sandbox %s stopped unexpectedly: %s", sandbox.sandbox_id, sandbox.exit_reason)
            self.pool.died(sandbox)

    async def _stop(self, sandbox_id: str) -> None:
        entry = self._procs.pop(sandbox_id, None)
        if entry is None:
            return
        proc = entry.proc
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                async with asyncio.timeout(5):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in (entry.watcher, entry.drain):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
