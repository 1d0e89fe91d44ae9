"""How a child process is confined: resource limits, the uid it runs as, and an optional bubblewrap jail.

The jail is a minimal root: a fresh tmpfs with read-only binds of the system trees (`/usr` and its /usr-merge
links), a short allowlist of `/etc`, fresh `/proc`, `/dev` and `/tmp`, and then only what the caller binds
(the workspace, the venv, the base interpreter), each at the same path as outside so venv paths keep working.
Nothing else of the host is visible, so a world-readable file elsewhere stays out of reach.

bwrap runs as the sandbox uid and resolves every bind source by path (`--bind-fd` too: bwrap re-walks
`/proc/self/fd/N` with `realpath`), so that uid would have to traverse every parent of the workspace. A root
agent therefore *stages* the sources first: in the child, before dropping to the sandbox uid, it enters a
private mount namespace, mounts a tiny tmpfs on `/tmp` and bind-mounts each source there (opened by the root
agent, so a 0700 parent is no obstacle); bwrap then binds `/tmp/<n>` to the real path inside the jail. The
staging namespace belongs to that one child and disappears with it; the host's mount table never changes.

Everything here is plain data plus command building, so it can be unit-tested without starting anything;
the side effects are `probe_bwrap()`, which tries the jail once at startup, and the staging `preexec_fn`.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import resource
import shutil
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

NOBODY = 65534
# Extra CPU seconds over the wall-clock timeout: the wall clock kills first, the CPU limit is a backstop.
CPU_SLACK_S = 5

# Trees of the host every jail shows read-only (or re-creates as the same symlink, for /usr-merge).
SYSTEM_TREES = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The part of /etc that Python, pip and the C library need: name resolution, TLS roots, users and groups,
# time zone, the loader cache, MIME types, and Debian's python config (sitecustomize lives there). Each entry
# is one more mount per spawn (~0.2 ms), so nothing only tools like ldconfig read (ld.so.conf) is listed.
ETC_ALLOWLIST = (
    "resolv.conf",
    "hosts",
    "host.conf",
    "nsswitch.conf",
    "gai.conf",
    "services",
    "protocols",
    "ssl",
    "ca-certificates",
    "pki",
    "passwd",
    "group",
    "localtime",
    "timezone",
    "alternatives",
    "mime.types",
    "ld.so.cache",
    "os-release",
)
ETC_GLOBS = ("python3.*",)
# Only name resolution over the network reads these; a jail without the network goes without them.
NETWORK_ONLY = frozenset({Path("/etc/resolv.conf"), Path("/etc/host.conf"), Path("/etc/gai.conf")})

# Where a root agent stages bind sources for bwrap (a tmpfs in the child's private mount namespace).
STAGE_DIR = "/tmp"  # noqa: S108 - a fresh tmpfs private to one child, never the host's /tmp
# Exit status of a child whose staging failed before bwrap could start (its reason is on stderr).
STAGE_FAILED = 125

_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 0x2, 0x4, 0x8
_MS_BIND, _MS_REC, _MS_PRIVATE = 0x1000, 0x4000, 0x40000


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


def staging_preexec(sources: Sequence[Path], identity: Identity, limits: Limits) -> Callable[[], None]:
    """A `preexec_fn` that stages `sources` at `STAGE_DIR/<n>`, then becomes `identity` and lowers the limits.

    Runs in the child as root: a private mount namespace (so nothing reaches the host's mount table), a small
    tmpfs on `STAGE_DIR`, and one recursive bind per source, made from an fd opened before the tmpfs hides
    anything (and after the unshare: a bind needs a source from the caller's own mount namespace). A source
    that is a symlink is refused (the callers pass resolved paths; a symlink there now was put there by
    someone else). On failure the reason goes to the child's stderr and it exits with `STAGE_FAILED`
    instead of starting bwrap.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    unshare, mount = libc.unshare, libc.mount
    encoded = [os.fsencode(p) for p in sources]
    stage = os.fsencode(STAGE_DIR)
    targets = [stage + b"/%d" % i for i in range(len(encoded))]
    uid, gid = identity.uid, identity.gid
    lower = limits_preexec(limits)

    def check(result: int, what: str) -> None:
        if result != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"{what}: {os.strerror(code)}")

    def apply() -> None:
        current = ""
        try:
            current = STAGE_DIR
            check(unshare(_CLONE_NEWNS), "unshare")
            check(mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "private mounts")
            # Opened in the new namespace (a bind needs a source mount of the caller's own namespace),
            # before the tmpfs hides whatever lies under STAGE_DIR.
            fds = []
            for path in encoded:
                current = os.fsdecode(path)
                fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
                fds.append(fd)
                if stat.S_ISLNK(os.fstat(fd).st_mode):
                    raise OSError(errno.ELOOP, "is a symlink")
            current = STAGE_DIR
            flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
            check(mount(b"tmpfs", stage, b"tmpfs", flags, b"mode=0755,size=64k"), "tmpfs")
            for fd, target, path in zip(fds, targets, encoded, strict=True):
                current = os.fsdecode(path)
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    os.mkdir(target, 0o700)
                else:
                    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
                check(mount(b"/proc/self/fd/%d" % fd, target, None, _MS_BIND | _MS_REC, None), "bind")
                os.close(fd)
            current = f"uid {uid}"
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        except OSError as err:
            reason = err.strerror or str(err)
            os.write(2, f"codegen-jail: cannot stage {current} for the jail: {reason}\n".encode(errors="replace"))
            os._exit(STAGE_FAILED)
        lower()

    return apply


@dataclass(frozen=True)
class Bind:
    """A host path shown in the jail, at `dest` (default: the same path) and read-only unless `writable`."""

    source: Path
    dest: Path | None = None
    writable: bool = False

    @property
    def target(self) -> Path:
        return self.dest or self.source


@dataclass(frozen=True)
class Link:
    """A symlink made in the jail (the host's /bin -> usr/bin, /etc/localtime -> ...zoneinfo...)."""

    target: str
    dest: Path


Mount = Bind | Link


def is_within(path: Path, tree: Path) -> bool:
    return path == tree or tree in path.parents


def host_system_mounts(
    trees: Iterable[str] = SYSTEM_TREES, etc: Path = Path("/etc"), allow: Iterable[str] = ETC_ALLOWLIST
) -> tuple[Mount, ...]:
    """The system part of the minimal root, as the host has it (checked once, when a jail is made)."""
    mounts: list[Mount] = []
    for name in trees:
        path = Path(name)
        if path.is_symlink():
            mounts.append(Link(os.readlink(path), path))
        elif path.is_dir():
            mounts.append(Bind(path))
    bound = [m.source for m in mounts if isinstance(m, Bind)]
    names = list(allow)
    for pattern in ETC_GLOBS:
        names += sorted(p.name for p in etc.glob(pattern) if p.name not in names)
    for name in names:
        path = etc / name
        if path.is_symlink():
            real = Path(os.path.realpath(path))
            if any(is_within(real, tree) for tree in bound):
                mounts.append(Link(os.readlink(path), path))  # keeps e.g. the time zone's name readable
            elif real.exists():
                mounts.append(Bind(real, path))
        elif path.exists():
            mounts.append(Bind(path))
    return tuple(mounts)


@dataclass(frozen=True)
class JailCommand:
    """A bwrap command line, plus the host sources a root agent must stage before it (see `staging_preexec`)."""

    argv: list[str]
    staged: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Jail:
    """A bubblewrap jail: a minimal read-only root, the caller's binds, no network unless asked for."""

    bwrap: str
    network: bool = False
    hide_paths: tuple[Path, ...] = ()
    hide_files: tuple[Path, ...] = ()
    tmp_dir: Path | None = None  # bound as /tmp (shared by the session's runs); None: a fresh tmpfs per run
    system: tuple[Mount, ...] = field(default_factory=host_system_mounts)

    def shows(self, path: Path) -> bool:
        """Whether the system part of the jail already shows `path` at the same place (through its links)."""
        for mount in self.system:
            if isinstance(mount, Link) and is_within(path, mount.dest):
                target = Path(os.path.normpath(mount.dest.parent / mount.target))
                path = target / path.relative_to(mount.dest)
                break
        return any(isinstance(m, Bind) and m.dest is None and is_within(path, m.source) for m in self.system)

    def command(
        self,
        argv: Sequence[str],
        *,
        binds: Sequence[Mount],
        chdir: Path,
        hidden_inside: Sequence[Path] = (),
        read_only_after: Sequence[Path] = (),
        network: bool | None = None,
        stage: bool = False,
    ) -> JailCommand:
        """The bwrap command running `argv` with only the system trees and `binds` visible.

        Order matters: the system trees, then `binds` in the given order (a venv bound read-only after the
        workspace stays read-only), then `hide_paths`/`hide_files` that fall inside something bound, then
        an empty tmpfs over each `hidden_inside` folder (the agent's state), then the `read_only_after`
        files bound back on top (the script to run). With `stage`, host sources are named by their staging
        place (`STAGE_DIR/<n>`) and listed in `staged`, in that order.
        """
        staged: list[Path] = []

        def source(path: Path) -> str:
            if not stage:
                return str(path)
            staged.append(path)
            return f"{STAGE_DIR}/{len(staged) - 1}"

        shares_net = self.network if network is None else network
        cmd = [self.bwrap, "--unshare-all"]
        if shares_net:
            cmd.append("--share-net")
        cmd += ["--die-with-parent", "--new-session"]
        for mount in self.system:
            if not shares_net and (mount.dest if isinstance(mount, Link) else mount.target) in NETWORK_ONLY:
                continue
            if isinstance(mount, Link):
                cmd += ["--symlink", mount.target, str(mount.dest)]
            else:
                cmd += ["--ro-bind", str(mount.source), str(mount.target)]
        cmd += ["--proc", "/proc", "--dev", "/dev"]
        if self.tmp_dir is not None:
            cmd += ["--bind", source(self.tmp_dir), "/tmp"]  # noqa: S108 - the session's own /tmp folder
        else:
            cmd += ["--tmpfs", "/tmp"]  # noqa: S108 - the jail's own tmpfs
        for mount in binds:
            if isinstance(mount, Link):
                cmd += ["--symlink", mount.target, str(mount.dest)]
            else:
                cmd += ["--bind" if mount.writable else "--ro-bind", source(mount.source), str(mount.target)]
        shown = [(m.source, m.target) for m in (*self.system, *binds) if isinstance(m, Bind)]
        for path in self.hide_paths:
            inside = _shown_at(path, shown)
            if inside is not None and path.is_dir():
                cmd += ["--tmpfs", str(inside)]
        for path in self.hide_files:
            inside = _shown_at(path, shown)
            if inside is not None and path.exists():
                cmd += ["--ro-bind", "/dev/null", str(inside)]
        for path in hidden_inside:
            cmd += ["--tmpfs", str(path)]
        for path in read_only_after:
            cmd += ["--ro-bind", source(path), str(path)]
        # The root tmpfs itself becomes read-only (binds and /tmp keep their own modes), as `/` was before.
        cmd += ["--remount-ro", "/", "--chdir", str(chdir), "--cap-drop", "ALL", "--", *argv]
        return JailCommand(cmd, tuple(staged))

    def wrap(
        self,
        argv: Sequence[str],
        *,
        workspace: Path,
        read_only: Sequence[Path] = (),
        hidden_inside: Sequence[Path] = (),
        read_only_after: Sequence[Path] = (),
    ) -> list[str]:
        """The unstaged command for `argv` with `workspace` read-write (sources must be reachable by the child's uid).

        Prefer `Sandbox.jail_command`, which stages the sources when the agent is root.
        """
        binds = [Bind(workspace, writable=True), *(Bind(p) for p in read_only)]
        return self.command(
            argv, binds=binds, chdir=workspace, hidden_inside=hidden_inside, read_only_after=read_only_after
        ).argv


def _shown_at(path: Path, shown: Sequence[tuple[Path, Path]]) -> Path | None:
    """Where `path` of the host appears in the jail, if some bind shows it (the last bind wins)."""
    for source, target in reversed(shown):
        if is_within(path, source):
            return target / path.relative_to(source)
    return None


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

    def popen_kwargs(self, limits: Limits, staged: Sequence[Path] = ()) -> dict[str, object]:
        """Keyword arguments for `asyncio.create_subprocess_exec` applying identity, session and limits.

        With `staged` sources (from `jail_command`), the child stages them as root and then switches to the
        sandbox uid itself; otherwise the uid switch is subprocess's own.
        """
        kwargs: dict[str, object] = {"start_new_session": True, "close_fds": True}
        if self.identity is not None and staged:
            kwargs["preexec_fn"] = staging_preexec(staged, self.identity, limits)
            return kwargs
        kwargs["preexec_fn"] = limits_preexec(limits)
        if self.identity is not None:
            kwargs.update(user=self.identity.uid, group=self.identity.gid, extra_groups=[])
        return kwargs


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


async def probe_bwrap(jail: Jail, identity: Identity | None, workspace: Path, timeout_s: float = 10.0) -> str | None:
    """Try the jail once with `true` over the workspace, staged like real runs; None if it works, else why not."""
    sandbox = Sandbox(identity=identity, jail=jail)
    command = sandbox.jail_command(["true"], binds=[Bind(workspace, writable=True)], chdir=workspace)
    kwargs = sandbox.popen_kwargs(Limits(None, None, None, None, None), command.staged)
    try:
        proc = await asyncio.create_subprocess_exec(
            *command.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin"},
            cwd="/",
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


def can_exec(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)
