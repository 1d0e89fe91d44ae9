"""Attacks on a coordinator and its sandboxes, shared by the security suite and `bench/security.py`.

One implementation of each: the run code an attacker would send (memory hogs, fork bomb, disk filler, symlink
traps and a symlink swapper), the hostile paths, the bare `initialize` flood, and what tells an escape apart
from a refusal (a canary folder outside the workspace, a marker written nowhere else).
"""

from __future__ import annotations

import hashlib
import os
import random
import secrets
import stat
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
from mcp import ClientSession

from tests.integration.test_http_security import HEADERS, INIT  # one bare initialize request for all
from tests.support.coordinator import CoordinatorProcess

MiB = 1024**2
GiB = 1024**3
CGROUP = Path("/sys/fs/cgroup")

# The official Python client refuses one server-sent event over 1 MiB (`max_sse_event_size`).
CLIENT_EVENT_LIMIT = 1024 * 1024


# --- run code and the session's cgroups -------------------------------------------------------------------


async def run_code(session: ClientSession, code: str, wait_s: float = 40) -> dict[str, Any]:
    """`run.python` of `code` (dedented); its run result, whatever the program's exit code."""
    result = await session.call_tool("run.python", {"code": textwrap.dedent(code), "wait_s": wait_s})
    assert not result.is_error, result.content
    run_result: dict[str, Any] = result.structured_content["run"]
    return run_result


async def still_works(session: ClientSession) -> None:
    """The session runs code after an attack (AssertionError if not)."""
    after = await run_code(session, "print(6 * 7)")
    assert after["exit_code"] == 0 and after["stdout"].strip() == "42", after


def session_groups(controller: str, cp: CoordinatorProcess) -> list[Path]:
    """The per-session groups of this coordinator (its folder in the hierarchy is named by its state folder)."""
    base = CGROUP / controller / "codegen-mcp" / hashlib.sha256(str(cp.state_dir.resolve()).encode()).hexdigest()[:10]
    return [g for g in base.iterdir() if g.is_dir()] if base.exists() else []


def memory_hog(children: int, mib: int) -> str:
    """Run code: `children` processes of `mib` MiB each, all held at once; prints {"held": n, "codes": [...]}."""
    return f"""
import json, subprocess, sys
child = "b = b'x' * ({mib} << 20); print('held', flush=True); sys.stdin.read()"
procs = [subprocess.Popen([sys.executable, "-c", "import sys; " + child], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) for _ in range({children})]
held = sum(p.stdout.readline().strip() == "held" for p in procs)  # a killed child gives EOF: ''
for p in procs:
    try:
        p.stdin.close()
    except OSError:
        pass
codes = [p.wait() for p in procs]
print(json.dumps({{"held": held, "codes": codes}}))
"""


# Forks until fork fails; prints "<forks> <strerror>".
FORK_BOMB = """
import os, time
children, error = [], None
while len(children) < 2000:
    try:
        pid = os.fork()
    except OSError as err:
        error = err.strerror
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(len(children), error)
"""

# 8 MiB files (each far below the per-file limit) into the jail's /tmp, then the workspace, until a write
# fails; prints "<bytes written> <errno name>".
DISK_FILLER = """
import errno, os
chunk = b"x" * (8 << 20)
written, error = 0, None
for where in ("/tmp", "."):  # the jail's /tmp first, then the workspace: one quota for both
    for i in range(20):  # 160 MiB each, in 8 MiB files: each far below the per-file limit
        try:
            with open(os.path.join(where, f"fill-{i}"), "wb") as f:
                f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            written += len(chunk)
        except OSError as err:
            error = errno.errorcode[err.errno]
            break
    if error:
        break
print(written, error)
"""

REMOVE_DISK_FILLER = "import glob, os\nfor p in glob.glob('/tmp/fill-*') + glob.glob('fill-*'): os.remove(p)"


# --- escapes by path ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Canary:
    """A folder outside the workspace holding one file: reading its secret, listing its name or writing
    anything beside it is an escape. The secret is never sent, so an error message quoting a path cannot leak it.
    """

    folder: Path
    name: str
    secret: str

    @classmethod
    def plant(cls, folder: Path) -> Canary:
        folder.mkdir(mode=0o755)
        canary = cls(folder, f"CANARY-{secrets.token_hex(4)}.txt", f"secret-{secrets.token_hex(16)}")
        canary.file.write_text(canary.secret)
        return canary

    @property
    def file(self) -> Path:
        return self.folder / self.name

    def intact(self) -> bool:
        return os.listdir(self.folder) == [self.name] and self.file.read_text() == self.secret

    def leaked_by(self, tool: str, structured: dict[str, Any] | None) -> bool:
        """Whether a successful result shows what only the host holds: the canary's secret or a host file read,
        or the canary itself in a listing (its name and size: the workspace may hold files of that name).
        """
        if not structured:
            return False
        if tool == "fs.list":
            return any(
                e["name"].endswith(self.name) and e["size"] == len(self.secret) for e in structured.get("entries", [])
            )
        content = str(structured.get("content", ""))
        return self.secret in content or HOST_PASSWD in content


def traps(canary: Canary) -> str:
    """Run code that plants symlinks out of the workspace (and a few harmless ones) for paths to go through,
    and what `symlink_racer` swaps: a folder `race/d` and a file `race/f`, each beside a link to the canary's."""
    return f"""
import os
os.makedirs("sub/deep", exist_ok=True)
open("sub/file.txt", "w").write("inside")
for name, target in {trap_links(canary)!r}.items():
    os.symlink(target, name)
os.makedirs("race/d")
open("race/d/{canary.name}", "w").write("inside")
open("race/f", "w").write("inside")
os.symlink({str(canary.folder)!r}, "race/d-swap")
os.symlink({str(canary.file)!r}, "race/f-swap")
"""


