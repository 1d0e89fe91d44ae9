"""Running code: the session venv, run.python and pkg.install as supervised child processes.

Each child gets a clean environment, its own session (so the whole process group can be killed), rlimits,
the sandbox uid when the agent is root, and the bubblewrap jail when it is in force. Output is read
concurrently, capped per stream, and the rest only counted.

pkg.install runs in the same confinement as run code, because an sdist's build step is arbitrary code: the
sandbox uid, rlimits (a larger address space), and the jail when it is in force, but with the network (pip
needs the index) and a different view: the venv read-write, the agent's own pip read-only at
`/opt/codegen-pip/pip` (the venv has none; `<venv python> <pip>/__pip-runner__.py install ...` is what
`pip --python` does itself), a per-session home and cache, and not the workspace. Without the jail, a root
agent still drops to the sandbox uid and uses a readable copy of its pip. Only named requirements reach pip
(no options, URLs or paths).

So that pip can run as the sandbox uid, the venv's contents (bin, lib, include, ...) belong to that uid. The
venv folder and its pyvenv.cfg stay the agent's: the folder is sticky and group-writable (so pip can add
`share/` and the like) but cannot be renamed or have the agent's files replaced. The agent never writes
into what the sandbox uid owns: a damaged venv is cleared (without following links) and built afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from codegen_mcp.api.errors import CodegenError, ErrorCode, InvalidArgument, SandboxUnavailable
from codegen_mcp.api.tools import InstalledPackage, PkgInstallResult, RunResult, TaskState
from codegen_mcp.sandbox_agent import diskquota
from codegen_mcp.sandbox_agent.artifacts import ArtifactStore, take_snapshot
from codegen_mcp.sandbox_agent.isolation import (
    CPU_SLACK_S,
    Bind,
    Jail,
    Limits,
    Link,
    Mount,
    Sandbox,
    child_env,
    is_within,
    unreachable_parent,
)
from codegen_mcp.sandbox_agent.netns import pip_network
from codegen_mcp.sandbox_agent.settings import AgentSettings
from codegen_mcp.sandbox_agent.tasks import Outcome, Task
from codegen_mcp.sandbox_agent.workspace import Owner

log = logging.getLogger(__name__)


def start_failure(what: str, err: OSError | subprocess.SubprocessError) -> CodegenError:
    """The one sentence for a process that could not even be started in the sandbox."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return CodegenError(f"could not start {what}: {reason}", code=ErrorCode.SANDBOX_UNAVAILABLE)


LOG_TAIL_BYTES = 4096
# After the main process exits, how long leftover readers may take to drain the pipes.
DRAIN_GRACE_S = 2.0
VENV_TIMEOUT_S = 120.0
BASE_PYTHON_TIMEOUT_S = 30.0

# Where the agent's pip is shown inside the install jail; its parent holds nothing else.
PIP_IN_JAIL = Path("/opt/codegen-pip/pip")
PIP_RUNNER = "__pip-runner__.py"
# Operator-provided paths pip may need inside the jail (CA bundles, client certificates, its config file,
# local wheel folders).
PIP_PATH_VARS = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "PIP_CLIENT_CERT",
    "PIP_CONFIG_FILE",
    "PIP_FIND_LINKS",
)
# The venv folder: the agent's, sticky, writable for the sandbox gid (pip may add share/, etc/ ...).
VENV_FOLDER_MODE = 0o1775
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_BASE_PYTHON_FACTS = (
    "import sys; print(sys.base_prefix); print(sys.base_exec_prefix); "
    "print(getattr(sys, '_base_executable', sys.executable))"
)

_OPERATOR_CHARS = "<>=!~"
_ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tlz")


def default_base_python(configured: str | None) -> str:
    if configured:
        return configured
    if os.path.exists("/usr/bin/python3"):
        return "/usr/bin/python3"
    return sys.executable


# --- output capture --------------------------------------------------------------------------------


