"""How a child process is confined: the uid it runs as, its resource limits, and the jail (see `jail`).

Nothing runs between fork and exec (no `preexec_fn`: the agent has worker threads): each part is either a
`subprocess` option done in C or a prefix of the command line.

- The uid: `Popen(user=, group=, extra_groups=[])`.
- The rlimits: util-linux `prlimit --as=S:H ... -- <argv>` (util-linux is Essential in Debian, so the sandbox
  image has it too), each value capped in the parent at the agent's own hard limit (raising one fails).
- Staging, for a root agent's jail: bwrap runs as the sandbox uid and resolves every bind source by path
  (`--bind-fd` too: it `realpath`s `/proc/self/fd/N` and walks the result), so that uid would have to
  traverse every parent of the workspace, a 0700 /root or pytest's tmp included. So the agent opens each
  source itself (`O_PATH|O_NOFOLLOW`, a symlink refused) and hands the fds to a *staging* bwrap run as root
  with only a mount namespace of its own: the host as it is, a small tmpfs on `STAGE_DIR`, each fd bound at
  `STAGE_DIR/<n>` (bwrap checks that what it mounted is the fd's own inode, so a swap between the open and
  the mount fails) and then closed. `setpriv` drops to the sandbox uid (the staging bwrap keeps only the two
  capabilities that takes), `prlimit` lowers the limits, and the jail's unprivileged bwrap binds
  `STAGE_DIR/<n>` to the real paths. The staging namespace belongs to that one child and disappears with
  it; the host's mount table never changes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import shutil
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from codegen_mcp.sandbox_agent.jail import STAGE_DIR, Jail, JailCommand, Mount

log = logging.getLogger(__name__)

NOBODY = 65534
# Extra CPU seconds over the wall-clock timeout: the wall clock kills first, the CPU limit is a backstop.
CPU_SLACK_S = 5
# All the staging bwrap keeps of root: what `setpriv` needs to switch to the sandbox uid and groups.
STAGING_CAPS = ("CAP_SETUID", "CAP_SETGID")
STAGE_TMPFS_BYTES = 64 * 1024


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

    def prlimit_options(self) -> list[str]:
        """`prlimit` options setting each limit, never above the agent's own hard limit (raising it fails)."""
        options = [_prlimit_option("core", resource.RLIMIT_CORE, 0, 0)]
        for name, which, value in (
            ("as", resource.RLIMIT_AS, self.memory_bytes),
            ("fsize", resource.RLIMIT_FSIZE, self.file_bytes),
            ("nofile", resource.RLIMIT_NOFILE, self.open_files),
            ("nproc", resource.RLIMIT_NPROC, self.processes),
        ):
            if value is not None:
                options.append(_prlimit_option(name, which, value, value))
        if self.cpu_seconds is not None:
            # The soft limit sends SIGXCPU, the hard one a second later SIGKILL.
            options.append(_prlimit_option("cpu", resource.RLIMIT_CPU, self.cpu_seconds, self.cpu_seconds + 1))
        return options


def _prlimit_option(name: str, which: int, soft: int, hard: int) -> str:
    current = resource.getrlimit(which)[1]
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    return f"--{name}={soft}:{hard}"


def find_tool(name: str) -> str:
    """The path of a util-linux tool the confinement needs; OSError (with a sentence) when it is missing."""
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/bin")
    if path is None:
        raise OSError(errno.ENOENT, f"{name} (util-linux) is not installed, so code cannot run confined")
    return path


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


@contextlib.contextmanager
def opened_sources(sources: Sequence[Path]) -> Iterator[list[int]]:
    """Each source opened by the agent as what it is now (`O_PATH`, never through a symlink), closed on exit.

    A source that is a symlink is refused: the callers pass resolved paths, so a symlink there now was put
    there by someone else (sandboxed code replacing the venv folder, say). The OSError's strerror is the
    sentence to show.
    """
    fds: list[int] = []
    try:
        for path in sources:
            try:
                fds.append(os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC))
                if stat.S_ISLNK(os.fstat(fds[-1]).st_mode):
                    raise OSError(errno.ELOOP, "is a symlink")
            except OSError as err:
                raise OSError(err.errno, f"cannot stage {path} for the jail: {err.strerror}") from None
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def staging_prefix(bwrap: str, fds: Sequence[int], identity: Identity) -> list[str]:
    """The staging bwrap (as root) binding each fd at `STAGE_DIR/<n>`, then `setpriv` to `identity`."""
    cmd = [bwrap, "--die-with-parent", "--cap-drop", "ALL"]
    for cap in STAGING_CAPS:
        cmd += ["--cap-add", cap]
    cmd += ["--dev-bind", "/", "/", "--size", str(STAGE_TMPFS_BYTES), "--tmpfs", STAGE_DIR]
    for n, fd in enumerate(fds):
        cmd += ["--bind-fd", str(fd), f"{STAGE_DIR}/{n}"]
    uid, gid = identity.uid, identity.gid
    return [*cmd, "--", find_tool("setpriv"), f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


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

    def jail_command(
        self,
        argv: Sequence[str],
        *,
        binds: Sequence[Mount],
        chdir: Path,
        hidden_inside: Sequence[Path] = (),
        read_only_after: Sequence[Path] = (),
        network: bool | None = None,
    ) -> JailCommand:
        """`Jail.command`, staged when the child switches to the sandbox uid (the agent is root)."""
        if self.jail is None:
            raise RuntimeError("no jail is in force")
        return self.jail.command(
            argv,
            binds=binds,
            chdir=chdir,
            hidden_inside=hidden_inside,
            read_only_after=read_only_after,
            network=network,
            stage=self.identity is not None,
        )

    @contextlib.contextmanager
    def spawn(
        self, command: JailCommand | Sequence[str], limits: Limits
    ) -> Iterator[tuple[list[str], dict[str, object]]]:
        """argv and kwargs for `asyncio.create_subprocess_exec` running `command` confined, in its own session.

        `command` is a jail's (from `jail_command`) or a plain argv. Its staged sources, if any, are opened
        on entry and their fds closed on exit, so start the process inside the block. Raises OSError, with
        the sentence to show as its strerror, when a source cannot be staged or a tool is missing.
        """
        staged = command.staged if isinstance(command, JailCommand) else ()
        argv = command.argv if isinstance(command, JailCommand) else list(command)
        confined = [find_tool("prlimit"), *limits.prlimit_options(), "--", *argv]
        kwargs: dict[str, object] = {"start_new_session": True, "close_fds": True}
        if self.identity is None:
            yield confined, kwargs
        elif not staged or self.jail is None:
            yield confined, {**kwargs, "user": self.identity.uid, "group": self.identity.gid, "extra_groups": []}
        else:
            with opened_sources(staged) as fds:
                prefix = staging_prefix(self.jail.bwrap, fds, self.identity)
                yield [*prefix, *confined], {**kwargs, "pass_fds": tuple(fds)}


def unreachable_parent(path: Path, identity: Identity | None) -> Path | None:
    """The first parent folder of `path` that `identity` cannot traverse (a 0700 home, pytest's tmp...).

    Matters without the jail (and for an unstaged one); a root agent's jail stages its sources instead.
    """
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
        # The workspace root belongs to the agent, not to the uid running code: without this, the user's own
        # `git` in run.python refuses a repository there ("dubious ownership").
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "safe.directory",
        "GIT_CONFIG_VALUE_0": "*",
    }
    if extra:
        env.update(extra)
        env["VIRTUAL_ENV"] = str(venv)  # the session venv stays the one in use
    return env
