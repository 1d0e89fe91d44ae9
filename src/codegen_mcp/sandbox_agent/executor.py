"""Running code: the session venv, run.python and pkg.install as supervised child processes.

Each child gets a clean environment, its own session (so the whole process group can be killed), rlimits,
the sandbox uid when the agent is root, and the bubblewrap jail when it is in force. Output is read
concurrently, capped per stream, and the rest only counted.

pkg.install is different on purpose: pip needs the package index, so it runs outside the jail, with the
network, as the agent's own user (`<agent python> -m pip --python <venv python>`, the venv has no pip of
its own), still with rlimits, a timeout and its own process group. Only named requirements reach it (no
options, URLs or paths). In a Pod the agent is non-root and the NetworkPolicy decides what pip can reach;
an agent run as root on a workstation runs pip (and any sdist build script) as root.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from codegen_mcp.api.errors import CodegenError, ErrorCode, InvalidArgument, SandboxUnavailable
from codegen_mcp.api.tools import InstalledPackage, PkgInstallResult, RunResult, TaskState
from codegen_mcp.sandbox_agent.artifacts import ArtifactStore, take_snapshot
from codegen_mcp.sandbox_agent.isolation import CPU_SLACK_S, Limits, Sandbox, child_env, limits_preexec
from codegen_mcp.sandbox_agent.settings import AgentSettings
from codegen_mcp.sandbox_agent.tasks import Outcome, Task
from codegen_mcp.sandbox_agent.workspace import Owner

log = logging.getLogger(__name__)

LOG_TAIL_BYTES = 4096
# After the main process exits, how long leftover readers may take to drain the pipes.
DRAIN_GRACE_S = 2.0
VENV_TIMEOUT_S = 120.0

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


def pip_error_sentence(log_text: str, specs: Sequence[str]) -> str:
    match = _NO_MATCH.search(log_text)
    if match:
        return f"pip could not install '{match.group(1)}': No matching distribution found"
    errors = _ERROR_LINE.findall(log_text)
    reason = errors[-1].strip() if errors else "see log_tail"
    return f"pip could not install {' '.join(repr(s) for s in specs)}: {reason}"


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

    def prepare_dirs(self) -> None:
        """Create the state folders: the agent's private ones, and a home the sandboxed code may write."""
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
        self.home_dir.mkdir(exist_ok=True)
        if self.owner is not None:
            os.chown(self.home_dir, self.owner.uid, self.owner.gid)

    # --- venv ---------------------------------------------------------------------------------------

    async def ensure_venv(self) -> Path:
        """Create the session venv once (`--without-pip`: pip runs from outside with `--python`)."""
        async with self._venv_lock:
            if self._venv_ready and self.venv_python.exists():
                return self.venv_python
            if not (self.venv_python.exists() and (self.venv_dir / "pyvenv.cfg").exists()):
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
            self._venv_ready = True
            return self.venv_python

    def _check_venv_untouched(self) -> None:
        """pip runs with the agent's rights: refuse a venv that sandboxed code could have swapped.

        Only matters when the agent is root and code runs as another uid; then every part pip executes
        from (the interpreter link, pyvenv.cfg, the folders holding them) must still be the agent's.
        """
        if self.owner is None:
            return
        me = os.geteuid()
        for path in (self.venv_dir, self.venv_dir / "bin", self.venv_python, self.venv_dir / "pyvenv.cfg"):
            try:
                st = path.lstat()
            except OSError:
                st = None
            if st is None or st.st_uid != me:
                raise SandboxUnavailable(
                    f"the session's virtual environment was changed outside the agent ({path.name} is not the "
                    "agent's); refusing to run pip in it"
                )

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
        argv = [str(python), str(target), *args]
        if self.sandbox.jail is not None:
            hidden = [self.state_dir]
            argv = self.sandbox.jail.wrap(
                argv,
                workspace=self.root,
                read_only=[self.venv_dir] if self.venv_dir.exists() else [],
                hidden_inside=hidden,
                read_only_after=[script] if script is not None else [],
            )
            home = Path("/tmp")  # noqa: S108 - the jail's own private tmpfs
        else:
            home = self.home_dir
        env = child_env(venv=self.venv_dir, home=home, extra=self.settings.run_env)
        before = await asyncio.to_thread(take_snapshot, self.root)

        def count_out(n: int) -> None:
            task.stdout_bytes += n

        def count_err(n: int) -> None:
            task.stderr_bytes += n

        cap = self.settings.output_cap_bytes
        try:
            result = await supervise(
                argv,
                env=env,
                cwd=self.root,
                stdin=stdin.encode("utf-8", errors="replace") if stdin is not None else None,
                timeout_s=timeout_s,
                cancel=task.cancel_requested,
                stdout=Captured(cap=cap),
                stderr=Captured(cap=cap),
                popen_kwargs=self.sandbox.popen_kwargs(self._limits(timeout_s)),
                on_stdout=count_out,
                on_stderr=count_err,
            )
        except (OSError, subprocess.SubprocessError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise CodegenError(
                f"could not start Python in the sandbox: {reason}", code=ErrorCode.SANDBOX_UNAVAILABLE
            ) from None
        finally:
            if script is not None:
                with contextlib.suppress(OSError):
                    script.unlink()
        artifacts = await asyncio.to_thread(self.artifacts.collect, before, task.task_id)
        run = RunResult(
            exit_code=result.exit_code,
            stdout=result.stdout.text(),
            stderr=result.stderr.text(),
            stdout_truncated=result.stdout.truncated,
            stderr_truncated=result.stderr.truncated,
            duration_s=result.duration_s,
            timed_out=result.timed_out,
            artifacts=artifacts,
        )
        if result.cancelled:
            return Outcome(TaskState.CANCELLED, run=run, error="cancelled on request")
        if result.timed_out:
            return Outcome(TaskState.TIMED_OUT, run=run, error=f"the run was killed after {timeout_s:g} s")
        state = TaskState.SUCCEEDED if result.exit_code == 0 else TaskState.FAILED
        return Outcome(state, run=run)

    # --- pkg.install --------------------------------------------------------------------------------

    async def pkg_install(self, task: Task, *, requirements: Sequence[Requirement], timeout_s: float) -> Outcome:
        python = await self.ensure_venv()
        self._check_venv_untouched()
        specs = [str(r) for r in requirements]
        argv = [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
        ]
        if self.settings.pip_index_url:
            argv += ["--index-url", self.settings.pip_index_url]
        argv += specs
        env = child_env(venv=self.venv_dir, home=self.state_dir / "pip-home", extra=self.pip_env)
        log_capture = Captured(cap=LOG_TAIL_BYTES, keep_tail=True)

        def count(n: int) -> None:
            task.stdout_bytes += n

        task.message = "pip install " + " ".join(specs)
        # pip needs the network and runs with the agent's rights (not in the jail), with rlimits
        # and its own process group; its working folder is the agent's state, never the workspace.
        kwargs: dict[str, object] = {
            "start_new_session": True,
            "preexec_fn": limits_preexec(self._limits(timeout_s, processes=False)),
        }
        try:
            result = await supervise(
                argv,
                env=env,
                cwd=self.state_dir,
                stdin=None,
                timeout_s=timeout_s,
                cancel=task.cancel_requested,
                stdout=log_capture,
                stderr=None,
                popen_kwargs=kwargs,
                on_stdout=count,
            )
        except (OSError, subprocess.SubprocessError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise CodegenError(f"could not start pip: {reason}", code=ErrorCode.SANDBOX_UNAVAILABLE) from None
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
            return Outcome(TaskState.FAILED, install=install, error=pip_error_sentence(log_capture.text(), specs))
        return Outcome(TaskState.SUCCEEDED, install=install)

    def site_packages(self) -> list[Path]:
        return sorted(self.venv_dir.glob("lib/python*/site-packages"))

    def installed_versions(self, names: Sequence[str]) -> list[InstalledPackage]:
        """Read the venv's distribution metadata from the agent itself: no code of the venv runs."""
        wanted = {canonicalize_name(n): n for n in names}
        found: dict[str, InstalledPackage] = {}
        paths = [str(p) for p in self.site_packages()]
        for dist in importlib.metadata.distributions(path=paths):
            name = dist.metadata["Name"]
            if not name:
                continue
            key = canonicalize_name(name)
            if key in wanted and key not in found:
                found[key] = InstalledPackage(name=name, version=dist.version)
        return [found[k] for k in wanted if k in found]
