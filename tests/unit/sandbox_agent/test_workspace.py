"""Workspace confinement: the pure resolver and the fd-walking file operations."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codegen_mcp.api.errors import CodegenError, ErrorCode, InvalidArgument, NotFound, WorkspaceEscape
from codegen_mcp.api.tools import MAX_PATH_LENGTH, Encoding, EntryType
from codegen_mcp.sandbox_agent import workspace as workspace_mod
from codegen_mcp.sandbox_agent.workspace import Owner, Workspace, claim_workspace, is_inside, resolve


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A workspace with a few traps: symlinks out (to /etc, to .., to an absolute outside path) and in."""
    ws = tmp_path / "ws"
    (ws / "sub" / "deep").mkdir(parents=True)
    (ws / "sub" / "file.txt").write_text("hello")
    (tmp_path / "outside.txt").write_text("secret")
    os.symlink("/etc", ws / "etc")
    os.symlink("..", ws / "up")
    os.symlink(str(tmp_path / "outside.txt"), ws / "abs_out")
    os.symlink("sub", ws / "link_in")
    os.symlink(str(ws / "sub" / "file.txt"), ws / "abs_in")
    os.symlink("sub/deep/../../..", ws / "sneaky")
    os.symlink("loop_b", ws / "loop_a")
    os.symlink("loop_a", ws / "loop_b")
    return Path(os.path.realpath(ws))


ESCAPES = [
    "..",
    "../outside.txt",
    "a/../../outside.txt",
    "sub/../../outside.txt",
    "/../outside.txt",
    "etc/passwd",
    "etc",
    "/etc/../etc/passwd/../passwd",
    "up/outside.txt",
    "up",
    "abs_out",
    "sneaky",
    "sneaky/outside.txt",
    "link_in/../up/x",
]


@pytest.mark.parametrize("user_path", ESCAPES)
def test_paths_that_leave_the_workspace_are_refused(root: Path, user_path: str) -> None:
    with pytest.raises(WorkspaceEscape) as info:
        resolve(root, user_path)
    assert info.value.code is ErrorCode.PATH_OUTSIDE_WORKSPACE
    assert "\n" not in info.value.message


