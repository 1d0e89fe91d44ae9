"""test.run and lint.check once the tools are installed: pytest, ruff and mypy run as sandboxed code.

They import and execute the user's code, so they run like run.python code (the jail, the sandbox uid,
rlimits, a timeout; see `sandboxed`). Results come from machine-readable reports only (see `reports`):
pytest's JUnit XML (xunit1, which names each test's file), `ruff check --output-format json`,
`ruff format --check --output-format json` and `mypy -O json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from codegen_mcp.api.errors import CodegenError, ErrorCode, InvalidArgument, NotFound
from codegen_mcp.api.tools import LintArgs, LintDiagnostic, LintFix, LintResult, PytestArgs, PytestResult, TaskState
from codegen_mcp.sandbox_agent.artifacts import changed_files, take_snapshot
from codegen_mcp.sandbox_agent.executor import Executor
from codegen_mcp.sandbox_agent.process import Captured, ProgressCaptured, stopped
from codegen_mcp.sandbox_agent.reports import (
    JUnitReport,
    fixed_between,
    head,
    parse_format_text,
    parse_junit,
    parse_mypy_json,
    parse_ruff_json,
    summarize,
    tail,
)
from codegen_mcp.sandbox_agent.sandboxed import run_sandboxed, sandbox_home
from codegen_mcp.sandbox_agent.tasks import Outcome, Task
from codegen_mcp.sandbox_agent.workspace import Workspace

OUTPUT_TAIL_BYTES = 8 * 1024
MAX_REPORT_BYTES = 64 * 1024 * 1024
MAX_LINT_OUTPUT_BYTES = 32 * 1024 * 1024
REPORT_PREFIX = ".codegen-junit-"

# `tool(argv, what)` inside ToolRuns.lint: (exit code or None when out of time, stdout, stderr).
_ToolRunner = Callable[[list[str], str], Awaitable[tuple[int | None, str, str]]]


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


class ToolRuns:
    """pytest, ruff and mypy over one workspace, with the session venv's tools."""

    def __init__(self, executor: Executor, workspace: Workspace) -> None:
        self.executor = executor
        self.workspace = workspace

    # --- test.run ---------------------------------------------------------------------------------

    async def pytest(
        self, task: Task, args: PytestArgs, targets: Sequence[str], timeout_s: float, version: str | None
    ) -> Outcome:
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
            pytest_version=version,
        )
        ended = stopped(result, "pytest", timeout_s, self.executor.settings.tmp_dir)
        if ended is not None:
            return Outcome(ended[0], test=test, error=ended[1])
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

    async def lint(
        self,
        task: Task,
        args: LintArgs,
        target_path: str,
        *,
        deadline: float,
        timeout_s: float,
        versions: dict[str, str],
    ) -> Outcome:
        """ruff (and mypy) on `target_path` until `deadline` (the task's start plus `timeout_s`)."""
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
            ended = stopped(result, what, remaining, self.executor.settings.tmp_dir)
            if result.disk_full and ended is not None:
                raise CodegenError(ended[1], code=ErrorCode.TOO_LARGE)
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
            output_tail=tail("\n".join(notes), OUTPUT_TAIL_BYTES),
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
        home = sandbox_home(self.executor)
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
            output_tail=tail(output, OUTPUT_TAIL_BYTES),
        )
        sentence = f"{what} could not check the code (exit code {code})" + (f": {head(reason, 300)}" if reason else "")
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
    return sentence + (f": {head(error, 300)}" if error else "")


_PERCENT = re.compile(r"\[\s*(\d{1,3})%\]")


def _last_percent(text: str) -> int | None:
    """The last `[ 42%]` progress mark pytest printed in `text`, if any."""
    found = _PERCENT.findall(text)
    return int(found[-1]) if found else None
