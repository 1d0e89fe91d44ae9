"""Round-trip latency of MCP tool calls: the coordinator against a bare MCP SDK server.

Starts two processes on loopback, both serving streamable HTTP:
  (a) the coordinator (`python -m codegen_mcp.coordinator`, local backend, temporary state dir), and
  (b) `bench/bare_echo_server.py`, an `MCPServer` with one `echo` tool,
then, with the official `mcp.Client`, warms up and times N sequential calls of: bare `echo`, coordinator
`echo` (proxied to the session's sandbox agent) and coordinator `fs.read` of a small file written first
with `fs.write`. Also reports the coordinator's first call, which creates the session's sandbox.

    .venv/bin/python bench/roundtrip.py [--n 300] [--warmup 30] [--json]

Both servers are stopped on exit, on error, on ctrl-C and on SIGTERM; `--timeout` bounds the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from runner import add_rounds, bench_parser, report

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
CALL_TIMEOUT_S = 30.0
FIRST_CALL_TIMEOUT_S = 120.0  # creating a sandbox may build a virtualenv
SMALL_FILE = "bench/small.txt"
SMALL_CONTENT = "0123456789abcdef" * 16  # 256 bytes


# --- server processes --------------------------------------------------------------------------------


@dataclasses.dataclass
class ServerProcess:
    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    url: str = ""
    _drain: asyncio.Task[None] | None = None

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_listening(self, timeout_s: float) -> str:
        """Read stdout until the server's `LISTENING <url>` line; then keep draining it in the background."""
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        try:
            async with asyncio.timeout(timeout_s):
                while line := (await stdout.readline()).decode(errors="replace"):
                    if line.startswith("LISTENING "):
                        self.url = line.split(maxsplit=1)[1].strip().rstrip("/")
                        break
        except TimeoutError:
            pass
        if not self.url:
            raise RuntimeError(
                f"{self.name} did not print `LISTENING <url>` within {timeout_s:.0f} s "
                f"(exit code {self.proc.returncode}); its log:\n{self.log_tail()}"
            )

        async def drain() -> None:
            while await stdout.read(65536):
                pass

        self._drain = asyncio.create_task(drain(), name=f"drain-{self.name}")
        return self.url

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)  # graceful: the coordinator closes its sandboxes
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain


@contextlib.asynccontextmanager
async def running_server(
    name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None
) -> AsyncIterator[ServerProcess]:
    """`argv` started with this environment plus `env`, until it says LISTENING; stopped on exit."""
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env={**os.environ, **(env or {})},
        )
    server = ServerProcess(name, proc, log_path)
    try:
        await server.wait_listening(START_TIMEOUT_S)
        yield server
    finally:
        await asyncio.shield(server.stop())


# --- measurement ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Figures:
    n: int
    median_ms: float
    p90_ms: float
    min_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Figures:
        ms = sorted(s * 1000 for s in seconds)
        p90 = statistics.quantiles(ms, n=10, method="inclusive")[8] if len(ms) > 1 else ms[0]
        return cls(n=len(ms), median_ms=statistics.median(ms), p90_ms=p90, min_ms=ms[0])


def checked(result: Any, what: str) -> Any:
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        raise RuntimeError(f"{what} returned an error: {text}")
    return result


async def time_interleaved(calls: dict[str, Callable[[], Awaitable[Any]]], n: int) -> dict[str, list[float]]:
    """n rounds of one call of each kind, so a change of machine load weighs on all of them alike."""
    timings: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(n):
        for name, call in calls.items():
            started = time.perf_counter()
            async with asyncio.timeout(CALL_TIMEOUT_S):
                await call()
            timings[name].append(time.perf_counter() - started)
    return timings


