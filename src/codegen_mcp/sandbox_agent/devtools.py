"""test.run and lint.check: pytest, ruff and mypy installed into the session venv on first use, then run.

The tools are installed by the same jailed pip as pkg.install (`pip.run_pip`: as the session's uid, the venv
read-write), from local wheel folders only (`--no-index --find-links`, no network): the read-only folders of
`devtools_find_links` (the sandbox image ships /opt/codegen-mcp-wheels) and a writable wheelhouse shared by
the machine's agents. When wheels are missing and `devtools_download` is on, the agent first fills the
wheelhouse with `pip download --only-binary :all:`, as itself and outside the sandbox: downloading wheels
runs no code from the packages. A venv whose tools already satisfy their requirements (read from its
metadata, without running it) skips pip altogether. Installs queue behind pkg.install (one at a time).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from codegen_mcp.api.agent_settings import AgentSettings
from codegen_mcp.api.errors import CodegenError, ErrorCode
from codegen_mcp.api.tools import LintArgs, PytestArgs, TaskState
from codegen_mcp.sandbox_agent.executor import Executor
from codegen_mcp.sandbox_agent.isolation import Limits, Sandbox
from codegen_mcp.sandbox_agent.pip import run_pip
from codegen_mcp.sandbox_agent.process import Captured, ProcessOutcome, supervise
from codegen_mcp.sandbox_agent.requirements import pip_error_sentence, unmatched_requirement
from codegen_mcp.sandbox_agent.tasks import Outcome, Task, TaskManager
from codegen_mcp.sandbox_agent.toolruns import ToolRuns
from codegen_mcp.sandbox_agent.workspace import Workspace

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 300.0
INSTALL_TIMEOUT_S = 300.0


def default_wheelhouse(environ: Mapping[str, str], state_dir: Path) -> Path:
    """$XDG_CACHE_HOME/codegen-mcp/wheelhouse, else ~/.cache/…, else the agent's state folder."""
    cache = environ.get("XDG_CACHE_HOME") or (os.path.join(environ["HOME"], ".cache") if environ.get("HOME") else "")
    if cache and os.path.isabs(cache):
        return Path(cache) / "codegen-mcp" / "wheelhouse"
    return state_dir / "wheelhouse"


def adopt_downloads(download_dir: Path, cache: Path) -> None:
    """Move the wheels pip downloaded into the cache (atomic renames, readable by every uid), then drop the
    download folder. Agents share the cache without locks: a wheel's name says what it holds."""
    try:
        for entry in os.scandir(download_dir):
            if entry.name.endswith(".whl") and entry.is_file():
                dest = cache / entry.name
                os.replace(entry.path, dest)
                os.chmod(dest, 0o644)
    finally:
        shutil.rmtree(download_dir, ignore_errors=True)


def satisfied(requirement: Requirement, version: str | None) -> bool:
    """Whether an installed `version` (None: not installed) meets `requirement`."""
    if version is None:
        return False
    try:
        return requirement.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


