"""Figures of the sandbox under attack: escapes found (must be 0), what each cap held, and the session after.

Starts a real coordinator on loopback (local backend, bubblewrap jail; root for per-session uids, cgroups and
disks) and one without the jail (`--sandbox none`, for the jail's cost), then, with the official MCP client
over streamable HTTP, attacks one session as a caller would (the attack code lives in tests/support/attacks.py,
shared with the security suite): hostile paths through fs.read/fs.write/fs.list, calls racing symlink swaps,
memory and process bombs, a disk filler, large outputs, and a flood of bare `initialize` requests. After each
attack it checks that the session still runs code.

An escape is the secret of a canary file outside the workspace in a result, the canary's name in a listing, a
host file read, or the attack's marker written anywhere outside the workspace. Writes are sent only where a
server that followed every link, read the path as absolute or cut it at a NUL would still land inside this
bench's own temporary folder, so a regression cannot clobber the host's files. Sandbox uids come from 63000 up,
with a registry of the bench's own, away from the test suite's coordinators (61000 up) that may run beside it.

    .venv/bin/python bench/security.py [--quick] [--seed N] [--timeout S] [--keep]

Exits non-zero when an escape is found, a cap did not hold, or the session died.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
from mcp import ClientSession
from mcp.types import CallToolResult

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.roundtrip import time_interleaved  # noqa: E402
from codegen_mcp.coordinator.backends.cleanup import remove_tree  # noqa: E402
from tests.support import attacks  # noqa: E402
from tests.support.attacks import Canary, MiB  # noqa: E402
from tests.support.coordinator import CoordinatorProcess, start_coordinator, stop_process  # noqa: E402
from tests.support.mcp_client import call, mcp_session, text_of  # noqa: E402

TIMEOUT = httpx.Timeout(120, connect=10)
CONCURRENCY = 4  # calls in flight on the session at once


@dataclass(frozen=True)
class Scale:
    paths: int
    race_s: float
    hog: tuple[int, int]  # processes, MiB each
    handshakes: int
    jail_calls: int


FULL = Scale(paths=3000, race_s=20, hog=(8, 256), handshakes=100, jail_calls=30)
QUICK = Scale(paths=40, race_s=2, hog=(3, 256), handshakes=30, jail_calls=4)

# Caps of the attacked coordinator: small, so each is reached in seconds.
SESSION_MEMORY = 512 * MiB
SESSION_PROCESSES = 64
DISK_QUOTA = 256 * MiB
MAX_SESSIONS = 2  # the attacked session and one more: a flood must leave that one to a real client
SANDBOX_UID_BASE = 63000


@dataclass
class Outcome:
    attack: str
    figures: str  # the whole line
    key: str  # its main figure, for the summary table
    breaches: int | None  # escapes, or a cap that did not hold (None: a measurement, not an attack)
    alive: bool | None  # the session still runs code afterwards (None: not this attack's question)
    took_s: float = 0.0


# --- the attacks ---------------------------------------------------------------------------------------------


@dataclass
class Target:
    """The attacked session and where its files are on the host."""

    session: ClientSession
    cp: CoordinatorProcess
    session_dir: Path
    canary: Canary
    workdir: Path

    @property
    def workspace(self) -> Path:
        return self.session_dir / "workspace"

    def not_the_workspace(self) -> set[Path]:
        return {self.workspace, self.session_dir / "disk" / "workspace", self.cp.audit_log}

    def marker_outside(self) -> list[Path]:
        return attacks.written_outside(self.workdir, skip=self.not_the_workspace())

    async def alive(self) -> bool:
        try:
            await attacks.still_works(self.session)
            return text_of(await call(self.session, "echo", message="still here")) == "still here"
        except Exception as exc:
            print(f"the session failed after the attack: {exc!r}", file=sys.stderr)
            return False


async def call_all(
    session: ClientSession, calls: list[tuple[str, dict[str, Any]]]
) -> list[tuple[str, CallToolResult | None]]:
    """The calls, CONCURRENCY at a time; None for one the server refused as a request (not as a tool error)."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(tool: str, args: dict[str, Any]) -> tuple[str, CallToolResult | None]:
        async with gate:
            try:
                return tool, await session.call_tool(tool, args)
            except Exception:  # a request refused before the tool ran (e.g. malformed): not an escape
                return tool, None

    return list(await asyncio.gather(*(one(tool, args) for tool, args in calls)))


