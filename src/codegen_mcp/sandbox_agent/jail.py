"""The bubblewrap command line of the jail: a minimal root made of the host's system trees and the caller's binds.

The jail is a minimal root: a fresh tmpfs with read-only binds of the system trees (`/usr` and its /usr-merge
links), a short allowlist of `/etc`, fresh `/proc`, `/dev` and `/tmp`, and then only what the caller binds
(the workspace, the venv, the base interpreter), each at the same path as outside so venv paths keep working.
Nothing else of the host is visible, so a world-readable file elsewhere stays out of reach.

Everything here is plain data plus command building, so it can be unit-tested without starting anything.
How the command is started (the uid, the rlimits, staging for a root agent) is `isolation`'s job.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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

# Where a root agent stages bind sources for bwrap: a tmpfs in the staging bwrap's own mount namespace.
STAGE_DIR = "/tmp"  # noqa: S108 - a fresh tmpfs private to one child, never the host's /tmp


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
    """A bwrap command line, plus the host sources a root agent must stage before it (see `isolation`)."""

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
