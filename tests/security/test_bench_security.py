"""`bench/security.py` keeps working (its quickest run), and what it counts as an escape is one.

The detectors are tried on escapes made by hand: a bench that cannot see an escape would print 0 for ever.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.attacks import Canary, landing_spots, marked, marker, written_outside

REPO = Path(__file__).resolve().parents[2]
CGROUP = Path("/sys/fs/cgroup")


def test_the_canary_tells_a_leak_from_a_refusal_or_a_look_alike(tmp_path: Path) -> None:
    canary = Canary.plant(tmp_path / "canary")
    assert canary.intact()
    assert canary.leaked_by("fs.read", {"content": f"...{canary.secret}..."})
    assert canary.leaked_by("fs.read", {"content": "root:x:0:0:root:/root:/bin/bash\n"})
    assert not canary.leaked_by("fs.read", {"content": f"a path naming {canary.name} and {canary.folder}"})
    listed = {"entries": [{"name": canary.name, "size": len(canary.secret)}]}
    assert canary.leaked_by("fs.list", listed)
    assert not canary.leaked_by("fs.list", {"entries": [{"name": canary.name, "size": 6}]})  # the workspace's own
    assert not canary.leaked_by("fs.read", None)
    (canary.folder / "w-1").write_text(marker(1))
    assert not canary.intact()


def test_a_marker_written_outside_is_found_however_it_got_there(tmp_path: Path) -> None:
    workspace, elsewhere = tmp_path / "ws", tmp_path / "state" / "deep"
    workspace.mkdir()
    elsewhere.mkdir(parents=True)
    (workspace / "inside.txt").write_text(marker(1))
    (elsewhere / "f").write_text("before " + marker(2))
    (tmp_path / "link").symlink_to(workspace / "inside.txt")
    assert written_outside(tmp_path, skip={workspace}) == [elsewhere / "f"]
    assert not marked(tmp_path / ("x" * 300)) and not marked(tmp_path / "link")


def test_landing_spots_follow_links_absolute_paths_and_a_cut_at_nul(tmp_path: Path) -> None:
    workspace, outside = tmp_path / "ws", tmp_path / "out"
    workspace.mkdir()
    outside.mkdir()
    (workspace / "link-out").symlink_to(outside)
    assert landing_spots(workspace, "link-out/x") == {outside / "x"}
    assert landing_spots(workspace, "../x") == {tmp_path / "x"}
    assert landing_spots(workspace, f"{outside}/x") == {workspace / str(outside).lstrip("/") / "x", outside / "x"}
    assert landing_spots(workspace, "link-out/y\x00/z") == {outside / "y"}


def _quick_run_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root: per-session uids, cgroups and disks are what it measures"
    if shutil.which("bwrap") is None:
        return "needs bubblewrap (bwrap): the jail is what it attacks"
    if not (CGROUP / "memory" / "cgroup.procs").exists() or not (CGROUP / "pids" / "cgroup.procs").exists():
        return "needs cgroup v1 memory and pids hierarchies at /sys/fs/cgroup"
    return None


@pytest.mark.skipif(_quick_run_problem() is not None, reason=_quick_run_problem() or "")
@pytest.mark.timeout(120)
def test_the_quick_run_finds_no_escape_and_every_cap_held() -> None:
    done = subprocess.run(
        [sys.executable, "bench/security.py", "--quick", "--timeout", "90"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = {line.partition(": ")[0]: line for line in done.stdout.splitlines() if ": " in line}
    assert lines["paths fuzzed"].endswith("escapes 0") and lines["symlink race"].endswith("escapes 0")
    assert "OOM-killed; session peak" in lines["memory"] and "then 'Resource temporarily" in lines["processes"]
    assert "MiB held on the host" in lines["disk"] and "received" in lines["large outputs"]
    assert "a real client then got a sandbox" in lines["initialize flood"]
    assert "jail cost" in lines