def trap_links(canary: Canary) -> dict[str, str]:
    return {
        "link-out": str(canary.folder),
        "link-file": str(canary.file),
        "link-up": "..",
        "link-root": "/",
        "link-in": "sub",
        "sub/deep/sneaky": "../../..",
        "loop-a": "loop-b",
        "loop-b": "loop-a",
    }


# Spellings of `..` and `/` that only a server decoding them would take for one (none of them is one).
LOOK_ALIKES = ["\u2025", "．．", "%2e%2e", "..%2f", "..\\..", "..\u2215..", " ..", ".. ", "\ufeff..", "\u202e.."]
NOISE = [".", "", "sub/..", "link-in/..", "sub/deep/../..", "a\x00b", "\x00", "a" * 256, "x/" * 40, "é", "~", "*"]


def fuzz_paths(rng: random.Random, n: int, canary: Canary) -> list[str]:
    """`n` hostile paths: ways to the canary (or the host's /etc/passwd) from the workspace, through the trap
    links, `..`, absolute paths and the canary's own path, each strewn with noise (NUL, unicode look-alikes,
    over-long names, `.` and empty components) and sometimes with a look-alike in place of a `..`."""
    workdir = canary.folder.parent  # the workspace is <workdir>/state/sessions/<session>/workspace
    ways = [
        ["link-out"],
        ["link-up", "..", "..", "..", canary.folder.name],
        ["..", "..", "..", "..", canary.folder.name],
        ["sub/deep/sneaky", "..", "..", "..", canary.folder.name],
        ["link-root", *canary.folder.parts[1:]],
        [str(canary.folder)],
        ["/", *canary.folder.parts[1:]],
        [str(workdir), "state", "..", canary.folder.name],
        ["loop-a"],
    ]
    ends = [[canary.name], [canary.name], [""], ["link-file"], [".."]]
    paths = []
    for _ in range(n):
        way = [*rng.choice(ways), *rng.choice(ends)]
        if rng.random() < 0.2:
            way = ["link-root", "etc", "passwd"]
        for _ in range(rng.randint(0, 3)):
            way.insert(rng.randint(0, len(way)), rng.choice(NOISE))
        if rng.random() < 0.3 and ".." in way:
            way[way.index("..")] = rng.choice(LOOK_ALIKES)
        paths.append("/".join(way))
    return paths


def symlink_racer(seconds: float) -> str:
    """Run code that, for `seconds`, exchanges `race/d` and `race/f` (see `traps`) with their links to the
    canary's, atomically (renameat2 RENAME_EXCHANGE): a path resolved while it was the real folder or file is
    a link out by the time it is opened, unless the server opens it without following links. Prints the swaps.
    """
    return f"""
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2

def exchange(a, b):
    if libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), "renameat2 " + a)

swaps, end = 0, time.monotonic() + {seconds}
while time.monotonic() < end:
    for _ in range(100):
        exchange("race/d", "race/d-swap")
        exchange("race/f", "race/f-swap")
    swaps += 200
print(swaps)
"""


def race_calls(canary: Canary, i: int) -> list[tuple[str, dict[str, Any]]]:
    """The calls of round `i` racing `symlink_racer`: each reaches the canary if a swap wins."""
    return [
        ("fs.read", {"path": f"race/d/{canary.name}"}),
        ("fs.read", {"path": "race/f"}),
        ("fs.list", {"path": "race/d"}),
        ("fs.write", {"path": f"race/d/w-{i}", "content": marker(i)}),
        ("fs.write", {"path": "race/f", "content": marker(i), "append": True}),
    ]


MARKER = "written-by-the-attack-"
HOST_PASSWD = "root:x:0:0:"  # the host's /etc/passwd starts so; no workspace file does


def marker(i: int) -> str:
    return f"{MARKER}{i}"


def landing_spots(workspace: Path, path: str) -> set[Path]:
    """Where a write to `path` lands if the server followed every link on the host, read the path as absolute,
    or cut it at a NUL: the places to look for the marker (and to keep the host's own files out of reach of).
    """
    spots = set()
    for candidate in {path, path.split("\x00")[0]}:
        if "\x00" in candidate:
            continue
        spots.add(Path(os.path.realpath(workspace / candidate.lstrip("/"))))
        if candidate.startswith("/"):
            spots.add(Path(os.path.realpath(candidate)))
    return spots


def marked(path: Path, limit: int = 16 * MiB) -> bool:
    """Whether `path` is a regular file (not a link, under `limit` bytes) that holds the attack's marker."""
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return False
        return MARKER.encode() in path.read_bytes()
    except OSError:  # gone, or a name the host cannot even look up (too long): nothing written there
        return False


def written_outside(top: Path, skip: set[Path]) -> list[Path]:
    """Files under `top` (not following links, not below `skip`) that hold the attack's marker."""
    found = []
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if Path(folder, d) not in skip]
        found += [Path(folder, name) for name in files if Path(folder, name) not in skip and marked(Path(folder, name))]
    return found


# --- protocol abuse and what the transport carries -----------------------------------------------------------


async def bare_initialize(http: httpx.AsyncClient) -> str:
    """One `initialize` request and nothing else (no tool call, no sandbox); the MCP session id it got."""
    response = await http.post("/mcp", json=INIT, headers=HEADERS)
    assert response.status_code == 200, response.text
    return response.headers["mcp-session-id"]


async def metric(cp: CoordinatorProcess, name: str) -> float:
    async with httpx.AsyncClient(base_url=cp.url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return float(samples[name])


def wire_size(result: Any) -> int:
    """Bytes of the result as the server sends it (JSON, text and structured content together)."""
    return len(result.model_dump_json(by_alias=True, exclude_none=True).encode())
