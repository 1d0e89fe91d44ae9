"""The local backend under abuse, as an attacker (or a crash) would try it, through real coordinators over MCP.

Each test here reproduces a finding of issue 10 that once held on the local backend:
A. a 2,000-deep tree in the workspace made the session's deletion raise `RecursionError` (left on disk);
F. a named workspace got another uid after a restart, and its old uid went to an unrelated session;
G. per-session folders (and processes) of a killed coordinator were never removed;
H. `task_id` / `artifact_id` went unchecked into the agent's URL (`../../healthz` reached `/healthz`);
I. two coordinators on one host handed out the same uids.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp import ClientSession
from pydantic import ValidationError

from codegen_mcp.api.errors import SandboxUnavailable
from codegen_mcp.api.tools import ARTIFACT_ID_PATTERN, TASK_ID_PATTERN, ArtifactGetArgs, TaskIdArgs
from codegen_mcp.coordinator.backends import cleanup
from codegen_mcp.coordinator.backends.cleanup import kill_processes_of, processes_of, remove_tree
from codegen_mcp.coordinator.backends.uids import UidRegistry, UidTaken
from tests.integration.conftest import mcp_session
from tests.support.coordinator import (
    CoordinatorProcess,
    print_log_tail,
    private_uid_registry,
    start_coordinator,
    stop_process,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="sandbox uids are per session only when the coordinator is root")
WORKSPACE = {"Codegen-Workspace": "keep-me"}


# --- helpers ----------------------------------------------------------------------------------------


@pytest.fixture
def root() -> Iterator[Path]:
    """A temp folder sandbox uids can traverse, removed even when a failed test left a deep tree in it."""
    path = Path(tempfile.mkdtemp(prefix="codegen-mcp-abuse-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        remove_tree(path)


def registry_env(root: Path) -> dict[str, str]:
    """Coordinators of one test share one uid registry, as coordinators on one host share the default one."""
    return private_uid_registry(root / "uid-registry")


@contextlib.contextmanager
def running(root: Path, name: str = "state", *extra: str) -> Iterator[CoordinatorProcess]:
    with running_side_by_side(root, [name], *extra) as [cp]:
        yield cp


@contextlib.contextmanager
def running_side_by_side(root: Path, names: list[str], *extra: str) -> Iterator[list[CoordinatorProcess]]:
    """Coordinators with state folders `names` under `root`, started at the same time."""

    def start(name: str) -> CoordinatorProcess:
        (root / name).mkdir(exist_ok=True)
        # No warm pool: these tests count the folders, uids and processes of the sessions they open.
        return start_coordinator(root / name, "--warm-pool", "0", *extra, env=registry_env(root))

    with ThreadPoolExecutor() as pool:
        starts = [pool.submit(start, name) for name in names]
    started = [f.result() for f in starts if f.exception() is None]
    try:
        if len(started) < len(starts):
            raise next(e for f in starts if (e := f.exception()) is not None)
        yield started
    finally:
        for cp in started:
            stop_process(cp.proc)
            print_log_tail(cp)


def session_dirs(cp: CoordinatorProcess, prefix: str = "") -> list[Path]:
    sessions = cp.state_dir / "sessions"
    if not sessions.exists():
        return []
    return sorted(p for p in sessions.iterdir() if p.is_dir() and p.name.startswith(prefix))


def text_of(result: Any) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


async def call(session: ClientSession, tool: str, **arguments: Any) -> Any:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, f"{tool} failed: {text_of(result)}"
    return result


async def run(session: ClientSession, code: str) -> str:
    result = await call(session, "run.python", code=textwrap.dedent(code), wait_s=30)
    run_result = result.structured_content["run"]
    assert run_result["exit_code"] == 0, run_result["stderr"]
    return str(run_result["stdout"])


async def uid_of(session: ClientSession) -> int:
    return int(await run(session, "import os; print(os.getuid())"))


@contextlib.asynccontextmanager
async def sessions_of_a_coordinator_that_dies(
    cp: CoordinatorProcess, *headers: dict[str, str] | None
) -> AsyncIterator[list[ClientSession]]:
    """MCP sessions whose coordinator is SIGKILLed at the end of the block (the clients then fail to say bye)."""
    with anyio.fail_after(30):
        stack = contextlib.AsyncExitStack()
        try:
            yield [await stack.enter_async_context(mcp_session(cp, headers=h)) for h in headers]
        finally:
            cp.proc.kill()
            cp.proc.wait()
            with contextlib.suppress(Exception):  # the clients' goodbyes find no server
                await stack.aclose()


@pytest.fixture
def daemons() -> Iterator[list[int]]:
    """Uids whose processes a test leaves running on purpose: killed at its end, whatever its outcome."""
    uids: list[int] = []
    yield uids
    for uid in uids:
        kill_processes_of(uid)


# Run code (no jail: sandbox=none) that leaves a daemon behind: a new session escapes the run's process group.
DAEMON = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        time.sleep(300)
    os._exit(0)
os.wait()
print(os.getuid())
"""