INVALID = [
    ("nul", "a\x00b", "NUL"),
    ("long component", "a" * 256, "longer than 255 bytes"),
    ("long path", "a/" * (MAX_PATH_LENGTH // 2 + 1), f"longer than {MAX_PATH_LENGTH} bytes"),
    ("multibyte component", "é" * 128, "longer than 255 bytes"),
]


@pytest.mark.parametrize(("case", "user_path", "needle"), INVALID, ids=[c[0] for c in INVALID])
def test_malformed_paths_get_a_clear_error(root: Path, case: str, user_path: str, needle: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        resolve(root, user_path)
    assert needle in info.value.message


INSIDE = [
    ("", "."),
    (".", "."),
    ("/", "."),
    ("sub/file.txt", "sub/file.txt"),
    ("/sub/file.txt", "sub/file.txt"),  # absolute paths are read as relative to the root
    ("//sub///file.txt", "sub/file.txt"),
    ("./sub/./deep/../file.txt", "sub/file.txt"),
    ("sub/deep/../../sub", "sub"),
    ("link_in/file.txt", "sub/file.txt"),  # symlinks inside are resolved
    ("abs_in", "sub/file.txt"),
    ("new/dir/file.txt", "new/dir/file.txt"),  # may not exist yet (writes)
]


@pytest.mark.parametrize(("user_path", "expected"), INSIDE)
def test_paths_inside_resolve_to_real_paths(root: Path, user_path: str, expected: str) -> None:
    assert resolve(root, user_path) == (root / expected if expected != "." else root)


def test_absolute_path_is_relative_to_root_and_still_checked(root: Path) -> None:
    # `/etc/passwd` means <root>/etc/passwd; here <root>/etc is a symlink to the host's /etc: refused.
    with pytest.raises(WorkspaceEscape):
        resolve(root, "/etc/passwd")
    (root / "real").mkdir()
    assert resolve(root, "/real/passwd") == root / "real" / "passwd"


def test_symlink_loop_stays_inside_or_fails_cleanly(root: Path) -> None:
    ws = Workspace(root)
    with pytest.raises(CodegenError) as info:
        ws.read("loop_a", 0, 10)
    assert info.value.code in (ErrorCode.INVALID_ARGUMENT, ErrorCode.PATH_OUTSIDE_WORKSPACE, ErrorCode.NOT_FOUND)


SEGMENTS = ["..", ".", "", "sub", "deep", "file.txt", "etc", "up", "abs_out", "link_in", "sneaky", "x", "é", "\x00"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    parts=st.lists(st.one_of(st.sampled_from(SEGMENTS), st.text(min_size=1, max_size=6)), max_size=12),
    absolute=st.booleans(),
)
def test_property_any_path_resolves_inside_or_raises(root: Path, parts: list[str], absolute: bool) -> None:
    user_path = ("/" if absolute else "") + "/".join(parts)
    try:
        resolved = resolve(root, user_path)
    except (WorkspaceEscape, InvalidArgument):
        return
    assert resolved.is_absolute()
    assert is_inside(root, resolved)
    # Nothing on the resolved path is a symlink any more.
    assert os.path.realpath(resolved) == str(resolved)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user_path=st.text(max_size=300))
def test_property_arbitrary_text_resolves_inside_or_raises(root: Path, user_path: str) -> None:
    try:
        resolved = resolve(root, user_path)
    except (WorkspaceEscape, InvalidArgument):
        return
    assert is_inside(root, resolved)


# --- file operations ---------------------------------------------------------------------------------


def test_read_write_round_trip_and_parents_created(root: Path) -> None:
    ws = Workspace(root)
    written = ws.write("a/b/c.txt", "héllo", Encoding.UTF8, append=False)
    assert (written.path, written.bytes_written, written.size) == ("a/b/c.txt", 6, 6)
    got = ws.read("a/b/c.txt", 0, 100)
    assert (got.content, got.encoding, got.size, got.truncated) == ("héllo", Encoding.UTF8, 6, False)


def test_a_symlink_swapped_in_after_resolution_is_not_followed(root: Path) -> None:
    """TOCTOU: the check said `target.txt` is a plain file; by the time it is opened it points to /etc."""
    ws = Workspace(root)
    (root / "target.txt").write_text("mine")
    resolved = ws.resolve("target.txt")
    (root / "target.txt").unlink()
    os.symlink("/etc/passwd", root / "target.txt")
    with pytest.raises(OSError) as info:
        ws._open(resolved, os.O_RDONLY)
    assert info.value.errno == errno.ELOOP


def test_a_parent_swapped_for_a_symlink_is_not_followed(root: Path) -> None:
    ws = Workspace(root)
    (root / "dir").mkdir()
    resolved = ws.resolve("dir/new.txt")
    (root / "dir").rmdir()
    elsewhere = root.parent / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, root / "dir")
    with pytest.raises(OSError) as info:
        ws._open(resolved, os.O_WRONLY | os.O_CREAT, create_parents=True)
    assert info.value.errno in (errno.ELOOP, errno.ENOTDIR)
    assert list(elsewhere.iterdir()) == []


def test_writes_into_the_agents_own_folders_are_refused(root: Path) -> None:
    (root / ".venv").mkdir()
    ws = Workspace(root, protected=(root / ".venv", root / ".codegen"))
    for path in (".venv/lib/evil.pth", ".codegen/artifacts.json", "sub/../.venv/x"):
        with pytest.raises(InvalidArgument, match="which the agent manages"):
            ws.write(path, "x", Encoding.UTF8, append=False)


def test_missing_file_and_directory_errors(root: Path) -> None:
    ws = Workspace(root)
    with pytest.raises(NotFound):
        ws.read("nope.txt", 0, 10)
    with pytest.raises(CodegenError) as info:
        ws.read("sub", 0, 10)
    assert info.value.code is ErrorCode.IS_A_DIRECTORY
    with pytest.raises(CodegenError) as info:
        ws.list("sub/file.txt", recursive=False)
    assert info.value.code is ErrorCode.NOT_A_DIRECTORY


def test_list_reports_symlinks_without_following_them(root: Path) -> None:
    ws = Workspace(root)
    listing = ws.list(".", recursive=True)
    by_name = {e.name: e.type for e in listing.entries}
    assert by_name["etc"] is EntryType.SYMLINK
    assert by_name["up"] is EntryType.SYMLINK
    assert by_name["sub/file.txt"] is EntryType.FILE
    assert not any(name.startswith(("etc/", "up/", "link_in/")) for name in by_name)
    assert [e.name for e in listing.entries] == sorted(by_name)


def test_list_is_capped(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workspace_mod, "MAX_LIST_ENTRIES", 3)
    listing = Workspace(root).list(".", recursive=True)
    assert len(listing.entries) == 3
    assert listing.truncated


@pytest.fixture
def owned_root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp())
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing file owners needs root")
def test_claim_workspace_gives_files_to_the_sandbox_uid_but_not_the_agents_folders(owned_root: Path) -> None:
    (owned_root / "a" / "b").mkdir(parents=True)
    (owned_root / "a" / "b" / "f.txt").write_text("x")
    (owned_root / ".venv").mkdir()
    (owned_root / ".venv" / "cfg").write_text("x")
    os.symlink("/etc/passwd", owned_root / "a" / "link")
    claim_workspace(owned_root, Owner(65534, 65534))
    assert (owned_root / "a" / "b" / "f.txt").stat().st_uid == 65534
    # The root stays the agent's (sticky, group-writable for the sandbox) so `.venv` cannot be swapped.
    st = owned_root.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 65534, 0o1770)
    assert (owned_root / ".venv" / "cfg").stat().st_uid == 0
    assert os.lstat(owned_root / "a" / "link").st_uid == 65534
    assert Path("/etc/passwd").stat().st_uid == 0  # the link's target was not touched
    ws = Workspace(owned_root, owner=Owner(65534, 65534))
    ws.write("new/dir/g.txt", "x", Encoding.UTF8, append=False)
    assert (owned_root / "new").stat().st_uid == 65534
    assert (owned_root / "new" / "dir" / "g.txt").stat().st_uid == 65534


def test_write_refuses_hard_links_and_leaves_them_untouched(root: Path) -> None:
    outside = root.parent / "outside.txt"
    os.link(outside, root / "hard")
    with pytest.raises(InvalidArgument, match="hard link"):
        Workspace(root).write("hard", "pwned", Encoding.UTF8, append=False)
    assert outside.read_text() == "secret"
