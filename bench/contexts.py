"""What a cell in a persistent Python context costs next to a stateless run.python, through the whole coordinator.

An in-process coordinator (local backend, its real sandbox agent and jail, a temporary state folder) and the
official MCP client over the SDK's in-memory transport. After one untimed call of each kind (the first context
cell starts its interpreter; that start is reported apart), `--n` interleaved rounds of: a stateless
`run.python` of `print(1)`, and the same code as a cell of the context `main`.

    .venv/bin/python bench/contexts.py [--n 30] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from mcp import Client, ClientSession

from codegen_mcp.coordinator.server import Coordinator, create_server
from codegen_mcp.coordinator.settings import CoordinatorSettings, LocalBackendSettings

CALL_TIMEOUT_S = 120.0


async def timed(session: ClientSession, **arguments: Any) -> float:
    start = time.perf_counter()
    async with asyncio.timeout(CALL_TIMEOUT_S):
        result = await session.call_tool("run.python", {"code": "print(1)", **arguments})
    elapsed = (time.perf_counter() - start) * 1000
    assert not result.is_error and result.structured_content["state"] == "succeeded", result.content
    return elapsed


async def measure(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cg-bench-contexts-") as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 - the sandbox uid must traverse it
        settings = CoordinatorSettings(state_dir=Path(tmp) / "state", local=LocalBackendSettings(warm_pool=0))
        async with Coordinator(settings).running() as coordinator:
            server = create_server(coordinator)
            async with Client(server, mode="legacy") as client:
                s = client.session
                await timed(s)  # creates the session's sandbox and venv
                first_cell = await timed(s, context="main")
                runs: list[float] = []
                cells: list[float] = []
                for _ in range(n):
                    runs.append(await timed(s))
                    cells.append(await timed(s, context="main"))
    run_ms, cell_ms = statistics.median(runs), statistics.median(cells)
    return {
        "n": n,
        "stateless_run": {"median_ms": round(run_ms, 2), "min_ms": round(min(runs), 2)},
        "context_cell": {"median_ms": round(cell_ms, 2), "min_ms": round(min(cells), 2)},
        "ratio_cell_to_run": round(cell_ms / run_ms, 3),
        "first_cell_ms": round(first_cell, 1),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=30, help="timed rounds (one call of each kind per round)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.n))
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{figures['n']} rounds, run.python of print(1) through the coordinator; load {figures['loadavg_1m']}")
    print(f"{'call':<34}{'median ms':>10}{'min ms':>10}")
    for key, label in (
        ("stateless_run", "stateless run (fresh interpreter)"),
        ("context_cell", "cell in context 'main'"),
    ):
        print(f"{label:<34}{figures[key]['median_ms']:>10.2f}{figures[key]['min_ms']:>10.2f}")
    print(f"context cell / stateless run (median)  {figures['ratio_cell_to_run']:.3f}x")
    print(f"first cell of a context (starts it)    {figures['first_cell_ms']:.1f} ms")


if __name__ == "__main__":
    main()
