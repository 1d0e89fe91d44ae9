"""The six planned tools through the official MCP client, against a real coordinator and real sandbox agents.

test.run / lint.check install pytest, ruff and mypy on first use with the agents' pip, from the user's wheel
cache (the agent tests fill it; the agents download what it lacks); git.clone's success path clones from a
local https git server whose CA reaches the agents as GIT_SSL_CAINFO; uploads go to the local store under a
temp folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import anyio
import pytest
from mcp import ClientSession

from codegen_mcp.sandbox_agent.devtools import default_wheelhouse
from tests.support.mcp_client import call, run, text_of
from tests.unit.sandbox_agent.test_git_clone import GitServer, jailed_git_host, serve_git_over_https

from .conftest import CoordinatorProcess, mcp_session, start_coordinator, state_root, stop_process

pytestmark = pytest.mark.timeout(240)

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed on this machine")

SAMPLE_TESTS = """\
def test_passes():
    assert 1 + 1 == 2

def test_fails():
    value = 41
    assert value == 42, "the answer is 42"
"""


def _start(root: Path, name: str, env: dict[str, str]) -> CoordinatorProcess:
    state = root / name
    state.mkdir()
    base_env = {
        # Anything that would fall back to the user's ~/.cache or ~/.local stays in this test's folder.
        "XDG_CACHE_HOME": str(root / "cache"),
        "XDG_DATA_HOME": str(root / "data"),
        # ...but the dev tools' wheels are read from the user's cache, so the package index is asked once.
        "CODEGEN_AGENT_DEVTOOLS_FIND_LINKS": json.dumps([str(default_wheelhouse(os.environ, root))]),
    }
    return start_coordinator(state, env={**base_env, **env})


@pytest.fixture(scope="module")
def coordinator() -> Iterator[CoordinatorProcess]:
    """The default coordinator (egress off), with caches and the artifact store in a temp folder."""
    for root in state_root():
        cp = _start(root, "state", {})
        try:
            yield cp
        finally:
            stop_process(cp.proc)


@pytest.fixture(scope="module")
def git_server() -> Iterator[GitServer]:
    """On this machine's own address: jailed clones with the network cannot reach the host's loopback."""
    host = jailed_git_host()
    for root in state_root():
        with serve_git_over_https(root / "git", host) as server:
            yield server


@pytest.fixture(scope="module")
def networked(git_server: GitServer) -> Iterator[CoordinatorProcess]:
    """A coordinator whose sandboxes have network egress, trusting the test git server's CA."""
    for root in state_root():
        cp = _start(root, "state", {"CODEGEN_LOCAL_NETWORK": "true", "GIT_SSL_CAINFO": str(git_server.ca_file)})
        try:
            yield cp
        finally:
            stop_process(cp.proc)


async def write(s: ClientSession, path: str, content: str) -> None:
    await call(s, "fs.write", path=path, content=content)


async def refused(s: ClientSession, tool: str, **arguments: Any) -> str:
    result = await s.call_tool(tool, arguments)
    text = text_of(result)
    assert result.is_error, (tool, arguments, text)
    assert "Traceback" not in text and "\n" not in text and 10 < len(text) < 400, text
    return text


# --- test.run -----------------------------------------------------------------------------------------


async def test_test_run_reports_passes_and_failures(coordinator: CoordinatorProcess) -> None:
    async with mcp_session(coordinator) as s:
        await write(s, "tests/test_sample.py", SAMPLE_TESTS)
        result = await call(s, "test.run")  # failing tests are an answer, not a tool error
        view = result.structured_content
        assert view["kind"] == "test.run" and view["state"] == "failed"
        test = view["test"]
        assert (test["passed"], test["failed"], test["errors"], test["skipped"]) == (1, 1, 0, 0)
        [failure] = test["failures"]
        assert failure["node_id"] == "tests/test_sample.py::test_fails"
        assert failure["message"] == "AssertionError: the answer is 42"
        text = text_of(result)
        assert "Tests: 1 passed, 1 failed, 0 errors, 0 skipped" in text
        assert "tests/test_sample.py::test_fails (failed): AssertionError: the answer is 42" in text

        only = (await call(s, "test.run", paths=["tests/test_sample.py::test_passes"])).structured_content
        assert only["state"] == "succeeded" and only["test"]["passed"] == 1 and only["test"]["total"] == 1


