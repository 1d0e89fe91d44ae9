"""Per-session cgroups of the local backend: one memory cap and one process cap for a whole session.

The rlimits the agent sets are per process (RLIMIT_AS) or per uid (RLIMIT_NPROC): eight processes of 1 GiB
each stay within a 1 GiB RLIMIT_AS and together take 8 GiB, and tmpfs pages written to the jail's /tmp count
against no rlimit at all. A cgroup counts everything its processes use (anonymous memory, page cache and
tmpfs pages they write, every task and thread) against one limit, and the kernel enforces it: the memory
controller OOM-kills inside the cgroup, the pids controller makes fork/clone fail with EAGAIN.

Layout (cgroup v1, one hierarchy per controller, as on this machine):

    <cgroup_root>/memory/<cgroup_parent>/<state-hash>/<sandbox_id>   memory.limit_in_bytes
    <cgroup_root>/pids/<cgroup_parent>/<state-hash>/<sandbox_id>     pids.max

`<state-hash>` keeps two coordinators on one host (different state folders) out of each other's groups. The
coordinator owns a session's lifetime, so it creates the group before the agent starts, moves the agent into
it (every process the agent starts, jailed runs and pip included, inherits it), and removes it when the
session ends: processes still in it are killed first, so nothing escapes the cap by outliving the session.

Only v1 hierarchies are used (on this machine v2 has no memory/pids controllers). Where a controller is
missing or not writable (not root, a container without it), `detect` says why and the caller falls back to
the agent's rlimits for it, and says so in its start-up log line.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CONTROLLERS = ("memory", "pids")


@dataclass
class SessionCgroups:
    """Creates, fills and removes the per-session groups of the controllers found here."""

    root: Path
    parent: str
    state_dir: Path
    memory_bytes: int | None
    max_pids: int | None
    found: dict[str, Path] = field(default_factory=dict)  # controller -> this coordinator's folder in it

    @property
    def base_name(self) -> str:
        return hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:10]

    def detect(self) -> dict[str, str]:
        """Find the usable v1 controllers; returns, for each missing one, why (for the start-up log line)."""
        missing: dict[str, str] = {}
        for ctl in CONTROLLERS:
            hierarchy = self.root / ctl
            if not (hierarchy / "cgroup.procs").exists():
                missing[ctl] = f"no v1 {ctl} hierarchy at {hierarchy}"
                continue
            base = hierarchy / self.parent / self.base_name
            try:
                base.mkdir(parents=True, exist_ok=True)
                if ctl == "memory":
                    # Children are accounted within their parent (always true on v2, optional on v1).
                    with contextlib.suppress(OSError):
                        (hierarchy / self.parent / "memory.use_hierarchy").write_text("1")
            except OSError as err:
                missing[ctl] = f"cannot create {base}: {err.strerror}"
                continue
            self.found[ctl] = base
        return missing

    def _group(self, ctl: str, sandbox_id: str) -> Path:
        return self.found[ctl] / sandbox_id

    def create(self, sandbox_id: str) -> None:
        """Make the session's groups (idempotent: a revived agent re-enters the same ones) and set the caps."""
        for ctl in self.found:
            group = self._group(ctl, sandbox_id)
            group.mkdir(parents=True, exist_ok=True)
            if ctl == "memory" and self.memory_bytes is not None:
                (group / "memory.limit_in_bytes").write_text(str(self.memory_bytes))
                # Without swap this is a no-op; with swap, swapping out must not lift the cap.
                with contextlib.suppress(OSError):
                    (group / "memory.memsw.limit_in_bytes").write_text(str(self.memory_bytes))
            if ctl == "pids" and self.max_pids is not None:
                (group / "pids.max").write_text(str(self.max_pids))

    def add(self, sandbox_id: str, pid: int) -> None:
        for ctl in self.found:
            (self._group(ctl, sandbox_id) / "cgroup.procs").write_text(str(pid))

    def pids(self, sandbox_id: str) -> set[int]:
        found: set[int] = set()
        for ctl in self.found:
            with contextlib.suppress(OSError, ValueError):
                text = (self._group(ctl, sandbox_id) / "cgroup.procs").read_text()
                found.update(int(line) for line in text.split())
        return found

    def remove(self, sandbox_id: str, timeout_s: float = 5.0) -> bool:
        """Kill whatever is left in the session's groups, then remove them; False if one could not be removed."""
        deadline = time.monotonic() + timeout_s
        while pids := self.pids(sandbox_id):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        ok = True
        for ctl in self.found:
            group = self._group(ctl, sandbox_id)
            while True:
                try:
                    group.rmdir()
                except FileNotFoundError:
                    break
                except OSError as err:
                    # EBUSY until the last killed task is reaped by its parent.
                    if err.errno == errno.EBUSY and time.monotonic() < deadline:
                        time.sleep(0.02)
                        continue
                    log.error("could not remove cgroup %s: %s", group, err.strerror)
                    ok = False
                break
        return ok

    def sweep(self) -> int:
        """Remove the empty groups a killed coordinator left (non-empty ones are left alone: someone uses them)."""
        removed = 0
        for base in self.found.values():
            if not base.is_dir():  # removed by another coordinator on this state folder, as it stopped
                continue
            for group in base.iterdir():
                if group.is_dir():
                    with contextlib.suppress(OSError):
                        group.rmdir()
                        removed += 1
        return removed

    def close(self) -> None:
        """At shutdown: remove this coordinator's folder in each hierarchy (left alone while a group is in it)."""
        for base in self.found.values():
            with contextlib.suppress(OSError):
                base.rmdir()

    def describe(self) -> str:
        parts = []
        if "memory" in self.found and self.memory_bytes is not None:
            parts.append(f"memory {self.memory_bytes // 2**20} MiB")
        if "pids" in self.found and self.max_pids is not None:
            parts.append(f"{self.max_pids} tasks")
        return "per-session cgroup (" + ", ".join(parts) + ")"