@dataclass
class Captured:
    """One output stream: the first `cap` bytes kept (or the last ones with `keep_tail`), the rest counted."""

    cap: int
    keep_tail: bool = False
    data: bytearray = field(default_factory=bytearray)
    total: int = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.keep_tail:
            self.data += chunk
            if len(self.data) > 2 * self.cap:
                del self.data[: len(self.data) - self.cap]
        elif len(self.data) < self.cap:
            self.data += chunk[: self.cap - len(self.data)]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.kept())

    def kept(self) -> bytes:
        return bytes(self.data[-self.cap :]) if self.keep_tail else bytes(self.data)

    def text(self) -> str:
        return self.kept().decode("utf-8", errors="replace")


@dataclass
class ProcessOutcome:
    exit_code: int | None
    stdout: Captured
    stderr: Captured
    duration_s: float
    timed_out: bool = False
    cancelled: bool = False


async def _pump(stream: asyncio.StreamReader | None, out: Captured, on_bytes: Callable[[int], None]) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        out.add(chunk)
        on_bytes(len(chunk))


async def _feed(writer: asyncio.StreamWriter | None, data: bytes | None) -> None:
    if writer is None:
        return
    try:
        if data:
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the program did not read all of its stdin; that is its business


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def supervise(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    stdin: bytes | None,
    timeout_s: float,
    cancel: asyncio.Event,
    stdout: Captured,
    stderr: Captured | None,
    popen_kwargs: Mapping[str, object],
    on_stdout: Callable[[int], None] = lambda n: None,
    on_stderr: Callable[[int], None] = lambda n: None,
) -> ProcessOutcome:
    """Run one child to completion, timeout or cancellation; its whole process group dies with it.

    `stderr=None` merges stderr into stdout (for pip's log).
    """
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE if stderr is not None else asyncio.subprocess.STDOUT,
        cwd=str(cwd),
        env=dict(env),
        **popen_kwargs,  # type: ignore[arg-type]
    )
    err_capture = stderr if stderr is not None else Captured(cap=0)
    io_tasks = [
        asyncio.create_task(_pump(proc.stdout, stdout, on_stdout)),
        asyncio.create_task(_pump(proc.stderr, err_capture, on_stderr)),
        asyncio.create_task(_feed(proc.stdin, stdin)),
    ]
    exited = asyncio.create_task(proc.wait())
    cancelled = asyncio.create_task(cancel.wait())
    timed_out = was_cancelled = False
    try:
        done, _ = await asyncio.wait({exited, cancelled}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if exited not in done:
            was_cancelled = cancelled in done
            timed_out = not was_cancelled
            _kill_group(proc.pid)
        await exited
    finally:
        # Also on our own cancellation (agent shutdown): nothing of the run may outlive it.
        _kill_group(proc.pid)
        cancelled.cancel()
        if not exited.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(exited)
        _, pending = await asyncio.wait(io_tasks, timeout=DRAIN_GRACE_S)
        for t in pending:
            t.cancel()
        await asyncio.gather(*io_tasks, return_exceptions=True)
    return ProcessOutcome(
        exit_code=proc.returncode,
        stdout=stdout,
        stderr=err_capture,
        duration_s=round(time.monotonic() - start, 3),
        timed_out=timed_out,
        cancelled=was_cancelled,
    )


# --- pkg.install argument checking -------------------------------------------------------------------


def split_requirements(text: str) -> list[str]:
    """Split on whitespace and commas (not inside `[extras]`), keeping `pkg>=1,<2` together."""
    raw: list[str] = []
    current = ""
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        if depth == 0 and (ch.isspace() or ch == ","):
            if current:
                raw.append(current)
            current = ""
            continue
        current += ch
    if current:
        raw.append(current)
    for token in raw:
        _refuse_non_requirement(token)
    merged: list[str] = []
    for token in raw:
        if merged and merged[-1][-1] in _OPERATOR_CHARS:
            merged[-1] += token  # `pkg >= 1`
        elif merged and token[0] in _OPERATOR_CHARS:
            prev = merged[-1]
            merged[-1] = prev + ("," if any(c in _OPERATOR_CHARS for c in prev) else "") + token
        else:
            merged.append(token)
    return merged


def _refuse_non_requirement(token: str) -> None:
    if token.startswith("-"):
        raise InvalidArgument(
            f"`{token}` is not allowed: give package requirements like 'requests==2.32.3', not pip options"
        )
    if "://" in token:
        raise InvalidArgument(f"`{token}` is not allowed: install packages by name from the index, not from URLs")
    if "/" in token or "\\" in token:
        raise InvalidArgument(f"`{token}` is not allowed: install packages by name, not from local paths")
    if token.lower().endswith(_ARCHIVE_SUFFIXES):
        raise InvalidArgument(f"`{token}` is not allowed: install packages by name, not from archive files")


def parse_requirements(text: str) -> list[Requirement]:
    """Requirement specifiers from `packages`, refusing pip options, URLs, paths and invalid ones."""
    tokens = split_requirements(text)
    if not tokens:
        raise InvalidArgument("`packages` must name at least one package, e.g. 'requests==2.32.3'")
    reqs: list[Requirement] = []
    for token in tokens:
        _refuse_non_requirement(token)
        try:
            req = Requirement(token)
        except InvalidRequirement:
            raise InvalidArgument(
                f"`{token}` is not a valid requirement specifier (PEP 508), e.g. 'requests==2.32.3'"
            ) from None
        if req.url:
            raise InvalidArgument(f"`{token}` is not allowed: install packages by name, not from URLs")
        reqs.append(req)
    return reqs


_NO_MATCH = re.compile(r"No matching distribution found for (\S+)")
_ERROR_LINE = re.compile(r"^ERROR: (.+)$", re.MULTILINE)

# What to do about a sandbox without egress, per tool (pip always has the network on the local backend).
GIT_NETWORK_REMEDY = (
    "start the session with egress enabled (local backend: CODEGEN_LOCAL_NETWORK=true; Kubernetes: spec.network.egress)"
)
PIP_NETWORK_REMEDY = (
    "start the session with egress 'packages' or 'open' (Kubernetes: spec.network.egress), or have the "
    "agent's PIP_FIND_LINKS name a local wheel folder that holds the packages"
)


def network_disabled(what: str, remedy: str, *, detail: str = "") -> CodegenError:
    """The one sentence for work that needs the network in a sandbox without egress (NETWORK_DISABLED)."""
    return CodegenError(
        f"{what} needs network access but this sandbox has no network egress{detail}; {remedy}",
        code=ErrorCode.NETWORK_DISABLED,
    )


def pip_error_sentence(log_text: str, specs: Sequence[str], offline_folders: Sequence[Path] = ()) -> str:
    match = _NO_MATCH.search(log_text)
    if match and offline_folders:
        folders = ", ".join(str(f) for f in offline_folders)
        detail = f", and '{match.group(1)}' is not in its local wheel folders ({folders})"
        return network_disabled("pkg.install", PIP_NETWORK_REMEDY, detail=detail).message
    if match:
        return f"pip could not install '{match.group(1)}': No matching distribution found"
    errors = _ERROR_LINE.findall(log_text)
    reason = errors[-1].strip() if errors else "see log_tail"
    return f"pip could not install {' '.join(repr(s) for s in specs)}: {reason}"


# --- the interpreter, pip, and folders the sandbox uid owns ------------------------------------------


@dataclass(frozen=True)
class BasePython:
    """Where the session's base interpreter lives, as it says itself (asked once, as the agent)."""

    prefixes: tuple[Path, ...]
    executable: Path  # the path the venv's bin/python links to

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
    lines = [line for line in output.splitlines() if line.startswith("/")]
    if len(lines) >= 3:
        return BasePython(prefixes=(Path(lines[0]), Path(lines[1])), executable=Path(lines[2]))
    real = Path(os.path.realpath(fallback))
    return BasePython(prefixes=(real.parent.parent,), executable=Path(fallback))


def agent_pip_dir() -> Path | None:
    """The agent's own pip package folder (run in the venv through its `__pip-runner__.py`)."""
    spec = importlib.util.find_spec("pip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(os.path.realpath(next(iter(spec.submodule_search_locations))))


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
    fd = os.open(folder, _DIR_FLAGS)
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
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
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


def local_find_links(pip_env: Mapping[str, str]) -> list[Path]:
    """The local wheel folders among PIP_FIND_LINKS (paths or file:// URLs): what pip can use offline."""
    folders: list[Path] = []
    for item in pip_env.get("PIP_FIND_LINKS", "").replace(os.pathsep, " ").split():
        local = item.removeprefix("file://")
        path = Path(local)
        if "://" not in local and path.is_absolute() and path.is_dir() and path not in folders:
            folders.append(path)
    return folders


def pip_path_mounts(pip_env: Mapping[str, str], jail: Jail) -> list[Mount]:
    """Local files and folders named by the operator's pip/TLS variables (CA bundles, client certificates,
    pip's config, find-links wheel folders), shown read-only in the install jail where pip will look."""
    mounts: list[Mount] = []
    for name in PIP_PATH_VARS:
        for item in pip_env.get(name, "").replace(os.pathsep, " ").split():
            item = item.removeprefix("file://")
            path = Path(item)
            if "://" in item or not path.is_absolute() or not path.exists():
                continue
            real = Path(os.path.realpath(path))
            if not (path == real and jail.shows(real)) and all(m.target != path for m in mounts):
                mounts.append(Bind(real, None if path == real else path))
    return mounts


# --- the executor -------------------------------------------------------------------------------------


class Executor:
    """Runs code and installs for one workspace."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        workspace_root: Path,
        state_dir: Path,
        venv_dir: Path,
        sandbox: Sandbox,
        artifacts: ArtifactStore,
        owner: Owner | None,
        pip_env: Mapping[str, str],
    ) -> None:
        self.settings = settings
        self.root = workspace_root
        self.state_dir = state_dir
        self.venv_dir = venv_dir
        self.sandbox = sandbox
        self.artifacts = artifacts
        self.owner = owner
        self.pip_env = dict(pip_env)
        self.base_python = default_base_python(settings.python)
        self._base: BasePython | None = None
        self._venv_lock = asyncio.Lock()
        self._venv_ready = False

    # --- paths --------------------------------------------------------------------------------------

    @property
    def venv_python(self) -> Path:
        return self.venv_dir / "bin" / "python"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def home_dir(self) -> Path:
        return self.state_dir / "home"

    @property
    def install_home(self) -> Path:
        """HOME of pkg.install's pip and, under it, its cache: the sandbox uid's, hidden from fs tools and run code.

        Not `pip-home`, which stays the agent's own (0700) for anything pip does with the agent's rights.
        """
        return self.state_dir / "install-home"

    def _refuse_planted_link(self, configured: Path, what: str) -> None:
        """Refuse an agent folder that the configuration reaches through a symlink inside the workspace.

        Sandboxed code can create `.venv` or `.codegen` in the workspace before the agent first does (its
        root is writable); the folders given to the agent are already resolved, so a root agent would build,
        chmod and hand over whatever such a link points at. Outside the workspace the operator decides.
        """
        if self.owner is None:
            return
        configured = Path(os.path.abspath(configured))
        workspace = Path(os.path.abspath(self.settings.workspace))
        if not is_within(configured, workspace):
            return
        path = self.root
        for part in configured.relative_to(workspace).parts:
            path = path / part
            if path.is_symlink():
                raise SandboxUnavailable(
                    f"the {what} {configured} is a symlink made inside the workspace ({path.name}); "
                    "remove it so that the agent can create the folder"
                )

    def prepare_dirs(self) -> None:
        """Create the state folders: the agent's private ones, and those the sandboxed code may write."""
        self._refuse_planted_link(self.settings.state_path, "state folder")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        st = self.state_dir.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            # Something else put it there (a symlink made by sandboxed code?): never write through it.
            raise SandboxUnavailable(f"the state folder {self.state_dir} is not a folder owned by the agent")
        # Traversable but not listable: a run can read its own script by name, not list the others.
        os.chmod(self.state_dir, 0o711)  # noqa: S103 - traverse-only on purpose
        self.runs_dir.mkdir(exist_ok=True)
        os.chmod(self.runs_dir, 0o711)  # noqa: S103 - traverse-only on purpose
        (self.state_dir / "pip-home").mkdir(mode=0o700, exist_ok=True)
        self.install_home.mkdir(mode=0o700, exist_ok=True)
        self.home_dir.mkdir(exist_ok=True)
        if self.owner is not None:
            os.chown(self.home_dir, self.owner.uid, self.owner.gid)
            if self.install_home.lstat().st_uid != self.owner.uid:
                hand_over(self.install_home, self.owner.uid, self.owner.gid)

    # --- venv ---------------------------------------------------------------------------------------

    async def ensure_venv(self) -> Path:
        """Create the session venv once (`--without-pip`: pip runs from outside), then hand it to the uid."""
        async with self._venv_lock:
            if self._venv_ready and self.venv_python.exists():
                return self.venv_python
            if await asyncio.to_thread(self._needs_building):
                await self._create_venv()
            if self.owner is not None:
                await asyncio.to_thread(self._hand_over_venv, self.owner)
            if self._base is None:
                self._base = await self._inspect_base_python()
            self._venv_ready = True
            return self.venv_python

    def _needs_building(self) -> bool:
        """Whether the venv must be (re)built; a damaged one is first emptied of what the sandbox uid made."""
        self._refuse_planted_link(self.settings.venv_path, "session venv")
        if self.owner is not None and os.path.lexists(self.venv_dir):
            self._check_venv_untouched()
        if self.venv_python.exists() and (self.venv_dir / "pyvenv.cfg").exists():
            return False
        if self.owner is not None and os.path.lexists(self.venv_dir):
            # Rebuilt by the agent, as root: first close the folder to the sandbox gid (so nothing new appears
            # in it meanwhile), then remove what sandboxed code may have shaped (links into the host).
            os.chmod(self.venv_dir, 0o755)  # noqa: S103 - the usual venv mode; the agent's alone to write
            removed = clear_foreign_entries(self.venv_dir)
            if removed:
                log.warning("the session venv was damaged; rebuilding it (removed %s)", ", ".join(removed))
        return True

    async def _create_venv(self) -> None:
        log.info("creating the session venv %s with %s", self.venv_dir, self.base_python)
        proc = await asyncio.create_subprocess_exec(
            self.base_python,
            "-m",
            "venv",
            "--without-pip",
            str(self.venv_dir),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(VENV_TIMEOUT_S):
                out, _ = await proc.communicate()
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            raise SandboxUnavailable("creating the session's virtual environment timed out") from None
        except asyncio.CancelledError:
            _kill_group(proc.pid)  # agent shutting down: leave no half-made venv builder behind
            raise
        if proc.returncode != 0:
            tail = out.decode(errors="replace").strip().splitlines()
            raise SandboxUnavailable(
                "could not create the session's virtual environment: "
                + (tail[-1] if tail else f"exit {proc.returncode}")
            )

    def _hand_over_venv(self, owner: Owner) -> None:
        """The venv's contents to the sandbox uid (pip runs as it); the folder and pyvenv.cfg stay the agent's."""
        top = self.venv_dir.lstat()
        if stat.S_IMODE(top.st_mode) != VENV_FOLDER_MODE or top.st_gid != owner.gid:
            os.chown(self.venv_dir, os.geteuid(), owner.gid, follow_symlinks=False)
            os.chmod(self.venv_dir, VENV_FOLDER_MODE)
        lib = self.venv_dir / "lib"
        if lib.is_dir() and not lib.is_symlink() and lib.lstat().st_uid == owner.uid:
            return  # handed over already (sub-folders the uid owns are its business from then on)
        fd = os.open(self.venv_dir, _DIR_FLAGS)
        try:
            names = [n for n in os.listdir(fd) if n != "pyvenv.cfg"]
        finally:
            os.close(fd)
        for name in names:
            path = self.venv_dir / name
            if not path.is_symlink():
                hand_over(path, owner.uid, owner.gid)

    def _check_venv_untouched(self) -> None:
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
                cfg = None  # an incomplete venv: ensure_venv rebuilds it
            if cfg is not None and (cfg.st_uid != me or not stat.S_ISREG(cfg.st_mode)):
                changed = "pyvenv.cfg"
        if changed is not None:
            raise SandboxUnavailable(
                f"the session's virtual environment was changed outside the agent ({changed} is not the "
                "agent's); refusing to use it"
            )

    async def _inspect_base_python(self) -> BasePython:
        """Ask the base interpreter where it lives, so the jail can show exactly that (read-only)."""
        try:
            proc = await asyncio.create_subprocess_exec(
                self.base_python,
                "-I",
                "-c",
                _BASE_PYTHON_FACTS,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                start_new_session=True,
            )
            try:
                async with asyncio.timeout(BASE_PYTHON_TIMEOUT_S):
                    out, _ = await proc.communicate()
            except (TimeoutError, asyncio.CancelledError):
                _kill_group(proc.pid)
                await proc.wait()
                raise
        except (OSError, TimeoutError):
            out = b""
        base = parse_base_python(out.decode(errors="replace"), self.base_python)
        log.info("base interpreter %s: prefixes %s", base.executable, ", ".join(map(str, base.prefixes)))
        return base

    def python_mounts(self) -> list[Mount]:
        """The base interpreter's folders the jail must show (none when it lives under /usr)."""
        jail = self.sandbox.jail
        if jail is None or self._base is None:
            return []
        return self._base.mounts(jail)

    # --- run.python ---------------------------------------------------------------------------------

    def _limits(self, timeout_s: float, *, processes: bool = True) -> Limits:
        s = self.settings
        return Limits(
            memory_bytes=s.memory_bytes,
            cpu_seconds=int(timeout_s) + CPU_SLACK_S,
            file_bytes=s.max_file_bytes,
            open_files=s.max_open_files,
            processes=s.max_processes if processes else None,
        )

    def _install_limits(self, timeout_s: float) -> Limits:
        s = self.settings
        return Limits(
            memory_bytes=max(s.memory_bytes, s.install_memory_bytes),
            cpu_seconds=int(timeout_s) + CPU_SLACK_S,
            file_bytes=s.max_file_bytes,
            open_files=s.max_open_files,
            processes=s.max_processes,
        )

    def confine(
        self, argv: Sequence[str], limits: Limits, *, read_only_after: Sequence[Path] = ()
    ) -> tuple[list[str], dict[str, object], Path]:
        """argv, popen kwargs and HOME for code run over the workspace (run.python and tools like it).

        In the jail: the workspace read-write, the venv read-only, the agent's state hidden except the
        `read_only_after` files. Without it: rlimits and the sandbox uid, HOME in the agent's state.
        """
        if self.sandbox.jail is None:
            return list(argv), self.sandbox.popen_kwargs(limits), self.home_dir
        binds: list[Mount] = [*self.python_mounts(), Bind(self.root, writable=True)]
        if self.venv_dir.exists():
            binds.append(Bind(self.venv_dir))
        command = self.sandbox.jail_command(
            argv, binds=binds, chdir=self.root, hidden_inside=[self.state_dir], read_only_after=read_only_after
        )
        home = Path("/tmp")  # noqa: S108 - the jail's own private tmpfs
        return command.argv, self.sandbox.popen_kwargs(limits, command.staged), home

    async def run_python(
        self,
        task: Task,
        *,
        code: str | None,
        file: Path | None,
        args: Sequence[str],
        stdin: str | None,
        timeout_s: float,
    ) -> Outcome:
        python = await self.ensure_venv()
        script: Path | None = None
        if code is not None:
            script = self.runs_dir / f"{task.task_id}.py"
            script.write_text(code, encoding="utf-8")
            os.chmod(script, 0o644)
            target = script
        else:
            assert file is not None
            target = file
        argv, popen_kwargs, home = self.confine(
            [str(python), str(target), *args],
            self._limits(timeout_s),
            read_only_after=[script] if script is not None else [],
        )
        env = child_env(venv=self.venv_dir, home=home, extra=self.settings.run_env)
        before = await asyncio.to_thread(take_snapshot, self.root)

        def count_out(n: int) -> None:
            task.stdout_bytes += n

        def count_err(n: int) -> None:
            task.stderr_bytes += n

        cap = self.settings.output_cap_bytes
        try:
            async with diskquota.guard(self.settings.tmp_dir, task.cancel_requested) as disk_full:
                result = await supervise(
                    argv,
                    env=env,
                    cwd=self.root,
                    stdin=stdin.encode("utf-8", errors="replace") if stdin is not None else None,
                    timeout_s=timeout_s,
                    cancel=task.cancel_requested,
                    stdout=Captured(cap=cap),
                    stderr=Captured(cap=cap),
                    popen_kwargs=popen_kwargs,
                    on_stdout=count_out,
                    on_stderr=count_err,
                )
        except (OSError, subprocess.SubprocessError) as err:
            raise start_failure("Python in the sandbox", err) from None
        finally:
            if script is not None:
                with contextlib.suppress(OSError):
                    script.unlink()
        artifacts = await asyncio.to_thread(self.artifacts.collect, before, task.task_id)
        stderr = result.stderr.text()
        quota_note = diskquota.message(self.settings.tmp_dir) if self.settings.tmp_dir and disk_full.is_set() else None
        if quota_note is not None:
            stderr = f"{stderr.rstrip()}\n{quota_note}\n".lstrip()
        run = RunResult(
            exit_code=result.exit_code,
            stdout=result.stdout.text(),
            stderr=stderr,
            stdout_truncated=result.stdout.truncated,
            stderr_truncated=result.stderr.truncated,
            duration_s=result.duration_s,
            timed_out=result.timed_out,
            artifacts=artifacts,
        )
        if quota_note is not None:
            return Outcome(TaskState.FAILED, run=run, error=quota_note)
        if result.cancelled:
            return Outcome(TaskState.CANCELLED, run=run, error="cancelled on request")
        if result.timed_out:
            return Outcome(TaskState.TIMED_OUT, run=run, error=f"the run was killed after {timeout_s:g} s")
        state = TaskState.SUCCEEDED if result.exit_code == 0 else TaskState.FAILED
        return Outcome(state, run=run)

    # --- pkg.install --------------------------------------------------------------------------------

    def _pip_for_child(self, pip_dir: Path) -> Path:
        """The pip folder the unjailed child can read: the agent's own, or a copy in the agent's state.

        A root agent's pip may sit under a folder the sandbox uid cannot enter (a 0700 /root with pyenv);
        then it is copied once per pip version, with its byte-code, into `<state>/pip-<version>/pip`.
        """
        identity = self.sandbox.identity
        runner = pip_dir / PIP_RUNNER
        if identity is None or (unreachable_parent(runner, identity) is None and runner.stat().st_mode & stat.S_IROTH):
            return pip_dir
        try:
            version = importlib.metadata.version("pip")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        copy = self.state_dir / f"pip-{version}"
        if not (copy / "pip" / PIP_RUNNER).exists():
            staging = self.state_dir / f".pip-{version}-{secrets.token_hex(4)}"
            shutil.copytree(pip_dir, staging / "pip", symlinks=True)
            os.chmod(staging, 0o755)  # noqa: S103 - pip's own files, readable by the sandbox uid on purpose
            try:
                os.rename(staging, copy)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)  # another install made it first
        return copy / "pip"

    def offline_install_folders(self) -> list[Path] | None:
        """None when pip may use the package index; else the local wheel folders it must make do with.

        Raises NETWORK_DISABLED at once when pip has neither: without egress pip would otherwise spend its
        retries on the index and then blame the package ("No matching distribution found").
        """
        if self.settings.pip_network:
            return None
        folders = local_find_links(self.pip_env)
        if not folders:
            raise network_disabled("pkg.install", PIP_NETWORK_REMEDY)
        return folders

    async def pkg_install(self, task: Task, *, requirements: Sequence[Requirement], timeout_s: float) -> Outcome:
        offline = self.offline_install_folders()
        python = await self.ensure_venv()
        self._check_venv_untouched()
        pip_dir = agent_pip_dir()
        if pip_dir is None or not (pip_dir / PIP_RUNNER).is_file():
            raise SandboxUnavailable("pip is not available to the agent, so nothing can be installed")
        specs = [str(r) for r in requirements]
        jail = self.sandbox.jail
        runner = PIP_IN_JAIL / PIP_RUNNER if jail is not None else None
        if runner is None:
            runner = await asyncio.to_thread(self._pip_for_child, pip_dir) / PIP_RUNNER
        argv = [
            str(python),
            str(runner),
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
        ]
        pip_env = dict(self.pip_env)
        if offline is not None:
            # Only the local folders: an index or a remote find-links URL would cost pip its retries.
            pip_env.pop("PIP_FIND_LINKS", None)
            argv += ["--no-index", *(f"--find-links={folder}" for folder in offline)]
        elif self.settings.pip_index_url:
            argv += ["--index-url", self.settings.pip_index_url]
        argv += specs
        env = child_env(venv=self.venv_dir, home=self.install_home, extra=pip_env)
        env["PIP_CACHE_DIR"] = str(self.install_home / "cache")  # the session's own: never shared, never the agent's
        limits = self._install_limits(timeout_s)
        if jail is not None:
            # The network (the index, unless offline), the venv read-write, pip read-only; not the workspace,
            # not the state.
            binds: list[Mount] = [
                *self.python_mounts(),
                Bind(pip_dir, PIP_IN_JAIL),
                *pip_path_mounts(self.pip_env, jail),
                Bind(self.venv_dir, writable=True),
                Bind(self.install_home, writable=True),
            ]
            command = self.sandbox.jail_command(argv, binds=binds, chdir=self.install_home, network=offline is None)
            argv = command.argv
            popen_kwargs = self.sandbox.popen_kwargs(limits, command.staged)
        else:
            popen_kwargs = self.sandbox.popen_kwargs(limits)
        log_capture = Captured(cap=LOG_TAIL_BYTES, keep_tail=True)

        def count(n: int) -> None:
            task.stdout_bytes += n

        task.message = "pip install " + " ".join(specs)
        try:
            # The network through a user-mode stack in the jail's own namespace: not the host's loopback.
            async with pip_network(argv, popen_kwargs, jailed=jail is not None, network=offline is None) as (
                argv,
                popen_kwargs,
            ):
                result = await supervise(
                    argv,
                    env=env,
                    cwd=self.install_home,
                    stdin=None,
                    timeout_s=timeout_s,
                    cancel=task.cancel_requested,
                    stdout=log_capture,
                    stderr=None,
                    popen_kwargs=popen_kwargs,
                    on_stdout=count,
                )
        except (OSError, subprocess.SubprocessError) as err:
            raise start_failure("pip", err) from None
        installed = await asyncio.to_thread(self.installed_versions, [r.name for r in requirements])
        install = PkgInstallResult(
            exit_code=result.exit_code,
            installed=installed,
            log_tail=log_capture.text(),
            duration_s=result.duration_s,
        )
        if result.cancelled:
            return Outcome(TaskState.CANCELLED, install=install, error="cancelled on request")
        if result.timed_out:
            return Outcome(TaskState.TIMED_OUT, install=install, error=f"pip was killed after {timeout_s:g} s")
        if result.exit_code != 0:
            error = pip_error_sentence(log_capture.text(), specs, offline or ())
            return Outcome(TaskState.FAILED, install=install, error=error)
        return Outcome(TaskState.SUCCEEDED, install=install)

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