async def time_echo(
    servers: dict[str, tuple[list[str], dict[str, str]]], workdir: Path, message: str, *, n: int, warmup: int
) -> tuple[dict[str, Figures], float]:
    """Start each server (argv, extra environment), then time `n` interleaved rounds of one `echo` on each.

    A coordinator's first call (it creates the session's sandbox) and `warmup` rounds are not timed. Returns the
    figures by server name and the 1-minute load average when the timed rounds began.
    """
    from mcp import Client

    async with contextlib.AsyncExitStack() as stack:
        clients: dict[str, Any] = {}
        for name, (argv, env) in servers.items():
            log = workdir / f"{name.replace(' ', '_')}.log"
            server = await stack.enter_async_context(running_server(name, argv, log, env))
            clients[name] = await stack.enter_async_context(Client(f"{server.url}/mcp", mode="legacy"))

        def echo(name: str) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                checked(await clients[name].call_tool("echo", {"message": message}), name)

            return call

        calls = {name: echo(name) for name in clients}
        for call in calls.values():
            async with asyncio.timeout(FIRST_CALL_TIMEOUT_S):
                await call()
        await time_interleaved(calls, warmup)
        load = os.getloadavg()[0]
        timings = await time_interleaved(calls, n)
    return {name: Figures.of(seconds) for name, seconds in timings.items()}, load


def echo_figures(
    args: argparse.Namespace, figures: dict[str, Figures], load: float, *, baseline: str, ratio_key: str
) -> dict[str, Any]:
    """What `time_echo` measured, for `--json`: each server's figures and its ratio to `baseline`'s median."""
    base = figures[baseline].median_ms
    return {
        "n": args.n,
        "warmup": args.warmup,
        "calls": {name: dataclasses.asdict(f) for name, f in figures.items()},
        ratio_key: {name: round(f.median_ms / base, 3) for name, f in figures.items()},
        "loadavg_1m": round(load, 2),
        "cpus": os.cpu_count(),
        "call_timeout_s": CALL_TIMEOUT_S,
    }


def echo_table(figures: dict[str, Any], *, servers: str, ratio_key: str, ratio_column: str) -> list[str]:
    """`echo_figures` as the lines of a table (the caller adds its own notes)."""
    lines = [
        f"{figures['n']} sequential echo calls on each {servers} (interleaved) after {figures['warmup']} warm-up "
        "rounds;",
        f"streamable HTTP on loopback; load average {figures['loadavg_1m']} on {figures['cpus']} CPUs",
        "",
        f"{'call':<30}{'median ms':>10}{'p90 ms':>10}{'min ms':>10}{ratio_column:>9}",
    ]
    for name, f in figures["calls"].items():
        ratio = figures[ratio_key][name]
        lines.append(f"{name:<30}{f['median_ms']:>10.2f}{f['p90_ms']:>10.2f}{f['min_ms']:>10.2f}{ratio:>8.2f}x")
    return lines