# --- A: deletion that cannot recurse ------------------------------------------------------------------


async def test_a_2000_deep_tree_from_fs_write_is_removed_when_the_session_ends(root: Path) -> None:
    with running(root) as cp:
        async with mcp_session(cp) as s:
            await call(s, "fs.write", path="d/" * 2000 + "leaf.txt", content="deep")
            assert len(session_dirs(cp)) == 1
        await eventually(lambda: not session_dirs(cp), timeout=15, what="the deep workspace to be removed")
        assert "RecursionError" not in cp.log_tail(400)


async def test_a_run_that_nests_1200_folders_is_removed_when_the_session_ends(root: Path) -> None:
    nest = """
    import os
    for _ in range(1200):
        os.mkdir("n")
        os.chdir("n")
    open("leaf", "w").write("x")
    """
    with running(root) as cp:
        async with mcp_session(cp) as s:
            await run(s, nest)
        await eventually(lambda: not session_dirs(cp), timeout=15, what="the nested workspace to be removed")
        assert "RecursionError" not in cp.log_tail(400)


async def test_removing_a_workspace_never_follows_its_symlinks_out(root: Path) -> None:
    outside = root / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "precious.txt").write_text("keep")
    (outside / "sub" / "also.txt").write_text("keep")
    outside.chmod(0o777)  # the sandbox uid could even write there: removal must still leave it alone
    links = f"""
    import os
    os.symlink({str(outside)!r}, "to-outside")
    os.symlink({str(outside / "precious.txt")!r}, "to-file")
    os.makedirs("deep/" * 300, exist_ok=True)
    os.symlink({str(outside)!r}, "deep/" * 300 + "down-here")
    os.symlink(".", "loop")
    os.symlink("/", "to-root")
    """
    with running(root) as cp:
        async with mcp_session(cp) as s:
            await run(s, links)
        await eventually(lambda: not session_dirs(cp), timeout=15, what="the workspace to be removed")
    assert (outside / "precious.txt").read_text() == "keep"
    assert (outside / "sub" / "also.txt").read_text() == "keep"


