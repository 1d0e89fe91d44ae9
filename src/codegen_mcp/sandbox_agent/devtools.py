"""test.run and lint.check: pytest, ruff and mypy on the workspace, as sandboxed code, read as reports.

The tools are installed into the session venv on first use (see `wheels`), then run like run.python code
(the jail, the sandbox uid, rlimits, a timeout) because they import and execute the user's code. Results
come from machine-readable reports only: pytest's JUnit XML (xunit1, which names each test's file),
`ruff check --output-format json`, `ruff format --check --output-format json` and `mypy -O json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sys
import time
import xml.etree.ElementTree as ET  # noqa: S405 - see parse_junit: the document is size-capped, expat >= 2.4.1
import zipfile
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from codegen_mcp.api.errors import CodegenError, ErrorCode, InvalidArgument, NotFound
from codegen_mcp.api.tools import (
    LintArgs,
    LintDiagnostic,
    LintFix,
    LintResult,
    PytestArgs,
    PytestFailure,
    PytestResult,
    Severity,
    TaskState,
)
from codegen_mcp.sandbox_agent.artifacts import changed_files, take_snapshot
from codegen_mcp.sandbox_agent.executor import Captured, Executor, pip_error_sentence, supervise
from codegen_mcp.sandbox_agent.isolation import Limits, limits_preexec
from codegen_mcp.sandbox_agent.sandboxed import ProgressCaptured, run_sandboxed
from codegen_mcp.sandbox_agent.settings import AgentSettings
from codegen_mcp.sandbox_agent.tasks import Outcome, Task, TaskManager
from codegen_mcp.sandbox_agent.wheels import (
    MissingWheel,
    VenvTarget,
    VenvWriter,
    WheelError,
    WheelFile,
    adopt_downloads,
    compile_modules,
    install_wheel,
    installed_distributions,
    plan_install,
    repack_installed,
    scan_wheels,
)
from codegen_mcp.sandbox_agent.workspace import Workspace

log = logging.getLogger(__name__)

TOOLS = ("pytest", "ruff", "mypy")
OUTPUT_TAIL_BYTES = 8 * 1024
MAX_REPORT_BYTES = 64 * 1024 * 1024
MAX_LINT_OUTPUT_BYTES = 32 * 1024 * 1024
MAX_FAILURES = 100
MAX_DIAGNOSTICS = 1000
MAX_MESSAGE_CHARS = 1000
MAX_TRACEBACK_CHARS = 4000
DOWNLOAD_TIMEOUT_S = 300.0
REPORT_PREFIX = ".codegen-junit-"

# `tool(argv, what)` inside DevTools.lint: (exit code or None when out of time, stdout, stderr).
_ToolRunner = Callable[[list[str], str], Awaitable[tuple[int | None, str, str]]]


def default_wheelhouse(environ: Mapping[str, str], state_dir: Path) -> Path:
    """$XDG_CACHE_HOME/codegen-mcp/wheelhouse, else ~/.cache/…, else the agent's state folder."""
    cache = environ.get("XDG_CACHE_HOME") or (os.path.join(environ["HOME"], ".cache") if environ.get("HOME") else "")
    if cache and os.path.isabs(cache):
        return Path(cache) / "codegen-mcp" / "wheelhouse"
    return state_dir / "wheelhouse"


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def _head(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- pytest's JUnit report ---------------------------------------------------------------------------


@dataclass
class JUnitReport:
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    failures: list[PytestFailure] = field(default_factory=list)


def node_id(classname: str, name: str, file: str | None) -> str:
    """pytest's node id from an xunit1 testcase: 'tests/test_a.py::TestK::test_p[2]'."""
    if not file:
        return f"{classname}::{name}" if classname else name
    if not classname:
        return file  # a collection error: the module itself
    module = PurePosixPath(file).with_suffix("").as_posix().replace("/", ".")
    if classname == module:
        return f"{file}::{name}"
    if classname.startswith(module + "."):
        return "::".join([file, *classname[len(module) + 1 :].split("."), name])
    return f"{file}::{name}"


def _failure_message(element: ET.Element) -> str:
    """One line: pytest's message, or the last `E   ` line of the traceback when the message is generic."""
    message = (element.get("message") or "").strip()
    text = element.text or ""
    if not message or message in ("collection failure", "failed on teardown", "failed on setup"):
        e_lines = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("E ")]
        message = e_lines[-1] if e_lines else (message or "failed")
    first = message.splitlines()[0] if message else ""
    return _head(first, MAX_MESSAGE_CHARS)


