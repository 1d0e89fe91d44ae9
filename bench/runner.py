"""What the MCP benches share around their own measurement: the `--timeout` and `--json` options, a run that
ctrl-C, SIGTERM and the timeout end with a sentence (the bench's servers stopped), and the printed figures."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any


def bench_parser(doc: str, *, timeout_s: float = 300.0) -> argparse.ArgumentParser:
    """A bench's parser (described by the first line of its docstring) with `--timeout` and `--json`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "--timeout", type=float, default=timeout_s, help=f"bound on the whole run, seconds (default: {timeout_s:g})"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    return parser


def add_rounds(parser: argparse.ArgumentParser, *, n: int, warmup: int, per: str) -> None:
    """`--n` timed and `--warmup` untimed calls per `per` (a server, a coordinator...); at least 2 timed calls,
    so that a p50 and a spread exist."""

    def timed(value: str) -> int:
        count = int(value)
        if count < 2:
            raise argparse.ArgumentTypeError("must be at least 2")
        return count

    parser.add_argument("--n", type=timed, default=n, help=f"timed calls per {per} (default: {n})")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"untimed calls per {per} first (default: {warmup})")


def run_bench(measure: Callable[[], Awaitable[dict[str, Any]]], timeout_s: float) -> dict[str, Any]:
    """Run a bench's measurement; ctrl-C, SIGTERM and its timeout end it with a sentence, servers stopped."""
    # A failed call raises here anyway; what the SDK client logs as its streams are torn down on ctrl-C
    # (e.g. "Error parsing SSE message") is noise.
    logging.getLogger("mcp").setLevel(logging.CRITICAL)

    async def cancellable() -> dict[str, Any]:
        # SIGTERM cancels the run like ctrl-C does, so the servers are stopped either way.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await measure()

    try:
        return asyncio.run(cancellable())
    except KeyboardInterrupt:
        sys.exit("interrupted; servers stopped")
    except asyncio.CancelledError:
        sys.exit("terminated; servers stopped")
    except TimeoutError:
        sys.exit(f"gave up after {timeout_s:.0f} s (--timeout); servers stopped")


def report(
    args: argparse.Namespace,
    measure: Callable[[], Awaitable[dict[str, Any]]],
    format_table: Callable[[dict[str, Any]], str],
) -> None:
    """Measure within `--timeout`, then print the figures: a table, or one JSON line with `--json`."""
    figures = run_bench(measure, args.timeout)
    print(json.dumps(figures, separators=(",", ":")) if args.json else format_table(figures))
