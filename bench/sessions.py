"""New sessions on the local backend: how soon their first call is served, and what an idle one costs.

Measured in one run, against the bare MCP-SDK echo server of `roundtrip.py` started beside the coordinators:
  - the first tool call (`echo`) of a new session with the warm pool full (`--warm-pool 2`, the default) and
    with no pool (`--warm-pool 0`), as medians and as ratios to the bare server's echo. The session lists its
    tools first, as MCP clients do before calling any: the SDK's client otherwise lists them itself inside
    its first `call_tool` of a tool it has not seen (to check the result against the tool's output schema),
    which costs the same on any server and is no start of a sandbox. The first call with that listing inside
    is printed too, for the bare server and for the coordinator;
  - 10 and 50 sessions opened at once (connect, initialize, first call): the time until all were served, with
    the default pool and with a pool of 10;
  - the memory an idle session adds, shared pages counted once: the proportional set size (PSS, from
    /proc/<pid>/smaps_rollup) summed over the coordinator and every process under it (zygote, agents), before
    and after `IDLE_SESSIONS` more sessions are open and idle (the pool full again both times), divided by
    their number. Also one idle agent's own PSS, RSS and private pages (its PSS depends on how many agents
    share the zygote's pages).

    .venv/bin/python bench/sessions.py [--samples 5] [--json]

All sessions come from one client address, so the coordinators are told to hold more MCP sessions without a
sandbox per client than their default 16 (the burst would otherwise end its own oldest handshakes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from roundtrip import BARE_ARGV, ServerProcess, checked, coordinator_argv, running_server
from runner import bench_parser, report

POOL_TIMEOUT_S = 120.0
CALL_TIMEOUT_S = 120.0  # a first call without a pool starts an agent, many at once on a busy machine
BARE_CALLS = 200
IDLE_SESSIONS = 5  # sessions opened to measure what an idle one adds
SETTLE_S = 3.0  # an idle session's venv made, its first requests long done


def pool_full(state_dir: Path, size: int, sessions: int = 0) -> bool:
    """The pool holds `size` listening sandboxes beside `sessions` sessions' (every folder's agent listens)."""
    folders_dir = state_dir / "sessions"
    folders = [p for p in folders_dir.iterdir() if p.name.startswith("s-")] if folders_dir.exists() else []
    return len(folders) == size + sessions and all((p / "agent.sock").exists() for p in folders)


async def wait_pool_full(state_dir: Path, size: int, sessions: int = 0) -> None:
    async with asyncio.timeout(POOL_TIMEOUT_S):
        while not pool_full(state_dir, size, sessions):
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


async def first_call_ms(url: str, *, tools_listed: bool = True) -> float:
    """A new session (initialize done, and its tools listed unless told not to), then its first tool call: the
    call's time."""
    from mcp import Client

    async with Client(f"{url}/mcp", mode="legacy") as client:
        if tools_listed:
            await client.list_tools()
        started = time.perf_counter()
        async with asyncio.timeout(CALL_TIMEOUT_S):
            checked(await client.call_tool("echo", {"message": "first"}), "first call")
        return (time.perf_counter() - started) * 1000


async def first_calls_ms(
    url: str, state: Path | None, warm_pool: int, samples: int, *, tools_listed: bool = True
) -> float:
    """The median first call of `samples` sessions, one at a time, each with the pool full again first
    (`state` None: the bare server, which has no pool)."""
    timings = []
    for _ in range(samples):
        if state is not None:
            await wait_pool_full(state, warm_pool)
        timings.append(await first_call_ms(url, tools_listed=tools_listed))
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


def _rollup(pid: int) -> dict[str, int]:
    """The KiB figures of /proc/<pid>/smaps_rollup (Rss, Pss, Private_Dirty, ...)."""
    figures = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        figures[key] = int(value.split()[0])
    return figures


def tree_pss_kib(pid: int) -> int:
    """PSS (KiB) of a process and all its descendants: each page they share counted once among them."""
    pss = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            pss += _rollup(current)["Pss"]
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue  # ended meanwhile
    return pss