def leaks(canary: Canary, results: list[tuple[str, CallToolResult | None]]) -> int:
    return sum(r is not None and not r.is_error and canary.leaked_by(tool, r.structured_content) for tool, r in results)


async def fuzz_paths(t: Target, scale: Scale, rng: random.Random) -> Outcome:
    paths = attacks.fuzz_paths(rng, scale.paths, t.canary)
    calls: list[tuple[str, dict[str, Any]]] = []
    spots: set[Path] = set()
    for i, path in enumerate(paths):
        calls += [("fs.read", {"path": path}), ("fs.list", {"path": path})]
        landing = attacks.landing_spots(t.workspace, path)
        if all(spot.is_relative_to(t.workdir) for spot in landing):  # never aim a write at the host's files
            calls.append(("fs.write", {"path": path, "content": attacks.marker(i)}))
            spots |= {s for s in landing if not s.is_relative_to(t.workspace)}
    results = await call_all(t.session, calls)
    answered = sum(r is not None and not r.is_error for _, r in results)
    traces = sum(r is not None and "Traceback" in text_of(r) for _, r in results)
    landed = {p for p in spots if attacks.marked(p)}
    escapes = leaks(t.canary, results) + len(landed | set(t.marker_outside())) + (not t.canary.intact())
    writes = sum(tool == "fs.write" for tool, _ in calls)
    return Outcome(
        "paths fuzzed",
        f"{len(paths)} paths (.., absolute, NUL, unicode, through symlinks) -> {len(calls)} calls "
        f"({len(paths)} fs.read, {len(paths)} fs.list, {writes} fs.write); {answered} answered inside the "
        f"workspace, {len(calls) - answered} refused; stack traces {traces}; escapes {escapes}",
        f"{escapes} escapes in {len(calls):,} calls",
        escapes + traces,
        await t.alive(),
    )


async def symlink_race(t: Target, scale: Scale) -> Outcome:
    started = await call(
        t.session,
        "run.python",
        code=attacks.symlink_racer(scale.race_s),
        wait_s=0,
        timeout_s=scale.race_s + 60,
    )
    task_id = started.structured_content["task_id"]
    results: list[tuple[str, CallToolResult | None]] = []
    end = time.monotonic() + scale.race_s
    rounds = 0
    while time.monotonic() < end:
        results += await call_all(t.session, attacks.race_calls(t.canary, rounds))
        rounds += 1
    done = await call(t.session, "task.get_result", task_id=task_id, wait_s=60)
    run = done.structured_content["run"]
    swaps = int(run["stdout"].split()[-1]) if run["exit_code"] == 0 else 0
    racer = "" if swaps else f"; the swapper failed (exit code {run['exit_code']}): {run['stderr'][-300:]!r}"
    escapes = leaks(t.canary, results) + len(t.marker_outside()) + (not t.canary.intact())
    answered = sum(r is not None and not r.is_error for _, r in results)
    return Outcome(
        "symlink race",
        f"{len(results)} calls racing {swaps:,} symlink swaps in {scale.race_s:g} s ({answered} answered inside, "
        f"the rest refused); escapes {escapes}{racer}",
        f"{escapes} escapes in {len(results):,} calls",
        escapes + (swaps == 0),
        await t.alive(),
    )


def session_group(t: Target, controller: str) -> Path | None:
    return next((g for g in attacks.session_groups(controller, t.cp) if g.name == t.session_dir.name), None)


