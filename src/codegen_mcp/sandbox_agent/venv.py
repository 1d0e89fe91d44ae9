"""The session venv: built by the agent, its contents the sandbox uid's, its metadata read without running it.

So that pip can run as the sandbox uid, the venv's contents (bin, lib, include, ...) belong to that uid. The
venv folder and its pyvenv.cfg stay the agent's: the folder is sticky and group-writable (so pip can add
`share/` and the like) but cannot be renamed or have the agent's files replaced. The agent never writes
into what the sandbox uid owns: a damaged venv is cleared (without following links) and built afresh.
What is installed is read from the `*.dist-info` folders by the agent itself, never by starting the venv's
interpreter (which would run whatever `.pth` files a package brought in).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from codegen_mcp.api.errors import SandboxUnavailable
from codegen_mcp.api.tools import InstalledPackage
from codegen_mcp.sandbox_agent.jail import Bind, Jail, Link, Mount, is_within
from codegen_mcp.sandbox_agent.process import run_quiet
from codegen_mcp.sandbox_agent.workspace import DIR_FLAGS, Owner

log = logging.getLogger(__name__)

VENV_TIMEOUT_S = 120.0
BASE_PYTHON_TIMEOUT_S = 30.0
# The venv folder: the agent's, sticky, writable for the sandbox gid (pip may add share/, etc/ ...).
VENV_FOLDER_MODE = 0o1775
_BASE_PYTHON_FACTS = (
    "import platform, sys; print(sys.base_prefix); print(sys.base_exec_prefix); "
    "print(getattr(sys, '_base_executable', sys.executable)); print(platform.python_version())"
)


def default_base_python(configured: str | None) -> str:
    if configured:
        return configured
    if os.path.exists("/usr/bin/python3"):
        return "/usr/bin/python3"
    return sys.executable


@dataclass(frozen=True)
class BasePython:
    """Where the session's base interpreter lives, as it says itself (asked once, as the agent)."""

    prefixes: tuple[Path, ...]
    executable: Path  # the path the venv's bin/python links to
    version: str = ""  # "3.11.2", as it said; "" when it did not

    def mounts(self, jail: Jail) -> list[Mount]:
        """What the jail must show so the venv's interpreter starts: prefixes outside the system trees."""
        mounts: list[Mount] = []
        for prefix in self.prefixes:
            real = Path(os.path.realpath(prefix))
            shown = jail.shows(real) or any(isinstance(m, Bind) and is_within(real, m.source) for m in mounts)
            if real.is_dir() and not shown:
                mounts.append(Bind(real))
        exe = self.executable
        if not (jail.shows(exe) or any(isinstance(m, Bind) and is_within(exe, m.source) for m in mounts)):
            real = Path(os.path.realpath(exe))
            if exe.is_symlink():
                mounts.append(Link(str(real), exe))
            if not (jail.shows(real) or any(isinstance(m, Bind) and is_within(real, m.source) for m in mounts)):
                mounts.append(Bind(real))
        return mounts


def parse_base_python(output: str, fallback: str) -> BasePython:
    lines = output.splitlines()
    paths = [line for line in lines if line.startswith("/")]
    version = next((line.strip() for line in lines if line[:1].isdigit()), "")
    if len(paths) >= 3:
        return BasePython(prefixes=(Path(paths[0]), Path(paths[1])), executable=Path(paths[2]), version=version)
    real = Path(os.path.realpath(fallback))
    return BasePython(prefixes=(real.parent.parent,), executable=Path(fallback), version=version)


# Base interpreters as they described themselves, by path, asked once per process: the agent zygote asks before
# it forks, so that its agents start no interpreter to learn it (30-70 ms of each start, before it listens).
_KNOWN_BASES: dict[str, BasePython] = {}


async def inspect_base_python(python: str) -> BasePython:
    """Where the base interpreter `python` lives (so the jail can show exactly that, read-only) and its version,
    as it says itself when run as the agent; a full answer is kept and not asked again."""
    known = _KNOWN_BASES.get(python)
    if known is not None:
        return known
    try:
        code, out = await run_quiet([python, "-I", "-c", _BASE_PYTHON_FACTS], timeout_s=BASE_PYTHON_TIMEOUT_S)
    except (OSError, TimeoutError):
        code, out = None, b""
    base = parse_base_python(out.decode(errors="replace"), python)
    log.info("base interpreter %s: prefixes %s", base.executable, ", ".join(map(str, base.prefixes)))
    if code == 0 and base.version:
        _KNOWN_BASES[python] = base
    return base


def hand_over(path: Path, uid: int, gid: int) -> int:
    """Give `path` and everything below it to uid:gid, never following a symlink (a walk over dir fds)."""
    changed = 0
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return 0
    if st.st_uid != uid or st.st_gid != gid:
        os.chown(path, uid, gid, follow_symlinks=False)
        changed += 1
    if not stat.S_ISDIR(st.st_mode):
        return changed
    for _, dirnames, filenames, dir_fd in os.fwalk(path, follow_symlinks=False):
        for name in (*dirnames, *filenames):
            with contextlib.suppress(OSError):
                entry = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if entry.st_uid != uid or entry.st_gid != gid:
                    os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
                    changed += 1
    return changed


