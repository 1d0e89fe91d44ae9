"""test.run: the JUnit report reader, installing pytest into the session venv, and pytest run by a real agent.

The tools are installed by the agent's jailed pip from a folder of real wheels (`tool_wheels`: downloaded
once per machine into the wheelhouse cache), with downloading turned off, so the agents here never need
the package index.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from codegen_mcp.api.errors import CodegenError, NotFound, WorkspaceEscape
from codegen_mcp.api.tools import TaskView
from codegen_mcp.sandbox_agent.agent import AGENT
from codegen_mcp.sandbox_agent.isolation import find_bwrap
from codegen_mcp.sandbox_agent.reports import node_id, parse_junit
from codegen_mcp.sandbox_agent.toolruns import pytest_targets
from codegen_mcp.sandbox_agent.venv import default_base_python
from codegen_mcp.sandbox_agent.workspace import Workspace

from .conftest import AgentClient, MakeClient, pypi_reachable

TESTS = """\
import pytest

def test_ok():
    pass

def test_fails():
    x = 1
    assert x == 2, "x should be two"

class TestGroup:
    @pytest.mark.parametrize("v", [1, 2])
    def test_param(self, v):
        assert v == 1

@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")

def test_errors(broken):
    pass

@pytest.mark.skip(reason="not today")
def test_skipped():
    pass
"""


async def start_task(client: AgentClient, route: str, **body: Any) -> TaskView:
    resp = await client.post(route, json={"wait_s": 120, **body})
    data = await resp.json()
    assert resp.status == 200, data
    return TaskView.model_validate(data)


async def write(client: AgentClient, path: str, content: str) -> None:
    resp = await client.post("/v1/fs/write", json={"path": path, "content": content})
    assert resp.status == 200, await resp.json()


def tool_settings(base_dir: Path, wheels: Path, **extra: Any) -> dict[str, Any]:
    """Offline tool installs: the real wheels as a read-only folder, an empty wheelhouse, no downloads."""
    return {
        "devtools_find_links": [wheels],
        "devtools_wheelhouse": base_dir / "wheelhouse",
        "devtools_download": False,
        "artifact_store_dir": base_dir / "artifact-store",
        **extra,
    }


def make_venv(base_dir: Path, name: str) -> Path:
    venv = base_dir / f"{name}-{os.getpid()}"
    if not venv.exists():
        subprocess.run([default_base_python(None), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return venv


@pytest.fixture(scope="module")
def tools_venv(base_dir: Path) -> Path:
    """One session venv for this module's agents: the tools are installed into it once."""
    return make_venv(base_dir, "test-run-venv")


# --- the JUnit report --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("classname", "name", "file", "expected"),
    [
        ("tests.test_a", "test_ok", "tests/test_a.py", "tests/test_a.py::test_ok"),
        ("tests.test_a.TestGroup", "test_param[2]", "tests/test_a.py", "tests/test_a.py::TestGroup::test_param[2]"),
        ("tests.test_a.Outer.Inner", "test_x", "tests/test_a.py", "tests/test_a.py::Outer::Inner::test_x"),
        ("test_top", "test_y", "test_top.py", "test_top.py::test_y"),
        ("", "tests.test_bad", "tests/test_bad.py", "tests/test_bad.py"),  # a collection error
        ("tests.test_a", "test_ok", None, "tests.test_a::test_ok"),
    ],
)
def test_node_ids_from_xunit1_testcases(classname: str, name: str, file: str | None, expected: str) -> None:
    assert node_id(classname, name, file) == expected


JUNIT = b"""<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests"><testsuite name="pytest" errors="1" failures="2" skipped="2" tests="7">
<testcase classname="tests.test_a" name="test_ok" file="tests/test_a.py" line="2" time="0.001"/>
<testcase classname="tests.test_a" name="test_fails" file="tests/test_a.py" line="5" time="0.005">
<failure message="AssertionError: x should be two&#10;assert 1 == 2">tests/test_a.py:7: in test_fails
    assert x == 2, "x should be two"
E   AssertionError: x should be two</failure></testcase>
<testcase classname="tests.test_a.TestGroup" name="test_param[2]" file="tests/test_a.py" line="10" time="0.25">
<failure message="assert 2 == 1">E   assert 2 == 1</failure></testcase>
<testcase classname="tests.test_a" name="test_errors" file="tests/test_a.py" line="18" time="0.001">
<error message="failed on setup with &quot;RuntimeError: fixture broke&quot;">E   RuntimeError: fixture broke</error>
</testcase>
<testcase classname="tests.test_a" name="test_skipped" file="tests/test_a.py" line="21" time="0"><skipped/></testcase>
<testcase classname="tests.test_a" name="test_xf" file="tests/test_a.py" line="25" time="0">
<skipped type="pytest.xfail" message=""/></testcase>
</testsuite></testsuites>"""