class DevTools:
    """Installs the tools on first use and runs test.run / lint.check for one workspace."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        executor: Executor,
        workspace: Workspace,
        tasks: TaskManager,
        wheelhouse: Path,
    ) -> None:
        self.settings = settings
        self.executor = executor
        self.tasks = tasks
        self.wheelhouse = wheelhouse
        self.runs = ToolRuns(executor, workspace)

    def requirement(self, tool: str) -> Requirement:
        raw = {
            "pytest": self.settings.pytest_requirement,
            "ruff": self.settings.ruff_requirement,
            "mypy": self.settings.mypy_requirement,
        }[tool]
        try:
            return Requirement(raw)
        except InvalidRequirement:
            raise CodegenError(f"the configured requirement {raw!r} for {tool} is invalid") from None

    # --- installing the tools ---------------------------------------------------------------------

    async def ensure(self, task: Task, tools: Sequence[str]) -> dict[str, str]:
        """Make sure `tools` are in the session venv; returns their versions."""
        await self.executor.ensure_venv()
        wanted = [self.requirement(t) for t in tools]
        if await asyncio.to_thread(self._missing, wanted):
            async with self.tasks.install_gate:
                missing = await asyncio.to_thread(self._missing, wanted)
                if missing:
                    await self._install(task, [str(r) for r in missing])
        versions = await asyncio.to_thread(self.executor.installed_versions, list(tools))
        return {p.name.lower(): p.version for p in versions}

    def _missing(self, wanted: Sequence[Requirement]) -> list[Requirement]:
        """The tools the venv lacks, or has in a version outside their requirement (read from its metadata)."""
        installed = {p.name.lower(): p.version for p in self.executor.installed_versions([r.name for r in wanted])}
        return [r for r in wanted if not satisfied(r, installed.get(r.name.lower()))]

    def _folders(self) -> list[Path]:
        """The wheel folders pip may use: the read-only ones first, then the wheelhouse (those that exist)."""
        return [f for f in (*self.settings.devtools_find_links, self.wheelhouse) if f.is_dir()]

    async def _pip(self, task: Task, specs: Sequence[str]) -> ProcessOutcome | None:
        """pip from the local wheel folders; None when they hold no wheel at all (pip would find nothing)."""
        folders = await asyncio.to_thread(self._folders)
        if not any(any(f.glob("*.whl")) for f in folders):
            return None
        task.message = "installing " + ", ".join(specs) + " into the session venv"
        return await run_pip(self.executor, task, specs, find_links=folders, timeout_s=INSTALL_TIMEOUT_S)

    async def _install(self, task: Task, specs: list[str]) -> None:
        started = time.monotonic()
        result = await self._pip(task, specs)
        download_error = ""
        downloaded = False
        missing = result is None or unmatched_requirement(result.stdout.text()) is not None
        if missing and self.settings.devtools_download and not task.cancel_requested.is_set():
            downloaded = True
            download_error = await self._download(task, specs)
            if not download_error:
                result = await self._pip(task, specs)
        if result is not None and (result.exit_code == 0 or result.cancelled):
            if result.exit_code == 0:
                log.info("installed %s into the session venv in %.2f s", ", ".join(specs), time.monotonic() - started)
            return  # a cancelled install: the caller answers for the task
        raise CodegenError(
            f"{', '.join(specs)} could not be installed into the session venv: "
            + (download_error or self._failure(result, specs, downloaded)),
            code=ErrorCode.INSTALL_FAILED,
        )

    def _failure(self, result: ProcessOutcome | None, specs: Sequence[str], downloaded: bool) -> str:
        """Why pip could not install the tools from the wheel folders, as the end of one sentence."""
        if result is not None and result.timed_out:
            return f"pip was killed after {INSTALL_TIMEOUT_S:g} s"
        log_text = result.stdout.text() if result is not None else ""
        unmatched = unmatched_requirement(log_text) if result is not None else "them"
        if unmatched is None:
            return pip_error_sentence(log_text, specs)
        folders = ", ".join(str(f) for f in (*self.settings.devtools_find_links, self.wheelhouse))
        where = f"no wheel for {unmatched} is in the local wheel folders ({folders})"
        if downloaded:
            return where + ", not even after downloading from the package index"
        return where + " and downloading is turned off"

    async def _download(self, task: Task, specs: Sequence[str]) -> str:
        """`pip download` the tools' wheels (on the agent's own interpreter) into the cache; '' or why not.

        pip runs as the agent, outside the sandbox, so it gets nothing sandboxed code could shape: a home and
        cache of its own beside the wheelhouse, the agent's state as working folder, no venv on its PATH.
        Downloading wheels only (`--only-binary :all:`) runs no code from the packages.
        """
        home = self.wheelhouse / ".pip-home"
        try:
            self.wheelhouse.mkdir(parents=True, exist_ok=True)
            home.mkdir(mode=0o700, exist_ok=True)
            staging = self.wheelhouse / f".download-{os.getpid()}-{task.task_id}"
            staging.mkdir()
        except OSError as err:
            return f"the wheel cache {self.wheelhouse} is not writable ({err.strerror})"
        version = self.executor.venv.python_version()  # the venv's, which may not be the agent's
        argv = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            "--only-binary",
            ":all:",
            "--implementation",
            "cp",
            *(["--python-version", version] if version else []),
            "--dest",
            str(staging),
        ]
        if self.settings.pip_index_url:
            argv += ["--index-url", self.settings.pip_index_url]
        argv += specs
        task.message = "downloading " + " ".join(specs) + " from the package index"
        env = {
            **self.executor.pip_env,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "PYTHONNOUSERSITE": "1",
        }
        log_capture = Captured(cap=4096, keep_tail=True)
        limits = Limits(
            self.settings.memory_bytes, int(DOWNLOAD_TIMEOUT_S) + 5, self.settings.max_file_bytes, None, None
        )
        try:
            # As the agent, unjailed: only the rlimits and a process group of its own.
            with Sandbox(identity=None, jail=None).spawn(argv, limits) as (command, popen_kwargs):
                result = await supervise(
                    command,
                    env=env,
                    cwd=self.executor.state_dir,
                    stdin=None,
                    timeout_s=DOWNLOAD_TIMEOUT_S,
                    cancel=task.cancel_requested,
                    stdout=log_capture,
                    stderr=None,
                    popen_kwargs=popen_kwargs,
                )
        except OSError as err:
            adopt_downloads(staging, self.wheelhouse)
            return f"pip could not start ({err.strerror})"
        if result.exit_code == 0:
            await asyncio.to_thread(adopt_downloads, staging, self.wheelhouse)
            return ""
        await asyncio.to_thread(adopt_downloads, staging, self.wheelhouse)  # keep what did arrive
        if result.cancelled:
            return "the download was cancelled"
        if result.timed_out:
            return f"downloading from the package index took longer than {DOWNLOAD_TIMEOUT_S:g} s"
        return pip_error_sentence(log_capture.text(), specs)

    # --- test.run and lint.check ------------------------------------------------------------------

    async def run_tests(self, task: Task, args: PytestArgs, targets: Sequence[str], timeout_s: float) -> Outcome:
        versions = await self.ensure(task, ["pytest"])
        if task.cancel_requested.is_set():
            return Outcome(TaskState.CANCELLED, error="cancelled on request")
        return await self.runs.pytest(task, args, targets, timeout_s, versions.get("pytest"))

    async def lint(self, task: Task, args: LintArgs, target_path: str, timeout_s: float) -> Outcome:
        deadline = time.monotonic() + timeout_s  # installing the tools counts against the call's time
        versions = await self.ensure(task, ["ruff", "mypy"] if args.mypy else ["ruff"])
        if task.cancel_requested.is_set():
            return Outcome(TaskState.CANCELLED, error="cancelled on request")
        return await self.runs.lint(task, args, target_path, deadline=deadline, timeout_s=timeout_s, versions=versions)