def clear_foreign_entries(folder: Path) -> list[str]:
    """Remove the entries of `folder` that are not the agent's (whatever sandboxed code could have shaped).

    Sub-folders go with `shutil.rmtree(dir_fd=...)`, which never follows a symlink out of them.
    """
    me = os.geteuid()
    removed: list[str] = []
    fd = os.open(folder, DIR_FLAGS)
    try:
        with os.scandir(fd) as it:
            entries = [(e.name, e.stat(follow_symlinks=False)) for e in it]
        for name, st in entries:
            if st.st_uid == me:
                continue
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=fd)
            else:
                os.unlink(name, dir_fd=fd)
            removed.append(name)
    finally:
        os.close(fd)
    return removed


@contextlib.contextmanager
def _opened_dir(name: str | Path, dir_fd: int | None = None) -> Iterator[int]:
    fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _metadata_headers(dir_fd: int, limit: int = 65536) -> dict[str, str]:
    """Name and Version from a dist-info's METADATA: a regular file only, opened without following links."""
    try:
        fd = os.open("METADATA", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return {}
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {}
        head = os.read(fd, limit).decode("utf-8", errors="replace")
    finally:
        os.close(fd)
    headers: dict[str, str] = {}
    for line in head.split("\n"):
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and key in ("Name", "Version") and key not in headers:
            headers[key] = value.strip()
    return headers


def venv_distributions(venv: Path) -> list[tuple[str, str]]:
    """(name, version) of every `*.dist-info` in the venv's site-packages.

    The agent reads what the sandbox uid owns: walked with dir fds, nothing opened through a symlink, only
    regular files read (a FIFO named METADATA cannot block the agent).
    """
    found: list[tuple[str, str]] = []
    try:
        with _opened_dir(venv) as top, _opened_dir("lib", top) as lib:
            for version_dir in sorted(n for n in os.listdir(lib) if n.startswith("python")):
                try:
                    with _opened_dir(version_dir, lib) as pydir, _opened_dir("site-packages", pydir) as site:
                        for name in sorted(os.listdir(site)):
                            if not name.endswith(".dist-info"):
                                continue
                            stem_name, _, stem_version = name[: -len(".dist-info")].rpartition("-")
                            try:
                                with _opened_dir(name, site) as info:
                                    headers = _metadata_headers(info)
                            except OSError:
                                continue
                            found.append((headers.get("Name") or stem_name, headers.get("Version") or stem_version))
                except OSError:
                    continue
    except OSError:
        return found
    return found


def refuse_planted_link(configured: Path, what: str, *, workspace: Path, root: Path, owner: Owner | None) -> None:
    """Refuse an agent folder that the configuration reaches through a symlink inside the workspace.

    Sandboxed code can create `.venv` or `.codegen` in the workspace before the agent first does (its
    root is writable); the folders given to the agent are already resolved, so a root agent would build,
    chmod and hand over whatever such a link points at. Outside the workspace the operator decides.
    `workspace` is the configured (unresolved) workspace, `root` the resolved one.
    """
    if owner is None:
        return
    configured = Path(os.path.abspath(configured))
    workspace = Path(os.path.abspath(workspace))
    if not is_within(configured, workspace):
        return
    path = root
    for part in configured.relative_to(workspace).parts:
        path = path / part
        if path.is_symlink():
            raise SandboxUnavailable(
                f"the {what} {configured} is a symlink made inside the workspace ({path.name}); "
                "remove it so that the agent can create the folder"
            )


class SessionVenv:
    """One session's venv: created once (`--without-pip`: pip runs from outside), then handed to the uid."""

    def __init__(
        self, venv_dir: Path, *, configured: Path, workspace: Path, root: Path, base_python: str, owner: Owner | None
    ) -> None:
        self.venv_dir = venv_dir
        self.configured = configured  # as the settings name it (checked for links planted in the workspace)
        self.workspace = workspace
        self.root = root
        self.base_python = base_python
        self.owner = owner
        self.base: BasePython | None = None
        self._lock = asyncio.Lock()
        self._ready = False

    @property
    def python(self) -> Path:
        return self.venv_dir / "bin" / "python"

    async def ensure(self) -> Path:
        """The venv's interpreter, after building the venv if needed and handing its contents to the uid."""
        async with self._lock:
            if self._ready and self.python.exists():
                return self.python
            if await asyncio.to_thread(self._needs_building):
                await self._create()
            if self.owner is not None:
                await asyncio.to_thread(self._hand_over, self.owner)
            if self.base is None:
                self.base = await inspect_base_python(self.base_python)
            self._ready = True
            return self.python

    def _needs_building(self) -> bool:
        """Whether the venv must be (re)built; a damaged one is first emptied of what the sandbox uid made."""
        refuse_planted_link(self.configured, "session venv", workspace=self.workspace, root=self.root, owner=self.owner)
        if self.owner is not None and os.path.lexists(self.venv_dir):
            self.check_untouched()
        if self.python.exists() and (self.venv_dir / "pyvenv.cfg").exists():
            return False
        if self.owner is not None and os.path.lexists(self.venv_dir):
            # Rebuilt by the agent, as root: first close the folder to the sandbox gid (so nothing new appears
            # in it meanwhile), then remove what sandboxed code may have shaped (links into the host).
            os.chmod(self.venv_dir, 0o755)  # noqa: S103 - the usual venv mode; the agent's alone to write
            removed = clear_foreign_entries(self.venv_dir)
            if removed:
                log.warning("the session venv was damaged; rebuilding it (removed %s)", ", ".join(removed))
        return True

    async def _create(self) -> None:
        log.info("creating the session venv %s with %s", self.venv_dir, self.base_python)
        argv = [self.base_python, "-I", "-m", "venv", "--without-pip", str(self.venv_dir)]
        try:
            code, out = await run_quiet(argv, timeout_s=VENV_TIMEOUT_S, merge_stderr=True)
        except TimeoutError:
            raise SandboxUnavailable("creating the session's virtual environment timed out") from None
        if code != 0:
            tail = out.decode(errors="replace").strip().splitlines()
            raise SandboxUnavailable(
                "could not create the session's virtual environment: " + (tail[-1] if tail else f"exit {code}")
            )

    def _hand_over(self, owner: Owner) -> None:
        """The venv's contents to the sandbox uid (pip runs as it); the folder and pyvenv.cfg stay the agent's."""
        top = self.venv_dir.lstat()
        if stat.S_IMODE(top.st_mode) != VENV_FOLDER_MODE or top.st_gid != owner.gid:
            os.chown(self.venv_dir, os.geteuid(), owner.gid, follow_symlinks=False)
            os.chmod(self.venv_dir, VENV_FOLDER_MODE)
        lib = self.venv_dir / "lib"
        if lib.is_dir() and not lib.is_symlink() and lib.lstat().st_uid == owner.uid:
            return  # handed over already (sub-folders the uid owns are its business from then on)
        with _opened_dir(self.venv_dir) as fd:
            names = [n for n in os.listdir(fd) if n != "pyvenv.cfg"]
        for name in names:
            path = self.venv_dir / name
            if not path.is_symlink():
                hand_over(path, owner.uid, owner.gid)

    def check_untouched(self) -> None:
        """Refuse a venv whose folder or pyvenv.cfg is no longer the agent's.

        Only matters when the agent is root and code runs as another uid. Those two decide which interpreter
        the venv uses and are what the agent itself writes when it (re)builds the venv; everything below them
        is the sandbox uid's anyway (pip runs as that uid).
        """
        if self.owner is None:
            return
        me = os.geteuid()
        changed: str | None = None
        try:
            top: os.stat_result | None = self.venv_dir.lstat()
        except OSError:
            top = None
        if top is None or not stat.S_ISDIR(top.st_mode) or top.st_uid != me:
            changed = self.venv_dir.name
        else:
            try:
                cfg: os.stat_result | None = (self.venv_dir / "pyvenv.cfg").lstat()
            except FileNotFoundError:
                cfg = None  # an incomplete venv: ensure() rebuilds it
            if cfg is not None and (cfg.st_uid != me or not stat.S_ISREG(cfg.st_mode)):
                changed = "pyvenv.cfg"
        if changed is not None:
            raise SandboxUnavailable(
                f"the session's virtual environment was changed outside the agent ({changed} is not the "
                "agent's); refusing to use it"
            )

    def python_mounts(self, jail: Jail | None) -> list[Mount]:
        """The base interpreter's folders the jail must show (none when it lives under /usr)."""
        if jail is None or self.base is None:
            return []
        return self.base.mounts(jail)

    def python_version(self) -> str | None:
        """'3.12' from the agent's own pyvenv.cfg (which interpreter the venv runs), None if it says nothing."""
        try:
            text = (self.venv_dir / "pyvenv.cfg").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() in ("version", "version_info"):
                parts = value.strip().split(".")
                if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
                    return f"{parts[0]}.{parts[1]}"
        return None

    def site_packages(self) -> list[Path]:
        return sorted(self.venv_dir.glob("lib/python*/site-packages"))

    def installed_versions(self, names: Sequence[str]) -> list[InstalledPackage]:
        """Read the venv's distribution metadata from the agent itself: no code of the venv runs."""
        wanted = {canonicalize_name(n): n for n in names}
        found: dict[str, InstalledPackage] = {}
        for name, version in venv_distributions(self.venv_dir):
            key = canonicalize_name(name)
            if key in wanted and key not in found:
                found[key] = InstalledPackage(name=name, version=version)
        return [found[k] for k in wanted if k in found]