def test_junit_counts_and_failures() -> None:
    report = parse_junit(JUNIT)
    assert (report.passed, report.failed, report.errors, report.skipped) == (1, 2, 1, 2)
    first, second, third = report.failures
    assert first.node_id == "tests/test_a.py::test_fails" and first.outcome == "failed"
    assert first.message == "AssertionError: x should be two"
    assert "E   AssertionError: x should be two" in first.traceback
    assert second.node_id == "tests/test_a.py::TestGroup::test_param[2]" and second.duration_s == 0.25
    assert third.outcome == "error" and third.message == 'failed on setup with "RuntimeError: fixture broke"'


def test_a_collection_error_names_the_module_and_its_reason() -> None:
    xml = (
        b'<testsuites><testsuite><testcase classname="" name="tests.test_bad" file="tests/test_bad.py">'
        b'<error message="collection failure">tests/test_bad.py:1: in &lt;module&gt;\n    import nope\n'
        b"E   ModuleNotFoundError: No module named 'nope'</error></testcase></testsuite></testsuites>"
    )
    [failure] = parse_junit(xml).failures
    assert failure.node_id == "tests/test_bad.py" and failure.outcome == "error"
    assert failure.message == "ModuleNotFoundError: No module named 'nope'"


def test_failures_are_capped_but_counted() -> None:
    cases = b"".join(
        b'<testcase classname="t" name="test_%d" file="t.py"><failure message="m"/></testcase>' % i for i in range(7)
    )
    report = parse_junit(b"<testsuite>" + cases + b"</testsuite>", max_failures=3)
    assert report.failed == 7 and len(report.failures) == 3


@pytest.mark.parametrize(
    "xml",
    [
        b"not xml at all",
        b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c '
        b'"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;"><!ENTITY e '
        b'"&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;"><!ENTITY g '
        b'"&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;"><!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">]><x>&h;&h;&h;</x>',
    ],
)
def test_a_bad_or_hostile_report_is_one_error(xml: bytes) -> None:
    with pytest.raises(CodegenError) as info:
        parse_junit(xml)
    assert "JUnit report could not be read" in info.value.message


# --- test paths -----------------------------------------------------------------------------------------


def test_test_paths_stay_in_the_workspace(workspace: Path) -> None:
    ws = Workspace(workspace)
    (workspace / "tests").mkdir()
    (workspace / "tests" / "test_a.py").write_text("def test_a(): pass\n")
    assert pytest_targets(ws, ["tests/test_a.py::test_a", "/tests", "."]) == ["tests/test_a.py::test_a", "tests", "."]
    with pytest.raises(WorkspaceEscape):
        pytest_targets(ws, ["../elsewhere"])
    with pytest.raises(NotFound):
        pytest_targets(ws, ["tests/missing.py"])
    os.symlink("/etc", workspace / "etc")
    with pytest.raises(WorkspaceEscape):
        pytest_targets(ws, ["etc/passwd"])


# --- test.run against a real agent -------------------------------------------------------------------


async def test_test_run_reports_counts_and_each_failure(
    make_client: MakeClient, base_dir: Path, tool_wheels: Path, tools_venv: Path, sandbox_mode: str
) -> None:
    client = await make_client(sandbox=sandbox_mode, venv_dir=tools_venv, **tool_settings(base_dir, tool_wheels))
    await write(client, "tests/test_sample.py", TESTS)
    view = await start_task(client, "/v1/test/run")
    assert view.kind == "test.run" and view.state == "failed", view
    test = view.test
    assert test is not None and view.error is None
    assert (test.passed, test.failed, test.errors, test.skipped, test.total) == (2, 2, 1, 1, 6)
    assert test.exit_code == 1 and test.pytest_version
    by_id = {f.node_id: f for f in test.failures}
    assert set(by_id) == {
        "tests/test_sample.py::test_fails",
        "tests/test_sample.py::TestGroup::test_param[2]",
        "tests/test_sample.py::test_errors",
    }
    assert by_id["tests/test_sample.py::test_fails"].message == "AssertionError: x should be two"
    assert "assert x == 2" in by_id["tests/test_sample.py::test_fails"].traceback
    assert by_id["tests/test_sample.py::test_errors"].outcome == "error"
    assert "2 failed, 2 passed, 1 skipped, 1 error" in test.output_tail
    # The JUnit report was removed, and pytest left no cache behind.
    listing = await (await client.post("/v1/fs/list", json={"recursive": True})).json()
    names = {e["name"] for e in listing["entries"]}
    assert not [n for n in names if "junit" in n or ".pytest_cache" in n], names


