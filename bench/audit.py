"""What the audit sink costs per call: the coordinator's echo with each sink, as a ratio to the file sink.

Starts, each its own process on loopback serving streamable HTTP, the coordinator with `--audit-sink file` (the
local default), `stdout` (the cluster default) and `postgres` (on a real PostgreSQL the bench starts in a temp
folder, when its binaries are installed), then times N interleaved rounds of one `echo` call on each with the
official `mcp.Client`. Every call waits until its audit event is stored (written, or committed) before it answers:
that wait is what the rows differ by.

    .venv/bin/python bench/audit.py [--n 200] [--warmup 20] [--json]

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

from bench.roundtrip import coordinator_argv, echo_figures, echo_table, time_echo  # noqa: E402
from bench.runner import add_rounds, bench_parser, report  # noqa: E402
from tests.support.postgres import PostgresServer, server_bin_dir, start_postgres  # noqa: E402

MESSAGE = "hello from bench/audit.py"
BASELINE = "coordinator echo (file)"


@contextlib.contextmanager
def postgres_if_installed() -> Iterator[PostgresServer | None]:
    if server_bin_dir() is None:
        yield None
        return
    with start_postgres() as server:
        yield server


def servers(workdir: Path, dsn: str | None) -> dict[str, tuple[list[str], dict[str, str]]]:
    """What to start (argv and extra environment), by the name its figures get."""
    argv = {
        BASELINE: (coordinator_argv(workdir / "state-file", "--audit-sink", "file"), {}),
        "coordinator echo (stdout)": (coordinator_argv(workdir / "state-stdout", "--audit-sink", "stdout"), {}),
    }
    if dsn:
        state = workdir / "state-postgres"
        argv["coordinator echo (postgres)"] = (
            coordinator_argv(state, "--audit-sink", "postgres"),
            {"CODEGEN_AUDIT_POSTGRES_DSN": dsn},
        )
    return argv


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="codegen-mcp-bench-"))
    workdir.chmod(0o711)  # the local backend's sandbox uids must enter its state dirs
    try:
        with postgres_if_installed() as postgres:
            dsn = postgres.create_database() if postgres else None
            async with asyncio.timeout(args.timeout):
                figures, load = await time_echo(servers(workdir, dsn), workdir, MESSAGE, n=args.n, warmup=args.warmup)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    return {
        **echo_figures(args, figures, load, baseline=BASELINE, ratio_key="ratio_to_file_sink"),
        "postgres": dsn is not None,
    }


def format_table(figures: dict[str, Any]) -> str:
    lines = echo_table(figures, servers="coordinator", ratio_key="ratio_to_file_sink", ratio_column="/ file")
    if not figures["postgres"]:
        lines += ["", "(PostgreSQL not installed: no postgres row; apt install postgresql)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    add_rounds(parser, n=200, warmup=20, per="coordinator")
    args = parser.parse_args(argv)
    report(args, lambda: measure(args), format_table)


if __name__ == "__main__":
    main()
