"""lint.check: ruff/mypy report readers, and ruff (check, --fix, format) and mypy run by a real agent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from codegen_mcp.api.agent_settings import GiB
from codegen_mcp.api.tools import LintDiagnostic, Severity
from codegen_mcp.sandbox_agent.reports import (
    fixed_between,
    parse_format_text,
    parse_mypy_json,
    parse_ruff_json,
    summarize,
)

from .conftest import AgentClient, MakeClient
from .test_test_run import make_venv, start_task, tool_settings, write

ROOT = Path("/work/ws")

RUFF_JSON = [
    {
        "code": "F401",
        "filename": "/work/ws/src/app.py",
        "location": {"row": 1, "column": 8},
        "end_location": {"row": 1, "column": 10},
        "fix": {"applicability": "safe", "message": "Remove unused import: `os`", "edits": []},
        "message": "`os` imported but unused",
        "severity": "error",
        "url": "https://docs.astral.sh/ruff/rules/unused-import",
    },
    {
        "code": None,
        "name": "invalid-syntax",
        "filename": "/work/ws/bad.py",
        "location": {"row": 3, "column": 7},
        "end_location": {"row": 3, "column": 8},
        "fix": None,
        "message": "Expected an expression",
    },
    {
        "code": "B006",
        "filename": "/work/ws/src/app.py",
        "location": {"row": 4, "column": 12},
        "end_location": {"row": 4, "column": 14},
        "fix": {"applicability": "unsafe", "edits": []},
        "message": "Do not use mutable data structures for argument defaults",
    },
]


def test_ruff_json_becomes_diagnostics() -> None:
    first, syntax, unsafe = parse_ruff_json(json.dumps(RUFF_JSON).encode(), ROOT)
    assert (first.file, first.line, first.column, first.end_column) == ("src/app.py", 1, 8, 10)
    assert first.code == "F401" and first.fixable and first.severity is Severity.ERROR and first.tool == "ruff"
    assert first.url == "https://docs.astral.sh/ruff/rules/unused-import"
    assert syntax.code == "invalid-syntax" and syntax.file == "bad.py" and not syntax.fixable
    assert not unsafe.fixable  # only safe fixes are applied by fix=true


def test_format_check_json_and_text() -> None:
    item = {"code": "unformatted", "filename": "/work/ws/a.py", "location": {"row": 2, "column": 1}, "message": "x"}
    [diag] = parse_ruff_json(json.dumps([item]).encode(), ROOT, tool="ruff-format")
    assert diag.tool == "ruff-format" and diag.severity is Severity.WARNING and diag.file == "a.py"
    [old] = parse_format_text("Would reformat: src/b.py\n1 file would be reformatted\n", ROOT)
    assert old.file == "src/b.py" and old.code == "unformatted" and old.fixable


def test_mypy_json_lines_with_zero_based_columns() -> None:
    text = "\n".join(
        [
            json.dumps(
                {
                    "file": "src/app.py",
                    "line": 6,
                    "column": 11,
                    "end_line": 6,
                    "end_column": 12,
                    "message": 'Incompatible return value type (got "int", expected "str")',
                    "hint": None,
                    "code": "return-value",
                    "severity": "error",
                }
            ),
            json.dumps(
                {"file": "src/app.py", "line": 7, "column": 0, "message": "See docs", "code": None, "severity": "note"}
            ),
            '{"file": "cut off by the output cap',
            "Success: no issues found",
        ]
    )
    error, note = parse_mypy_json(text, ROOT)
    assert (error.line, error.column, error.end_column, error.code) == (6, 12, 13, "return-value")
    assert error.tool == "mypy" and error.severity is Severity.ERROR and not error.fixable
    assert note.severity is Severity.NOTE and note.code == "note" and note.column == 1


def _diag(code: str, message: str, fixable: bool, file: str = "a.py") -> LintDiagnostic:
    return LintDiagnostic(
        tool="ruff", file=file, line=1, column=1, code=code, message=message, severity=Severity.ERROR, fixable=fixable
    )


def test_what_fix_fixed_is_the_difference_of_fixable_findings() -> None:
    before = [_diag("F401", "`os` unused", True), _diag("F401", "`os` unused", True), _diag("E711", "none", False)]
    after = [_diag("F401", "`os` unused", True), _diag("E711", "none", False)]
    [fixed] = fixed_between(before, after)
    assert (fixed.file, fixed.code) == ("a.py", "F401")


def test_summary_counts_and_orders() -> None:
    diags = [_diag("F401", "m", True, "b.py"), _diag("E711", "m", False, "a.py")]
    result = summarize(diags, tools={"ruff": "0.6"})
    assert [d.file for d in result.diagnostics] == ["a.py", "b.py"]
    assert (result.errors, result.fixable, result.by_code) == (2, 1, {"F401": 1, "E711": 1})


# --- against a real agent ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tools_venv(base_dir: Path) -> Path:
    """One session venv for this module's agents: ruff and mypy are installed into it once."""
    return make_venv(base_dir, "lint-check-venv")


UNCLEAN = "import os\nimport sys\n\n\ndef f(x: int) -> str:\n    return x\n"