async def test_test_run_selects_by_node_id_and_keyword(
    make_client: MakeClient, base_dir: Path, tool_wheels: Path, tools_venv: Path
) -> None:
    client = await make_client(venv_dir=tools_venv, **tool_settings(base_dir, tool_wheels))
    await write(client, "tests/test_sample.py", TESTS)
    one = await start_task(client, "/v1/test/run", paths=["tests/test_sample.py::test_ok"])
    assert one.state == "succeeded" and one.test is not None
    assert (one.test.passed, one.test.total) == (1, 1)
    by_k = await start_task(client, "/v1/test/run", path="tests", k="param")
    assert by_k.test is not None and (by_k.test.passed, by_k.test.failed) == (1, 1)
    none = await start_task(client, "/v1/test/run", keyword="nothing_matches_this")
    assert none.test is not None and none.test.exit_code == 5 and none.test.total == 0
    assert none.error is None  # pytest ran and reported: "no tests" is an answer, not a failure to run


async def test_the_first_run_installs_pytest_into_a_fresh_venv_and_the_next_needs_no_wheels(
    make_client: MakeClient, base_dir: Path, tool_wheels: Path, workspace: Path
) -> None:
    client = await make_client(venv_dir=None, **tool_settings(base_dir, tool_wheels))  # the workspace's own venv
    await write(client, "test_one.py", "def test_one():\n    assert True\n")
    view = await start_task(client, "/v1/test/run")
    assert view.state == "succeeded" and view.test is not None, view
    assert view.test.passed == 1 and view.test.pytest_version
    code = "import pytest, sys; print(pytest.__file__.startswith(sys.prefix))"
    run = await (await client.post("/v1/run/python", json={"code": code})).json()
    assert run["run"]["stdout"] == "True\n"  # installed into the session venv, usable by run.python too

    # Another agent on the same venv, with no wheels at all: the installed tools are read from the venv's
    # metadata and pip is not run again.
    empty = base_dir / f"empty-wheelhouse-{os.urandom(3).hex()}"
    again = await make_client(venv_dir=workspace / ".venv", **tool_settings(base_dir, empty, devtools_wheelhouse=empty))
    second = await start_task(again, "/v1/test/run")
    assert second.state == "succeeded" and second.test is not None and second.test.passed == 1, second
    assert second.test.pytest_version == view.test.pytest_version


async def test_no_wheel_and_no_download_is_one_clear_error(make_client: MakeClient, base_dir: Path) -> None:
    empty = base_dir / f"empty-wheelhouse-{os.urandom(3).hex()}"
    client = await make_client(venv_dir=None, **tool_settings(base_dir, empty, devtools_wheelhouse=empty))
    await write(client, "test_one.py", "def test_one():\n    pass\n")
    view = await start_task(client, "/v1/test/run")
    assert view.state == "failed" and view.test is None
    assert view.error is not None and "pytest" in view.error and "downloading is turned off" in view.error
    assert "\n" not in view.error


async def test_a_wheel_folder_without_the_tool_is_named_in_one_clear_error(
    make_client: MakeClient, base_dir: Path, tool_wheels: Path
) -> None:
    only_ruff = base_dir / f"only-ruff-{os.urandom(3).hex()}"
    only_ruff.mkdir()
    for wheel in tool_wheels.glob("ruff-*.whl"):
        os.link(wheel, only_ruff / wheel.name)
    client = await make_client(venv_dir=None, **tool_settings(base_dir, only_ruff, devtools_wheelhouse=only_ruff))
    await write(client, "test_one.py", "def test_one():\n    pass\n")
    view = await start_task(client, "/v1/test/run")
    assert view.state == "failed" and view.test is None
    assert view.error is not None and "\n" not in view.error
    assert view.error.startswith("pytest>=7 could not be installed into the session venv: no wheel for pytest>=7 ")
    assert str(only_ruff) in view.error and "downloading is turned off" in view.error


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root agent runs pip as a separate sandbox uid")
@pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap (bwrap) is not installed on this machine")
async def test_the_tools_are_installed_by_the_jailed_pip_as_the_session_uid(
    make_client: MakeClient, base_dir: Path, tool_wheels: Path, workspace: Path
) -> None:
    client = await make_client(sandbox="bwrap", venv_dir=None, **tool_settings(base_dir, tool_wheels))
    await write(client, "test_one.py", "def test_one():\n    pass\n")
    view = await start_task(client, "/v1/test/run")
    assert view.state == "succeeded", view
    executor = client.app[AGENT].executor
    assert executor.sandbox.jail is not None and executor.owner is not None
    (site,) = executor.site_packages()
    (info,) = site.glob("pytest-*.dist-info")
    assert (info / "INSTALLER").read_text().strip() == "pip"
    written = [info, info / "RECORD", site / "pytest", site / "_pytest" / "__init__.py", workspace / ".venv/bin/pytest"]
    assert {path.lstat().st_uid for path in written} == {executor.owner.uid}


