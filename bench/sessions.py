"""New sessions on the local backend: how soon their first call is served, and what an idle one costs.

Measured in one run, against the bare MCP-SDK echo server of `roundtrip.py` started beside the coordinators:
  - the first tool call (`echo`) of a new session with the warm pool full (`--warm-pool 2`, the default) and
    with no pool (`--warm-pool 0`), as medians and as ratios to the bare server's echo;
  - 10 and 50 sessions opened at once (connect, initialize, first call): the time until all were served, with
    the default pool and with a pool of 10;
  - the memory an idle session adds: the proportional set size (PSS, from /proc/<pid>/smaps_rollup: pages
    shared with other processes counted once overall) of its agent and everything under it.

    .venv/bin/python bench/sessions.py [--samples 5] [--json]

All sessions come from one client address, so the coordinators are told to hold more MCP sessions without a
sandbox per client than their default 16 (the burst would otherwise end its own oldest handshakes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from roundtrip import BARE_ARGV, ServerProcess, checked, coordinator_argv, run_bench, running_server

POOL_TIMEOUT_S = 120.0
CALL_TIMEOUT_S = 120.0  # a first call without a pool starts an agent, many at once on a busy machine
BARE_CALLS = 200


def pool_full(state_dir: Path, size: int) -> bool:
    """The pool holds `size` listening sandboxes and no session runs (every folder is a pooled one)."""
    sessions = state_dir / "sessions"
    folders = [p for p in sessions.iterdir() if p.name.startswith("s-")] if sessions.exists() else []
    return len(folders) == size and all((p / "agent.sock").exists() for p in folders)


async def wait_pool_full(state_dir: Path, size: int) -> None:
    async with asyncio.timeout(POOL_TIMEOUT_S):
        while not pool_full(state_dir, size):
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def coordinator(workdir: Path, name: str, warm_pool: int) -> AsyncIterator[tuple[ServerProcess, Path]]:
    state = workdir / name
    argv = coordinator_argv(state, "--warm-pool", str(warm_pool))
    async with running_server(f"coordinator {name}", argv, workdir / f"{name}.log") as server:
        yield server, state


async def bare_echo_median_ms(url: str) -> float:
    from mcp import Client

    async with Client(f"{url}/mcp", mode="legacy") as bare:
        timings = []
        for _ in range(BARE_CALLS):
            started = time.perf_counter()
            checked(await bare.call_tool("echo", {"message": "bare"}), "bare echo")
            timings.append(time.perf_counter() - started)
    return statistics.median(timings[BARE_CALLS // 10 :]) * 1000  # the first tenth warms up


async def first_call_ms(url: str) -> float:
    """A new session (initialize done), then its first tool call: the call's time."""
    from mcp import Client

    async with Client(f"{url}/mcp", mode="legacy") as client:
        started = time.perf_counter()
        async with asyncio.timeout(CALL_TIMEOUT_S):
            checked(await client.call_tool("echo", {"message": "first"}), "first call")
        return (time.perf_counter() - started) * 1000


async def first_calls_ms(url: str, state: Path, warm_pool: int, samples: int) -> float:
    """The median first call of `samples` sessions, one at a time, each with the pool full again first."""
    timings = []
    for _ in range(samples):
        await wait_pool_full(state, warm_pool)
        timings.append(await first_call_ms(url))
    return statistics.median(timings)


async def burst_s(url: str, state: Path, warm_pool: int, sessions: int) -> float:
    """`sessions` opened at once (connect, initialize, first call): seconds until the last was served."""
    from mcp import Client

    await wait_pool_full(state, warm_pool)
    served: list[float] = []
    all_served = asyncio.Event()

    async def one() -> None:
        async with Client(f"{url}/mcp", mode="legacy") as client:
            checked(await client.call_tool("echo", {"message": "burst"}), "burst call")
            served.append(time.perf_counter())
            if len(served) == sessions:
                all_served.set()
            await all_served.wait()  # every session stays open until all were served

    started = time.perf_counter()
    async with asyncio.timeout(CALL_TIMEOUT_S):
        await asyncio.gather(*(one() for _ in range(sessions)))
    return max(served) - started


def tree_pss_kib(pid: int) -> tuple[int, int]:
    """PSS and RSS (KiB) of a process and all its descendants."""
    pss = rss = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines()[1:]:
                key, value = line.split(":", 1)
                if key == "Pss":
                    pss += int(value.split()[0])
                elif key == "Rss":
                    rss += int(value.split()[0])
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue  # ended meanwhile
    return pss, rss