def lint_settings(base_dir: Path, wheels: Path) -> dict[str, Any]:
    return tool_settings(base_dir, wheels, memory_bytes=2 * GiB)


async def test_ruff_finds_problems_in_both_sandbox_modes(
    make_client: MakeClient, base_dir: Path, tool_wheels: Path, tools_venv: Path, sandbox_mode: str
) -> None:
    client = await make_client(sandbox=sandbox_mode, venv_dir=tools_venv, **lint_settings(base_dir, tool_wheels))
    await write(client, "src/app.py", UNCLEAN)
    view = await start_task(client, "/v1/lint/check", path="src", select=["F", "E"])
    assert view.kind == "lint.check" and view.state == "failed" and view.error is None, view
    lint = view.lint
    assert lint is not None and "ruff" in lint.tools
    assert [(d.file, d.line, d.code, d.fixable) for d in lint.diagnostics] == [
        ("src/app.py", 1, "F401", True),
        ("src/app.py", 2, "F401", True),
    ]
    assert (lint.errors, lint.fixable, lint.by_code) == (2, 2, {"F401": 2})
    assert lint.fixed == [] and lint.changed_files == []


async def test_fix_applies_safe_fixes_and_says_what_changed(
    make_client: MakeClient, base_dir: Path, tool_wheels: Path, tools_venv: Path
) -> None:
    client = await make_client(venv_dir=tools_venv, **lint_settings(base_dir, tool_wheels))
    await write(client, "src/app.py", UNCLEAN)
    await write(client, "src/clean.py", "X = 1\n")
    view = await start_task(client, "/v1/lint/check", fix=True, format=True, select=["F"])
    assert view.state == "succeeded" and view.lint is not None, view
    assert {(f.file, f.code) for f in view.lint.fixed} == {("src/app.py", "F401")} and len(view.lint.fixed) == 2
    assert view.lint.changed_files == ["src/app.py"]
    assert view.lint.diagnostics == []
    read = await (await client.post("/v1/fs/read", json={"path": "src/app.py"})).json()
    assert read["content"] == "def f(x: int) -> str:\n    return x\n"


async def test_format_check_lists_unformatted_files(
    make_client: MakeClient, base_dir: Path, tool_wheels: Path, tools_venv: Path
) -> None:
    client = await make_client(venv_dir=tools_venv, **lint_settings(base_dir, tool_wheels))
    await write(client, "ugly.py", "x = {  'a':1 }\n")
    view = await start_task(client, "/v1/lint/check", format=True, select=["F"])
    assert view.lint is not None
    [diag] = view.lint.diagnostics
    assert (diag.tool, diag.file, diag.code, diag.severity) == ("ruff-format", "ugly.py", "unformatted", "warning")
    assert view.state == "succeeded"  # formatting is a warning, not an error


async def test_mypy_type_errors(make_client: MakeClient, base_dir: Path, tool_wheels: Path, tools_venv: Path) -> None:
    client = await make_client(venv_dir=tools_venv, **lint_settings(base_dir, tool_wheels))
    await write(client, "typed.py", 'def f(x: int) -> str:\n    return x\n\n\nf("a")\n')
    view = await start_task(client, "/v1/lint/check", path="typed.py", mypy=True, select=["F"])
    assert view.lint is not None and "mypy" in view.lint.tools, view
    mypy = [d for d in view.lint.diagnostics if d.tool == "mypy"]
    assert [(d.line, d.column, d.code) for d in mypy] == [(2, 12, "return-value"), (5, 3, "arg-type")]
    assert view.state == "failed"


async def test_the_projects_own_ruff_config_is_used_and_config_errors_are_one_sentence(
    make_client: MakeClient, base_dir: Path, tool_wheels: Path, tools_venv: Path
) -> None:
    client = await make_client(venv_dir=tools_venv, **lint_settings(base_dir, tool_wheels))
    await write(client, "mod.py", "import os\n")
    await write(client, "ruff.toml", "[lint]\nignore = ['F401']\n")
    clean = await start_task(client, "/v1/lint/check")
    assert clean.state == "succeeded" and clean.lint is not None and clean.lint.diagnostics == []
    await write(client, "ruff.toml", "[lint\nbroken = \n")
    broken = await start_task(client, "/v1/lint/check")
    assert broken.state == "failed" and broken.error is not None
    assert broken.error.startswith("ruff check could not check the code (exit code 2)")
    assert "\n" not in broken.error and broken.lint is not None and broken.lint.output_tail


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"path": "../x"}, 403, "path_outside_workspace"),
        ({"path": "nowhere"}, 404, "not_found"),
        ({"select": ["F401; rm -rf /"]}, 400, "invalid_argument"),
        ({"select": "F"}, 400, "invalid_argument"),
        ({"fix": "yes please"}, 400, "invalid_argument"),
    ],
)
async def test_bad_lint_arguments(client: AgentClient, body: dict[str, Any], status: int, code: str) -> None:
    resp = await client.post("/v1/lint/check", json=body)
    data = await resp.json()
    assert resp.status == status and data["error"]["code"] == code, data