async def memory(t: Target, scale: Scale) -> Outcome:
    group = session_group(t, "memory")
    if group is None:
        return Outcome("memory", "no cgroup v1 memory controller here: not measured", "-", 0, await t.alive())
    (group / "memory.max_usage_in_bytes").write_text("0")  # this attack's peak, not the session's so far
    children, mib = scale.hog
    out = await attacks.run_code(t.session, attacks.memory_hog(children, mib))
    report = json.loads(out["stdout"].strip().splitlines()[-1]) if out["exit_code"] == 0 else {"held": "?"}
    peak = int((group / "memory.max_usage_in_bytes").read_text())
    cap = int((group / "memory.limit_in_bytes").read_text())
    killed = sum(code == -9 for code in report.get("codes", []))
    return Outcome(
        "memory",
        f"{children} processes x {mib} MiB asked ({children * mib} MiB): {report['held']} held at once, "
        f"{killed} OOM-killed; session peak {peak / MiB:.0f} MiB of a {cap / MiB:.0f} MiB cap (cgroup)",
        f"peak {peak / MiB:.0f} / {cap / MiB:.0f} MiB",
        peak > cap,
        await t.alive(),
    )


async def processes(t: Target) -> Outcome:
    group = session_group(t, "pids")
    if group is None:
        return Outcome("processes", "no cgroup v1 pids controller here: not measured", "-", 0, await t.alive())
    cap = int((group / "pids.max").read_text())
    out = await attacks.run_code(t.session, attacks.FORK_BOMB)
    forked, _, error = out["stdout"].strip().partition(" ")
    return Outcome(
        "processes",
        f"fork bomb: {forked} forks, then '{error}'; session pids.max {cap} (cgroup)",
        f"{forked} forks / {cap} tasks",
        int(forked) >= cap,
        await t.alive(),
    )


async def disk(t: Target) -> Outcome:
    out = await attacks.run_code(t.session, attacks.DISK_FILLER)
    st = os.statvfs(t.session_dir / "disk")
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    said = next((line for line in out["stderr"].splitlines() if "disk quota" in line), "(no message)")
    written, _, error = out["stdout"].strip().partition(" ")
    # The agent stops the run once the disk is full: it may not get to print what it wrote.
    run = f"{int(written) / MiB:.0f} MiB written before {error}" if written else f"exit code {out['exit_code']}"
    cleaned = await attacks.run_code(t.session, attacks.REMOVE_DISK_FILLER)
    return Outcome(
        "disk",
        f"filling /tmp then the workspace in 8 MiB files: {run}; {used / MiB:.0f} MiB held on the host of a "
        f"{DISK_QUOTA / MiB:.0f} MiB quota; the run was told: {said!r}",
        f"{used / MiB:.0f} / {DISK_QUOTA / MiB:.0f} MiB held",
        (used > DISK_QUOTA) + (said == "(no message)"),
        cleaned["exit_code"] == 0 and await t.alive(),
    )


async def large_outputs(t: Target) -> Outcome:
    limit = attacks.CLIENT_EVENT_LIMIT
    try:
        printed = await call(t.session, "run.python", code="print('y' * 600000)")
        echoed = await call(t.session, "echo", message="z" * 3_000_000)
    except Exception as exc:
        return Outcome("large outputs", f"not received by the official client: {exc}", "lost", 1, await t.alive())
    run = printed.structured_content["run"]
    kept = echoed.structured_content["message"]
    pointer = "fs.read path=.codegen-output/" in text_of(printed)
    sizes = attacks.wire_size(printed), attacks.wire_size(echoed)
    return Outcome(
        "large outputs",
        f"600 kB print: received, {sizes[0] / 1000:.0f} kB on the wire, stdout cut at {len(run['stdout']):,} bytes "
        f"{'with' if pointer else 'WITHOUT'} a pointer to the rest; 3 MB echo: received, {sizes[1] / 1000:.0f} kB "
        f"on the wire ({len(kept):,} bytes kept); client limit {limit / 1000:.0f} kB per event",
        f"largest {max(sizes) / 1000:.0f} / {limit / 1000:.0f} kB",
        (max(sizes) >= limit) + (not pointer),
        await t.alive(),
    )