async def test_test_run_progress_and_the_task_fallback(coordinator: CoordinatorProcess) -> None:
    seen: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message)

    slow = "import time\n\ndef test_slow():\n    time.sleep(3)\n"
    async with mcp_session(coordinator) as s:
        await write(s, "test_slow.py", slow)
        result = await s.call_tool("test.run", {"paths": ["test_slow.py"]}, progress_callback=on_progress)
        assert not result.is_error and result.structured_content["test"]["passed"] == 1
        assert len(seen) >= 2 and any(m and "pytest" in m for m in seen), seen

        started = (await call(s, "test.run", paths=["test_slow.py"], wait_s=0.2)).structured_content
        assert started["state"] in ("queued", "running") and started["test"] is None
        done = (await call(s, "task.get_result", task_id=started["task_id"], wait_s=60)).structured_content
        assert done["state"] == "succeeded" and done["test"]["passed"] == 1


# --- lint.check ---------------------------------------------------------------------------------------


async def test_lint_check_finds_and_fixes(coordinator: CoordinatorProcess) -> None:
    async with mcp_session(coordinator) as s:
        await write(s, "app.py", "import os\nimport sys\n\nprint(undefined_name)\n")
        found = await call(s, "lint.check", select=["F"])
        lint = found.structured_content["lint"]
        codes = [(d["line"], d["code"], d["fixable"]) for d in lint["diagnostics"]]
        assert codes == [(1, "F401", True), (2, "F401", True), (4, "F821", False)]
        assert lint["errors"] == 3 and lint["fixable"] == 2
        assert "app.py:1:8: F401 [fixable]" in text_of(found)

        fixed = await call(s, "lint.check", select=["F"], fix=True)
        lint = fixed.structured_content["lint"]
        assert len(lint["fixed"]) == 2 and lint["changed_files"] == ["app.py"]
        assert [d["code"] for d in lint["diagnostics"]] == ["F821"]
        assert "Fixed 2 issue(s) (F401 ×2); changed files: app.py" in text_of(fixed)
        assert text_of(await call(s, "fs.read", path="app.py")).strip() == "print(undefined_name)"


async def test_lint_check_with_mypy(coordinator: CoordinatorProcess) -> None:
    async with mcp_session(coordinator) as s:
        await write(s, "typed.py", "def double(x: int) -> int:\n    return x * 2\n\n\ndouble('2')\n")
        result = await call(s, "lint.check", mypy=True, select=["F"])
        diags = result.structured_content["lint"]["diagnostics"]
        assert [(d["tool"], d["line"], d["code"]) for d in diags] == [("mypy", 5, "arg-type")]
        assert "mypy" in result.structured_content["lint"]["tools"]


# --- git.clone / git.commit ------------------------------------------------------------------------------


@needs_git
async def test_git_clone_is_refused_with_egress_off(coordinator: CoordinatorProcess) -> None:
    async with mcp_session(coordinator) as s:
        text = await refused(s, "git.clone", url="https://github.com/pallets/click.git")
        assert "no network egress" in text
        assert "https://" in await refused(s, "git.clone", url="git@github.com:pallets/click.git")
        assert "credentials" in await refused(s, "git.clone", url="https://user:pw@github.com/a/b.git")
        assert "local paths" in await refused(s, "git.clone", url="/etc")


@needs_git
async def test_git_clone_then_commit_with_egress_on(networked: CoordinatorProcess, git_server: GitServer) -> None:
    async with mcp_session(networked) as s:
        result = await call(s, "git.clone", url=git_server.repo_url, depth=1)
        clone = result.structured_content["clone"]
        assert (clone["dest"], clone["commit"], clone["branch"]) == ("demo", git_server.head, "main")
        assert text_of(result).startswith(f"Cloned {git_server.repo_url} into demo/ at {git_server.head[:12]}")
        assert text_of(await call(s, "fs.read", path="demo/pkg/__init__.py")) == "VALUE = 2\n"

        await write(s, "demo/pkg/extra.py", "EXTRA = True\n")
        committed = (await call(s, "git.commit", repo="demo", message="add extra")).structured_content
        assert committed["branch"] == "main" and [f["path"] for f in committed["files"]] == ["pkg/extra.py"]

        missing = await s.call_tool("git.clone", {"url": f"{git_server.base_url}/nope.git", "dest": "nope"})
        assert missing.is_error and "no repository was found" in text_of(missing)