def parse_junit(data: bytes, max_failures: int = MAX_FAILURES) -> JUnitReport:
    """Counts and failures from pytest's JUnit XML (junit_family=xunit1).

    The document is written by code under test, so it is treated as untrusted: its size is capped by the
    caller and expat (>= 2.4.1, bundled with every supported Python) refuses entity-expansion bombs.
    """
    try:
        root = ET.fromstring(data)  # noqa: S314 - untrusted but size-capped; expat guards against expansion bombs
    except ET.ParseError as err:
        raise CodegenError(f"pytest's JUnit report could not be read ({err})", code=ErrorCode.INTERNAL) from None
    report = JUnitReport()
    for case in root.iter("testcase"):
        failure = case.find("failure")
        error = case.find("error")
        skipped = case.find("skipped")
        if failure is None and error is None:
            if skipped is not None:
                report.skipped += 1
            else:
                report.passed += 1
            continue
        element = failure if failure is not None else error
        assert element is not None
        outcome = "failed" if failure is not None else "error"
        if outcome == "failed":
            report.failed += 1
        else:
            report.errors += 1
        if len(report.failures) < max_failures:
            try:
                duration = float(case.get("time") or 0)
            except ValueError:
                duration = 0.0
            report.failures.append(
                PytestFailure(
                    node_id=node_id(case.get("classname") or "", case.get("name") or "", case.get("file")),
                    outcome=outcome,
                    message=_failure_message(element),
                    traceback=_tail((element.text or "").strip(), MAX_TRACEBACK_CHARS),
                    duration_s=round(duration, 3),
                )
            )
    return report


# --- ruff and mypy reports ---------------------------------------------------------------------------


def workspace_relative(filename: str, root: Path) -> str:
    path = Path(filename)
    if path.is_absolute():
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            return filename
    return PurePosixPath(filename).as_posix()