async def handshake_flood(t: Target, scale: Scale) -> Outcome:
    async with httpx.AsyncClient(base_url=t.cp.url, timeout=10) as http:
        for _ in range(scale.handshakes):
            await attacks.bare_initialize(http)
    held = await attacks.metric(t.cp, "codegen_mcp_handshakes")
    evicted = await attacks.metric(t.cp, 'codegen_mcp_handshakes_ended_total{reason="evicted"}')
    async with mcp_session(t.cp.url, timeout=TIMEOUT) as other:
        got = await other.call_tool("echo", {"message": "a real client"})
    served = not got.is_error
    return Outcome(
        "initialize flood",
        f"{scale.handshakes} bare initialize requests: {held:.0f} held, {evicted:.0f} evicted; a real client then "
        f"{'got' if served else 'was REFUSED'} a sandbox (max sessions {MAX_SESSIONS}, one taken by the attacked "
        f"session): {text_of(got)[:80]!r}",
        f"{held:.0f} held, client {'served' if served else 'REFUSED'}",
        not served,
        await t.alive(),
    )


async def jail_cost(t: Target, unjailed: CoordinatorProcess, scale: Scale) -> Outcome:
    async with mcp_session(unjailed.url, timeout=TIMEOUT) as plain:
        await call(plain, "run.python", code="pass")  # its venv is made on the first run

        async def jailed_run() -> None:
            await call(t.session, "run.python", code="pass")

        async def plain_run() -> None:
            await call(plain, "run.python", code="pass")

        await time_interleaved({"jailed": jailed_run, "plain": plain_run}, 1)
        timings = await time_interleaved({"jailed": jailed_run, "plain": plain_run}, scale.jail_calls)
    jailed, plain_ms = (statistics.median(timings[k]) * 1000 for k in ("jailed", "plain"))
    return Outcome(
        "jail cost",
        f"run.python median {jailed:.0f} ms in the bubblewrap jail vs {plain_ms:.0f} ms without it "
        f"(--sandbox none): {jailed / plain_ms:.2f}x ({scale.jail_calls} calls each, interleaved)",
        f"{jailed / plain_ms:.2f}x per run.python",
        None,
        None,
    )


async def attack(
    cp: CoordinatorProcess, unjailed: CoordinatorProcess, workdir: Path, args: argparse.Namespace
) -> list[Outcome]:
    scale = QUICK if args.quick else FULL
    rng = random.Random(args.seed)
    canary = Canary.plant(workdir / "canary")
    outcomes: list[Outcome] = []
    async with mcp_session(cp.url, timeout=TIMEOUT) as session:
        planted = await attacks.run_code(session, attacks.traps(canary))
        assert planted["exit_code"] == 0, planted["stderr"]
        [session_dir] = [p for p in (cp.state_dir / "sessions").iterdir() if p.name.startswith("s-")]
        t = Target(session, cp, session_dir, canary, workdir)
        steps: list[Callable[[], Awaitable[Outcome]]] = [
            lambda: fuzz_paths(t, scale, rng),
            lambda: symlink_race(t, scale),
            lambda: large_outputs(t),
            lambda: memory(t, scale),
            lambda: processes(t),
            lambda: disk(t),
            lambda: handshake_flood(t, scale),
            lambda: jail_cost(t, unjailed, scale),
        ]
        for step in steps:
            started = time.monotonic()
            outcome = await step()
            outcome.took_s = time.monotonic() - started
            print(f"{outcome.attack}: {outcome.figures}", flush=True)
            outcomes.append(outcome)
    return outcomes


# --- running it ------------------------------------------------------------------------------------------------


def summary(outcomes: list[Outcome]) -> str:
    lines = [f"{'attack':<18}{'figure':<34}{'held':<10}{'session after':<15}{'took':>7}"]
    for o in outcomes:
        held = "-" if o.breaches is None else ("yes" if not o.breaches else f"NO ({o.breaches})")
        after = "-" if o.alive is None else ("alive" if o.alive else "DEAD")
        lines.append(f"{o.attack:<18}{o.key:<34}{held:<10}{after:<15}{o.took_s:>5.1f} s")
    return "\n".join(lines)


