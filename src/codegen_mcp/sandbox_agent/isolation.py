"""How a child process is confined: resource limits, the uid it runs as, and an optional bubblewrap jail.

Everything here is plain data plus command building, so it can be unit-tested without starting anything;
the one side effect is `probe_bwrap()`, which tries the jail once at startup.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

NOBODY = 65534
# Extra CPU seconds over the wall-clock timeout: the wall clock kills first, the CPU limit is a backstop.
CPU_SLACK_S = 5


@dataclass(frozen=True)
class Identity:
    """The uid/gid a child is switched to before exec (only possible when the agent runs as root)."""

    uid: int
    gid: int


def choose_identity(euid: int, sandbox_uid: int | None, sandbox_gid: int | None) -> Identity | None:
    """Root must not run user code as root: RLIMIT_NPROC is not enforced for uid 0."""
    if euid != 0:
        if sandbox_uid is not None and sandbox_uid != euid:
            log.warning("sandbox_uid=%s ignored: the agent is not root, so code runs as uid %s", sandbox_uid, euid)
        return None
    uid = NOBODY if sandbox_uid is None else sandbox_uid
    gid = (NOBODY if sandbox_uid is None else uid) if sandbox_gid is None else sandbox_gid
    if uid == 0:
        log.warning("sandbox_uid=0: code runs as root and the process limit is NOT enforced")
        return None
    return Identity(uid, gid)


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None
    cpu_seconds: int | None
    file_bytes: int | None
    open_files: int | None
    processes: int | None


def limits_preexec(limits: Limits) -> Callable[[], None]:
    """A `preexec_fn` that lowers the child's rlimits (runs after the uid switch, before exec)."""
    pairs: list[tuple[int, int]] = [(resource.RLIMIT_CORE, 0)]
    if limits.memory_bytes is not None:
        pairs.append((resource.RLIMIT_AS, limits.memory_bytes))
    if limits.file_bytes is not None:
        pairs.append((resource.RLIMIT_FSIZE, limits.file_bytes))
    if limits.open_files is not None:
        pairs.append((resource.RLIMIT_NOFILE, limits.open_files))
    if limits.processes is not None:
        pairs.append((resource.RLIMIT_NPROC, limits.processes))
    cpu = limits.cpu_seconds

    def lower(which: int, soft: int, hard: int) -> None:
        # Never above the agent's own hard limit (raising it would fail the exec).
        current = resource.getrlimit(which)[1]
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(which, (soft, hard))

    def apply() -> None:
        for which, value in pairs:
            lower(which, value, value)
        if cpu is not None:
            # Soft limit sends SIGXCPU, the hard one a second later SIGKILL.
            lower(resource.RLIMIT_CPU, cpu, cpu + 1)

    return apply


@dataclass(frozen=True)
class Jail:
    """A bubblewrap jail: the child sees the host read-only, the workspace read-write, no network."""

    bwrap: str
    network: bool = False
    hide_paths: tuple[Path, ...] = ()
    hide_files: tuple[Path, ...] = ()

    def wrap(
        self,
        argv: Sequence[str],
        *,
        workspace: Path,
        read_only: Sequence[Path] = (),
        hidden_inside: Sequence[Path] = (),
        read_only_after: Sequence[Path] = (),
    ) -> list[str]:
        """The bwrap command line running `argv` with `workspace` as the only writable host folder.

        `read_only` is bound after the workspace (so a venv inside it stays read-only), `hidden_inside`
        folders get an empty tmpfs (the agent's state), and `read_only_after` files are bound back on top
        of those (the script to run).
        """
        cmd = [self.bwrap, "--unshare-all"]
        if self.network:
            cmd.append("--share-net")
        cmd += ["--die-with-parent", "--new-session", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        cmd += ["--tmpfs", "/tmp"]  # noqa: S108 - a fresh tmpfs, private to the jail
        for path in self.hide_paths:
            if path.is_dir():
                cmd += ["--tmpfs", str(path)]
        for path in self.hide_files:
            if path.exists():
                cmd += ["--ro-bind", "/dev/null", str(path)]
        cmd += ["--bind", str(workspace), str(workspace)]
        for path in read_only:
            cmd += ["--ro-bind", str(path), str(path)]
        for path in hidden_inside:
            cmd += ["--tmpfs", str(path)]
        for path in read_only_after:
            cmd += ["--ro-bind", str(path), str(path)]
        cmd += ["--chdir", str(workspace), "--cap-drop", "ALL", "--", *argv]
        return cmd


@dataclass(frozen=True)
class Sandbox:
    """What is in force for code the agent runs."""

    identity: Identity | None
    jail: Jail | None
    notes: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        parts = ["bwrap"] if self.jail else []
        parts.append("rlimits")
        if self.identity is not None:
            parts.append(f"uid{self.identity.uid}")
        if self.jail is not None and self.jail.network:
            parts.append("net")
        return "+".join(parts)

    def popen_kwargs(self, limits: Limits) -> dict[str, object]:
        """Keyword arguments for `asyncio.create_subprocess_exec` applying identity, session and limits."""
        kwargs: dict[str, object] = {
            "start_new_session": True,
            "preexec_fn": limits_preexec(limits),
            "close_fds": True,
        }
        if self.identity is not None:
            kwargs.update(user=self.identity.uid, group=self.identity.gid, extra_groups=[])
        return kwargs


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


async def probe_bwrap(jail: Jail, identity: Identity | None, workspace: Path, timeout_s: float = 10.0) -> str | None:
    """Try the jail once with `true`; None if it works, else why not (one line)."""
    argv = jail.wrap(["true"], workspace=workspace)
    kwargs = Sandbox(identity=identity, jail=jail).popen_kwargs(Limits(None, None, None, None, None))
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin"},
            **kwargs,  # type: ignore[arg-type]
        )
    except OSError as err:
        return f"bwrap could not start: {err.strerror}"
    try:
        async with asyncio.timeout(timeout_s):
            _, stderr = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return f"bwrap did not finish within {timeout_s:g} s"
    if proc.returncode != 0:
        first = stderr.decode(errors="replace").strip().splitlines()
        return f"bwrap failed ({first[0] if first else f'exit {proc.returncode}'})"
    return None


def unreachable_parent(path: Path, identity: Identity | None) -> Path | None:
    """The first parent folder of `path` that `identity` cannot traverse (a 0700 home, pytest's tmp...)."""
    if identity is None:
        return None
    for parent in reversed(path.parents):
        try:
            st = parent.stat()
        except OSError:
            return parent
        if st.st_uid == identity.uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid == identity.gid:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            return parent
    return None


def child_env(*, venv: Path, home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A minimal, clean environment: never the agent's own (it holds the token)."""
    env = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONNOUSERSITE": "1",
        "VIRTUAL_ENV": str(venv),
    }
    if extra:
        env.update(extra)
        env["VIRTUAL_ENV"] = str(venv)  # the session venv stays the one in use
    return env


def can_exec(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)
