"""Reading the tools' machine-readable reports: pytest's JUnit XML, ruff's and mypy's JSON.

Every report is written by a tool that ran the user's code, so it is read as untrusted input: sizes are capped
by the caller, fields are type-checked, and each finding becomes one capped, workspace-relative diagnostic.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET  # noqa: S405 - see parse_junit: the document is size-capped, expat >= 2.4.1
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from codegen_mcp.api.errors import CodegenError, ErrorCode
from codegen_mcp.api.tools import LintDiagnostic, LintFix, LintResult, PytestFailure, Severity

MAX_FAILURES = 100
MAX_DIAGNOSTICS = 1000
MAX_MESSAGE_CHARS = 1000
MAX_TRACEBACK_CHARS = 4000


def tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def head(text: str, limit: int) -> str:
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
    return head(first, MAX_MESSAGE_CHARS)


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
                    traceback=tail((element.text or "").strip(), MAX_TRACEBACK_CHARS),
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
                message=head(str(item.get("message") or ""), MAX_MESSAGE_CHARS),
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
                message=head(message, MAX_MESSAGE_CHARS),
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