@contextlib.contextmanager
def coordinators(workdir: Path) -> Iterator[tuple[CoordinatorProcess, CoordinatorProcess]]:
    """The attacked coordinator (jailed, small caps) and one without the jail, started side by side."""
    env = {
        # Not the host's registry (/var/lib), and not the test suite's uids (61000 up, each test with a registry
        # of its own): a coordinator ending its session kills what its uid runs, so sharing one is sharing deaths.
        "CODEGEN_LOCAL_UID_REGISTRY_DIR": str(workdir / "uids"),
        "CODEGEN_LOCAL_SANDBOX_UID_BASE": str(SANDBOX_UID_BASE),
        # The attacked session's cgroups and agents are counted: no pooled sandboxes beside it.
        "CODEGEN_LOCAL_WARM_POOL": "0",
        "CODEGEN_LOCAL_SESSION_MEMORY_BYTES": str(SESSION_MEMORY),
        "CODEGEN_LOCAL_SESSION_MAX_PROCESSES": str(SESSION_PROCESSES),
        "CODEGEN_LOCAL_DISK_QUOTA_BYTES": str(DISK_QUOTA),
        "CODEGEN_MAX_SESSIONS": str(MAX_SESSIONS),
    }
    for name in ("state", "unjailed"):
        (workdir / name).mkdir()
    with ThreadPoolExecutor(2) as pool:
        starts = [
            pool.submit(start_coordinator, workdir / "state", "--sandbox", "bwrap", env=env),
            pool.submit(start_coordinator, workdir / "unjailed", "--sandbox", "none", env=env),
        ]
    started = [f.result() for f in starts if f.exception() is None]
    try:
        if len(started) < 2:
            raise next(e for f in starts if (e := f.exception()) is not None)
        yield started[0], started[1]
    finally:
        for cp in started:
            stop_process(cp.proc)


async def run(args: argparse.Namespace, workdir: Path) -> list[Outcome]:
    with coordinators(workdir) as (cp, unjailed):
        try:
            async with asyncio.timeout(args.timeout):
                return await attack(cp, unjailed, workdir, args)
        except BaseException:
            print(f"--- coordinator log (last 40 lines) ---\n{cp.log_tail(40)}", file=sys.stderr)
            raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smallest run of every attack (for the test suite)")
    parser.add_argument("--seed", type=int, default=10, help="seed of the path fuzzer (default: 10)")
    parser.add_argument("--timeout", type=float, default=240.0, help="bound on the attacks, seconds (default: 240)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, audit log) and say where")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench/security.py needs root: per-session uids, cgroups and disks are what it measures")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the coordinators on SIGTERM as on ctrl-C
    logging.getLogger("mcp").setLevel(logging.CRITICAL)  # the client's noise as streams close
    workdir = Path(tempfile.mkdtemp(prefix="codegen-mcp-bench-security-"))
    workdir.chmod(0o711)  # sandbox uids traverse it to their workspaces
    scale = QUICK if args.quick else FULL
    print(
        f"caps of the attacked session: memory {SESSION_MEMORY // MiB} MiB, {SESSION_PROCESSES} tasks, disk "
        f"{DISK_QUOTA // MiB} MiB; bubblewrap jail; {'quick' if args.quick else 'full'} scale {scale}; "
        f"seed {args.seed}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    started = time.monotonic()
    try:
        outcomes = asyncio.run(run(args, workdir))
    except KeyboardInterrupt:
        sys.exit("interrupted; coordinators stopped")
    except TimeoutError:
        sys.exit(f"gave up after {args.timeout:.0f} s (--timeout); coordinators stopped")
    finally:
        if args.keep:
            print(f"kept {workdir} (coordinator logs: state.log, unjailed.log)", file=sys.stderr)
        else:
            remove_tree(workdir)
    print(f"\n{summary(outcomes)}\n\ntotal {time.monotonic() - started:.0f} s")
    failed = [o.attack for o in outcomes if o.breaches or o.alive is False]
    if failed:
        sys.exit(f"FAILED: {', '.join(failed)}")


if __name__ == "__main__":
    main()
