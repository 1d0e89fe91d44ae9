"""`python -m codegen_mcp.sandbox_agent` / `codegen-mcp agent`: run one sandbox agent.

Flags override `CODEGEN_AGENT_*` environment variables. Once listening, one line
`LISTENING <host>:<port>` (or `LISTENING unix:<path>`) is printed to stdout, so a parent process that
passed `--port 0` can find the port.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from aiohttp import web

from codegen_mcp.api import tracing
from codegen_mcp.api.agent_settings import AgentSettings, AgentSettingsError
from codegen_mcp.api.errors import AgentExitCode, CodegenError
from codegen_mcp.api.logs import LogFormatError, configure_logging, log_format
from codegen_mcp.sandbox_agent.app import create_app
from codegen_mcp.sandbox_agent.storage import error_reason, workspace_storage_problem, write_termination_message

log = logging.getLogger("codegen_mcp.sandbox_agent")
# Where a refused setting is reported in a Pod: the settings that could name another file are what failed.
DEFAULT_TERMINATION_LOG: Path = AgentSettings.model_fields["termination_log"].default


@functools.cache
def build_parser() -> argparse.ArgumentParser:
    """Built once per process (parsing leaves it as it was): agents forked by the zygote share the zygote's,
    rather than each building one of their own (about 0.6 MB of memory per agent)."""
    p = argparse.ArgumentParser(
        prog="codegen-mcp agent",
        description="Run one sandbox agent over a workspace folder. Flags override CODEGEN_AGENT_* variables.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--workspace", type=Path, help="the folder this agent owns (CODEGEN_AGENT_WORKSPACE)")
    p.add_argument("--state-dir", dest="state_dir", type=Path, help="agent bookkeeping; default <workspace>/.codegen")
    p.add_argument("--venv-dir", dest="venv_dir", type=Path, help="session venv; default <workspace>/.venv")
    p.add_argument("--host", help="TCP host to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port; 0 picks a free one (default 8080)")
    p.add_argument("--unix-socket", dest="unix_socket", type=Path, help="listen on this Unix socket instead of TCP")
    p.add_argument("--token-file", dest="token_file", type=Path, help="file holding the bearer token")
    p.add_argument("--sandbox", choices=["auto", "bwrap", "none"], help="how run code is confined (default auto)")
    p.add_argument(
        "--network", action=argparse.BooleanOptionalAction, help="let run code reach the network (bwrap mode)"
    )
    p.add_argument("--sandbox-uid", dest="sandbox_uid", type=int, help="uid for run code when root (default 65534)")
    p.add_argument("--sandbox-gid", dest="sandbox_gid", type=int, help="gid for run code when root")
    p.add_argument(
        "--hide-path", dest="hide_paths", type=Path, action="append", help="host folder hidden from run code"
    )
    p.add_argument("--python", help="base interpreter for the session venv (default /usr/bin/python3)")
    p.add_argument("--memory-bytes", dest="memory_bytes", type=int, help="address-space limit of run code")
    p.add_argument("--max-processes", dest="max_processes", type=int, help="process limit of run code")
    p.add_argument("--max-file-bytes", dest="max_file_bytes", type=int, help="largest file run code may write")
    p.add_argument("--output-cap-bytes", dest="output_cap_bytes", type=int, help="captured bytes per stream")
    p.add_argument("--max-timeout-s", dest="max_timeout_s", type=float, help="largest timeout_s a call may ask")
    p.add_argument("--pip-index-url", dest="pip_index_url", help="package index for pkg.install")
    p.add_argument("--packages", help="requirements to install into the venv at start (space/comma separated)")
    p.add_argument("--log-level", dest="log_level", default="INFO", help="logging level (default INFO)")
    return p


def parse_settings(argv: list[str] | None) -> tuple[AgentSettings, str]:
    parser = build_parser()
    ns = vars(parser.parse_args(argv))
    level = str(ns.pop("log_level", "INFO"))
    try:
        return AgentSettings.from_environ(os.environ, **ns), level
    except AgentSettingsError as err:  # an unknown CODEGEN_AGENT_* name (a typo) or a bad value
        fail(str(err), AgentExitCode.USAGE, DEFAULT_TERMINATION_LOG)


class CannotListen(Exception):
    """Opening the listening socket failed (address in use, not allowed, ...)."""


async def _listen(site: web.BaseSite, address: str) -> None:
    try:
        await site.start()
    except OSError as err:
        raise CannotListen(f"cannot listen on {address}: {error_reason(err)}") from None


async def serve(settings: AgentSettings) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site: web.BaseSite
        if settings.unix_socket is not None:
            site = web.UnixSite(runner, str(settings.unix_socket))
            await _listen(site, f"unix:{settings.unix_socket}")
            os.chmod(settings.unix_socket, 0o600)
            line = f"LISTENING unix:{settings.unix_socket}"
        else:
            site = web.TCPSite(runner, settings.host, settings.port)
            await _listen(site, f"{settings.host}:{settings.port}")
            host, port = runner.addresses[0][:2]
            line = f"LISTENING [{host}]:{port}" if ":" in str(host) else f"LISTENING {host}:{port}"
        # Handlers first: a parent may send SIGTERM as soon as it reads the line, and must get a clean stop.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(line, flush=True)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()


def fail(message: str, code: AgentExitCode, termination_log: Path | None) -> NoReturn:
    """End the agent with one sentence, on stderr and (in a Pod) as its termination message."""
    print(f"codegen-mcp agent: {message}", file=sys.stderr)
    write_termination_message(termination_log, message)
    raise SystemExit(int(code))


def main(argv: list[str] | None = None) -> None:
    settings, level = parse_settings(argv)
    try:
        configure_logging(level, log_format(os.environ))
        tracing.configure_tracing("codegen-mcp-agent")
    except (LogFormatError, tracing.TracingError) as err:
        fail(str(err), AgentExitCode.USAGE, settings.termination_log)
    problem = workspace_storage_problem(settings.workspace)
    if problem is not None:
        fail(problem, AgentExitCode.WORKSPACE_NOT_WRITABLE, settings.termination_log)
    try:
        asyncio.run(serve(settings))
    except CannotListen as err:
        fail(str(err), AgentExitCode.FAILED, settings.termination_log)
    except CodegenError as err:
        fail(err.message, AgentExitCode.FAILED, settings.termination_log)
    except OSError as err:
        fail(f"cannot start: {err}", AgentExitCode.FAILED, settings.termination_log)


if __name__ == "__main__":
    main()