async def measure(bare_url: str, coordinator_url: str, n: int, warmup: int) -> dict[str, Any]:
    from mcp import Client

    message = "hello from bench/roundtrip.py"
    # Both on the session protocol (initialize handshake), so the ratio compares like with like: the
    # coordinator serves only that one (a workspace belongs to an MCP session), while `Client`'s default
    # "auto" mode would take a bare server to the sessionless 2026-07-28 protocol.
    async with (
        Client(f"{bare_url}/mcp", mode="legacy") as bare,
        Client(f"{coordinator_url}/mcp", mode="legacy") as coord,
    ):

        async def bare_echo() -> None:
            checked(await bare.call_tool("echo", {"message": message}), "bare echo")

        async def coord_echo() -> None:
            checked(await coord.call_tool("echo", {"message": message}), "coordinator echo")

        async def coord_read() -> None:
            checked(await coord.call_tool("fs.read", {"path": SMALL_FILE}), "coordinator fs.read")

        # The coordinator's first tool call of a session creates that session's sandbox.
        started = time.perf_counter()
        async with asyncio.timeout(FIRST_CALL_TIMEOUT_S):
            await coord_echo()
        first_call_s = time.perf_counter() - started
        async with asyncio.timeout(CALL_TIMEOUT_S):
            checked(await coord.call_tool("fs.write", {"path": SMALL_FILE, "content": SMALL_CONTENT}), "fs.write")

        calls = {"bare_echo": bare_echo, "coordinator_echo": coord_echo, "coordinator_fs_read": coord_read}
        await time_interleaved(calls, warmup)
        load_before = os.getloadavg()[0]
        results = {name: Figures.of(seconds) for name, seconds in (await time_interleaved(calls, n)).items()}
        protocols = {"bare": bare.protocol_version, "coordinator": coord.protocol_version}

    base = results["bare_echo"].median_ms
    return {
        "n": n,
        "warmup": warmup,
        "coordinator_first_call_ms": round(first_call_s * 1000, 1),
        **{
            name: {k: round(v, 3) if isinstance(v, float) else v for k, v in dataclasses.asdict(f).items()}
            for name, f in results.items()
        },
        "ratio_coordinator_echo_to_bare_echo": round(results["coordinator_echo"].median_ms / base, 2),
        "ratio_fs_read_to_bare_echo": round(results["coordinator_fs_read"].median_ms / base, 2),
        "protocol_versions": protocols,
        "loadavg_1m": round(load_before, 2),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def format_table(figures: dict[str, Any]) -> str:
    rows = [
        ("bare echo", figures["bare_echo"]),
        ("coordinator echo", figures["coordinator_echo"]),
        ("coordinator fs.read", figures["coordinator_fs_read"]),
    ]
    lines = [
        f"{figures['n']} sequential calls of each kind (interleaved) after {figures['warmup']} warm-up rounds;",
        f"streamable HTTP on loopback; load average {figures['loadavg_1m']} on {figures['cpus']} CPUs",
        "",
        f"{'call':<22}{'median ms':>10}{'p90 ms':>10}{'min ms':>10}",
    ]
    lines += [f"{name:<22}{f['median_ms']:>10.2f}{f['p90_ms']:>10.2f}{f['min_ms']:>10.2f}" for name, f in rows]
    lines += [
        "",
        f"{'coordinator echo / bare echo (median)':<40}{figures['ratio_coordinator_echo_to_bare_echo']:>8.2f}x",
        f"{'coordinator fs.read / bare echo (median)':<40}{figures['ratio_fs_read_to_bare_echo']:>8.2f}x",
        f"{'coordinator first call (new sandbox)':<40}{figures['coordinator_first_call_ms']:>8.1f} ms",
    ]
    return "\n".join(lines)


def coordinator_argv(state_dir: Path, *extra: str) -> list[str]:
    """The coordinator on a free loopback port, local backend on `state_dir`, logging warnings only."""
    return [
        sys.executable,
        "-m",
        "codegen_mcp.coordinator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--state-dir",
        str(state_dir),
        "--log-level",
        "WARNING",
        *extra,
    ]


BARE_ARGV = [sys.executable, str(HERE / "bare_echo_server.py"), "--host", "127.0.0.1", "--port", "0"]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    return await beside_bare(lambda bare, coordinator: measure(bare, coordinator, args.n, args.warmup), args.timeout)


async def beside_bare(measure: Callable[[str, str], Awaitable[dict[str, Any]]], timeout_s: float) -> dict[str, Any]:
    """`measure(bare_url, coordinator_url)` with both servers running, within `timeout_s`; their logs on error."""
    # The local backend needs a state dir its unprivileged sandbox uids can enter: not a 0700 folder.
    workdir = Path(tempfile.mkdtemp(prefix="codegen-mcp-bench-"))
    workdir.chmod(0o711)
    try:
        async with (
            asyncio.timeout(timeout_s),
            running_server(
                "coordinator", coordinator_argv(workdir / "state"), workdir / "coordinator.log"
            ) as coordinator,
            running_server("bare echo server", BARE_ARGV, workdir / "bare.log") as bare,
        ):
            try:
                return await measure(bare.url, coordinator.url)
            except Exception as exc:
                raise RuntimeError(
                    f"{exc}\n--- coordinator log ---\n{coordinator.log_tail()}\n--- bare log ---\n{bare.log_tail()}"
                ) from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    add_rounds(parser, n=300, warmup=30, per="measurement")
    args = parser.parse_args(argv)
    report(args, lambda: run(args), format_table)


if __name__ == "__main__":
    main()