def test_remove_tree_of_5000_levels_keeps_few_files_open(root: Path) -> None:
    """5,000 levels with at most 64 open files: deletion must neither recurse nor hold one fd per level."""
    script = textwrap.dedent(
        f"""
        import os, resource
        from pathlib import Path
        from codegen_mcp.coordinator.backends.cleanup import remove_tree
        top = Path({str(root / "top")!r})
        top.mkdir()
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        for _ in range(5000):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(os.open("file", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        remove_tree(top)
        print("gone" if not os.path.lexists(top) else "left")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "gone"


def test_remove_tree_takes_links_as_names_and_clears_what_it_may_not_read(root: Path) -> None:
    outside = root / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    top = root / "top"
    (top / "a" / "b").mkdir(parents=True)
    (top / "a" / "b" / "f").write_text("x")
    (top / "link-dir").symlink_to(outside)
    (top / "a" / "link-file").symlink_to(outside / "precious")
    (top / "a" / "loop").symlink_to("..")
    os.mkfifo(top / "fifo")
    (top / "a" / "b").chmod(0)  # unreadable and unwritable, even to its owner
    (top / "a").chmod(0o500)
    remove_tree(top)
    assert not top.exists()
    assert (outside / "precious").read_text() == "keep"
    # A top that is itself a symlink loses the link only; a missing one is already removed.
    (root / "alias").symlink_to(outside)
    remove_tree(root / "alias")
    assert not (root / "alias").is_symlink() and (outside / "precious").exists()
    remove_tree(root / "never-was")


def test_remove_tree_as_a_plain_user_clears_folders_their_owner_locked(root: Path) -> None:
    """Without root, a folder made unreadable (or unwritable) by the code that owns it must still go."""
    script = textwrap.dedent(
        f"""
        import importlib.util, os
        from pathlib import Path
        spec = importlib.util.spec_from_file_location("cleanup", {str(Path(cleanup.__file__))!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        top = Path({str(root / "plain" / "top")!r})
        (top / "a" / "b" / "c").mkdir(parents=True)
        (top / "a" / "b" / "c" / "f").write_text("x")
        (top / "a" / "b" / "c").chmod(0)
        (top / "a" / "b").chmod(0o100)
        (top / "a").chmod(0o500)
        module.remove_tree(top)
        print("gone" if not os.path.lexists(top) else "left")
        """
    )
    (root / "plain").mkdir()
    python, user = sys.executable, None
    if IS_ROOT:  # run as nobody, with the system python (the default one may sit in a 0700 home)
        python, user = "/usr/bin/python3", 65534
        if not os.access(python, os.X_OK):
            pytest.skip(reason="needs /usr/bin/python3 to run as an unprivileged uid")
        os.chown(root / "plain", 65534, 65534)
    done = subprocess.run(
        [python, "-c", script], capture_output=True, text=True, timeout=30, check=False, user=user, cwd="/"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "gone"


# --- F: a named workspace keeps its uid, and nobody else gets it ---------------------------------------


@needs_root
async def test_a_named_workspace_keeps_its_uid_across_a_restart_and_no_one_else_gets_it(root: Path) -> None:
    with running(root) as cp:
        async with mcp_session(cp) as plain:
            await uid_of(plain)  # a per-session sandbox first, so the named one is not the first uid handed out
            async with mcp_session(cp, headers=WORKSPACE) as named:
                named_uid = await uid_of(named)
                await run(named, "open('mine.txt', 'w').write('before')")
    with running(root) as cp:
        async with mcp_session(cp, headers=WORKSPACE) as named:
            assert await uid_of(named) == named_uid
            assert await run(named, "open('mine.txt', 'a').write('+after'); print(open('mine.txt').read())") == (
                "before+after\n"
            )
            async with mcp_session(cp) as first, mcp_session(cp) as second:
                assert named_uid not in {await uid_of(first), await uid_of(second)}


def test_the_uid_registry_hands_a_uid_to_one_folder_until_that_folder_is_gone(root: Path) -> None:
    registry = UidRegistry(root / "registry", 61000, 3)
    registry.prepare()
    folders = [root / name for name in ("a", "b", "c", "d")]
    for folder in folders[:3]:
        folder.mkdir()
    # Threads stand in for coordinators here: each claim is one locked read-and-link on the shared folder.
    with ThreadPoolExecutor(3) as pool:
        uids = list(pool.map(lambda f: UidRegistry(root / "registry", 61000, 3).claim(f), folders[:3]))
    assert sorted(uids) == [61000, 61001, 61002]
    assert registry.claim(folders[1]) == uids[1]  # asked again: the same one
    folders[3].mkdir()
    with pytest.raises(SandboxUnavailable, match="all 3 sandbox uids"):
        registry.claim(folders[3])
    remove_tree(folders[0])  # its files are gone: its uid may serve another folder
    assert registry.claim(folders[3]) == uids[0]
    with pytest.raises(UidTaken, match=str(folders[3])):
        registry.claim(root / "e", preferred=uids[0])
    registry.release(folders[1], uids[2])  # not its uid: nothing happens
    assert registry.owned(folders[2]) == [uids[2]]
    remove_tree(folders[2])
    assert registry.prune() == 1 and registry.owned(folders[2]) == []
    (root / "registry").chmod(0o777)
    with pytest.raises(RuntimeError, match="only its owner"):
        registry.prepare()


# --- G: what a killed coordinator left is swept at the next start ----------------------------------------


async def test_per_session_folders_of_a_killed_coordinator_are_removed_at_the_next_start(root: Path) -> None:
    with running(root) as cp:
        async with sessions_of_a_coordinator_that_dies(cp, None, None, WORKSPACE) as (one, two, named):
            await call(one, "fs.write", path="d/" * 500 + "x", content="left behind")
            await call(two, "fs.write", path="y.txt", content="left behind")
            await call(named, "fs.write", path="kept.txt", content="mine")
            named_uid = await uid_of(named) if IS_ROOT else None
        assert len(session_dirs(cp, "s-")) == 2 and len(session_dirs(cp, "w-")) == 1
    with running(root) as cp:
        # Swept during start-up, before the coordinator listens: nothing to wait for.
        assert session_dirs(cp, "s-") == []
        [kept] = session_dirs(cp, "w-")
        async with mcp_session(cp, headers=WORKSPACE) as named:
            assert text_of(await call(named, "fs.read", path="kept.txt")) == "mine"
            if named_uid is not None:
                assert await uid_of(named) == named_uid


@needs_root
async def test_a_process_left_by_run_code_dies_with_its_session_and_with_a_killed_coordinator(
    root: Path, daemons: list[int]
) -> None:
    """Without the jail (sandbox=none) a daemon escapes the run's process group; its uid must not outlive it."""
    with running(root, "state", "--sandbox", "none") as cp:
        async with mcp_session(cp) as s:
            uid = int(await run(s, DAEMON))
            daemons.append(uid)
            assert processes_of(uid)
        await eventually(lambda: not session_dirs(cp), timeout=15, what="the session to close")
        await eventually(lambda: not processes_of(uid), timeout=10, what=f"uid {uid}'s processes to be killed")
    with running(root, "state", "--sandbox", "none") as cp:
        async with sessions_of_a_coordinator_that_dies(cp, None) as (s,):
            uid = int(await run(s, DAEMON))
            daemons.append(uid)
        assert processes_of(uid) and session_dirs(cp)
    with running(root, "state", "--sandbox", "none") as cp:
        assert not session_dirs(cp, "s-")
        await eventually(lambda: not processes_of(uid), timeout=10, what=f"uid {uid}'s processes to be killed")


# --- H: ids are checked by format before any request ------------------------------------------------------

FORGED_IDS = [
    ("task.get_status", {"task_id": "../../healthz"}),
    ("task.get_status", {"task_id": "..%2F..%2Fhealthz"}),
    ("task.get_status", {"task_id": "task_0123456789abcdef/../../../healthz"}),
    ("task.get_status", {"task_id": "task_0123456789ABCDEF"}),
    ("task.get_status", {"task_id": "task_0123456789abcdef\n"}),
    ("task.get_result", {"task_id": "../../healthz", "wait_s": 0}),
    ("task.get_result", {"task_id": "task_0123456789abcdef?wait_s=300"}),
    ("artifact.get", {"artifact_id": "../healthz"}),
    ("artifact.get", {"artifact_id": "art_0123456789abcdef/../../tasks/x"}),
    ("artifact.upload", {"artifact_id": "../../v1/echo"}),
    ("artifact.list", {"task_id": "../x"}),
]


async def test_forged_ids_are_refused_before_any_request_reaches_a_sandbox(root: Path) -> None:
    with running(root) as cp:
        async with mcp_session(cp) as s:
            for tool, args in FORGED_IDS:
                result = await s.call_tool(tool, args)
                text = text_of(result)
                assert result.is_error, (tool, args, text)
                name = "task_id" if "task_id" in args else "artifact_id"
                assert f"`{name}`" in text and "16 hex digits" in text and "\n" not in text, (tool, text)
            # No sandbox was even opened: nothing was sent anywhere.
            assert session_dirs(cp) == []
            # A well-formed id that is not there reaches the agent, and gets its own answer.
            missing = await s.call_tool("task.get_status", {"task_id": "task_0000000000000000"})
            assert missing.is_error and "task_0000000000000000" in text_of(missing)
            # The ids the agent hands out are what the format allows.
            made = await call(s, "run.python", code="open('out.txt', 'w').write('x')")
            view = made.structured_content
            assert re.fullmatch(TASK_ID_PATTERN, view["task_id"])
            [artifact] = view["run"]["artifacts"]
            assert re.fullmatch(ARTIFACT_ID_PATTERN, artifact["artifact_id"])
            await call(s, "task.get_status", task_id=view["task_id"])
            await call(s, "artifact.get", artifact_id=artifact["artifact_id"])


@given(st.text(max_size=80))
def test_only_ids_of_the_agents_format_are_accepted(candidate: str) -> None:
    for model, field, pattern in ((TaskIdArgs, "task_id", TASK_ID_PATTERN), (ArtifactGetArgs, "artifact_id", None)):
        pattern = pattern or ARTIFACT_ID_PATTERN
        if re.fullmatch(pattern, candidate):
            model.model_validate({field: candidate})
        else:
            with pytest.raises(ValidationError):
                model.model_validate({field: candidate})


# --- I: two coordinators on one host never share a uid ----------------------------------------------------


@needs_root
async def test_two_coordinators_on_one_host_never_hand_out_the_same_uid(root: Path) -> None:
    with running_side_by_side(root, ["one", "two"]) as [one, two]:
        uids: list[int] = []

        async def sandbox_uid(cp: CoordinatorProcess, stay: anyio.Event) -> None:
            async with mcp_session(cp) as s:
                uids.append(await uid_of(s))
                await stay.wait()  # hold the sandbox while the others open theirs

        with anyio.fail_after(45):
            stay = anyio.Event()
            async with anyio.create_task_group() as tg:
                for cp in (one, two, one, two):
                    tg.start_soon(sandbox_uid, cp, stay)
                await eventually(lambda: len(uids) == 4, timeout=40, what="four sandboxes")
                stay.set()
        assert len(set(uids)) == 4, uids