def _int(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def parse_ruff_json(data: bytes, root: Path, *, tool: str = "ruff") -> list[LintDiagnostic]:
    """Diagnostics from `ruff check|format --output-format json` (a JSON array)."""
    try:
        items = json.loads(data or b"[]")
    except ValueError:
        raise CodegenError("ruff's JSON report could not be read", code=ErrorCode.INTERNAL) from None
    if not isinstance(items, list):
        raise CodegenError("ruff's JSON report is not a list", code=ErrorCode.INTERNAL)
    out: list[LintDiagnostic] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        loc = item.get("location") or {}
        end = item.get("end_location") or {}
        fix = item.get("fix") or {}
        code = str(item.get("code") or item.get("name") or "syntax-error")
        formatting = tool == "ruff-format" or code == "unformatted"
        severity = Severity.WARNING if formatting else _severity(item.get("severity"))
        out.append(
            LintDiagnostic(
                tool="ruff-format" if formatting else "ruff",
                file=workspace_relative(str(item.get("filename") or ""), root),
                line=_int(loc.get("row"), 1),
                column=_int(loc.get("column"), 1),
                end_line=_int(end.get("row"), 0) or None,
                end_column=_int(end.get("column"), 0) or None,
                code=code,
                message=_head(str(item.get("message") or ""), MAX_MESSAGE_CHARS),
                severity=severity,
                fixable=isinstance(fix, dict) and fix.get("applicability") == "safe",
                url=item.get("url") if isinstance(item.get("url"), str) else None,
            )
        )
    return out


def _severity(value: object) -> Severity:
    try:
        return Severity(str(value).lower())
    except ValueError:
        return Severity.ERROR


def parse_format_text(text: str, root: Path) -> list[LintDiagnostic]:
    """`ruff format --check` of ruff versions without JSON output: 'Would reformat: path' lines."""
    out: list[LintDiagnostic] = []
    for line in text.splitlines():
        if line.startswith("Would reformat: "):
            out.append(
                LintDiagnostic(
                    tool="ruff-format",
                    file=workspace_relative(line[len("Would reformat: ") :].strip(), root),
                    line=1,
                    column=1,
                    code="unformatted",
                    message="File would be reformatted",
                    severity=Severity.WARNING,
                    fixable=True,
                )
            )
    return out


def parse_mypy_json(text: str, root: Path) -> list[LintDiagnostic]:
    """Diagnostics from `mypy -O json` (one JSON object per line; columns there are 0-based)."""
    out: list[LintDiagnostic] = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            item = json.loads(line)
        except ValueError:
            continue  # a line cut by the output cap
        if not isinstance(item, dict):
            continue
        severity = _severity(item.get("severity"))
        message = str(item.get("message") or "")
        if item.get("hint"):
            message += f" ({item['hint']})"
        column = _int(item.get("column"), -1)
        end_column = _int(item.get("end_column"), -1)
        out.append(
            LintDiagnostic(
                tool="mypy",
                file=workspace_relative(str(item.get("file") or ""), root),
                line=max(1, _int(item.get("line"), 1)),
                column=column + 1 if column >= 0 else 1,
                end_line=_int(item.get("end_line"), 0) or None,
                end_column=end_column + 1 if end_column >= 0 else None,
                code=str(item.get("code") or ("note" if severity is Severity.NOTE else "misc")),
                message=_head(message, MAX_MESSAGE_CHARS),
                severity=severity,
                fixable=False,
            )
        )
    return out


def _key(d: LintDiagnostic) -> tuple[str, str, str]:
    return (d.file, d.code, d.message)


def fixed_between(before: Sequence[LintDiagnostic], after: Sequence[LintDiagnostic]) -> list[LintFix]:
    """What `ruff check --fix` fixed: fixable findings of the first run missing from the second."""
    left = Counter(_key(d) for d in after)
    fixed: list[LintFix] = []
    for d in before:
        if left[_key(d)] > 0:
            left[_key(d)] -= 1
        elif d.fixable:
            fixed.append(LintFix(file=d.file, code=d.code, message=d.message))
    return fixed


def summarize(diagnostics: list[LintDiagnostic], **fields: Any) -> LintResult:
    """A LintResult with the diagnostics sorted, capped and counted; `fields` are its other fields."""
    ordered = sorted(diagnostics, key=lambda d: (d.file, d.line, d.column, d.tool, d.code))
    by_severity = Counter(d.severity for d in ordered)
    return LintResult(
        diagnostics=ordered[:MAX_DIAGNOSTICS],
        truncated=len(ordered) > MAX_DIAGNOSTICS,
        errors=by_severity[Severity.ERROR],
        warnings=by_severity[Severity.WARNING],
        notes=by_severity[Severity.NOTE],
        fixable=sum(1 for d in ordered if d.fixable),
        by_code=dict(Counter(d.code for d in ordered).most_common()),
        **fields,
    )


# --- arguments -----------------------------------------------------------------------------------------


def pytest_targets(workspace: Workspace, paths: Sequence[str]) -> list[str]:
    """Workspace-relative test paths (`file::node` kept), each confined to the workspace and existing."""
    out: list[str] = []
    for raw in paths:
        file_part, sep, rest = raw.partition("::")
        if any(ch in rest for ch in "\x00\n\r"):
            raise InvalidArgument(f"the node id `{raw[:120]}` has control characters")
        resolved = workspace.resolve(file_part or ".")
        if not resolved.exists():
            raise NotFound(f"`{file_part}` does not exist in the workspace")
        rel = workspace.relative(resolved) if resolved != workspace.root else "."
        out.append(rel + (sep + rest if sep else ""))
    return out


def lint_target(workspace: Workspace, path: str) -> str:
    resolved = workspace.resolve(path)
    if not resolved.exists():
        raise NotFound(f"`{path}` does not exist in the workspace")
    return workspace.relative(resolved) if resolved != workspace.root else "."


# --- installing the tools ----------------------------------------------------------------------------


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
        self.workspace = workspace
        self.tasks = tasks
        self.wheelhouse = wheelhouse
        self._background: set[asyncio.Task[None]] = set()
        self._compiling: set[asyncio.Future[int]] = set()

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

    async def aclose(self) -> None:
        """Drop byte-compiling not yet started; wait for the one running (a worker thread cannot be interrupted)."""
        for job in list(self._background):
            job.cancel()
        await asyncio.gather(*self._background, *self._compiling, return_exceptions=True)

    def _writer(self) -> VenvWriter:
        owner = self.executor.owner
        return VenvWriter(self.executor.venv_dir, (owner.uid, owner.gid) if owner is not None else None)

    async def ensure(self, task: Task, tools: Sequence[str]) -> dict[str, str]:
        """Make sure `tools` are in the session venv; returns their versions."""
        await self.executor.ensure_venv()
        try:
            target = await asyncio.to_thread(VenvTarget.inspect, self.executor.venv_dir)
        except WheelError as err:
            raise CodegenError(str(err), code=ErrorCode.INSTALL_FAILED) from None
        wanted = [self.requirement(t) for t in tools]
        if await asyncio.to_thread(self._missing, wanted, target):
            async with self.tasks.install_gate:
                missing = await asyncio.to_thread(self._missing, wanted, target)
                if missing:
                    task.message = "installing " + ", ".join(str(r) for r in missing) + " into the session venv"
                    await self._install(task, missing, target)
        versions = await asyncio.to_thread(self.executor.installed_versions, list(tools))
        return {p.name.lower(): p.version for p in versions}

    def _installed(self, target: VenvTarget) -> dict[NormalizedName, Version]:
        with self._writer() as writer:
            return installed_distributions(writer, target)

    def _missing(self, wanted: Sequence[Requirement], target: VenvTarget) -> list[Requirement]:
        installed = self._installed(target)
        missing: list[Requirement] = []
        for req in wanted:
            version = installed.get(canonicalize_name(req.name))
            if version is None or not req.specifier.contains(version, prereleases=True):
                missing.append(req)
        return missing

    async def _install(self, task: Task, wanted: list[Requirement], target: VenvTarget) -> None:
        started = time.monotonic()
        folders = [*self.settings.devtools_find_links, self.wheelhouse]
        seeded: set[str] = set()
        downloaded = False
        download_error = ""
        for _ in range(200):
            available = await asyncio.to_thread(scan_wheels, folders, target)
            installed = await asyncio.to_thread(self._installed, target)
            try:
                plan = await asyncio.to_thread(plan_install, wanted, target, available, installed)
            except MissingWheel as miss:
                name = canonicalize_name(miss.requirement.name)
                if self.settings.devtools_seed_from_agent and name not in seeded:
                    seeded.add(name)
                    if await asyncio.to_thread(self._seed, miss.requirement):
                        continue
                if self.settings.devtools_download and not downloaded:
                    downloaded = True
                    download_error = await self._download(task, wanted, target)
                    if not download_error:
                        continue
                tools = ", ".join(r.name for r in wanted)
                if download_error:
                    reason = f"; {download_error}"
                elif downloaded:
                    reason = ", not even from the package index"
                else:
                    reason = " and downloading is turned off"
                raise CodegenError(
                    f"{tools} could not be installed: no wheel for {miss.requirement} is available here{reason}",
                    code=ErrorCode.INSTALL_FAILED,
                ) from None
            except WheelError as err:
                raise CodegenError(str(err), code=ErrorCode.INSTALL_FAILED) from None
            written = await asyncio.to_thread(self._unpack, plan, target)
            log.info(
                "installed %s into the session venv in %.2f s",
                ", ".join(f"{w.name} {w.version}" for w in plan),
                time.monotonic() - started,
            )
            # After this task: byte-compiling competes with the run for the CPU (and the agent's GIL).
            self._compile_later(written, target, after=task.done)
            return
        raise CodegenError("installing the tools did not converge", code=ErrorCode.INSTALL_FAILED)

    def _unpack(self, plan: Sequence[WheelFile], target: VenvTarget) -> list[PurePosixPath]:
        written: list[PurePosixPath] = []
        with self._writer() as writer:
            for wheel in plan:
                try:
                    written += install_wheel(wheel.path, target, writer)
                except (OSError, WheelError, ValueError, zipfile.BadZipFile) as err:
                    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
                    raise CodegenError(
                        f"installing {wheel.path.name} into the session venv failed: {reason}",
                        code=ErrorCode.INSTALL_FAILED,
                    ) from None
        return written

    def _seed(self, requirement: Requirement) -> bool:
        try:
            self.wheelhouse.mkdir(parents=True, exist_ok=True)
            return repack_installed(requirement.name, requirement.specifier, self.wheelhouse) is not None
        except (OSError, ValueError, WheelError) as err:
            log.warning("could not repack the agent's %s: %s", requirement.name, err)
            return False

    async def _download(self, task: Task, wanted: Sequence[Requirement], target: VenvTarget) -> str:
        """`pip download` the tools' wheels (on the agent's own interpreter) into the cache; '' or why not.

        pip runs as the agent, outside the sandbox, so it gets nothing sandboxed code could shape: a home and
        cache of its own beside the wheelhouse, the agent's state as working folder, no venv on its PATH.
        Downloading wheels only (`--only-binary :all:`) runs no code from the packages.
        """
        specs = [str(r) for r in wanted]
        home = self.wheelhouse / ".pip-home"
        try:
            self.wheelhouse.mkdir(parents=True, exist_ok=True)
            home.mkdir(mode=0o700, exist_ok=True)
            staging = self.wheelhouse / f".download-{os.getpid()}-{task.task_id}"
            staging.mkdir()
        except OSError as err:
            return f"the wheel cache {self.wheelhouse} is not writable ({err.strerror})"
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
            "--python-version",
            "{}.{}".format(*target.python_version),
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
            result = await supervise(
                argv,
                env=env,
                cwd=self.executor.state_dir,
                stdin=None,
                timeout_s=DOWNLOAD_TIMEOUT_S,
                cancel=task.cancel_requested,
                stdout=log_capture,
                stderr=None,
                popen_kwargs={"start_new_session": True, "preexec_fn": limits_preexec(limits)},
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

    def _compile_later(self, files: list[PurePosixPath], target: VenvTarget, *, after: asyncio.Event) -> None:
        def compile_all() -> int:
            with self._writer() as writer:
                return compile_modules(files, target, writer)

        async def work() -> None:
            await after.wait()
            # From here on the job is a worker thread that cannot be interrupted: shielded from aclose().
            thread = asyncio.ensure_future(asyncio.to_thread(compile_all))
            self._compiling.add(thread)
            thread.add_done_callback(self._compiling.discard)
            try:
                count = await asyncio.shield(thread)
            except (OSError, WheelError) as err:
                log.warning("byte-compiling the tools failed (they run from source): %s", err)
                return
            log.debug("byte-compiled %d modules of the tools", count)

        job = asyncio.create_task(work())
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    # --- test.run ---------------------------------------------------------------------------------

    async def run_tests(self, task: Task, args: PytestArgs, targets: Sequence[str], timeout_s: float) -> Outcome:
        versions = await self.ensure(task, ["pytest"])
        if task.cancel_requested.is_set():
            return Outcome(TaskState.CANCELLED, error="cancelled on request")
        report = self.workspace.root / f"{REPORT_PREFIX}{task.task_id}.xml"
        argv = [
            str(self.executor.venv_python),
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--color=no",
            "--tb=short",
            "-o",
            "junit_family=xunit1",
            "-o",
            "console_output_style=progress",
            f"--junitxml={report}",
        ]
        # Attached (`-kEXPR`), so an expression starting with '-' is still read as the expression.
        if args.keyword:
            argv.append("-k" + args.keyword)
        if args.markers:
            argv.append("-m" + args.markers)
        argv += ["--", *targets]

        def on_text(text: str) -> None:
            percent = _last_percent(text)
            if percent is not None:
                task.message = f"pytest: {percent}% of the tests done"

        task.message = "pytest running"
        output = ProgressCaptured(cap=OUTPUT_TAIL_BYTES, keep_tail=True, on_text=on_text)
        try:
            result = await run_sandboxed(
                self.executor,
                task,
                argv,
                timeout_s=timeout_s,
                stdout=output,
                stderr=None,
                env={"PYTHONDONTWRITEBYTECODE": "1", "PY_COLORS": "0", "NO_COLOR": "1"},
                what="pytest",
            )
            junit = await asyncio.to_thread(self._read_report, report.name)
        finally:
            with contextlib.suppress(OSError):
                report.unlink()
        parsed = parse_junit(junit) if junit is not None else JUnitReport()
        total = parsed.passed + parsed.failed + parsed.errors + parsed.skipped
        test = PytestResult(
            exit_code=result.exit_code,
            passed=parsed.passed,
            failed=parsed.failed,
            errors=parsed.errors,
            skipped=parsed.skipped,
            total=total,
            failures=parsed.failures,
            failures_truncated=parsed.failed + parsed.errors > len(parsed.failures),
            duration_s=result.duration_s,
            timed_out=result.timed_out,
            output_tail=output.text(),
            output_truncated=output.truncated,
            pytest_version=versions.get("pytest"),
        )
        if result.cancelled:
            return Outcome(TaskState.CANCELLED, test=test, error="cancelled on request")
        if result.timed_out:
            return Outcome(TaskState.TIMED_OUT, test=test, error=f"pytest was killed after {timeout_s:g} s")
        if junit is None:
            return Outcome(TaskState.FAILED, test=test, error=_pytest_failed_sentence(result.exit_code, output.text()))
        return Outcome(TaskState.SUCCEEDED if result.exit_code == 0 else TaskState.FAILED, test=test)

    def _read_report(self, name: str) -> bytes | None:
        """The JUnit file, opened through the workspace's confinement (tests could have swapped it)."""
        try:
            _, fd = self.workspace.open_regular_file(name)
        except CodegenError:
            return None
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_REPORT_BYTES + 1)
        if len(data) > MAX_REPORT_BYTES:
            raise CodegenError(
                f"pytest's JUnit report is larger than {MAX_REPORT_BYTES} bytes; run fewer tests at once",
                code=ErrorCode.TOO_LARGE,
            )
        return data

    # --- lint.check -------------------------------------------------------------------------------

    async def lint(self, task: Task, args: LintArgs, target_path: str, timeout_s: float) -> Outcome:
        deadline = time.monotonic() + timeout_s
        tools = ["ruff", "mypy"] if args.mypy else ["ruff"]
        versions = await self.ensure(task, tools)
        root = self.workspace.root
        ruff = str(self.executor.venv_dir / "bin" / "ruff")
        select = ["--select", ",".join(args.select)] if args.select else []
        notes: list[str] = []
        diagnostics: list[LintDiagnostic] = []
        fixed: list[LintFix] = []
        changed: list[str] = []
        timed_out = False

        async def tool(argv: list[str], what: str) -> tuple[int | None, str, str]:
            nonlocal timed_out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                return None, "", ""
            task.message = f"lint.check: {what}"
            out = Captured(cap=MAX_LINT_OUTPUT_BYTES)
            err = Captured(cap=OUTPUT_TAIL_BYTES, keep_tail=True)
            result = await run_sandboxed(
                self.executor, task, argv, timeout_s=remaining, stdout=out, stderr=err, what=what
            )
            if result.timed_out:
                timed_out = True
            if result.cancelled:
                raise _Cancelled
            if out.truncated:
                raise CodegenError(
                    f"{what} printed more than {MAX_LINT_OUTPUT_BYTES} bytes of diagnostics; check a smaller `path`",
                    code=ErrorCode.TOO_LARGE,
                )
            return result.exit_code, out.text(), err.text()

        try:
            before = await asyncio.to_thread(take_snapshot, root) if args.fix else None
            check = [ruff, "check", "--output-format", "json", *self._ruff_common(), "--exit-zero", *select]
            code, out, err = await tool([*check, "--", target_path], "ruff check")
            if code not in (0, None):
                return self._tool_failed("ruff check", code, err, versions, deadline, timeout_s)
            found = parse_ruff_json(out.encode(), root) if code == 0 else []
            if args.fix and code == 0:
                code, out, err = await tool([*check, "--fix", "--", target_path], "ruff check --fix")
                if code not in (0, None):
                    return self._tool_failed("ruff check --fix", code, err, versions, deadline, timeout_s)
                remaining = parse_ruff_json(out.encode(), root) if code == 0 else found
                fixed = fixed_between(found, remaining)
                found = remaining
            diagnostics += found
            if args.format:
                if args.fix:
                    code, out, err = await tool(
                        [ruff, "format", *self._ruff_common(), "--", target_path], "ruff format"
                    )
                    if code not in (0, None):
                        return self._tool_failed("ruff format", code, err, versions, deadline, timeout_s)
                else:
                    diagnostics += await self._format_check(tool, ruff, target_path, root, notes)
            if args.mypy:
                diagnostics += await self._mypy(tool, target_path, root, notes)
            if before is not None:
                after = await asyncio.to_thread(take_snapshot, root)
                changed = changed_files(before, after)
        except _Cancelled:
            return Outcome(TaskState.CANCELLED, error="cancelled on request")
        except _ToolFailed as failure:
            return self._tool_failed(failure.what, failure.code, failure.output, versions, deadline, timeout_s)
        lint = summarize(
            diagnostics,
            fixed=fixed,
            changed_files=changed,
            tools=versions,
            duration_s=round(timeout_s - max(0.0, deadline - time.monotonic()), 3),
            timed_out=timed_out,
            output_tail=_tail("\n".join(notes), OUTPUT_TAIL_BYTES),
        )
        if timed_out:
            return Outcome(TaskState.TIMED_OUT, lint=lint, error=f"lint.check was stopped after {timeout_s:g} s")
        return Outcome(TaskState.FAILED if lint.errors else TaskState.SUCCEEDED, lint=lint)

    def _managed_folders(self) -> list[str]:
        """The agent's folders inside the workspace (venv, state): never the user's code to check."""
        root = self.workspace.root
        return [p.relative_to(root).as_posix() for p in self.workspace.protected if p != root and root in p.parents]

    def _ruff_common(self) -> list[str]:
        excluded = self._managed_folders()
        return ["--no-cache", "--force-exclude", *(["--extend-exclude", ",".join(excluded)] if excluded else [])]

    async def _format_check(
        self, tool: _ToolRunner, ruff: str, target_path: str, root: Path, notes: list[str]
    ) -> list[LintDiagnostic]:
        argv = [ruff, "format", "--check", *self._ruff_common(), "--output-format", "json", "--", target_path]
        code, out, err = await tool(argv, "ruff format --check")
        if code in (0, 1):
            return parse_ruff_json(out.encode(), root, tool="ruff-format")
        if code == 2 and "--output-format" in err:
            # A ruff without JSON output for the formatter: read its 'Would reformat: <path>' lines.
            code, out, err = await tool(
                [ruff, "format", "--check", *self._ruff_common(), "--", target_path], "ruff format"
            )
            if code in (0, 1):
                return parse_format_text(out + "\n" + err, root)
        if code is None:
            return []
        raise _ToolFailed("ruff format --check", code, err)

    async def _mypy(self, tool: _ToolRunner, target_path: str, root: Path, notes: list[str]) -> list[LintDiagnostic]:
        home = Path("/tmp") if self.executor.sandbox.jail is not None else self.executor.home_dir  # noqa: S108
        argv = [
            str(self.executor.venv_python),
            "-m",
            "mypy",
            "-O",
            "json",
            "--show-column-numbers",
            "--show-error-end",
            "--no-error-summary",
            "--no-color-output",
            "--no-pretty",
            *(f"--exclude=^{re.escape(name)}/" for name in self._managed_folders()),
            "--cache-dir",
            str(home / ".cache" / "mypy"),
            "--",
            target_path,
        ]
        code, out, err = await tool(argv, "mypy")
        if code in (0, 1):
            return parse_mypy_json(out, root)
        if code is None:
            return []
        text = (err or out).strip()
        if "There are no .py[i] files" in text or "No Python files found" in text:
            notes.append(f"mypy: {text.splitlines()[0]}")
            return []
        raise _ToolFailed("mypy", code, text)

    def _tool_failed(
        self, what: str, code: int | None, output: str, versions: dict[str, str], deadline: float, timeout_s: float
    ) -> Outcome:
        lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
        reason = next((ln for ln in lines if "error" in ln.lower() or "cause" in ln.lower()), lines[0] if lines else "")
        lint = LintResult(
            tools=versions,
            duration_s=round(timeout_s - max(0.0, deadline - time.monotonic()), 3),
            output_tail=_tail(output, OUTPUT_TAIL_BYTES),
        )
        sentence = f"{what} could not check the code (exit code {code})" + (f": {_head(reason, 300)}" if reason else "")
        return Outcome(TaskState.FAILED, lint=lint, error=sentence)


class _ToolFailed(Exception):
    def __init__(self, what: str, code: int | None, output: str) -> None:
        super().__init__(what)
        self.what, self.code, self.output = what, code, output


class _Cancelled(Exception):
    """A linter was stopped because the task was cancelled."""


def _pytest_failed_sentence(exit_code: int | None, output: str) -> str:
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ("error" in ln.lower() or ln.startswith("E ")) and "usage:" not in ln]
    error = errors[-1] if errors else (lines[-1] if lines else "")
    if "error:" in error.lower():
        error = re.sub(r"^.*?\berror:\s*", "", error, flags=re.IGNORECASE)
    meaning = {2: "was interrupted", 3: "hit an internal error", 4: "was called wrongly"}.get(exit_code or 0, "failed")
    sentence = f"pytest {meaning} before writing its report (exit code {exit_code})"
    return sentence + (f": {_head(error, 300)}" if error else "")


_PERCENT = re.compile(r"\[\s*(\d{1,3})%\]")


def _last_percent(text: str) -> int | None:
    """The last `[ 42%]` progress mark pytest printed in `text`, if any."""
    found = _PERCENT.findall(text)
    return int(found[-1]) if found else None
