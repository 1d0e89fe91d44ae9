"""Per-session caps on the local backend, tried as an attacker would (issue 10, finding B).

Before: eight processes of 1 GiB each took 8 GiB of host memory (RLIMIT_AS is per process), and a fork bomb
was held only by the uid's RLIMIT_NPROC. Now a per-session cgroup (v1 memory + pids) holds the whole session
at `session_memory_bytes` / `session_max_processes`, and the session keeps working afterwards. And 2 GiB of
files (each under the per-file limit) plus anything written to the jail's /tmp counted against no quota; now
both live on one loop-mounted disk of `disk_quota_bytes`, and a run that fills it is stopped with a message.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from codegen_mcp.coordinator.backends.cgroups import SessionCgroups
from codegen_mcp.coordinator.backends.cleanup import remove_tree
from codegen_mcp.sandbox_agent.jail import Jail
from tests.integration.conftest import mcp_session
from tests.support.attacks import (
    CGROUP,
    DISK_FILLER,
    FORK_BOMB,
    REMOVE_DISK_FILLER,
    GiB,
    MiB,
    memory_hog,
    run_code,
    session_groups,
    still_works,
)
from tests.support.coordinator import (
    CoordinatorProcess,
    print_log_tail,
    private_uid_registry,
    start_coordinator,
    state_root,
    stop_process,
)
from tests.support.mcp_client import call, text_of
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)


def _v1_controller_writable(name: str) -> bool:
    return (CGROUP / name / "cgroup.procs").exists() and os.access(CGROUP / name, os.W_OK)


needs_memory_cgroup = pytest.mark.skipif(
    not _v1_controller_writable("memory"),
    reason="no writable cgroup v1 memory hierarchy at /sys/fs/cgroup/memory (not root, or no such controller)",
)
needs_pids_cgroup = pytest.mark.skipif(
    not _v1_controller_writable("pids"),
    reason="no writable cgroup v1 pids hierarchy at /sys/fs/cgroup/pids (not root, or no such controller)",
)
needs_loop_mounts = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/dev/loop-control").exists(),
    reason="a per-session disk is a loop-mounted image: needs root and /dev/loop-control",
)


@contextlib.contextmanager
def coordinator(env: dict[str, str]) -> Iterator[CoordinatorProcess]:
    for root in state_root():
        (root / "state").mkdir()
        cp = start_coordinator(root / "state", env={**private_uid_registry(root / "uids"), **env})
        try:
            yield cp
        finally:
            stop_process(cp.proc)
            print_log_tail(cp)
            remove_tree(root / "state")


@needs_memory_cgroup
async def test_eight_processes_of_1_gib_are_held_at_the_session_memory_cap() -> None:
    cap = 1536 * MiB
    env = {
        "CODEGEN_LOCAL_MEMORY_BYTES": str(2 * GiB),  # per process: each 1 GiB allocation is allowed alone
        "CODEGEN_LOCAL_SESSION_MEMORY_BYTES": str(cap),
    }
    with coordinator(env) as cp:
        async with mcp_session(cp) as s:
            out = await run_code(s, memory_hog(8, 1024))
            report = json.loads(out["stdout"].strip().splitlines()[-1])
            groups = session_groups("memory", cp)
            peak = max((int((g / "memory.max_usage_in_bytes").read_text()) for g in groups), default=None)
            print(f"8 x 1 GiB: {report['held']} held at once; session peak {peak} bytes, cap {cap}")
            assert report["held"] * GiB <= cap, f"{report['held']} GiB held at once with a {cap // MiB} MiB cap"
            assert peak is not None and peak <= cap
            await still_works(s)
        await eventually(lambda: not any(g.exists() for g in groups), what="the session's cgroup to be removed")


@needs_pids_cgroup
async def test_a_fork_bomb_is_held_at_the_session_pids_max() -> None:
    cap = 64
    with coordinator({"CODEGEN_LOCAL_SESSION_MAX_PROCESSES": str(cap)}) as cp:
        async with mcp_session(cp) as s:
            out = await run_code(s, FORK_BOMB)
            forked, _, error = out["stdout"].strip().partition(" ")
            print(f"fork bomb: {forked} forks before '{error}'; pids.max {cap}")
            assert int(forked) < cap, f"{forked} processes forked with a per-session cap of {cap}"
            assert error == "Resource temporarily unavailable"
            [group] = [g for g in session_groups("pids", cp) if (g / "pids.max").read_text().strip() == str(cap)]
            await still_works(s)
        await eventually(lambda: not group.exists(), what="the session's cgroup to be removed")
        assert cp.proc.poll() is None


def test_without_the_controllers_each_cap_says_why_it_falls_back(tmp_path: Path) -> None:
    """No v1 hierarchy (a container, cgroup v2 only): nothing is pretended, each missing controller has a reason."""
    groups = SessionCgroups(root=tmp_path, parent="codegen-mcp", state_dir=tmp_path, memory_bytes=GiB, max_pids=64)
    missing = groups.detect()
    assert groups.found == {}
    assert missing == {
        "memory": f"no v1 memory hierarchy at {tmp_path / 'memory'}",
        "pids": f"no v1 pids hierarchy at {tmp_path / 'pids'}",
    }


@needs_loop_mounts
async def test_writing_past_the_disk_quota_is_stopped_and_the_session_lives() -> None:
    quota = 256 * MiB
    with coordinator({"CODEGEN_LOCAL_DISK_QUOTA_BYTES": str(quota)}) as cp:
        async with mcp_session(cp) as s:
            out = await run_code(s, DISK_FILLER)
            assert "disk quota" in out["stderr"], out["stderr"]
            # The filler prints "<bytes> ENOSPC" when it sees the full disk first; the agent may stop it sooner.
            written, _, error = out["stdout"].strip().partition(" ")
            if written:
                print(f"disk filler: {int(written) // MiB} MiB written before {error}; quota {quota // MiB} MiB")
                assert int(written) <= quota, f"{int(written) // MiB} MiB written with a {quota // MiB} MiB disk quota"
                assert error == "ENOSPC"
            cleaned = await run_code(s, REMOVE_DISK_FILLER)
            assert cleaned["exit_code"] == 0, cleaned
            await still_works(s)


def test_the_jail_binds_the_session_disk_as_tmp_instead_of_a_tmpfs(tmp_path: Path) -> None:
    """/tmp in the jail is the session disk's folder (counted in the quota), not an unlimited tmpfs."""
    jail = Jail(bwrap="bwrap", tmp_dir=tmp_path / "tmp", system=())
    argv = jail.command(["true"], binds=[], chdir=tmp_path).argv
    assert ["--bind", str(tmp_path / "tmp"), "/tmp"] == argv[argv.index("/tmp") - 2 : argv.index("/tmp") + 1]
    assert "--tmpfs" not in argv
    staged = jail.command(["true"], binds=[], chdir=tmp_path, stage=True)
    assert staged.staged == (tmp_path / "tmp",)


@needs_loop_mounts
async def test_a_test_run_that_fills_the_disk_quota_is_stopped_and_says_so() -> None:
    """Every confined child is held to the quota's message, not only run.python: here pytest running a filler."""
    quota = 256 * MiB
    test_file = f"FILLER = {DISK_FILLER!r}\n\n\ndef test_fill():\n    exec(FILLER, {{}})\n"
    with coordinator({"CODEGEN_LOCAL_DISK_QUOTA_BYTES": str(quota)}) as cp:
        async with mcp_session(cp) as s:
            await call(s, "fs.write", path="test_fill.py", content=test_file)
            result = await s.call_tool("test.run", {"paths": ["test_fill.py"], "wait_s": 240})
            assert result.is_error, result.content
            assert "disk quota" in text_of(result) and "the session keeps working" in text_of(result), result.content
            cleaned = await run_code(s, REMOVE_DISK_FILLER)
            assert cleaned["exit_code"] == 0, cleaned
            await still_works(s)