async def idle_sessions_kib(server: ServerProcess, state: Path, warm_pool: int) -> dict[str, float]:
    """What an idle session adds to the coordinator's whole process tree (PSS), and one idle agent's own pages."""
    from mcp import Client

    async def settled_pss(sessions: int) -> int:
        await wait_pool_full(state, warm_pool, sessions)
        await asyncio.sleep(SETTLE_S)
        return tree_pss_kib(server.proc.pid)

    before = await settled_pss(0)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(Client(f"{server.url}/mcp", mode="legacy")) for _ in range(IDLE_SESSIONS)
        ]
        mark = "idle-bench-marker"
        for client in clients:
            checked(await client.call_tool("fs.write", {"path": mark, "content": ""}), "fs.write")
        after = await settled_pss(IDLE_SESSIONS)
        folder = next(p for p in (state / "sessions").iterdir() if (p / "workspace" / mark).exists())
        agent = _rollup(int((folder / "agent.pid").read_text()))
    return {
        "adds_pss_mib": (after - before) / IDLE_SESSIONS / 1024,
        "agent_pss_mib": agent["Pss"] / 1024,
        "agent_rss_mib": agent["Rss"] / 1024,
        "agent_private_mib": (agent["Private_Dirty"] + agent["Private_Clean"]) / 1024,
    }


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
            figures["bare_first_call_ms"] = round(await first_calls_ms(bare.url, None, 0, samples), 1)
            figures["bare_first_call_sdk_ms"] = round(
                await first_calls_ms(bare.url, None, 0, samples, tools_listed=False), 1
            )
            async with coordinator(workdir, "pool2", 2) as (server, state):
                figures["first_call_pool_warm_ms"] = round(await first_calls_ms(server.url, state, 2, samples), 1)
                figures["first_call_pool_warm_sdk_ms"] = round(
                    await first_calls_ms(server.url, state, 2, samples, tools_listed=False), 1
                )
                idle = await idle_sessions_kib(server, state, 2)
                figures.update({f"idle_{k}": round(v, 1) for k, v in idle.items()})
                figures["burst_10_pool2_s"] = round(await burst_s(server.url, state, 2, 10), 2)
                figures["burst_50_pool2_s"] = round(await burst_s(server.url, state, 2, 50), 2)
            async with coordinator(workdir, "pool0", 0) as (server, state):
                figures["first_call_no_pool_ms"] = round(await first_calls_ms(server.url, state, 0, samples), 1)
            async with coordinator(workdir, "pool10", 10) as (server, state):
                figures["burst_10_pool10_s"] = round(await burst_s(server.url, state, 10, 10), 2)
                figures["burst_50_pool10_s"] = round(await burst_s(server.url, state, 10, 50), 2)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    base = figures["bare_echo_ms"]
    for name in ("bare_first_call", "bare_first_call_sdk", "first_call_pool_warm", "first_call_pool_warm_sdk"):
        figures[f"ratio_{name}"] = round(figures[f"{name}_ms"] / base, 1)
    figures["ratio_first_call_no_pool"] = round(figures["first_call_no_pool_ms"] / base, 1)
    return figures


def format_table(f: dict[str, Any]) -> str:
    def row(what: str, value: str, goal: str = "", met: bool = True) -> str:
        verdict = f"   (goal {goal}: {'met' if met else 'NOT met'})" if goal else ""
        return f"{what:<58}{value:>26}{verdict}"

    def call(name: str) -> str:
        return f"{f[name + '_ms']:.1f} ms = {f['ratio_' + name]:.1f}x"

    n, base = f["samples"], f["bare_echo_ms"]
    burst = [
        row(f"{size} sessions at once, all served (pool {pool})", f"{f[f'burst_{size}_pool{pool}_s']:.2f} s", *goal)
        for size, pool, goal in (
            (10, 2, ("<= 2 s", f["burst_10_pool2_s"] <= 2)),
            (10, 10, ("<= 2 s", f["burst_10_pool10_s"] <= 2)),
            (50, 2, ()),
            (50, 10, ()),
        )
    ]
    return "\n".join(
        [
            f"local backend, streamable HTTP on loopback; {f['cpus']} CPUs, load average {f['loadavg_1m']} at start",
            "ratios: to the bare server's echo (median of a warm session); first calls are medians of "
            f"{n} new sessions",
            row(f"bare MCP-SDK echo (median of {BARE_CALLS})", f"{base:.2f} ms"),
            row("bare: first call of a new session, tools listed", call("bare_first_call")),
            row("bare: first call, the SDK client listing tools inside", call("bare_first_call_sdk")),
            row(
                "first call, pool warm, tools listed",
                call("first_call_pool_warm"),
                "<= 10x",
                f["ratio_first_call_pool_warm"] <= 10,
            ),
            row("first call, pool warm, the SDK client listing inside", call("first_call_pool_warm_sdk")),
            row("first call, no pool, tools listed", call("first_call_no_pool")),
            *burst,
            row(
                f"idle session adds (PSS of all processes, {IDLE_SESSIONS} sessions)",
                f"{f['idle_adds_pss_mib']:.1f} MiB",
                "<= 15 MB",
                f["idle_adds_pss_mib"] * 2**20 <= 15e6,
            ),
            row(
                "one idle agent: PSS / private / RSS",
                " / ".join(f"{f[f'idle_agent_{k}_mib']:.1f}" for k in ("pss", "private", "rss")) + " MiB",
            ),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser(__doc__, timeout_s=900.0)
    parser.add_argument("--samples", type=int, default=5, help="new sessions timed one by one (default: 5)")
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error("--samples must be at least 1")
    report(args, lambda: measure(args.samples, args.timeout), format_table)


if __name__ == "__main__":
    main()