@needs_git
async def test_git_commit_and_nothing_to_commit(coordinator: CoordinatorProcess) -> None:
    async with mcp_session(coordinator) as s:
        await write(s, "main.py", "print('v1')\n")
        assert "init=true" in await refused(s, "git.commit", message="first")
        first = await call(
            s, "git.commit", message="first", init=True, author_name="Ada", author_email="ada@example.com"
        )
        data = first.structured_content
        assert data["initialized"] and data["files_changed"] == 1 and data["author"] == "Ada <ada@example.com>"
        assert text_of(first).startswith(f"Committed {data['commit'][:12]} on main in . (new repository)")
        text = await refused(s, "git.commit", message="again")
        assert text.startswith("Nothing to commit")
        await write(s, "main.py", "print('v2')\n")
        second = (await call(s, "git.commit", message="second", paths=["main.py"])).structured_content
        assert second["diffstat"] == "1 file changed, 1 insertion(+), 1 deletion(-)"


# --- artifact.list / artifact.upload ------------------------------------------------------------------


async def test_artifact_list_and_upload(coordinator: CoordinatorProcess) -> None:
    async with mcp_session(coordinator) as s:
        empty = await call(s, "artifact.list")
        assert empty.structured_content["artifacts"] == [] and "No artifacts yet" in text_of(empty)
        made = await run(s, "open('report.csv','w').write('a,b\\n1,2\\n')")
        [art] = made["run"]["artifacts"]
        listed = await call(s, "artifact.list")
        [info] = listed.structured_content["artifacts"]
        assert info["artifact_id"] == art["artifact_id"] and info["task_id"] == made["task_id"]
        assert art["artifact_id"] in text_of(listed) and "report.csv" in text_of(listed)

        uploaded = await call(s, "artifact.upload", artifact_id=art["artifact_id"])
        result = uploaded.structured_content
        assert result["store"] == "local" and result["uri"].startswith("file://")
        assert result["sha256"] == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
        copy = Path(url2pathname(urlsplit(result["uri"]).path))
        assert copy.read_bytes() == b"a,b\n1,2\n"
        # The local backend's store: under the state dir, outside every workspace, so it outlives the session.
        assert copy.is_relative_to(coordinator.state_dir / "artifacts")
        assert "workspace" not in copy.parts
        assert result["uri"] in text_of(uploaded) and result["sha256"] in text_of(uploaded)

        by_path = (await call(s, "artifact.upload", path="report.csv")).structured_content
        assert by_path["artifact"]["artifact_id"] != art["artifact_id"] and by_path["sha256"] == result["sha256"]
        relisted = (await call(s, "artifact.list", limit=1)).structured_content
        assert relisted["total"] == 2 and relisted["truncated"] and relisted["artifacts"][0]["uri"] == by_path["uri"]

        assert "art_0000000000000000" in await refused(s, "artifact.upload", artifact_id="art_0000000000000000")


# --- errors and audit ---------------------------------------------------------------------------------

BAD_CALLS = [
    ("test.run", {"paths": ["../outside"]}),
    ("test.run", {"paths": ["no_such_test.py"]}),
    ("test.run", {"timeout_s": -1}),
    ("lint.check", {"path": "missing"}),
    ("lint.check", {"select": ["not a rule"]}),
    ("git.clone", {}),
    ("git.clone", {"url": "file:///etc/passwd"}),
    ("git.clone", {"url": "https://github.com/a/b", "branch": "--upload-pack=sh"}),
    ("git.commit", {"message": ""}),
    ("git.commit", {"message": "m", "repo": "../.."}),
    ("artifact.list", {"limit": 0}),
    ("artifact.upload", {}),
    ("artifact.upload", {"artifact_id": "a", "path": "b"}),
    ("artifact.upload", {"path": "/etc/passwd"}),
]


async def test_bad_arguments_get_one_clear_sentence(coordinator: CoordinatorProcess) -> None:
    async with mcp_session(coordinator) as s:
        for tool, args in BAD_CALLS:
            await refused(s, tool, **args)
        assert text_of(await call(s, "echo", message="alive")) == "alive"


async def test_the_planned_tools_are_audited(coordinator: CoordinatorProcess) -> None:
    async with mcp_session(coordinator) as s:
        await s.call_tool("artifact.upload", {"artifact_id": "art_00000000a0d17ed0"})
        await call(s, "artifact.list", limit=3)

    def entries() -> list[dict[str, Any]]:
        return [json.loads(x) for x in coordinator.audit_log.read_text().splitlines()]

    with anyio.fail_after(10):
        while not [e for e in entries() if e["tool"] == "artifact.list"]:
            await anyio.sleep(0.05)
    upload = [
        e
        for e in entries()
        if e["tool"] == "artifact.upload" and e["args"].get("artifact_id") == "art_00000000a0d17ed0"
    ]
    assert upload and upload[-1]["outcome"] == "error" and upload[-1]["error_code"] == "artifact_not_found"
