"""Live output: the time from a `print` in the sandbox to the MCP notification that carries it, at the client.

Starts the coordinator (local backend) and `bench/bare_echo_server.py` on loopback, both over streamable HTTP,
and connects the official `mcp.Client` to each. One `run.python` then prints a wall-clock timestamp
(`time.time()`, flushed) every `--interval` seconds, `--prints` times; the client notes `time.time()` as each
notification arrives and reads the timestamps it carries:

  - log notifications (`notifications/message`, logger "stdout"): the whole new output;
  - progress notifications (the call sent a progressToken): their message carries the latest lines.

Both ends read the same clock (one machine). It prints p50/p95/max of both latencies, and, for scale, the
round trip of a bare SDK `echo` timed in the same run (the ratio of the two medians).

    .venv/bin/python bench/live_output.py [--prints 50] [--interval 0.2] [--echoes 100] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import time
from typing import Any

from roundtrip import beside_bare, checked
from runner import bench_parser, report

GOAL_MS = 100.0
FIRST_CALL_TIMEOUT_S = 120.0
STAMP = re.compile(r"^STAMP (\d+) (\d+\.\d+)$", re.MULTILINE)


def printer(prints: int, interval_s: float) -> str:
    """The sandbox side: a timestamp per line, flushed, then a pause."""
    return (
        "import time\n"
        f"for i in range({prints}):\n"
        "    print(f'STAMP {i} {time.time():.6f}', flush=True)\n"
        f"    time.sleep({interval_s})\n"
    )


class Receipts:
    """When each printed stamp first reached the client, by kind of notification."""

    def __init__(self) -> None:
        self.latency_s: dict[str, dict[int, float]] = {"log": {}, "progress": {}}

    def note(self, kind: str, text: str) -> None:
        now = time.time()
        for number, stamp in STAMP.findall(text):
            self.latency_s[kind].setdefault(int(number), now - float(stamp))


def figures(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    p95 = statistics.quantiles(ms, n=20, method="inclusive")[18] if len(ms) > 1 else ms[0]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(p95, 2),
        "max_ms": round(ms[-1], 2),
    }


async def measure(bare_url: str, coordinator_url: str, args: argparse.Namespace) -> dict[str, Any]:
    import mcp_types as types
    from mcp import Client

    receipts = Receipts()

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        if params.logger == "stdout":
            receipts.note("log", str(params.data))

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        receipts.note("progress", message or "")

    # Both on the session protocol, as in roundtrip.py (the coordinator serves only that one).
    async with (
        Client(f"{bare_url}/mcp", mode="legacy") as bare,
        Client(f"{coordinator_url}/mcp", mode="legacy", logging_callback=on_log) as coord,
    ):
        async with asyncio.timeout(FIRST_CALL_TIMEOUT_S):  # creates the session's sandbox
            checked(await coord.call_tool("echo", {"message": "warm up"}), "coordinator echo")
            checked(await coord.call_tool("run.python", {"code": "print('warm up')"}), "warm-up run")
        echoes: list[float] = []
        for _ in range(args.echoes):
            started = time.perf_counter()
            checked(await bare.call_tool("echo", {"message": "hello"}), "bare echo")
            echoes.append(time.perf_counter() - started)
        load_before = os.getloadavg()[0]
        code = printer(args.prints, args.interval)
        arguments = {"code": code, "wait_s": 300, "timeout_s": args.prints * args.interval + 30}
        result = checked(
            await coord.call_tool("run.python", arguments, progress_callback=on_progress), "the printing run"
        )
        printed = len(STAMP.findall(result.structured_content["run"]["stdout"]))

    bare_echo = figures(echoes)
    by_kind = {kind: figures(list(got.values())) for kind, got in receipts.latency_s.items() if got}
    return {
        "prints": args.prints,
        "interval_s": args.interval,
        "printed": printed,
        "print_to_log_notification": by_kind.get("log"),
        "print_to_progress_notification": by_kind.get("progress"),
        "bare_echo_round_trip": bare_echo,
        "ratio_log_p50_to_bare_echo_p50": round(by_kind["log"]["p50_ms"] / bare_echo["p50_ms"], 2)
        if "log" in by_kind
        else None,
        "goal_ms": GOAL_MS,
        "loadavg_1m": round(load_before, 2),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def row(label: str, figures: dict[str, float] | None) -> str:
    if figures is None:
        return f"{label:<34}{0:>9}{'-':>9}{'-':>9}{'-':>9}"
    f = figures
    return f"{label:<34}{f['n']:>9}{f['p50_ms']:>9.2f}{f['p95_ms']:>9.2f}{f['max_ms']:>9.2f}"


def format_table(f: dict[str, Any]) -> str:
    log = f["print_to_log_notification"]
    lines = [
        f"{f['prints']} prints, one every {f['interval_s']:g} s, in one run.python; {f['printed']} in its result;",
        f"streamable HTTP on loopback; load average {f['loadavg_1m']} on {f['cpus']} CPUs",
        "",
        f"{'print → client':<34}{'received':>9}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}",
        row("log notification (stdout)", log),
        row("progress notification (message)", f["print_to_progress_notification"]),
        row("bare SDK echo, round trip", f["bare_echo_round_trip"]),
        "",
        f"{'log notification p50 / bare echo p50':<40}{f['ratio_log_p50_to_bare_echo_p50']:>8}x",
    ]
    if log is not None:
        verdict = "within" if log["p95_ms"] <= f["goal_ms"] else "OVER"
        lines.append(f"goal: print → notification ≤ {f['goal_ms']:g} ms; p95 {log['p95_ms']:.2f} ms is {verdict} it")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    return await beside_bare(lambda bare, coordinator: measure(bare, coordinator, args), args.timeout)


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--prints", type=int, default=50, help="timestamps the run prints (default: 50)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between prints (default: 0.2)")
    parser.add_argument("--echoes", type=int, default=100, help="bare echo calls timed for scale (default: 100)")
    args = parser.parse_args(argv)
    if args.prints < 30:
        parser.error("--prints must be at least 30")
    if args.echoes < 2 or not 0 < args.prints * args.interval <= 240:
        parser.error("--echoes must be at least 2, and the prints must take 4 minutes at most (one call waits 5)")
    report(args, lambda: run(args), format_table)


if __name__ == "__main__":
    main()