@pytest.mark.network
@pytest.mark.skipif(not pypi_reachable(), reason="no route to the package index (pypi.org:443)")
async def test_missing_wheels_are_downloaded_once_into_the_wheelhouse(make_client: MakeClient, base_dir: Path) -> None:
    house = base_dir / f"download-wheelhouse-{os.urandom(3).hex()}"
    settings = tool_settings(base_dir, house, devtools_download=True, devtools_wheelhouse=house)
    client = await make_client(venv_dir=None, **settings)
    await write(client, "test_one.py", "def test_one():\n    pass\n")
    view = await start_task(client, "/v1/test/run")
    assert view.state == "succeeded" and view.test is not None and view.test.passed == 1, view
    wheels = sorted(p.name.split("-")[0].lower() for p in house.glob("*.whl"))
    assert "pytest" in wheels and "pluggy" in wheels
    assert not [p for p in house.iterdir() if p.name.startswith(".download")]  # no staging left behind


async def test_a_timeout_stops_pytest_and_keeps_its_output(
    make_client: MakeClient, base_dir: Path, tool_wheels: Path, tools_venv: Path
) -> None:
    client = await make_client(venv_dir=tools_venv, **tool_settings(base_dir, tool_wheels))
    await write(client, "test_slow.py", "import time\n\ndef test_slow():\n    time.sleep(60)\n")
    view = await start_task(client, "/v1/test/run", timeout_s=3)
    assert view.state == "timed_out" and view.test is not None
    assert view.test.timed_out and "test_slow.py" in view.test.output_tail
    assert "killed after 3 s" in (view.error or "")


async def test_a_usage_error_is_reported_from_pytests_output(
    make_client: MakeClient, base_dir: Path, tool_wheels: Path, tools_venv: Path
) -> None:
    client = await make_client(venv_dir=tools_venv, **tool_settings(base_dir, tool_wheels))
    await write(client, "pytest.ini", "[pytest]\naddopts = --no-such-option\n")
    view = await start_task(client, "/v1/test/run")
    assert view.state == "failed" and view.test is not None and view.test.exit_code == 4
    assert view.error is not None and "exit code 4" in view.error and "--no-such-option" in view.error


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"paths": ["../outside"]}, 403, "path_outside_workspace"),
        ({"paths": ["missing_test.py"]}, 404, "not_found"),
        ({"paths": "tests", "timeout_s": 0}, 400, "invalid_argument"),
        ({"k": ""}, 400, "invalid_argument"),
        ({"unknown": 1}, 400, "invalid_argument"),
    ],
)
async def test_bad_test_run_arguments(client: AgentClient, body: dict[str, Any], status: int, code: str) -> None:
    resp = await client.post("/v1/test/run", json=body)
    data = await resp.json()
    assert resp.status == status and data["error"]["code"] == code, data
    assert "\n" not in data["error"]["message"]


async def test_progress_names_the_share_of_tests_done(
    make_client: MakeClient, base_dir: Path, tool_wheels: Path, tools_venv: Path
) -> None:
    client = await make_client(venv_dir=tools_venv, **tool_settings(base_dir, tool_wheels))
    await write(
        client, "test_many.py", "import pytest\n\n@pytest.mark.parametrize('i', range(4))\ndef test_i(i):\n    pass\n"
    )
    view = await start_task(client, "/v1/test/run")
    assert view.state == "succeeded"
    assert view.progress.message == "pytest: 100% of the tests done"


async def test_a_report_swapped_for_a_symlink_is_not_followed(
    make_client: MakeClient, base_dir: Path, tool_wheels: Path, tools_venv: Path
) -> None:
    # A test that replaces the report with a link to a file outside must not make the agent read that file.
    client = await make_client(venv_dir=tools_venv, **tool_settings(base_dir, tool_wheels))
    code = (
        "import atexit, glob, os\n\n"
        "def test_swap():\n"
        "    def swap():\n"
        "        for p in glob.glob('.codegen-junit-*.xml'):\n"
        "            os.remove(p)\n"
        "            os.symlink('/etc/passwd', p)\n"
        "    atexit.register(swap)\n"
    )
    await write(client, "test_swap.py", code)
    view = await start_task(client, "/v1/test/run")
    assert view.test is not None
    assert "root:" not in view.model_dump_json()
