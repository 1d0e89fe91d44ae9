"""What resumable streams cost per call: the event store's overhead, as a ratio to a bare SDK echo.

Starts, each its own process on loopback serving streamable HTTP, and a real `redis-server` (when installed):
  - the bare MCP SDK echo server without an event store (the baseline), with the coordinator's memory store,
    and with its Redis store (the same `SessionEvents` view the coordinator gives each session);
  - the coordinator with `--event-store memory` (the default) and with `--event-store redis`;
then times N interleaved rounds of one `echo` call on each with the official `mcp.Client`.

    .venv/bin/python bench/streams.py [--n 200] [--warmup 20] [--json]

Every server is stopped on exit, on error, on ctrl-C and on SIGTERM; `--timeout` bounds the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench.roundtrip import BARE_ARGV, coordinator_argv, echo_figures, echo_table, time_echo  # noqa: E402
from bench.runner import add_rounds, bench_parser, report  # noqa: E402
from tests.support.redis import RedisServer, start_redis, stop_redis  # noqa: E402

MESSAGE = "hello from bench/streams.py"


@contextlib.contextmanager
def redis_if_installed(folder: Path) -> Iterator[RedisServer | None]:
    if shutil.which("redis-server") is None:
        yield None
        return
    server = start_redis(folder)
    try:
        yield server
    finally:
        stop_redis(server)


def servers(workdir: Path, redis_url: str | None) -> dict[str, list[str]]:
    """What to start, by the name its figures get."""
    bare_with = [sys.executable, str(HERE / "streams.py"), "--serve-bare"]
    argv = {
        "bare echo": BARE_ARGV,
        "bare echo + memory store": [*bare_with, "memory"],
        "coordinator echo (memory)": coordinator_argv(workdir / "state-memory", "--event-store", "memory"),
    }
    if redis_url:
        argv["bare echo + redis store"] = [*bare_with, "redis", "--redis-url", redis_url]
        redis = ["--event-store", "redis", "--redis-url", redis_url]
        argv["coordinator echo (redis)"] = coordinator_argv(workdir / "state-redis", *redis)
    return argv


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="codegen-mcp-bench-"))
    workdir.chmod(0o711)  # the local backend's sandbox uids must enter its state dirs
    try:
        with redis_if_installed(workdir) as redis:
            started = {name: (argv, {}) for name, argv in servers(workdir, redis.url if redis else None).items()}
            async with asyncio.timeout(args.timeout):
                figures, load = await time_echo(started, workdir, MESSAGE, n=args.n, warmup=args.warmup)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    return {
        **echo_figures(args, figures, load, baseline="bare echo", ratio_key="ratio_to_bare_echo"),
        "redis": redis is not None,
    }


def format_table(figures: dict[str, Any]) -> str:
    lines = echo_table(figures, servers="server", ratio_key="ratio_to_bare_echo", ratio_column="/ bare")
    if not figures["redis"]:
        lines += ["", "(redis-server not installed: no Redis rows; apt install redis-server)"]
    return "\n".join(lines)


def serve_bare(kind: str, redis_url: str | None) -> None:
    """`--serve-bare`: the bare echo server with one of the coordinator's event stores."""
    from bench import bare_echo_server
    from codegen_mcp.coordinator.event_store import EventLog, MemoryEventLog, RedisEventLog, SessionEvents

    log: EventLog
    if kind == "redis":
        assert redis_url, "--serve-bare redis needs --redis-url"
        log = RedisEventLog(redis_url, max_events_per_stream=1000, ttl_s=3600)
    else:
        log = MemoryEventLog(max_events_per_stream=1000, max_bytes=64 * 1024**2, ttl_s=3600)
    asyncio.run(bare_echo_server.serve("127.0.0.1", 0, SessionEvents(log)))


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    add_rounds(parser, n=200, warmup=20, per="server")
    parser.add_argument("--serve-bare", choices=["memory", "redis"], help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare:
        serve_bare(args.serve_bare, args.redis_url)
        return
    report(args, lambda: measure(args), format_table)


if __name__ == "__main__":
    main()