async def idle_session_kib(url: str, state: Path) -> tuple[int, int]:
    """PSS and RSS of an idle session's agent (the only per-session process while no code runs)."""
    from mcp import Client

    async with Client(f"{url}/mcp", mode="legacy") as client:
        mark = "idle-bench-marker"
        checked(await client.call_tool("fs.write", {"path": mark, "content": ""}), "fs.write")
        [folder] = [p for p in (state / "sessions").iterdir() if (p / "workspace" / mark).exists()]
        await asyncio.sleep(3)  # idle: its venv made, its first requests long done
        return tree_pss_kib(int((folder / "agent.pid").read_text()))


async def measure(samples: int, timeout_s: float) -> dict[str, Any]:
    # The local backend needs a state dir its unprivileged sandbox uids can enter: not a 0700 folder.
    workdir = Path(tempfile.mkdtemp(prefix="codegen-mcp-bench-sessions-"))
    workdir.chmod(0o711)
    os.environ["CODEGEN_MAX_HANDSHAKES_PER_CLIENT"] = "64"  # inherited by the coordinators: see the docstring
    figures: dict[str, Any] = {"samples": samples, "cpus": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2)}
    try:
        async with (
            asyncio.timeout(timeout_s),
            running_server("bare echo server", BARE_ARGV, workdir / "bare.log") as bare,
        ):
            figures["bare_echo_ms"] = round(await bare_echo_median_ms(bare.url), 2)
            async with coordinator(workdir, "pool2", 2) as (server, state):
                figures["first_call_pool_warm_ms"] = round(await first_calls_ms(server.url, state, 2, samples), 1)
                figures["burst_10_pool2_s"] = round(await burst_s(server.url, state, 2, 10), 2)
                figures["burst_50_pool2_s"] = round(await burst_s(server.url, state, 2, 50), 2)
                pss, rss = await idle_session_kib(server.url, state)
                figures["idle_session_pss_mib"] = round(pss / 1024, 1)
                figures["idle_session_rss_mib"] = round(rss / 1024, 1)
            async with coordinator(workdir, "pool0", 0) as (server, state):
                figures["first_call_no_pool_ms"] = round(await first_calls_ms(server.url, state, 0, samples), 1)
            async with coordinator(workdir, "pool10", 10) as (server, state):
                figures["burst_10_pool10_s"] = round(await burst_s(server.url, state, 10, 10), 2)
                figures["burst_50_pool10_s"] = round(await burst_s(server.url, state, 10, 50), 2)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    base = figures["bare_echo_ms"]
    figures["ratio_pool_warm"] = round(figures["first_call_pool_warm_ms"] / base, 1)
    figures["ratio_no_pool"] = round(figures["first_call_no_pool_ms"] / base, 1)
    return figures


def format_table(f: dict[str, Any]) -> str:
    def row(what: str, value: str, goal: str = "", met: bool = True) -> str:
        verdict = f"   (goal {goal}: {'met' if met else 'NOT met'})" if goal else ""
        return f"{what:<46}{value:>24}{verdict}"

    n, base = f["samples"], f["bare_echo_ms"]
    return "\n".join(
        [
            f"local backend, streamable HTTP on loopback; {f['cpus']} CPUs, load average {f['loadavg_1m']} at start",
            row(f"bare MCP-SDK echo (median of {BARE_CALLS})", f"{base:.2f} ms"),
            row(
                f"first call, pool warm (median of {n})",
                f"{f['first_call_pool_warm_ms']:.1f} ms = {f['ratio_pool_warm']:.1f}x",
                "<= 10x",
                f["ratio_pool_warm"] <= 10,
            ),
            row(
                f"first call, no pool (median of {n})",
                f"{f['first_call_no_pool_ms']:.1f} ms = {f['ratio_no_pool']:.1f}x",
            ),
            row(
                "10 sessions at once, all served (pool 2)",
                f"{f['burst_10_pool2_s']:.2f} s",
                "<= 2 s",
                f["burst_10_pool2_s"] <= 2,
            ),
            row(
                "10 sessions at once, all served (pool 10)",
                f"{f['burst_10_pool10_s']:.2f} s",
                "<= 2 s",
                f["burst_10_pool10_s"] <= 2,
            ),
            row("50 sessions at once, all served (pool 2)", f"{f['burst_50_pool2_s']:.2f} s"),
            row("50 sessions at once, all served (pool 10)", f"{f['burst_50_pool10_s']:.2f} s"),
            row(
                "idle session PSS (its RSS)",
                f"{f['idle_session_pss_mib']:.1f} MiB ({f['idle_session_rss_mib']:.1f} MiB)",
                "<= 15 MB",
                f["idle_session_pss_mib"] * 2**20 <= 15e6,
            ),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5, help="new sessions timed one by one (default: 5)")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on the whole run, seconds (default: 900)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error("--samples must be at least 1")
    figures = run_bench(lambda: measure(args.samples, args.timeout), args.timeout)
    print(json.dumps(figures, separators=(",", ":")) if args.json else format_table(figures))


if __name__ == "__main__":
    main()
