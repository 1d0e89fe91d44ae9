"""Tasks: what run.python, pkg.install, test.run, lint.check and git.clone answer, and how each reads.

A task's result is a `TaskView`: its state and, once finished, the result of its kind. `reply` turns it into
the text an LLM reads (a run keeps the Go original's `Exit Code:` / `Stdout:` / `Stderr:` blocks).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field

from codegen_mcp.api.results import (
    MAX_TEXT_ITEMS,
    NO_NOTES,
    ArtifactInfo,
    Reply,
    ToolResult,
    _Result,
    sentence,
    tail,
)


class TaskState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def finished(self) -> bool:
        return self not in (TaskState.QUEUED, TaskState.RUNNING)


class TaskKind(StrEnum):
    RUN_PYTHON = "run.python"
    PKG_INSTALL = "pkg.install"
    TEST_RUN = "test.run"
    LINT_CHECK = "lint.check"
    GIT_CLONE = "git.clone"


# --- run.python, pkg.install ----------------------------------------------------------------------


class ContextCell(_Result):
    """A run.python call in a persistent context: which one, and what happened to its state."""

    name: str
    cell: int = Field(description="How many cells this context's interpreter has run, this one included.")
    started_at: datetime = Field(description="When the context's current interpreter started.")
    restarted: str | None = Field(
        None, description="Set when the context's state was lost before this cell (why); the cell ran in a fresh one."
    )
    ended: str | None = Field(
        None, description="What this cell did to the context when it did not end normally (interrupted, stopped)."
    )
    state_kept: bool = Field(True, description="False when the context's state is gone after this cell.")


class RunResult(_Result):
    exit_code: int | None = Field(
        description="The process exit code; negative for a signal; None if it never ran. In a context: 0, 1 when "
        "the cell raised, SystemExit's code, or the interpreter's own code when it died."
    )
    stdout: str
    stderr: str
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_s: float
    timed_out: bool = False
    artifacts: list[ArtifactInfo] = Field(default_factory=list, description="Files the run created or changed.")
    value: str | None = Field(
        None, description="In a context: the repr of the cell's last expression, when it is one and not None."
    )
    value_truncated: bool = False
    context: ContextCell | None = Field(None, description="Set for a run in a persistent context.")


class InstalledPackage(_Result):
    name: str
    version: str


class PkgInstallResult(_Result):
    exit_code: int | None
    installed: list[InstalledPackage] = Field(description="The requested packages and the versions now installed.")
    log_tail: str
    duration_s: float


# --- test.run -------------------------------------------------------------------------------------


class PytestFailure(_Result):
    node_id: str = Field(description="pytest node id, e.g. 'tests/test_app.py::TestLogin::test_bad_password'.")
    outcome: Literal["failed", "error"] = Field(
        description="failed: an assertion or exception in the test; error: in a fixture, setup/teardown or collection."
    )
    message: str = Field(description="The one-line reason pytest gave, e.g. 'AssertionError: assert 1 == 2'.")
    traceback: str = Field(description="pytest's short traceback (--tb=short), capped.")
    duration_s: float = 0.0


class PytestResult(_Result):
    exit_code: int | None = Field(
        description="pytest's exit code: 0 all passed, 1 some failed, 2 interrupted, 3 internal error, "
        "4 usage error, 5 no tests collected; None if it never ran."
    )
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    total: int = Field(0, description="passed + failed + errors + skipped.")
    failures: list[PytestFailure] = Field(default_factory=list, description="Each failed or erroring test.")
    failures_truncated: bool = Field(False, description="True when more failures happened than are listed.")
    duration_s: float = 0.0
    timed_out: bool = False
    output_tail: str = Field("", description="The end of pytest's console output.")
    output_truncated: bool = Field(False, description="True when output_tail is not the whole output.")
    pytest_version: str | None = None


# --- lint.check -----------------------------------------------------------------------------------


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


class LintDiagnostic(_Result):
    tool: Literal["ruff", "ruff-format", "mypy"]
    file: str = Field(description="Workspace-relative path.")
    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None
    code: str = Field(description="Rule code, e.g. 'F401' (ruff) or 'arg-type' (mypy).")
    message: str
    severity: Severity = Field(
        description="ruff findings are errors (as ruff reports them), unformatted files warnings, mypy gives errors "
        "and notes."
    )
    fixable: bool = Field(False, description="True when `fix: true` would fix it (ruff's safe fixes).")
    url: str | None = Field(None, description="Documentation of the rule, when known.")


class LintFix(_Result):
    file: str
    code: str
    message: str = Field(description="What was fixed.")


class LintResult(_Result):
    diagnostics: list[LintDiagnostic] = Field(default_factory=list, description="What is left to fix, by file/line.")
    truncated: bool = Field(False, description="True when more diagnostics were found than are listed.")
    errors: int = 0
    warnings: int = 0
    notes: int = 0
    fixable: int = Field(0, description="How many of the diagnostics `fix: true` would fix.")
    by_code: dict[str, int] = Field(default_factory=dict, description="Diagnostic count per rule code.")
    fixed: list[LintFix] = Field(default_factory=list, description="What `fix: true` fixed.")
    changed_files: list[str] = Field(default_factory=list, description="Files `fix: true` rewrote.")
    tools: dict[str, str] = Field(default_factory=dict, description="The linters that ran and their versions.")
    duration_s: float = 0.0
    timed_out: bool = False
    output_tail: str = Field("", description="Messages the linters printed besides diagnostics (config errors…).")


# --- git.clone ------------------------------------------------------------------------------------


class GitCloneResult(_Result):
    url: str
    dest: str = Field(description="Workspace-relative folder of the clone.")
    commit: str | None = Field(None, description="The checked-out commit; None for an empty repository.")
    branch: str | None = Field(None, description="The checked-out branch; None when detached (a tag).")
    depth: int | None = None
    duration_s: float = 0.0
    timed_out: bool = False
    log_tail: str = Field("", description="The end of git's own output.")


# --- the task -------------------------------------------------------------------------------------


class TaskProgress(_Result):
    elapsed_s: float = 0.0
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    message: str = ""
    output_tail: str = Field(
        "", description="The last lines the task printed so far, while it runs (its result has the output after)."
    )
    output_chars: int = Field(
        0, description="Characters the task printed so far: the offset of its live output that comes next."
    )


OutputStream = Literal["stdout", "stderr"]


class OutputChunk(_Result):
    """One line of a task's live output stream (the agent's `TASK_OUTPUT` route, newline-delimited JSON)."""

    offset: int = Field(description="Where `text` starts in the task's output, in characters since it started.")
    skipped: int = Field(
        0, description="Characters before `offset` this reader missed: it fell behind the agent's bounded buffer."
    )
    stream: OutputStream = "stdout"
    text: str = ""
    end: bool = Field(False, description="The task finished: its output ends at `offset`, nothing follows.")

    @property
    def next_offset(self) -> int:
        """Where a reader that got this chunk continues (on reconnecting, too)."""
        return self.offset + len(self.text)


class TaskView(ToolResult):
    """What the agent says about a task: its state, and its result once it finished."""

    task_id: str
    kind: TaskKind
    state: TaskState
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: TaskProgress = Field(default_factory=TaskProgress)
    run: RunResult | None = None
    install: PkgInstallResult | None = None
    test: PytestResult | None = Field(None, description="The result of a test.run task.")
    lint: LintResult | None = Field(None, description="The result of a lint.check task.")
    clone: GitCloneResult | None = Field(None, description="The result of a git.clone task.")
    error: str | None = Field(None, description="Why the task failed to run at all (not the program's own error).")

    def reply(self, notes: Mapping[str, str] = NO_NOTES) -> Reply:
        """The task's result; `notes` (by stream) say where output cut to fit the MCP result is."""
        if not self.state.finished:
            still = (
                f"Task {self.task_id} ({self.kind.value}) is still {self.state.value} after "
                f"{self.progress.elapsed_s:.1f} s. Call task.get_result with task_id={self.task_id!r} to wait for "
                "its result, or task.get_status to check on it."
            )
            return Reply("\n".join([still, *self.live_lines()]))
        if self.kind is TaskKind.PKG_INSTALL:
            return self._install_reply()
        if self.kind is TaskKind.TEST_RUN:
            return self._test_reply()
        if self.kind is TaskKind.LINT_CHECK:
            return self._lint_reply()
        if self.kind is TaskKind.GIT_CLONE:
            return self._clone_reply()
        return self._run_reply(notes)

    def live_lines(self) -> list[str]:
        """The last lines a running task printed, as a reply shows them (none once it finished)."""
        tail = self.progress.output_tail
        return [f"Output so far (last lines):\n{tail}"] if tail else []

    def progress_message(self) -> str:
        p = self.progress
        output = p.stdout_bytes + p.stderr_bytes
        return p.message or f"{self.kind.value} {self.state.value}: {p.elapsed_s:.1f} s, {output} bytes of output"

    def _run_reply(self, notes: Mapping[str, str]) -> Reply:
        run = self.run
        if run is None:
            text = f"Task {self.task_id} {self.state.value}: {self.error or 'no result'}"
            return Reply(text, is_error=self.state is TaskState.FAILED)
        context = run.context
        if context is not None and context.cell == 0 and context.ended:
            return Reply(sentence(context.ended))  # a reset that ran no cell
        lines = [f"Exit Code: {run.exit_code}"]
        if context is not None and context.restarted:
            lines.insert(0, sentence(context.restarted))
        if context is not None and context.ended:
            lines.append(sentence(context.ended))
        elif self.state is TaskState.TIMED_OUT:
            lines.append(f"Timed out: the run was killed after {run.duration_s:.1f} s.")
        elif self.state is TaskState.CANCELLED:
            lines.append("Cancelled: the run was stopped on request.")
        for stream in ("stdout", "stderr"):
            output: str = getattr(run, stream)
            note = notes.get(stream) or (f"[{stream} truncated]" if getattr(run, f"{stream}_truncated") else "")
            lines.append(f"{stream.capitalize()}:")
            lines.append(output + ("\n" + note if note else ""))
        if run.value is not None:
            lines += ["Value:", run.value + ("\n[value truncated]" if run.value_truncated else "")]
        if run.artifacts:
            lines.append("Artifacts:")
            lines += [f"  {a.artifact_id}  {a.path}  ({a.size} bytes, {a.media_type})" for a in run.artifacts]
        if context is not None:
            lines.append(f"Context: {context.name}, cell {context.cell}")
        lines.append(f"Duration: {run.duration_s:.3f} s (task {self.task_id})")
        return Reply("\n".join(lines))

    def _install_reply(self) -> Reply:
        result = self.install
        if self.state is TaskState.SUCCEEDED and result is not None:
            pkgs = ", ".join(f"{p.name}=={p.version}" for p in result.installed) or "nothing new"
            return Reply(f"Installed: {pkgs} ({result.duration_s:.1f} s)")
        reason = self.error or f"pip {self.state.value}"
        log = f"\n\npip log (end):\n{result.log_tail}" if result and result.log_tail else ""
        return Reply(f"{reason[0].upper()}{reason[1:]}{log}", is_error=True)

    def _test_reply(self) -> Reply:
        test = self.test
        if test is None:
            return Reply(sentence(self.error or f"test.run {self.state.value}"), is_error=True)
        counts = (
            f"{test.passed} passed, {test.failed} failed, {test.errors} errors, {test.skipped} skipped "
            f"({test.total} total) in {test.duration_s:.2f} s, pytest exit code {test.exit_code}"
        )
        lines = [f"Tests: {counts}"]
        if self.error:
            lines.insert(0, sentence(self.error))
        elif test.exit_code == 5:
            lines.append("No tests were collected: check `paths`, `keyword` and `markers`.")
        if test.failures:
            lines.append("Failures:")
            for failure in test.failures:
                lines.append(f"- {failure.node_id} ({failure.outcome}): {failure.message}")
                lines += ["    " + ln for ln in failure.traceback.splitlines()[-12:]]
            if test.failures_truncated:
                lines.append(f"[{test.failed + test.errors - len(test.failures)} more failures not listed]")
        lines.append("Output (end):")
        lines.append(tail(test.output_tail.rstrip()))
        lines.append(f"(task {self.task_id})")
        # Failing tests are a normal answer; only a pytest that could not run (no report) is an error.
        return Reply("\n".join(lines), is_error=self.error is not None and self.state is TaskState.FAILED)

    def _lint_reply(self) -> Reply:
        lint = self.lint
        if lint is None or (self.error and self.state is TaskState.FAILED):
            text = sentence(self.error or f"lint.check {self.state.value}")
            if lint is not None and lint.output_tail:
                text += "\n" + tail(lint.output_tail)
            return Reply(text, is_error=True)
        tools = ", ".join(f"{name} {version}" for name, version in lint.tools.items()) or "ruff"
        total = len(lint.diagnostics) + (1 if lint.truncated else 0)
        summary = f"{lint.errors} errors, {lint.warnings} warnings, {lint.notes} notes"
        if lint.fixable:
            summary += f" ({lint.fixable} fixable with fix=true)"
        lines = [f"{tools}: {summary}" if total else f"{tools}: no problems found"]
        if self.error:
            lines.insert(0, sentence(self.error))
        if lint.fixed or lint.changed_files:
            codes = ", ".join(f"{code} ×{n}" for code, n in Counter(f.code for f in lint.fixed).most_common())
            lines.append(
                f"Fixed {len(lint.fixed)} issue(s){f' ({codes})' if codes else ''}; changed files: "
                + (", ".join(lint.changed_files) or "none")
            )
        for d in lint.diagnostics[:MAX_TEXT_ITEMS]:
            mark = " [fixable]" if d.fixable else ""
            lines.append(f"{d.file}:{d.line}:{d.column}: {d.code}{mark} {d.message} ({d.tool}, {d.severity.value})")
        hidden = len(lint.diagnostics) - MAX_TEXT_ITEMS
        if hidden > 0 or lint.truncated:
            lines.append(
                "[more diagnostics in the structured result]"
                if hidden <= 0
                else f"[{hidden} more in the structured result]"
            )
        if lint.output_tail:
            lines.append(lint.output_tail)
        return Reply("\n".join(lines))

    def _clone_reply(self) -> Reply:
        clone = self.clone
        if self.state is not TaskState.SUCCEEDED or clone is None:
            text = sentence(self.error or f"git.clone {self.state.value}")
            if clone is not None and clone.log_tail:
                text += "\n\ngit output (end):\n" + tail(clone.log_tail)
            return Reply(text, is_error=True)
        at = f" at {clone.commit[:12]}" if clone.commit else " (an empty repository)"
        details = [f"branch {clone.branch}" if clone.branch else "detached HEAD" if clone.commit else ""]
        if clone.depth:
            details.append(f"depth {clone.depth}")
        extra = ", ".join(d for d in details if d)
        return Reply(
            f"Cloned {clone.url} into {clone.dest}/{at}"
            + (f" ({extra})" if extra else "")
            + f" in {clone.duration_s:.1f} s."
        )


class TaskStatus(TaskView):
    # task.get_status's answer: the same view, read as one status line (and where cut output is). Its output
    # schema is every other task tool's, title and description included.
    model_config = ConfigDict(title="TaskView", json_schema_extra={"description": TaskView.__doc__})

    def reply(self, notes: Mapping[str, str] = NO_NOTES) -> Reply:
        status = f"Task {self.task_id} ({self.kind.value}): {self.state.value}, {self.progress_message()}"
        return Reply("\n".join([status, *self.live_lines(), *notes.values()]))
